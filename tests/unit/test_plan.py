"""The rollout state machine, decided as a pure function (no server, no clock)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from controller.api import ModelRolloutStatus, Phase, format_time, parse_spec
from controller.checks import CheckOutcome, InconclusivePolicy, Verdict
from controller.plan import Observed, Plan, TrafficSplit, decide

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def spec_of(steps: list[dict[str, Any]], **extra: Any) -> Any:
    return parse_spec(
        {
            "model": "iris",
            "versions": [
                {"version": v, "backend": {"service": f"iris-{v}", "port": 80}, "deployment": f"iris-{v}"}
                for v in ("v1", "v2")
            ],
            "candidate": "v2",
            "baseline": "v1",
            "trafficRouting": {"gatewayAPI": {"httpRoute": "iris"}},
            "steps": steps,
            **extra,
        }
    )


def observed(weights: dict[str, int] | None = None, *, at: float = 0, **kw: Any) -> Observed:
    return Observed(
        now=T0 + timedelta(seconds=at),
        generation=kw.pop("generation", 1),
        route_weights={"v1": 100, "v2": 0} if weights is None else weights,
        **kw,
    )


def progressing_at(step: int, *, weight: int = 0, started: float = 0, **kw: Any) -> ModelRolloutStatus:
    spec = spec_of([{"setWeight": 10}])
    return ModelRolloutStatus(
        phase=kw.pop("phase", Phase.PROGRESSING),
        observed_generation=1,
        stable_version="v1",
        candidate_version="v2",
        candidate_hash=spec.candidate_hash(),
        current_step_index=step,
        current_weight=weight,
        step_started_at=format_time(T0 + timedelta(seconds=started)),
        progress_at=format_time(T0 + timedelta(seconds=started)),
        **kw,
    )


def run(spec: Any, status: ModelRolloutStatus, obs: Observed) -> Plan:
    return decide(spec=spec, spec_error=None, status=status, observed=obs)


def reasons(plan: Plan) -> list[str]:
    return [e.reason for e in plan.events]


def test_a_new_rollout_starts_pending_and_sends_no_traffic_to_the_candidate() -> None:
    plan = run(spec_of([{"setWeight": 10}]), ModelRolloutStatus(), observed())
    assert plan.status.phase == Phase.PENDING
    assert plan.status.stable_version == "v1"
    assert plan.traffic == TrafficSplit.all_to("v1")
    assert plan.requeue_after == 0
    assert reasons(plan) == ["RolloutStarted"]


def test_pending_without_gates_moves_to_the_first_weight() -> None:
    status = progressing_at(0, phase=Phase.PENDING)
    plan = run(spec_of([{"setWeight": 10}, {"pause": {}}]), status, observed())
    assert plan.status.phase == Phase.PROGRESSING
    assert plan.traffic == TrafficSplit.canary(stable="v1", candidate="v2", candidate_weight=10)
    assert plan.status.current_step_index == 0, "a setWeight step completes only once the route shows it"


def test_a_set_weight_step_completes_once_the_route_shows_it() -> None:
    plan = run(spec_of([{"setWeight": 10}, {"pause": {}}]), progressing_at(0), observed({"v1": 90, "v2": 10}))
    assert plan.status.current_step_index == 1
    assert plan.status.phase == Phase.PAUSED
    assert plan.status.current_weight == 10


def test_a_timed_pause_waits_its_duration_then_goes_on() -> None:
    spec = spec_of([{"setWeight": 10}, {"pause": {"duration": "30s"}}, {"setWeight": 50}])
    status = progressing_at(1, weight=10)
    early = run(spec, status, observed({"v1": 90, "v2": 10}, at=12))
    assert early.status.current_step_index == 1
    assert early.requeue_after == 18
    assert early.traffic == TrafficSplit.canary(stable="v1", candidate="v2", candidate_weight=10)
    late = run(spec, status, observed({"v1": 90, "v2": 10}, at=30))
    assert late.status.current_step_index == 2
    assert late.traffic == TrafficSplit.canary(stable="v1", candidate="v2", candidate_weight=50)


def test_the_split_asked_for_depends_only_on_the_stored_status() -> None:
    # A controller restarted after a crash asks for exactly what the crashed one asked for.
    spec = spec_of([{"setWeight": 10}, {"pause": {"duration": "30s"}}, {"setWeight": 50}])
    status = progressing_at(2, weight=10, started=30)
    first = run(spec, status, observed({"v1": 90, "v2": 10}, at=31))
    again = run(spec, status, observed({"v1": 90, "v2": 10}, at=45))
    assert first.traffic == again.traffic == TrafficSplit.canary(stable="v1", candidate="v2", candidate_weight=50)


def test_after_the_last_step_the_candidate_is_promoted_once_it_has_all_traffic() -> None:
    spec = spec_of([{"setWeight": 50}])
    asking = run(spec, progressing_at(1, weight=50), observed({"v1": 50, "v2": 50}))
    assert asking.traffic == TrafficSplit.all_to("v2")
    assert asking.status.phase == Phase.PROGRESSING
    done = run(spec, progressing_at(1, weight=50), observed({"v1": 0, "v2": 100}))
    assert done.status.phase == Phase.PROMOTED
    assert done.status.stable_version == "v2"
    assert "Promoted" in reasons(done)


def test_promotion_schedules_the_scale_down_of_the_old_version() -> None:
    spec = spec_of([{"setWeight": 50}], scaleDown={"delay": "30s"})
    done = run(spec, progressing_at(1, weight=50), observed({"v1": 0, "v2": 100}, at=5))
    assert done.status.scale_down_target == "v1"
    assert done.status.scale_down_at == format_time(T0 + timedelta(seconds=35))
    due = run(spec, done.status, observed({"v1": 0, "v2": 100}, at=36))
    assert due.scale_down_version == "v1"


def test_an_indefinite_pause_holds_until_resume() -> None:
    spec = spec_of([{"setWeight": 10}, {"pause": {}}, {"setWeight": 60}])
    held = run(spec, progressing_at(1, weight=10), observed({"v1": 90, "v2": 10}, at=3600))
    assert held.status.phase == Phase.PAUSED
    assert held.requeue_after is None, "an indefinite pause needs no timer, and never hits the deadline"
    resumed = run(spec, held.status, observed({"v1": 90, "v2": 10}, at=3601, action="resume"))
    assert resumed.status.current_step_index == 2
    assert resumed.traffic == TrafficSplit.canary(stable="v1", candidate="v2", candidate_weight=60)
    assert resumed.action_handled


def test_abort_sends_all_traffic_to_the_stable_version() -> None:
    spec = spec_of([{"setWeight": 10}, {"pause": {}}])
    plan = run(spec, progressing_at(1, weight=10), observed({"v1": 90, "v2": 10}, action="abort"))
    assert plan.status.phase == Phase.ABORTED
    assert plan.traffic == TrafficSplit.all_to("v1")


def test_an_unknown_action_is_reported_and_changes_nothing() -> None:
    spec = spec_of([{"setWeight": 10}, {"pause": {}}])
    plan = run(spec, progressing_at(1, weight=10), observed({"v1": 90, "v2": 10}, action="promot"))
    assert plan.status.phase == Phase.PAUSED
    assert "UnknownAction" in reasons(plan)
    assert plan.action_handled


def test_failed_analysis_rolls_back_at_once_and_names_the_metric() -> None:
    spec = spec_of([{"setWeight": 10}, {"pause": {"duration": "1h"}}], scaleDown={"delay": "30s"})
    failed = CheckOutcome(verdict=Verdict.FAILED, message="error-rate: candidate 0.2 vs baseline 0.01")
    plan = run(spec, progressing_at(1, weight=10), observed({"v1": 90, "v2": 10}, analysis=failed))
    assert plan.status.phase == Phase.ROLLED_BACK
    assert plan.traffic == TrafficSplit.all_to("v1")
    assert "error-rate" in plan.status.message
    assert plan.status.scale_down_target == "v2"


def test_inconclusive_analysis_holds_the_weight_by_default_and_never_promotes() -> None:
    spec = spec_of([{"setWeight": 10}, {"pause": {"duration": "1s"}}])
    unknown = CheckOutcome(verdict=Verdict.INCONCLUSIVE, message="no data")
    plan = run(spec, progressing_at(1, weight=10), observed({"v1": 90, "v2": 10}, at=60, analysis=unknown))
    assert plan.status.phase == Phase.PROGRESSING
    assert plan.status.current_step_index == 1
    assert plan.traffic == TrafficSplit.canary(stable="v1", candidate="v2", candidate_weight=10)


def test_inconclusive_analysis_can_pause_or_roll_back_when_configured() -> None:
    spec = spec_of([{"setWeight": 10}, {"pause": {"duration": "1s"}}])
    status = progressing_at(1, weight=10)
    pause = CheckOutcome(verdict=Verdict.INCONCLUSIVE, message="no data", on_inconclusive=InconclusivePolicy.PAUSE)
    assert run(spec, status, observed({"v1": 90, "v2": 10}, analysis=pause)).status.phase == Phase.PAUSED
    back = replace(pause, on_inconclusive=InconclusivePolicy.ROLLBACK)
    assert run(spec, status, observed({"v1": 90, "v2": 10}, analysis=back)).status.phase == Phase.ROLLED_BACK


def test_an_analyze_step_needs_a_successful_verdict_after_its_window() -> None:
    spec = spec_of([{"setWeight": 10}, {"analyze": {"duration": "60s"}}], analysis={"metrics": [{"name": "x"}]})
    status = progressing_at(1, weight=10)
    running = CheckOutcome(verdict=Verdict.RUNNING, requeue_after=10)
    assert run(spec, status, observed({"v1": 90, "v2": 10}, at=61, analysis=running)).status.current_step_index == 1
    passed = CheckOutcome(verdict=Verdict.SUCCESSFUL)
    assert run(spec, status, observed({"v1": 90, "v2": 10}, at=30, analysis=passed)).status.current_step_index == 1
    assert run(spec, status, observed({"v1": 90, "v2": 10}, at=61, analysis=passed)).status.current_step_index == 2


def test_entering_a_step_where_the_analysis_measures_asks_for_the_next_pass_at_once() -> None:
    # Given a rollout whose route just showed its first weight, before an analyze step
    spec = spec_of([{"setWeight": 10}, {"analyze": {"duration": "60s"}}], analysis={"metrics": [{"name": "x"}]})
    entered = run(spec, progressing_at(0), observed({"v1": 90, "v2": 10}))
    # Then the plan enters the analyze step and asks for a pass at once: this pass's checker looked
    # at the step left behind, the next one schedules the new step's first look
    assert entered.status.current_step_index == 1
    assert entered.requeue_after == 0
    # And background analysis (startingStep) does the same from its starting step on
    background = spec_of(
        [{"setWeight": 10}, {"pause": {"duration": "30s"}}], analysis={"metrics": [{"name": "x"}], "startingStep": 1}
    )
    assert run(background, progressing_at(0), observed({"v1": 90, "v2": 10})).requeue_after == 0
    # While a step without analysis waits its own time
    quiet = spec_of([{"setWeight": 10}, {"pause": {"duration": "30s"}}])
    assert run(quiet, progressing_at(0), observed({"v1": 90, "v2": 10})).requeue_after == 30


def test_failed_gates_roll_back_before_any_traffic() -> None:
    status = progressing_at(0, phase=Phase.PENDING)
    gates = CheckOutcome(verdict=Verdict.FAILED, message="contract: input 'x' datatype FP32, candidate has INT64")
    plan = run(spec_of([{"setWeight": 10}]), status, observed(gates=gates))
    assert plan.status.phase == Phase.ROLLED_BACK
    assert plan.traffic == TrafficSplit.all_to("v1")
    assert "contract" in plan.status.message


def test_running_gates_keep_the_rollout_pending_with_no_candidate_traffic() -> None:
    status = progressing_at(0, phase=Phase.PENDING)
    gates = CheckOutcome(verdict=Verdict.RUNNING, message="waiting for the candidate to be ready", requeue_after=2)
    plan = run(spec_of([{"setWeight": 10}]), status, observed(at=5, gates=gates))
    assert plan.status.phase == Phase.PENDING
    assert plan.traffic == TrafficSplit.all_to("v1")
    assert plan.requeue_after == 2


def test_the_progress_deadline_fails_the_rollout_and_returns_traffic() -> None:
    spec = spec_of([{"setWeight": 10}], progressDeadlineSeconds=60)
    status = progressing_at(0, phase=Phase.PENDING)
    gates = CheckOutcome(verdict=Verdict.RUNNING, message="not ready")
    plan = run(spec, status, observed(at=61, gates=gates))
    assert plan.status.phase == Phase.FAILED
    assert "spec.progressDeadlineSeconds" in plan.status.message
    assert plan.traffic == TrafficSplit.all_to("v1")


def test_a_reference_problem_moves_no_traffic() -> None:
    plan = run(
        spec_of([{"setWeight": 10}]),
        progressing_at(0, phase=Phase.PENDING),
        observed(None, reference_problem="Service ns/iris-v2 not found"),
    )
    assert plan.traffic is None
    cond = next(c for c in plan.status.conditions if c.type == "ReferencesValid")
    assert cond.status == "False" and "iris-v2" in cond.message
    assert "InvalidReference" in reasons(plan)


def test_a_spec_change_mid_rollout_first_returns_traffic_then_starts_over() -> None:
    spec = spec_of([{"setWeight": 20}])
    status = progressing_at(1, weight=50)
    going_home = run(spec, status, observed({"v1": 50, "v2": 50}, generation=2))
    assert going_home.traffic == TrafficSplit.all_to("v1")
    assert going_home.status.phase == Phase.PROGRESSING, "nothing restarts before traffic is home"
    restarted = run(spec, going_home.status, observed({"v1": 100, "v2": 0}, generation=2))
    assert restarted.status.phase == Phase.PENDING
    assert restarted.status.current_step_index == 0
    assert restarted.status.observed_generation == 2


def test_deletion_releases_the_finalizer_only_once_the_stable_version_has_all_traffic() -> None:
    spec = spec_of([{"setWeight": 20}])
    status = progressing_at(1, weight=20)
    first = run(spec, status, observed({"v1": 80, "v2": 20}, deleting=True))
    assert first.traffic == TrafficSplit.all_to("v1") and not first.remove_finalizer
    second = run(spec, status, observed({"v1": 100, "v2": 0}, deleting=True))
    assert second.remove_finalizer


def test_an_invalid_spec_fails_and_returns_traffic_to_the_stable_version() -> None:
    plan = decide(
        spec=None, spec_error="spec.steps[0].setWeight: 120 is not...", status=progressing_at(1, weight=20),
        observed=observed({"v1": 80, "v2": 20}),
    )  # fmt: skip
    assert plan.status.phase == Phase.FAILED
    assert plan.traffic == TrafficSplit.all_to("v1")
    assert "InvalidSpec" in reasons(plan)


ANALYSIS_MISTAKE = "spec.analysis.metrics[0].comparison: give at least one of max, min, maxRatio or maxDifference"


def test_a_spec_mistake_a_checker_finds_while_pending_fails_with_no_candidate_traffic() -> None:
    # given a Pending rollout whose analysis the reconciler found invalid
    pending = progressing_at(0, phase=Phase.PENDING)

    # when deciding
    plan = decide(spec=None, spec_error=ANALYSIS_MISTAKE, status=pending, observed=observed())

    # then it fails, naming the field, and the route stays all on the stable version
    assert plan.status.phase == Phase.FAILED
    assert plan.traffic == TrafficSplit.all_to("v1")
    spec_valid = next(c for c in plan.status.conditions if c.type == "SpecValid")
    assert (spec_valid.status, spec_valid.message) == ("False", ANALYSIS_MISTAKE)


def test_a_rollout_failed_on_a_checker_found_mistake_keeps_spec_valid_false_until_it_starts_over() -> None:
    # given the rollout failed on that mistake; on later passes the spec parses (no checker runs when Failed)
    spec = spec_of([{"setWeight": 10}])
    failed = decide(
        spec=None, spec_error=ANALYSIS_MISTAKE, status=progressing_at(0, phase=Phase.PENDING), observed=observed()
    ).status

    # when deciding again, then SpecValid still says what is wrong
    later = run(spec, failed, observed(at=10))
    assert later.status.phase == Phase.FAILED
    assert [(c.status, c.message) for c in later.status.conditions if c.type == "SpecValid"] == [
        ("False", ANALYSIS_MISTAKE)
    ]

    # when a person retries, then it starts over Pending (validated again) and SpecValid turns True after that
    retried = run(spec, later.status, observed(at=20, action="retry"))
    assert retried.status.phase == Phase.PENDING
    validated = run(spec, retried.status, observed(at=21))
    assert [c.status for c in validated.status.conditions if c.type == "SpecValid"] == ["True"]
