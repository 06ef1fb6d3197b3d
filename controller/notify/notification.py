"""What the controller tells people: one `Notification` per event worth a message.

A notification is a value, made by whoever decides (the reconcile pass) and rendered by each sink
(`controller.notify.sinks`). It carries what an on-call person needs without opening the cluster:
which rollout, which versions, what happened and why, and for a rollback the evidence that caused
it (the metric with both values, or the alert with its labels), as Argo Rollouts and Flagger users
asked for (argo-rollouts #1422, #3721; flagger #699, #1486).

`to_json()` is the generic webhook's body; its shape is versioned by `schema` so that receivers can
tell a later change apart.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from controller.incidents.alerts import Alert

SCHEMA = "rollouts.mlops.dev/notification/v1"
"""The `schema` field of the JSON body; a new version for any change a receiver could trip on."""


class Kind(StrEnum):
    """Why a notification is sent; the values are the Event reasons of the same transitions."""

    PROMOTED = "Promoted"
    """The candidate serves all traffic and is the new stable version."""
    ROLLED_BACK = "RolledBack"
    """Analysis (or a gate) failed: traffic went back to the baseline."""
    ABORTED = "Aborted"
    """A person aborted the rollout: traffic went back to the baseline."""
    FAILED = "Failed"
    """The rollout cannot go on (a deadline passed, a reference is broken): traffic went back."""
    PAUSED_FOR_PERSON = "PausedForPerson"
    """An indefinite pause step: a person must resume (or abort) it."""
    INCIDENT_ROLLBACK = "IncidentRollback"
    """A firing alert matched the rollout and traffic went back to the baseline."""
    UNDO = "Undo"
    """A promotion was undone (by a person or an alert): traffic went back to the previous version."""


@dataclass(frozen=True, kw_only=True)
class MetricCause:
    """The analysis metric that decided, with the values it compared."""

    metric: str
    """The metric's name in the rollout's analysis."""
    candidate: float | None = None
    """The candidate's value."""
    baseline: float | None = None
    """The baseline's value; None for an absolute guardrail (after promotion no baseline serves)."""
    limit: float | None = None
    """The threshold or tolerance it was held to, if the metric has one."""
    detail: str = ""
    """The judge's own words, e.g. `error rate 2.1x the baseline's, e-value 41 > 20`."""

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "metric",
            "metric": self.metric,
            "candidate": self.candidate,
            "baseline": self.baseline,
            "limit": self.limit,
            "detail": self.detail,
        }


@dataclass(frozen=True, kw_only=True)
class AlertCause:
    """The Alertmanager alert that matched the rollout."""

    name: str
    """Its `alertname`."""
    labels: Mapping[str, str] = field(default_factory=dict)
    starts_at: datetime
    """When it started firing."""
    summary: str = ""
    """Its `summary` annotation (or `description`), for people."""
    generator_url: str = ""
    """The rule's expression in Prometheus."""
    fingerprint: str = ""

    @classmethod
    def from_alert(cls, alert: Alert) -> AlertCause:
        annotations = alert.annotations
        return cls(
            name=alert.name,
            labels=dict(alert.labels),
            starts_at=alert.starts_at,
            summary=annotations.get("summary") or annotations.get("description", ""),
            generator_url=alert.generator_url,
            fingerprint=alert.fingerprint,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "alert",
            "name": self.name,
            "labels": dict(sorted(self.labels.items())),
            "startsAt": _rfc3339(self.starts_at),
            "summary": self.summary,
            "generatorURL": self.generator_url,
            "fingerprint": self.fingerprint,
        }


Cause = MetricCause | AlertCause


@dataclass(frozen=True, kw_only=True)
class Notification:
    """One event of one rollout, for people."""

    kind: Kind
    namespace: str
    rollout: str
    """The ModelRollout's name."""
    model: str
    """`spec.model`."""
    baseline: str
    """The version the rollout started from, which traffic returns to on a rollback or an undo."""
    candidate: str
    """The version the rollout ships (for an undo: the promoted version being undone)."""
    candidate_weight: int | None = None
    """The candidate's share of traffic, in percent, after the event; None when unknown."""
    reason: str = ""
    """The machine-readable reason, as in the rollout's condition (e.g. `AnalysisFailed`)."""
    message: str = ""
    """One or two sentences for people, as in the rollout's Event."""
    cause: Cause | None = None
    """The metric or alert that caused it, with its values; None when a person or a deadline did."""
    time: datetime
    """When it happened (timezone-aware)."""
    id: str = ""
    """The transition's Event name: the same on every delivery of one transition (a controller
    that restarted may send it again), so a receiver can drop a repeat."""
    uid: str = ""
    """The rollout's uid, for reporting a failed delivery as an Event on it; not sent."""

    def __post_init__(self) -> None:
        if self.time.tzinfo is None:
            raise ValueError("Notification.time must be timezone-aware")

    @property
    def subject(self) -> str:
        """`default/iris`: the rollout, as kubectl names it."""
        return f"{self.namespace}/{self.rollout}"

    def to_json(self) -> dict[str, Any]:
        """The generic webhook's body."""
        return {
            "schema": SCHEMA,
            "id": self.id,
            "kind": self.kind.value,
            "namespace": self.namespace,
            "rollout": self.rollout,
            "model": self.model,
            "versions": {"baseline": self.baseline, "candidate": self.candidate},
            "candidateWeight": self.candidate_weight,
            "reason": self.reason,
            "message": self.message,
            "cause": None if self.cause is None else self.cause.to_json(),
            "time": _rfc3339(self.time),
        }


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
