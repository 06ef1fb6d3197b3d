"""What the state machine records about the route, and how it treats a route it did not expect:
hand edits reported, versions removed from the spec drained, no wait without a deadline."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from controller.api import Backend, ModelRolloutStatus, Phase, format_time, parse_spec
from controller.plan import Observed, Plan, TrafficSplit, decide, route_spec

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def spec_of(*versions: str, steps: list[dict[str, Any]] | None = None, **extra: Any) -> Any:
    return parse_spec(
        {
            "model": "iris",
            "versions": [{"version": v, "backend": {"service": f"iris-{v}", "port": 80}} for v in versions],
            "candidate": versions[-1],
            "baseline": versions[0],
            "trafficRouting": {"gatewayAPI": {"httpRoute": "iris"}},
            "steps": steps or [{"setWeight": 10}, {"setWeight": 50}],
            **extra,
        }
    )


SPEC = spec_of("v1", "v2")


def at_step(step: int, *, routed: dict[str, int] | None, started: float = 0, **kw: Any) -> ModelRolloutStatus:
    return ModelRolloutStatus(
        phase=kw.pop("phase", Phase.PROGRESSING),
        observed_generation=1,
        stable_version="v1",
        candidate_version="v2",
        candidate_hash=kw.pop("candidate_hash", SPEC.candidate_hash()),
        current_step_index=step,
        step_started_at=format_time(T0 + timedelta(seconds=started)),
        progress_at=format_time(T0 + timedelta(seconds=started)),
        route_weights=routed,
        **kw,
    )


def run(spec: Any, status: ModelRolloutStatus, weights: dict[str, int] | None, *, at: float = 0, **kw: Any) -> Plan:
    observed = Observed(now=T0 + timedelta(seconds=at), generation=kw.pop("generation", 1), route_weights=weights, **kw)
    return decide(spec=spec, spec_error=None, status=status, observed=observed)


def drift_messages(plan: Plan) -> list[str]:
    return [event.message for event in plan.events if event.reason == "TrafficDrift"]


def test_a_hand_edit_of_the_managed_weights_is_reported_with_what_was_found_and_what_is_restored() -> None:
    # given a rollout at 10 % whose route someone set to 70 %, a weight no step asks for
    status = at_step(1, routed={"v1": 90, "v2": 10}, phase=Phase.PAUSED, paused_by_user=True)

    # when the controller looks
    plan = run(SPEC, status, {"v1": 30, "v2": 70})

    # then it restores its split, and says so
    assert plan.traffic == TrafficSplit.canary(stable="v1", candidate="v2", candidate_weight=10)
    assert drift_messages(plan) == [
        "the route was changed outside the controller: found v1 30%, v2 70% where it had set v1 90%, v2 10%; "
        "restoring v1 90%, v2 10%"
    ]


def test_a_step_that_moves_the_weight_is_no_drift_and_the_route_is_recorded_once_it_shows_the_plan() -> None:
    moving = run(SPEC, at_step(1, routed={"v1": 90, "v2": 10}), {"v1": 90, "v2": 10})
    assert moving.traffic == TrafficSplit.canary(stable="v1", candidate="v2", candidate_weight=50)
    assert drift_messages(moving) == []
    assert moving.status.route_weights == {"v1": 90, "v2": 10}

    shown = run(SPEC, moving.status, {"v1": 50, "v2": 50}, at=1)
    assert shown.status.route_weights == {"v1": 50, "v2": 50}
    assert shown.status.route_backends == {
        "v1": Backend(service="iris-v1", port=80),
        "v2": Backend(service="iris-v2", port=80),
    }


def test_a_route_written_just_before_a_crash_is_recorded_without_a_drift_event() -> None:
    # given the route shows step 1's weight, written before the status that recorded it was lost
    plan = run(SPEC, at_step(1, routed={"v1": 90, "v2": 10}), {"v1": 50, "v2": 50})
    assert drift_messages(plan) == []
    assert plan.status.route_weights == {"v1": 50, "v2": 50}


def test_a_version_removed_from_the_spec_while_it_has_traffic_stays_known_to_the_router_until_drained() -> None:
    # given v2 had 10 % when the user replaced it with v3 in spec.versions
    status = at_step(
        1,
        routed={"v1": 90, "v2": 10},
        route_backends={"v1": Backend(service="iris-v1", port=80), "v2": Backend(service="iris-v2", port=80)},
    )
    new_spec = spec_of("v1", "v3")

    # then the router still sees v2's backend, and the new rollout first sends all traffic to v1
    routed = route_spec(new_spec, status)
    assert [v.version for v in routed.versions] == ["v1", "v3", "v2"]
    plan = run(new_spec, status, {"v1": 90, "v2": 10, "v3": 0}, generation=2)
    assert plan.traffic == TrafficSplit.all_to("v1")

    # and once drained, v2 is forgotten
    drained = run(new_spec, plan.status, {"v1": 100, "v2": 0, "v3": 0}, generation=2, at=1)
    assert "v2" not in drained.status.route_backends
    assert [v.version for v in route_spec(new_spec, drained.status).versions] == ["v1", "v3"]


def test_promotion_waiting_for_a_route_that_never_shows_it_ends_at_the_progress_deadline() -> None:
    # given the last step is done and the route will not show 100 % on v2
    spec = spec_of("v1", "v2", steps=[{"setWeight": 10}], progressDeadlineSeconds=60)
    status = at_step(1, routed={"v1": 90, "v2": 10})

    # when the deadline has passed
    plan = run(spec, status, {"v1": 90, "v2": 10}, at=61)

    # then the rollout fails and asks for all traffic on v1
    assert plan.status.phase == Phase.FAILED
    assert plan.traffic == TrafficSplit.all_to("v1")
    assert "ProgressDeadlineExceeded" in [event.reason for event in plan.events]


def test_deletion_waits_for_the_traffic_to_go_home_but_not_for_ever() -> None:
    spec = spec_of("v1", "v2", progressDeadlineSeconds=60)
    status = at_step(1, routed={"v1": 90, "v2": 10})
    deleting = {"deleting": True, "deletion_requested_at": T0}

    waiting = run(spec, status, {"v1": 90, "v2": 10}, at=30, **deleting)
    assert waiting.traffic == TrafficSplit.all_to("v1")
    assert not waiting.remove_finalizer

    abandoned = run(spec, status, {"v1": 90, "v2": 10}, at=61, **deleting)
    assert abandoned.remove_finalizer
    assert abandoned.traffic is None
    assert [event.reason for event in abandoned.events] == ["DrainAbandoned"]
    assert "send all traffic to v1 by hand" in abandoned.events[0].message


def test_a_paused_rollout_whose_route_shows_its_current_steps_weight_holds_there_rather_than_go_back() -> None:
    # given a rollout paused at step 1 (setWeight 50) with the route at 50, written before a crash
    status = at_step(1, routed={"v1": 90, "v2": 10}, phase=Phase.PAUSED, paused_by_user=True)

    # then holding keeps 50: taking back a weight already on the route would flap
    plan = run(SPEC, status, {"v1": 50, "v2": 50})
    assert plan.traffic == TrafficSplit.canary(stable="v1", candidate="v2", candidate_weight=50)
    assert drift_messages(plan) == []


def test_a_new_candidate_does_not_wait_for_an_unreadable_route_but_starts_pending_under_the_deadline() -> None:
    status = replace(at_step(1, routed={"v1": 90, "v2": 10}), candidate_hash="an-older-candidate")
    plan = run(spec_of("v1", "v3"), status, None, generation=2, reference_problem="HTTPRoute ns/iris not found")
    assert plan.status.phase == Phase.PENDING
    assert plan.status.progress_at is not None


def test_a_reference_lost_after_a_long_wait_is_given_the_whole_deadline_from_when_it_went_missing() -> None:
    # given a rollout paused by a person for an hour at 10 % (its progressAt an hour old)
    spec = spec_of("v1", "v2", steps=[{"setWeight": 10}, {"setWeight": 50}], progressDeadlineSeconds=600)
    status = at_step(1, routed={"v1": 90, "v2": 10}, paused_by_user=True, phase=Phase.PAUSED)

    # when its candidate's Service goes missing, and the rollout is looked at then and 10 minutes on
    missing = "Service ns/iris-v2 of version v2 not found"
    first = run(spec, status, {"v1": 90, "v2": 10}, at=3600, reference_problem=missing)
    later = run(spec, first.status, {"v1": 90, "v2": 10}, at=3600 + 601, reference_problem=missing)

    # then it waits at first (no traffic change), and fails only a whole deadline after the loss
    assert first.status.phase == Phase.PAUSED and first.traffic is None
    assert later.status.phase == Phase.FAILED
    assert "for valid references" in later.status.message
