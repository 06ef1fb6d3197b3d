"""The analysis after a promotion in the pure decision (spec.postPromotion): once the route shows
all traffic on the promoted version it is measured alone for the duration (status.postPromotion,
phase still Promoted); a guardrail shown broken undoes the promotion through the existing undo
(scaled up first, once, never flapping); a duration over without one passes, one whose last look
could not judge is Inconclusive (nothing undone); a new rollout or a person's undo ends it."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from controller.api import (
    ModelRolloutSpec,
    ModelRolloutStatus,
    Phase,
    PostPromotionRecord,
    PostPromotionState,
    RecordedEvent,
    UndoState,
    format_time,
)
from controller.checks import CheckOutcome, Verdict
from controller.notify.notification import Kind, MetricCause
from controller.notify.transitions import notification_for
from controller.plan import (
    LAST_LOOK_GRACE_SECONDS,
    POST_PROMOTION_CONDITION,
    Observed,
    Plan,
    TrafficSplit,
    UndoRequest,
    decide,
    post_promotion_window,
    stage_to_check,
    undo_target,
)
from tests.unit.test_plan_undo import spec_of as undo_spec_of

T0 = datetime(2026, 12, 1, 3, 0, tzinfo=UTC)
ON_V2 = {"v1": 0, "v2": 100}
ON_V1 = {"v1": 100, "v2": 0}
ON_V1_AND_V2 = {"v1": 80, "v2": 20}
GUARDRAIL = {"name": "errors", "preset": "error-rate", "comparison": {"max": 0.01}}
BROKEN = (
    "errors failed 1 time(s), more than failureLimit 0: look 4: v2 3.1% of 2400: 3.1% is beyond max 0.01 "
    "(interval 2.4%-3.9%)"
)


def spec_of(**extra: Any) -> ModelRolloutSpec:
    """The undo tests' rollout (rollbackWindow 1h), one step, measured for 30 min after promotion."""
    return undo_spec_of(
        **{"steps": [{"setWeight": 20}], "postPromotion": {"duration": "30m", "metrics": [GUARDRAIL]}, **extra}
    )


SPEC = spec_of()


def canary() -> ModelRolloutStatus:
    """v2 at 20 %, its only step done: the next pass promotes it."""
    return ModelRolloutStatus(
        phase=Phase.PROGRESSING,
        observed_generation=1,
        stable_version="v1",
        candidate_version="v2",
        candidate_hash=SPEC.candidate_hash(),
        current_step_index=1,
        current_weight=20,
        step_started_at=format_time(T0 - timedelta(minutes=5)),
        progress_at=format_time(T0 - timedelta(minutes=5)),
        route_weights=ON_V1_AND_V2,
    )


def running(*, started: datetime = T0 - timedelta(minutes=10), **kw: Any) -> ModelRolloutStatus:
    """v2 promoted `started`, replacing v1; its post-promotion analysis runs for 30 minutes."""
    return ModelRolloutStatus(
        phase=Phase.PROMOTED,
        observed_generation=1,
        stable_version="v2",
        candidate_version="v2",
        candidate_hash=SPEC.candidate_hash(),
        current_step_index=1,
        current_weight=100,
        route_weights=ON_V2,
        promoted_at=format_time(started),
        previous_stable_version="v1",
        scale_down_at=format_time(started + timedelta(hours=1)),
        scale_down_target="v1",
        post_promotion=PostPromotionRecord(
            version="v2",
            state=PostPromotionState.RUNNING,
            started_at=format_time(started),
            ends_at=format_time(started + timedelta(minutes=30)),
        ),
        **kw,
    )


def analysis(verdict: Verdict, message: str = "", **looks: Any) -> CheckOutcome:
    return CheckOutcome(verdict=verdict, message=message, requeue_after=60.0, status_fields={"analysis": looks})


def observed(weights: dict[str, int], *, at: float = 0, **kw: Any) -> Observed:
    return Observed(now=T0 + timedelta(seconds=at), generation=1, route_weights=weights, **kw)


def run(status: ModelRolloutStatus, obs: Observed, spec: ModelRolloutSpec = SPEC) -> Plan:
    return decide(spec=spec, spec_error=None, status=status, observed=obs)


def reasons(plan: Plan) -> list[str]:
    return [event.reason for event in plan.events]


def state_of(plan: Plan) -> PostPromotionState | None:
    return plan.status.post_promotion.state if plan.status.post_promotion is not None else None


def condition(plan: Plan) -> tuple[str, str] | None:
    found = next((c for c in plan.status.conditions if c.type == POST_PROMOTION_CONDITION), None)
    return None if found is None else (found.status, found.reason)


# It starts once the route shows the promotion ------------------------------------------------------


def test_given_post_promotion_when_the_route_shows_the_promotion_then_the_promoted_version_is_measured_alone() -> None:
    # given v2's last step done, the route at 100 % on v2
    plan = run(canary(), observed(ON_V2))
    # then v2 is promoted, and measured for 30 minutes from now, phase still Promoted
    assert plan.status.phase == Phase.PROMOTED and plan.traffic == TrafficSplit.all_to("v2")
    record = plan.status.post_promotion
    assert record is not None and record.state == PostPromotionState.RUNNING and record.version == "v2"
    assert (record.started_at, record.ends_at) == (format_time(T0), format_time(T0 + timedelta(minutes=30)))
    assert reasons(plan) == ["Promoted", "PostPromotionStarted"]
    assert condition(plan) == ("True", "Running")
    assert "post-promotion analysis until" in plan.status.message
    assert stage_to_check(plan.status) == "analysis" and plan.requeue_after == 0
    window = post_promotion_window(SPEC, plan.status)
    assert window is not None and window.seconds == 1800 and window.index == len(SPEC.steps)


def test_given_the_route_not_yet_at_100_when_deciding_then_nothing_is_measured_after_promotion() -> None:
    plan = run(canary(), observed(ON_V1_AND_V2))
    assert plan.status.phase == Phase.PROGRESSING and plan.status.post_promotion is None


def test_given_no_post_promotion_when_promoted_then_none_runs_and_no_checker_runs_after() -> None:
    spec = spec_of(postPromotion=None)
    plan = run(replace(canary(), candidate_hash=spec.candidate_hash()), observed(ON_V2), spec)
    assert plan.status.phase == Phase.PROMOTED and plan.status.post_promotion is None
    assert stage_to_check(plan.status) is None


# While it runs --------------------------------------------------------------------------------------


def test_given_a_running_analysis_when_a_look_passes_mid_duration_then_it_keeps_running_on_v2() -> None:
    plan = run(running(), observed(ON_V2, analysis=analysis(Verdict.RUNNING, "errors: v2 0.4% of 900", runs=[1])))
    assert plan.status.phase == Phase.PROMOTED and plan.traffic == TrafficSplit.all_to("v2")
    record = plan.status.post_promotion
    assert record is not None and record.state == PostPromotionState.RUNNING
    assert record.analysis == {"runs": [1]} and record.message == "errors: v2 0.4% of 900"
    assert "until" in plan.status.message and "errors: v2 0.4% of 900" in plan.status.message
    assert reasons(plan) == [] and plan.requeue_after == 60.0


# A broken guardrail undoes the promotion -----------------------------------------------------------


def test_given_a_broken_guardrail_when_v1_is_ready_then_the_undo_sends_it_all_traffic_in_one_write() -> None:
    obs = observed(ON_V2, analysis=analysis(Verdict.FAILED, BROKEN, measurements=[{"verdict": "Failed"}]))
    assert undo_target(spec=SPEC, status=running(), observed=obs) == "v1"
    plan = run(running(), replace(obs, undo_target_ready=True))
    # then the analysis failed, naming the metric, its value and the bound, and the undo is under way
    assert state_of(plan) == PostPromotionState.FAILED and condition(plan) == ("False", "Failed")
    assert reasons(plan) == ["PostPromotionFailed"]
    assert "errors" in plan.events[0].message and "beyond max 0.01" in plan.events[0].message
    undo = plan.status.undo
    assert undo is not None and undo.state == UndoState.PENDING and (undo.from_version, undo.to_version) == ("v2", "v1")
    assert "beyond max 0.01" in undo.cause
    assert plan.traffic == TrafficSplit.all_to("v1")
    # when the route shows v1 (the next pass; the analysis no longer runs)
    assert stage_to_check(plan.status) is None
    done = run(plan.status, observed(ON_V1, at=2, undo_target_ready=True))
    assert done.status.phase == Phase.ROLLED_BACK and done.status.stable_version == "v1"
    assert done.status.undo is not None and done.status.undo.state == UndoState.DONE
    assert reasons(done) == ["Undo"] and "beyond max 0.01" in done.events[0].message


def test_given_a_broken_guardrail_when_v1_was_scaled_down_then_it_is_scaled_up_before_any_traffic_moves() -> None:
    plan = run(running(), observed(ON_V2, analysis=analysis(Verdict.FAILED, BROKEN), undo_target_ready=False))
    assert state_of(plan) == PostPromotionState.FAILED
    assert plan.scale_up_version == "v1" and plan.traffic == TrafficSplit.all_to("v2")
    assert reasons(plan) == ["PostPromotionFailed", "UndoPending"]


def test_given_a_failed_analysis_when_passes_run_again_then_the_promotion_is_undone_once() -> None:
    first = run(running(), observed(ON_V2, analysis=analysis(Verdict.FAILED, BROKEN), undo_target_ready=True))
    done = run(first.status, observed(ON_V1, at=2, undo_target_ready=True))
    # a restarted controller, an old analysis outcome, the same stored status: nothing new
    again = run(done.status, observed(ON_V1, at=4, analysis=analysis(Verdict.FAILED, BROKEN)))
    assert again.status.undo == done.status.undo and again.traffic == TrafficSplit.all_to("v1")
    assert "PostPromotionFailed" not in reasons(again) and "Undo" not in reasons(again)


def test_given_a_broken_guardrail_when_the_undo_is_refused_then_it_is_recorded_once_and_not_asked_again() -> None:
    spec = spec_of(
        versions=[{"version": v, "backend": {"service": f"iris-{v}", "port": 80}} for v in ("v2", "v3")],
        baseline="v3",
    )
    status = replace(running(), candidate_hash=spec.candidate_hash())
    plan = run(status, observed({"v2": 100, "v3": 0}, analysis=analysis(Verdict.FAILED, BROKEN)), spec)
    assert state_of(plan) == PostPromotionState.FAILED and reasons(plan) == ["PostPromotionFailed", "UndoRefused"]
    again = run(plan.status, observed({"v2": 100, "v3": 0}, at=2, analysis=analysis(Verdict.FAILED, BROKEN)), spec)
    assert reasons(again) == [] and again.status.phase == Phase.PROMOTED


def test_given_an_undo_by_guardrail_when_notified_then_the_undo_names_the_metric_and_its_value() -> None:
    looks = {"measurements": [{"metric": "errors", "verdict": "Failed", "candidateValue": 0.031, "reason": "beyond"}]}
    first = run(running(), observed(ON_V2, analysis=analysis(Verdict.FAILED, BROKEN, **looks), undo_target_ready=True))
    done = run(first.status, observed(ON_V1, at=2, undo_target_ready=True))
    event = done.events[0]
    recorded = RecordedEvent(
        name="iris.undo", type=event.type.value, reason=event.reason, message=event.message, time=format_time(T0)
    )
    rollout = {"metadata": {"name": "iris", "namespace": "ml", "uid": "u"}, "spec": {"model": "iris"}}
    notification = notification_for(rollout=rollout, event=recorded, before=first.status, after=done.status)
    assert notification is not None and notification.kind == Kind.UNDO
    assert notification.cause == MetricCause(metric="errors", candidate=0.031, baseline=None, detail="beyond")


# The duration over ---------------------------------------------------------------------------------


def test_given_the_duration_over_when_the_last_look_passed_then_it_passed_and_nothing_is_undone() -> None:
    at = 20 * 60  # 30 minutes after the promotion
    plan = run(running(), observed(ON_V2, at=at, analysis=analysis(Verdict.SUCCESSFUL, "errors: within")))
    assert state_of(plan) == PostPromotionState.PASSED and condition(plan) == ("True", "Passed")
    assert reasons(plan) == ["PostPromotionPassed"] and plan.status.undo is None
    assert plan.status.phase == Phase.PROMOTED and plan.traffic == TrafficSplit.all_to("v2")
    assert stage_to_check(plan.status) is None
    # and v1 is still scaled down at the end of the rollback window, as without postPromotion
    assert plan.status.scale_down_target == "v1" and plan.scale_down_version is None


def test_given_the_duration_over_when_the_last_look_could_not_judge_then_it_is_inconclusive_not_undone() -> None:
    at = 20 * 60
    outcome = analysis(Verdict.INCONCLUSIVE, "errors: no data for version v2")
    plan = run(running(), observed(ON_V2, at=at, analysis=outcome))
    assert state_of(plan) == PostPromotionState.INCONCLUSIVE and condition(plan) == ("False", "Inconclusive")
    assert reasons(plan) == ["PostPromotionInconclusive"] and plan.events[0].type.value == "Warning"
    assert plan.status.undo is None and plan.traffic == TrafficSplit.all_to("v2")


def test_given_the_duration_over_when_the_last_look_is_still_being_read_then_it_waits_for_it() -> None:
    plan = run(running(), observed(ON_V2, at=20 * 60 + 5, analysis=analysis(Verdict.RUNNING, "reading")))
    assert state_of(plan) == PostPromotionState.RUNNING and reasons(plan) == []


def test_given_no_look_long_after_the_duration_when_deciding_then_it_ends_inconclusive() -> None:
    plan = run(running(), observed(ON_V2, at=20 * 60 + LAST_LOOK_GRACE_SECONDS + 1))
    assert state_of(plan) == PostPromotionState.INCONCLUSIVE and plan.status.undo is None


# What ends it early --------------------------------------------------------------------------------


def test_given_a_running_analysis_when_a_new_candidate_is_declared_then_it_is_abandoned() -> None:
    spec = spec_of(candidate="v3", baseline="v1")
    plan = decide(spec=spec, spec_error=None, status=running(), observed=replace(observed(ON_V2), generation=2))
    assert plan.status.phase == Phase.PENDING
    assert state_of(plan) == PostPromotionState.ABANDONED and "PostPromotionAbandoned" in reasons(plan)
    assert stage_to_check(plan.status) == "gates"


def test_given_a_running_analysis_when_a_person_undoes_then_it_is_abandoned_for_the_undo() -> None:
    request = UndoRequest(token="incident-7")
    plan = run(running(), observed(ON_V2, undo_request=request, undo_target_ready=True))
    assert state_of(plan) == PostPromotionState.ABANDONED and condition(plan) == ("False", "Abandoned")
    assert plan.status.undo is not None and plan.status.undo.cause == "annotation 'incident-7'"
    assert plan.traffic == TrafficSplit.all_to("v1")


def test_given_a_running_analysis_when_post_promotion_is_removed_from_the_spec_then_it_is_abandoned() -> None:
    plan = run(running(), observed(ON_V2), spec_of(postPromotion=None))
    assert state_of(plan) == PostPromotionState.ABANDONED and plan.status.undo is None


def test_given_a_running_analysis_when_the_spec_cannot_be_acted_on_then_it_is_abandoned_on_v2() -> None:
    error = "spec.postPromotion.metrics[0]: after promotion no baseline serves; give max or min"
    plan = decide(spec=None, spec_error=error, status=running(), observed=replace(observed(ON_V2), generation=2))
    assert plan.status.phase == Phase.FAILED and plan.traffic == TrafficSplit.all_to("v2")
    assert state_of(plan) == PostPromotionState.ABANDONED and stage_to_check(plan.status) is None


# Restart safety --------------------------------------------------------------------------------------


def test_given_the_stored_status_when_a_restarted_controller_decides_then_it_resumes_with_the_same_times() -> None:
    status = ModelRolloutStatus.from_json(running().to_json())
    assert status.post_promotion == running().post_promotion
    plan = run(status, observed(ON_V2, at=30, analysis=analysis(Verdict.RUNNING, "errors: v2 0.4% of 900")))
    assert plan.status.post_promotion is not None
    assert plan.status.post_promotion.ends_at == format_time(T0 + timedelta(minutes=20))
    assert plan.traffic == TrafficSplit.all_to("v2")
