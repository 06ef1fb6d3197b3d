"""spec.rollbackRevisions in the pure decision: the versions the last N promotions replaced keep
their replicas (status.keptVersions, newest first) whenever they were replaced; a version pushed
beyond N is scaled down after spec.scaleDown.delay, one scale-down target at a time (one still
pending goes at once, never left scaled up); the stable version, a kept one and the candidate of a
rollout in flight are never scaled down; an undo to a kept version moves traffic at once; an alert
undoes a promotion only within spec.rollbackWindow, never by count alone."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from controller.api import ModelRolloutSpec, ModelRolloutStatus, Phase, SpecError, format_time, parse_spec
from controller.checks import CheckOutcome, Verdict
from controller.incidents.alerts import Alert, AlertStatus
from controller.plan import Observed, Plan, TrafficSplit, UndoRequest, decide, undo_target

T0 = datetime(2026, 12, 1, 3, 0, tzinfo=UTC)
DELAY = 30.0
"""spec.scaleDown.delay, in seconds."""


def spec_for(candidate: str, **extra: Any) -> ModelRolloutSpec:
    """Versions v1 to v5, each with a Deployment; `candidate` rolled out in one step to 100 %."""
    raw: dict[str, Any] = {
        "model": "iris",
        "versions": [
            {"version": v, "backend": {"service": f"iris-{v}", "port": 80}, "deployment": f"iris-{v}"}
            for v in ("v1", "v2", "v3", "v4", "v5")
        ],
        "candidate": candidate,
        "baseline": "v1",
        "trafficRouting": {"gatewayAPI": {"httpRoute": "iris"}},
        "steps": [{"setWeight": 100}],
        "scaleDown": {"delay": f"{DELAY:g}s"},
        "rollbackRevisions": 2,
        **extra,
    }
    # An extra field given as None is left out of the spec.
    return parse_spec({key: value for key, value in raw.items() if value is not None})


def all_on(version: str) -> dict[str, int]:
    return {version: 100}


def at(seconds: float, weights: dict[str, int], *, generation: int, **kw: Any) -> Observed:
    return Observed(now=T0 + timedelta(seconds=seconds), generation=generation, route_weights=weights, **kw)


def run(spec: ModelRolloutSpec, status: ModelRolloutStatus, observed: Observed) -> Plan:
    return decide(spec=spec, spec_error=None, status=status, observed=observed)


def promote(status: ModelRolloutStatus, candidate: str, *, when: float, **extra: Any) -> Plan:
    """A person names `candidate` (a new generation): the decision that starts its rollout, with
    the route all on the stable version, then the one that sees the route all on `candidate`."""
    spec = spec_for(candidate, **extra)
    generation = status.observed_generation + 1
    stable = status.stable_version or spec.baseline
    started = run(spec, status, at(when, all_on(stable), generation=generation))
    assert started.status.phase == Phase.PENDING
    promoted = run(spec, started.status, at(when + 1, all_on(candidate), generation=generation))
    assert promoted.status.phase == Phase.PROMOTED and promoted.status.stable_version == candidate
    return promoted


def look(status: ModelRolloutStatus, *, when: float, **kw: Any) -> Plan:
    """A later pass over the promoted rollout, nothing new but the time (and `kw`)."""
    stable = status.stable_version
    assert stable is not None
    spec = spec_for(stable, **kw.pop("spec", {}))
    return run(spec, status, at(when, all_on(stable), generation=status.observed_generation, **kw))


def reasons(plan: Plan) -> list[str]:
    return [event.reason for event in plan.events]


def firing() -> Alert:
    return Alert(
        status=AlertStatus.FIRING,
        labels={"alertname": "ModelErrorRate", "namespace": "ml", "model": "iris"},
        annotations={"summary": "iris answers 5xx"},
        starts_at=T0,
        fingerprint="f5c05c93fab5ba48",
    )


def three_promotions() -> list[Plan]:
    """v1 -> v2 at 0 s, v2 -> v3 at 100 s, v3 -> v4 at 200 s, with rollbackRevisions 2."""
    first = promote(ModelRolloutStatus(), "v2", when=0)
    second = promote(first.status, "v3", when=100)
    third = promote(second.status, "v4", when=200)
    return [first, second, third]


# Kept after successive promotions -----------------------------------------------------------------


def test_given_two_revisions_when_three_promotions_follow_then_the_last_two_replaced_are_kept_and_v1_goes() -> None:
    # given rollbackRevisions 2 and scaleDown 30s
    # when v2, v3 and v4 are promoted in turn
    first, second, third = three_promotions()
    # then each replaced version is kept, newest first, and nothing is scheduled while two fit
    assert first.status.kept_versions == ("v1",)
    assert second.status.kept_versions == ("v2", "v1")
    assert first.status.scale_down_target is None and second.status.scale_down_target is None
    # and the third promotion pushes v1 beyond two: it leaves the list and goes after the delay
    assert third.status.kept_versions == ("v3", "v2")
    assert third.status.scale_down_target == "v1"
    assert third.status.scale_down_at == format_time(T0 + timedelta(seconds=201 + DELAY))
    assert third.scale_down_version is None

    # when the delay is over
    due = look(third.status, when=201 + DELAY)
    # then v1, and only v1, is scaled down; the kept ones keep their replicas
    assert due.scale_down_version == "v1"
    assert due.status.kept_versions == ("v3", "v2")
    assert due.traffic == TrafficSplit.all_to("v4")


def test_given_a_scale_down_pending_when_another_version_is_pushed_out_then_the_pending_one_goes_now() -> None:
    # given v1 pushed out by the promotion of v4 and due 30 s later
    *_, third = three_promotions()
    assert third.status.scale_down_target == "v1"
    # when v5 is promoted before then, pushing v2 out
    fourth = promote(third.status, "v5", when=210)
    # then v1 is scaled down in this decision (never left scaled up), and v2 takes its place
    assert fourth.scale_down_version == "v1"
    assert fourth.status.scale_down_target == "v2"
    assert fourth.status.scale_down_at == format_time(T0 + timedelta(seconds=211 + DELAY))
    assert fourth.status.kept_versions == ("v4", "v3")


def test_given_a_kept_version_promoted_again_then_it_leaves_the_list_as_the_stable_version() -> None:
    # given v3 and v2 kept, v4 stable
    *_, third = three_promotions()
    # when v2 is rolled out again and promoted
    again = promote(third.status, "v2", when=300)
    # then v2 is stable, no longer kept, v4 is kept first, nothing is pushed out, and v1 (due) goes
    assert again.status.kept_versions == ("v4", "v3")
    assert again.scale_down_version == "v1" and again.status.scale_down_target == "v1"


# Never scaled down: the stable version, a kept one, the candidate in flight ------------------------


def test_given_a_kept_version_rolled_out_again_when_it_is_rolled_back_then_it_keeps_its_replicas() -> None:
    # given v3 and v2 kept, v4 stable, and v2 rolled out again
    *_, third = three_promotions()
    spec = spec_for("v2", steps=[{"setWeight": 50}, {"pause": {}}])
    generation = third.status.observed_generation + 1
    started = run(spec, third.status, at(300, all_on("v4"), generation=generation))
    shared = {"v4": 50, "v2": 50}
    canary = run(spec, started.status, at(301, shared, generation=generation))
    assert canary.status.phase in (Phase.PROGRESSING, Phase.PAUSED)
    # when its analysis fails
    failed = CheckOutcome(verdict=Verdict.FAILED, message="errors: v2 3% against v4 1%")
    rolled_back = run(spec, canary.status, at(302, shared, generation=generation, analysis=failed))
    # then traffic is home on v4 and v2, still kept, is not scheduled for scale-down
    assert rolled_back.status.phase == Phase.ROLLED_BACK
    assert rolled_back.traffic == TrafficSplit.all_to("v4")
    assert rolled_back.status.kept_versions == ("v3", "v2")
    assert "v2" not in (rolled_back.status.scale_down_target, rolled_back.scale_down_version)


def test_given_the_limit_lowered_during_a_rollout_of_a_kept_version_then_the_candidate_is_not_scaled_down() -> None:
    # given v3 and v2 kept, v1 already scaled down, v4 stable
    *_, third = three_promotions()
    settled = replace(third.status, scale_down_at=None, scale_down_target=None)
    # when v2 is rolled out again with rollbackRevisions 1
    spec = spec_for("v2", rollbackRevisions=1, steps=[{"setWeight": 50}, {"pause": {}}])
    generation = settled.observed_generation + 1
    started = run(spec, settled, at(301, all_on("v4"), generation=generation))
    canary = run(spec, started.status, at(302, {"v4": 50, "v2": 50}, generation=generation))
    # then v2, the candidate in flight, leaves the list but is never scaled down while in flight
    assert canary.status.kept_versions == ("v3",)
    assert canary.scale_down_version is None and canary.status.scale_down_target is None
    assert canary.traffic == TrafficSplit.canary(stable="v4", candidate="v2", candidate_weight=50)


def test_given_a_stored_target_that_is_kept_or_stable_when_it_is_due_then_it_is_dropped_not_scaled_down() -> None:
    # given a stored status naming a kept version, then the stable one, as the scale-down target, due
    *_, third = three_promotions()
    for target in ("v2", "v4"):
        stored = replace(third.status, scale_down_target=target, scale_down_at=format_time(T0))
        # when the controller decides
        plan = look(stored, when=400)
        # then nothing is scaled down and the target is gone
        assert plan.scale_down_version is None
        assert plan.status.scale_down_target is None and plan.status.scale_down_at is None


def test_given_the_stored_status_after_a_restart_then_the_decision_is_the_same_and_keeps_the_kept() -> None:
    # given the status stored after the third promotion, read back as a restarted controller reads it
    *_, third = three_promotions()
    stored = ModelRolloutStatus.from_json(third.status.to_json())
    assert stored.kept_versions == ("v3", "v2")
    # when two controllers decide on it, before and after v1 is due
    before = look(stored, when=210)
    after = look(stored, when=300)
    # then the route is asked for the same, only v1 is ever scaled down, and the list stands
    assert before.traffic == after.traffic == TrafficSplit.all_to("v4")
    assert before.scale_down_version is None and after.scale_down_version == "v1"
    assert before.status.kept_versions == after.status.kept_versions == ("v3", "v2")


# Undo to a kept version ---------------------------------------------------------------------------


def test_given_a_kept_version_when_a_person_undoes_to_it_then_all_traffic_moves_at_once() -> None:
    # given v3 and v2 kept (their Deployments ready), v4 stable
    *_, third = three_promotions()
    request = UndoRequest(token="incident-7", to_version="v2")
    spec = spec_for("v4")
    obs = at(300, all_on("v4"), generation=third.status.observed_generation, undo_request=request)
    assert undo_target(spec=spec, status=third.status, observed=obs) == "v2"
    # when the undo is asked, v2's Deployment being ready
    obs = replace(obs, undo_target_ready=True)
    moving = run(spec, third.status, obs)
    # then all traffic goes to v2 in this decision, without scaling anything up or waiting
    assert moving.traffic == TrafficSplit.all_to("v2")
    assert moving.scale_up_version is None and "UndoPending" not in reasons(moving)

    # when the route shows it
    done = run(spec, moving.status, replace(obs, now=obs.now + timedelta(seconds=1), route_weights=all_on("v2")))
    # then v2 is stable and no longer kept, v3 stays kept, and the undone v4 goes after the delay
    assert done.status.phase == Phase.ROLLED_BACK and done.status.stable_version == "v2"
    assert done.status.kept_versions == ("v3",)
    assert done.status.scale_down_target == "v4"
    assert "Undo" in reasons(done)


# Alerts -------------------------------------------------------------------------------------------


def test_given_revisions_only_when_an_alert_names_the_promoted_rollout_then_it_is_recorded_and_nothing_undone() -> None:
    # given v2 promoted a minute ago with rollbackRevisions 2 and no rollbackWindow
    first = promote(ModelRolloutStatus(), "v2", when=0)
    obs = at(60, all_on("v2"), generation=first.status.observed_generation, alerts=(firing(),))
    assert undo_target(spec=spec_for("v2"), status=first.status, observed=obs) is None
    # when an alert names it
    plan = run(spec_for("v2"), first.status, obs)
    # then it is recorded, traffic stays on v2, and the Event says why
    assert reasons(plan) == ["IncidentAfterPromotion"]
    assert "spec.rollbackRevisions sets no time within which an alert may undo" in plan.events[0].message
    assert plan.traffic == TrafficSplit.all_to("v2") and plan.status.phase == Phase.PROMOTED
    assert plan.status.undo is None and plan.scale_up_version is None


# Both fields --------------------------------------------------------------------------------------


def test_given_both_fields_then_the_window_bounds_alerts_and_a_version_is_kept_while_either_keeps_it() -> None:
    both = {"rollbackRevisions": 1, "rollbackWindow": "1h"}
    # given v2 promoted with a one-hour window and one revision kept: v1 is kept, nothing scheduled
    first = promote(ModelRolloutStatus(), "v2", when=0, **both)
    assert first.status.kept_versions == ("v1",) and first.status.scale_down_target is None
    # when an alert names it within the window, then it undoes the promotion back to v1
    obs = at(60, all_on("v2"), generation=first.status.observed_generation, alerts=(firing(),))
    assert undo_target(spec=spec_for("v2", **both), status=first.status, observed=obs) == "v1"

    # when v3 is promoted ten minutes later, then v2 is kept and v1, pushed out, goes after the delay
    second = promote(first.status, "v3", when=600, **both)
    assert second.status.kept_versions == ("v2",)
    assert second.status.scale_down_target == "v1"
    assert second.status.scale_down_at == format_time(T0 + timedelta(seconds=601 + DELAY))

    # when rollbackRevisions is then removed (v1 already scaled down)
    settled = replace(second.status, scale_down_at=None, scale_down_target=None)
    released = look(settled, when=700, spec={"rollbackWindow": "1h", "rollbackRevisions": None})
    # then v2 leaves the list but the window still keeps it: its scale-down waits for the window's end
    assert released.status.kept_versions == ()
    assert released.status.scale_down_target == "v2"
    assert released.status.scale_down_at == format_time(T0 + timedelta(seconds=601 + 3600))
    assert released.scale_down_version is None


def test_given_the_limit_lowered_then_the_kept_versions_beyond_it_leave_one_per_pass() -> None:
    # given v3 and v2 kept, v1 already scaled down
    *_, third = three_promotions()
    settled = replace(third.status, scale_down_at=None, scale_down_target=None)
    # when rollbackRevisions is removed
    first = look(settled, when=300, spec={"rollbackRevisions": None})
    # then the oldest, v2, leaves and is scheduled; another pass follows at once for v3
    assert first.status.kept_versions == ("v3",) and first.status.scale_down_target == "v2"
    assert first.requeue_after == 0
    # when that pass runs, then v3 leaves too and v2, pending, goes now rather than never
    second = look(first.status, when=300.5, spec={"rollbackRevisions": None})
    assert second.status.kept_versions == () and second.status.scale_down_target == "v3"
    assert second.scale_down_version == "v2"


# The spec -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [0, 11, "2", True, 1.5])
def test_given_a_rollback_revisions_out_of_range_then_the_spec_error_names_the_field(value: object) -> None:
    with pytest.raises(SpecError, match=r"spec.rollbackRevisions: .* is not a whole number from 1 to 10"):
        spec_for("v2", rollbackRevisions=value)


def test_given_rollback_revisions_on_kserve_then_the_spec_error_names_the_field() -> None:
    raw = {
        "model": "iris",
        "trafficRouting": {"kserve": {"inferenceService": "iris"}},
        "steps": [{"setWeight": 10}],
        "rollbackRevisions": 2,
    }
    with pytest.raises(SpecError, match=r"spec.rollbackRevisions: trafficRouting.kserve .* drop rollbackRevisions"):
        parse_spec(raw)
