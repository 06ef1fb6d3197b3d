"""Which recorded Events become notifications, and what they say: pure, from the stored rollout."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from controller.api import ModelRolloutStatus, Phase, RecordedEvent
from controller.notify import Kind, MetricCause
from controller.notify.transitions import REASON_KINDS, failing_metric, notification_for

AT = "2026-11-30T10:00:05.250Z"
ROLLOUT: dict[str, Any] = {
    "metadata": {"namespace": "ml", "name": "iris", "uid": "u-1"},
    "spec": {"model": "iris", "baseline": "v1", "candidate": "v3"},
}


def event(reason: str, message: str = "it happened", name: str = "iris.0123456789abcdef") -> RecordedEvent:
    return RecordedEvent(name=name, type="Normal", reason=reason, message=message, time=AT)


def measurement(metric: str, verdict: str, time: str, candidate: float, baseline: float) -> dict[str, Any]:
    return {
        "metric": metric,
        "verdict": verdict,
        "time": time,
        "candidateValue": candidate,
        "baselineValue": baseline,
        "reason": f"{metric}: candidate {candidate} vs baseline {baseline}",
    }


def test_a_rollback_on_analysis_names_the_latest_failed_metric_with_both_values() -> None:
    # given a rolled-back status whose analysis holds an earlier tolerated failure and the deciding one
    after = ModelRolloutStatus(
        phase=Phase.ROLLED_BACK,
        stable_version="v2",
        candidate_version="v3",
        current_weight=0,
        extra={
            "analysis": {
                "measurements": [
                    measurement("p99", "Failed", "2026-11-30T10:00:01.000Z", 0.4, 0.2),
                    measurement("errors", "Successful", "2026-11-30T10:00:04.000Z", 0.0, 0.0),
                    measurement("errors", "Failed", "2026-11-30T10:00:05.000Z", 0.2, 0.01),
                ]
            }
        },
    )

    # when the AnalysisFailed Event of that pass is turned into a notification
    notification = notification_for(
        rollout=ROLLOUT, event=event("AnalysisFailed", "errors failed"), before=after, after=after
    )

    # then it is a RolledBack notification of v3 against the stable v2, caused by errors with both values
    assert notification is not None
    assert (notification.kind, notification.baseline, notification.candidate) == (Kind.ROLLED_BACK, "v2", "v3")
    assert notification.candidate_weight == 0
    assert notification.cause == MetricCause(
        metric="errors", candidate=0.2, baseline=0.01, detail="errors: candidate 0.2 vs baseline 0.01"
    )
    assert (notification.id, notification.uid, notification.reason) == (
        "iris.0123456789abcdef",
        "u-1",
        "AnalysisFailed",
    )
    assert notification.time == datetime(2026, 11, 30, 10, 0, 5, 250000, tzinfo=UTC)
    assert notification.to_json()["id"] == "iris.0123456789abcdef"


def test_a_promotion_names_the_version_it_replaced_from_the_status_before_the_pass() -> None:
    # given a pass that promoted v3 over v2
    before = ModelRolloutStatus(phase=Phase.PROGRESSING, stable_version="v2", candidate_version="v3", current_weight=50)
    after = ModelRolloutStatus(phase=Phase.PROMOTED, stable_version="v3", candidate_version="v3", current_weight=100)

    # when its Promoted Event is turned into a notification, with and without the status before
    seen = notification_for(rollout=ROLLOUT, event=event("Promoted"), before=before, after=after)
    replayed = notification_for(rollout=ROLLOUT, event=event("Promoted"), before=None, after=after)

    # then v2 is the baseline; replayed by a new controller, which never saw v2 as stable, the spec's
    assert seen is not None and replayed is not None
    assert (seen.kind, seen.baseline, seen.candidate, seen.candidate_weight) == (Kind.PROMOTED, "v2", "v3", 100)
    assert seen.cause is None
    assert replayed.baseline == "v1"


def test_a_pause_step_notifies_but_a_persons_own_pause_does_not() -> None:
    # given the same Paused Event reason, once from a pause step and once from a person's action
    step = ModelRolloutStatus(phase=Phase.PAUSED, paused_by_user=False)
    person = ModelRolloutStatus(phase=Phase.PAUSED, paused_by_user=True)

    # when each is turned into a notification
    waiting = notification_for(rollout=ROLLOUT, event=event("Paused"), before=None, after=step)
    own = notification_for(rollout=ROLLOUT, event=event("Paused"), before=None, after=person)

    # then only the pause step waits for a person who has to be told
    assert waiting is not None and waiting.kind == Kind.PAUSED_FOR_PERSON
    assert own is None


def test_events_that_are_no_transition_make_no_notification() -> None:
    after = ModelRolloutStatus(phase=Phase.PROGRESSING)
    for reason in ("RolloutStarted", "StepCompleted", "GatesPassed", "TrafficDrift", "InvalidReference"):
        assert notification_for(rollout=ROLLOUT, event=event(reason), before=after, after=after) is None, reason


def test_every_kind_is_reached_by_a_transition() -> None:
    assert set(REASON_KINDS.values()) == set(Kind)


def test_a_rollback_without_a_failed_measurement_has_no_cause() -> None:
    # a gate failure, or a status whose measurements were cut: the message still says why
    assert failing_metric(ModelRolloutStatus(extra={"analysis": {"measurements": []}})) is None
    assert failing_metric(ModelRolloutStatus(extra={"analysis": "not an object"})) is None
