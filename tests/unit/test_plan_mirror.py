"""The mirror (shadow) step, decided as a pure function: what the route must copy, and when."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from controller.api import Mirror, MirrorStep, ModelRolloutStatus, Phase, SpecError, format_time, parse_spec
from controller.checks import CheckOutcome, Verdict
from controller.plan import Observed, Plan, RouteWrite, TrafficSplit, decide, next_route_write

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
ANALYSIS = {"metrics": [{"name": "errors", "preset": "error-rate"}]}
SHADOW = Mirror(version="v2", percent=100)
ALL_ON_V1 = {"v1": 100, "v2": 0}


def spec_of(steps: list[dict[str, Any]], **extra: Any) -> Any:
    return parse_spec(
        {
            "model": "iris",
            "versions": [{"version": v, "backend": {"service": f"iris-{v}", "port": 80}} for v in ("v1", "v2")],
            "candidate": "v2",
            "baseline": "v1",
            "trafficRouting": {"gatewayAPI": {"httpRoute": "iris"}},
            "steps": steps,
            **extra,
        }
    )


SPEC = spec_of([{"setWeight": 0}, {"mirror": {"duration": "60s"}}, {"setWeight": 20}], analysis=ANALYSIS)


def at_step(index: int, *, route_mirror: Mirror | None = None, **kw: Any) -> ModelRolloutStatus:
    return ModelRolloutStatus(
        phase=kw.pop("phase", Phase.PROGRESSING),
        observed_generation=1,
        stable_version="v1",
        candidate_version="v2",
        candidate_hash=SPEC.candidate_hash(),
        current_step_index=index,
        step_started_at=format_time(T0),
        progress_at=format_time(T0),
        route_weights=ALL_ON_V1,
        route_mirror=route_mirror,
        **kw,
    )


def seen(*, at: float = 0, weights: dict[str, int] | None = None, mirror: Mirror | None = None, **kw: Any) -> Observed:
    return Observed(
        now=T0 + timedelta(seconds=at),
        generation=1,
        route_weights=ALL_ON_V1 if weights is None else weights,
        route_mirror=mirror,
        **kw,
    )


def run(status: ModelRolloutStatus, observed: Observed, spec: Any = SPEC) -> Plan:
    return decide(spec=spec, spec_error=None, status=status, observed=observed)


PASSING = CheckOutcome(verdict=Verdict.SUCCESSFUL, message="errors: no worse than v1")


def test_the_mirror_step_parses_with_every_request_copied_by_default() -> None:
    assert SPEC.steps[1] == MirrorStep(percent=100, seconds=60.0)
    assert spec_of([{"mirror": {"percent": 5, "duration": "1m"}}]).steps[0] == MirrorStep(percent=5, seconds=60.0)


@pytest.mark.parametrize(
    ("mirror", "field", "fix"),
    [
        ({"percent": 0, "duration": "1m"}, "spec.steps[0].mirror.percent", "from 1 to 100"),
        ({"percent": 101, "duration": "1m"}, "spec.steps[0].mirror.percent", "from 1 to 100"),
        ({"percent": True, "duration": "1m"}, "spec.steps[0].mirror.percent", "from 1 to 100"),
        ({"percent": 50}, "spec.steps[0].mirror.duration", "is required"),
        ({"duration": "soon"}, "spec.steps[0].mirror.duration", "is not a duration"),
        (None, "spec.steps[0].mirror", "must be an object"),
    ],
)
def test_a_malformed_mirror_step_is_a_spec_error_naming_the_field(mirror: Any, field: str, fix: str) -> None:
    with pytest.raises(SpecError, match=fix) as raised:
        spec_of([{"mirror": mirror}])
    assert raised.value.field_path == field


def test_entering_the_mirror_step_asks_for_copies_at_the_weight_held_and_waits_for_the_route() -> None:
    # given setWeight 0 done, the rollout enters the mirror step
    plan = run(at_step(0), seen())
    # then the route must copy every request to v2 while v1 keeps all the traffic
    assert plan.status.current_step_index == 1
    assert plan.traffic == TrafficSplit(weights=ALL_ON_V1, mirror=SHADOW)
    assert plan.status.message == "step 1: copying 100% of requests to v2"
    assert plan.requeue_after == 0, "the analysis schedules its first look at once"


def test_the_step_runs_for_its_duration_once_the_route_copies_and_its_analysis_holds_it() -> None:
    # given the route copies to v2, 30 s into a 60 s step
    plan = run(at_step(1), seen(at=30, mirror=SHADOW, analysis=CheckOutcome(verdict=Verdict.RUNNING)))
    # then it goes on copying, and records the mirror it set
    assert plan.traffic == TrafficSplit(weights=ALL_ON_V1, mirror=SHADOW)
    assert plan.status.current_step_index == 1
    assert plan.status.route_mirror == SHADOW
    assert plan.status.message == "step 1: shadow of v2, analysis at weight 0"
    # and once its time is up but the analysis has not succeeded yet, it still copies
    late = run(at_step(1), seen(at=90, mirror=SHADOW, analysis=CheckOutcome(verdict=Verdict.RUNNING)))
    assert late.traffic == TrafficSplit(weights=ALL_ON_V1, mirror=SHADOW)


def test_at_its_end_the_mirror_is_removed_before_the_next_step_moves_any_weight() -> None:
    # when the time is up and the analysis passed, with the copies still on the route
    ending = run(at_step(1, route_mirror=SHADOW), seen(at=61, mirror=SHADOW, analysis=PASSING))
    # then only the mirror goes, the step is not done yet
    assert ending.traffic == TrafficSplit(weights=ALL_ON_V1)
    assert ending.status.current_step_index == 1
    assert ending.status.message == "step 1: removing the mirror"
    # and once the route shows it gone, the step completes and the next one asks for its weight
    done = run(ending.status, seen(at=62, analysis=PASSING))
    assert [e.reason for e in done.events] == ["StepCompleted"]
    assert done.status.current_step_index == 2
    assert done.traffic == TrafficSplit.canary(stable="v1", candidate="v2", candidate_weight=20)
    assert done.status.route_mirror is None


def test_a_restart_after_the_mirror_was_removed_neither_sets_it_again_nor_keeps_waiting() -> None:
    # given a stored status that recorded the copies, and a route without them (the removal
    # landed, the status write did not)
    plan = run(at_step(1, route_mirror=SHADOW), seen(at=61, analysis=PASSING))
    # then the step completes
    assert plan.status.current_step_index == 2
    assert plan.traffic is not None and plan.traffic.mirror is None


def test_copies_removed_by_hand_during_the_step_are_restored_and_reported() -> None:
    plan = run(at_step(1, route_mirror=SHADOW), seen(at=30, analysis=CheckOutcome(verdict=Verdict.RUNNING)))
    assert plan.traffic == TrafficSplit(weights=ALL_ON_V1, mirror=SHADOW)
    drift = [e.message for e in plan.events if e.reason == "TrafficDrift"]
    assert drift == [
        "the route was changed outside the controller: found v1 100% where it had set v1 100%; copies 100% of "
        "requests to v2; restoring v1 100%; copies 100% of requests to v2"
    ]


def test_a_failed_analysis_during_the_shadow_returns_everything_to_stable_and_removes_the_copies() -> None:
    failed = CheckOutcome(verdict=Verdict.FAILED, message="invariants failed")
    plan = run(at_step(1, route_mirror=SHADOW), seen(at=10, mirror=SHADOW, analysis=failed))
    assert plan.status.phase == Phase.ROLLED_BACK
    assert plan.traffic == TrafficSplit.all_to("v1")


@pytest.mark.parametrize("action", ["abort", "promote-full"])
def test_an_abort_or_a_promotion_removes_the_copies(action: str) -> None:
    plan = run(at_step(1, route_mirror=SHADOW), seen(at=10, mirror=SHADOW, action=action))
    assert plan.traffic is not None and plan.traffic.mirror is None


def test_a_pause_by_a_person_keeps_the_copies_for_the_analysis() -> None:
    plan = run(at_step(1, route_mirror=SHADOW, paused_by_user=True), seen(at=10, mirror=SHADOW))
    assert plan.status.phase == Phase.PAUSED
    assert plan.traffic == TrafficSplit(weights=ALL_ON_V1, mirror=SHADOW)


def test_deletion_lets_the_object_go_only_once_the_route_neither_splits_nor_copies() -> None:
    copying = run(at_step(1, route_mirror=SHADOW), seen(at=10, mirror=SHADOW, deleting=True, deletion_requested_at=T0))
    assert copying.traffic == TrafficSplit.all_to("v1")
    assert not copying.remove_finalizer
    gone = run(at_step(1), seen(at=11, deleting=True, deletion_requested_at=T0))
    assert gone.remove_finalizer


def test_a_mirror_step_without_spec_analysis_is_a_timed_shadow() -> None:
    spec = spec_of([{"setWeight": 0}, {"mirror": {"percent": 10, "duration": "60s"}}])
    status = replace(at_step(1), candidate_hash=spec.candidate_hash())
    plan = run(status, seen(at=30, mirror=Mirror(version="v2", percent=10)), spec)
    assert plan.status.message == "step 1: shadow of v2 at weight 0"
    assert plan.requeue_after == pytest.approx(30)


@pytest.mark.parametrize(
    ("asked", "weights", "mirror", "first"),
    [
        # the next step raises the candidate's weight: the copies go first
        (TrafficSplit(weights={"v1": 80, "v2": 20}), ALL_ON_V1, SHADOW, RouteWrite.MIRROR),
        # a rollback from a mirror step at 20 %: the weights go first, never delayed
        (TrafficSplit.all_to("v1"), {"v1": 80, "v2": 20}, SHADOW, RouteWrite.WEIGHTS),
        # the mirror step starts on a route already at its weight
        (TrafficSplit(weights=ALL_ON_V1, mirror=SHADOW), ALL_ON_V1, None, RouteWrite.MIRROR),
        # weights changed by hand during a mirror step: weights first, then the copies
        (TrafficSplit(weights=ALL_ON_V1, mirror=SHADOW), {"v1": 50, "v2": 50}, None, RouteWrite.WEIGHTS),
        (TrafficSplit(weights=ALL_ON_V1, mirror=SHADOW), ALL_ON_V1, SHADOW, None),
    ],
)
def test_one_route_write_at_a_time_in_a_safe_order(
    asked: TrafficSplit, weights: dict[str, int], mirror: Mirror | None, first: RouteWrite | None
) -> None:
    assert next_route_write(asked, weights=weights, mirror=mirror) == first
