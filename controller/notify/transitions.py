"""Which of a rollout's Events are transitions people hear about, and what each notification says.

Pure: the reconcile pass records its Events in status under names that stay the same whenever they
are sent again (`controller.reconcile`), and calls `notification_for` for each one it hands over.
The Events of these reasons are the transitions a notification is sent for:

| Event reason | kind |
|---|---|
| Promoted | Promoted |
| AnalysisFailed, GateFailed | RolledBack (AnalysisFailed names the failing metric with both values) |
| Aborted | Aborted |
| ProgressDeadlineExceeded, InvalidSpec | Failed |
| Paused (a pause step without a duration), Inconclusive (held for a person) | PausedForPerson |
| IncidentRollback | IncidentRollback (names the alert, from status.incident) |
| Undo | Undo (names the alert that undid the promotion, or the metric whose guardrail broke after it) |

A `Paused` Event of a person's own pause action is no news to anyone: no notification.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from controller.api import (
    IncidentRecord,
    IncidentResponse,
    ModelRolloutStatus,
    PostPromotionState,
    RecordedEvent,
    parse_time,
)
from controller.notify.notification import AlertCause, Cause, Kind, MetricCause, Notification

REASON_KINDS: Mapping[str, Kind] = {
    "Promoted": Kind.PROMOTED,
    "AnalysisFailed": Kind.ROLLED_BACK,
    "GateFailed": Kind.ROLLED_BACK,
    "Aborted": Kind.ABORTED,
    "ProgressDeadlineExceeded": Kind.FAILED,
    "InvalidSpec": Kind.FAILED,
    "Paused": Kind.PAUSED_FOR_PERSON,
    "Inconclusive": Kind.PAUSED_FOR_PERSON,
    "IncidentRollback": Kind.INCIDENT_ROLLBACK,
    "Undo": Kind.UNDO,
}
"""Event reason -> notification kind (controller.plan records these Events)."""
FAILED_VERDICT = "Failed"
"""status.analysis.measurements[].verdict of a measurement that counts against the candidate."""


def kind_of(event: RecordedEvent, *, status: ModelRolloutStatus) -> Kind | None:
    """The notification kind of a recorded Event, None for an Event nobody is told about. `status`
    is the rollout's as the pass that recorded the Event left it."""
    if event.reason == "Paused" and status.paused_by_user:
        # The person who paused it knows: only a pause step waits for someone who may not.
        return None
    return REASON_KINDS.get(event.reason)


def notification_for(
    *,
    rollout: Mapping[str, Any],
    event: RecordedEvent,
    before: ModelRolloutStatus | None,
    after: ModelRolloutStatus,
) -> Notification | None:
    """The notification of `event`, recorded by the pass that turned `before` into `after` (the
    rollout's stored status); None when the Event is no transition people hear about. `before` is
    None for Events a previous controller recorded: the baseline of a promotion is then the spec's."""
    kind = kind_of(event, status=after)
    when = parse_time(event.time)
    if kind is None or when is None:
        return None
    meta = rollout["metadata"]
    spec = rollout.get("spec") or {}
    previous = before.stable_version if before is not None else None
    if previous is None and kind != Kind.PROMOTED:
        previous = after.stable_version
    return Notification(
        kind=kind,
        namespace=meta["namespace"],
        rollout=meta["name"],
        model=str(spec.get("model") or ""),
        baseline=previous or str(spec.get("baseline") or ""),
        candidate=after.candidate_version or str(spec.get("candidate") or ""),
        candidate_weight=after.current_weight,
        reason=event.reason,
        message=event.message,
        cause=cause_of(event, status=after),
        time=when,
        id=event.name,
        uid=str(meta.get("uid") or ""),
    )


def cause_of(event: RecordedEvent, *, status: ModelRolloutStatus) -> Cause | None:
    """What made the controller act, as the status the pass left records it: the failing metric of
    an AnalysisFailed, the alert of an IncidentRollback; None for the rest."""
    if event.reason == "AnalysisFailed":
        return failing_metric(status)
    if event.reason == "IncidentRollback" and status.incident is not None:
        return alert_cause(status.incident)
    if event.reason == "Undo" and _undone_by_guardrail(status):
        assert status.post_promotion is not None
        return failing_measurement(status.post_promotion.analysis)
    if event.reason == "Undo" and status.incident is not None and status.incident.response == IncidentResponse.UNDONE:
        undone_by_alert = status.undo is not None and not status.undo.cause.startswith("annotation")
        return alert_cause(status.incident) if undone_by_alert else None
    return None


def alert_cause(record: IncidentRecord) -> AlertCause | None:
    """The alert status.incident records, as a notification names it; None without its start time."""
    starts_at = parse_time(record.starts_at)
    if starts_at is None:
        return None
    return AlertCause(
        name=record.alertname,
        labels=dict(record.labels),
        starts_at=starts_at,
        summary=record.summary,
        generator_url=record.generator_url,
        fingerprint=record.fingerprint,
    )


def _undone_by_guardrail(status: ModelRolloutStatus) -> bool:
    """Whether the last undo is the one the analysis after the promotion started (a broken guardrail)."""
    record, undo = status.post_promotion, status.undo
    failed = record is not None and record.state == PostPromotionState.FAILED
    return failed and undo is not None and record is not None and undo.cause == record.message


def failing_metric(status: ModelRolloutStatus) -> MetricCause | None:
    """The metric whose latest failed measurement in status.analysis made the analysis fail, with
    the candidate's and the baseline's values and the judge's words; None when none is recorded."""
    return failing_measurement(status.extra.get("analysis"))


def failing_measurement(analysis: object) -> MetricCause | None:
    """The metric of the latest failed measurement of `analysis` (a status.analysis), with its values."""
    measurements = analysis.get("measurements") if isinstance(analysis, Mapping) else None
    failed = [
        m
        for m in (measurements if isinstance(measurements, list) else [])
        if isinstance(m, Mapping) and m.get("verdict") == FAILED_VERDICT
    ]
    if not failed:
        return None
    latest = max(failed, key=lambda m: str(m.get("time") or ""))
    return MetricCause(
        metric=str(latest.get("metric") or ""),
        candidate=_number(latest.get("candidateValue")),
        baseline=_number(latest.get("baselineValue")),
        detail=str(latest.get("reason") or ""),
    )


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
