"""Alertmanager's webhook payload (`webhook_config`, payload version 4) as typed values.

Parsing is pure: it takes the decoded JSON and returns an `AlertGroup`, or raises `InvalidPayload`
naming the first field that is wrong (`alerts[2].labels.namespace: must be a string`), so that
whoever configured the sender can fix it from the receiver's 400 answer alone. Only what the
controller acts on is required (`version`, `alerts` and, per alert, `status`, `labels` and
`startsAt`); the other documented fields are optional but must have their documented type when
present, and unknown fields are ignored (Alertmanager adds fields within a payload version).

The payload, as Alertmanager 0.25 sends it (https://prometheus.io/docs/alerting/latest/configuration/#webhook_config):

    {"version": "4", "groupKey": "...", "truncatedAlerts": 0, "status": "firing|resolved",
     "receiver": "...", "groupLabels": {...}, "commonLabels": {...}, "commonAnnotations": {...},
     "externalURL": "...",
     "alerts": [{"status": "firing|resolved", "labels": {...}, "annotations": {...},
                 "startsAt": "<rfc3339>", "endsAt": "<rfc3339>", "generatorURL": "...",
                 "fingerprint": "..."}]}

Alertmanager zeroes `endsAt` (`0001-01-01T00:00:00Z`) for an alert that still fires; that reads as
no end (None).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

PAYLOAD_VERSION = "4"
"""The only webhook payload version there is (Alertmanager 0.x); another one is refused."""

_ZERO_TIME_YEAR = 1
"""Go's zero time.Time is year 1: Alertmanager's way of writing "no end yet"."""

_RFC3339 = re.compile(
    r"(?P<date>\d{4}-\d{2}-\d{2})[Tt ](?P<time>\d{2}:\d{2}:\d{2})(?:\.(?P<fraction>\d+))?(?P<zone>[Zz]|[+-]\d{2}:\d{2})"
)


class InvalidPayload(ValueError):
    """The body is not a version 4 webhook payload; `field` says where (`alerts[0].startsAt`).

    A ValueError: the request, not the receiver, is wrong, and sending it again will not help."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}" if field else problem)
        self.field = field
        """The JSON path of the offending field, empty for the body as a whole."""
        self.problem = problem
        """What is wrong with it."""


class AlertStatus(StrEnum):
    FIRING = "firing"
    RESOLVED = "resolved"


@dataclass(frozen=True, kw_only=True)
class Alert:
    """One alert of a notification."""

    status: AlertStatus
    """Whether it fires or was resolved when Alertmanager sent it."""
    labels: Mapping[str, str]
    """Its identity: `alertname`, and for this controller `namespace`, `model`, maybe `rollout`."""
    annotations: Mapping[str, str] = field(default_factory=dict)
    """Free text (`summary`, `description`, `runbook_url`), shown to people, never matched."""
    starts_at: datetime
    """When it started firing (timezone-aware)."""
    ends_at: datetime | None = None
    """When it stopped or is presumed to stop; None while it fires with no end in sight."""
    fingerprint: str
    """Alertmanager's identity of the label set; derived from the labels when the sender gave none."""
    generator_url: str = ""
    """Link to the rule's expression in the Prometheus that fired it."""

    @property
    def name(self) -> str:
        """The `alertname` label (empty when it has none), what people call the alert."""
        return self.labels.get("alertname", "")

    def expired(self, now: datetime) -> bool:
        """Its end time has passed: it no longer fires, whatever its status said."""
        return self.ends_at is not None and self.ends_at <= now


@dataclass(frozen=True, kw_only=True)
class AlertGroup:
    """One webhook notification: a group of alerts that share the route's `group_by` labels."""

    alerts: tuple[Alert, ...]
    status: AlertStatus
    """`firing` when at least one alert of the group fires."""
    receiver: str = ""
    """The name of the Alertmanager receiver that sent it."""
    group_key: str = ""
    """Identifies the group within Alertmanager (route and group labels)."""
    group_labels: Mapping[str, str] = field(default_factory=dict)
    common_labels: Mapping[str, str] = field(default_factory=dict)
    common_annotations: Mapping[str, str] = field(default_factory=dict)
    external_url: str = ""
    """Link back to the Alertmanager that sent it."""
    truncated_alerts: int = 0
    """Alerts left out by the receiver's `max_alerts`; they are not in `alerts`."""


def parse_webhook(payload: object) -> AlertGroup:
    """The group in a decoded webhook body. Raises InvalidPayload naming the first wrong field."""
    body = _object(payload, "")
    version = body.get("version")
    if version is None:
        raise InvalidPayload("version", "missing")
    if version != PAYLOAD_VERSION:
        raise InvalidPayload("version", f"must be {PAYLOAD_VERSION!r}, not {version!r}")
    raw_alerts = body.get("alerts")
    if not isinstance(raw_alerts, list):
        raise InvalidPayload("alerts", "missing" if raw_alerts is None else "must be a list")
    alerts = tuple(_alert(item, f"alerts[{index}]") for index, item in enumerate(raw_alerts))
    truncated = body.get("truncatedAlerts", 0)
    if not isinstance(truncated, int) or isinstance(truncated, bool) or truncated < 0:
        raise InvalidPayload("truncatedAlerts", "must be a whole number of at least 0")
    status = (
        _status(body["status"], "status")
        if "status" in body
        else (AlertStatus.FIRING if any(a.status == AlertStatus.FIRING for a in alerts) else AlertStatus.RESOLVED)
    )
    return AlertGroup(
        alerts=alerts,
        status=status,
        receiver=_optional_string(body, "receiver", ""),
        group_key=_optional_string(body, "groupKey", ""),
        group_labels=_strings(body.get("groupLabels", {}), "groupLabels"),
        common_labels=_strings(body.get("commonLabels", {}), "commonLabels"),
        common_annotations=_strings(body.get("commonAnnotations", {}), "commonAnnotations"),
        external_url=_optional_string(body, "externalURL", ""),
        truncated_alerts=truncated,
    )


def parse_time(text: str) -> datetime:
    """An RFC 3339 time as Go writes it (up to nanoseconds, `Z` or an offset), timezone-aware.

    Python keeps microseconds, so the fraction is cut to six digits. Raises ValueError."""
    match = _RFC3339.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not an RFC 3339 time")
    fraction = (match["fraction"] or "")[:6].ljust(6, "0")
    zone = "+00:00" if match["zone"] in ("Z", "z") else match["zone"]
    return datetime.fromisoformat(f"{match['date']}T{match['time']}.{fraction}{zone}")


def label_fingerprint(labels: Mapping[str, str]) -> str:
    """A stable identity for a label set, for alerts that arrive without Alertmanager's fingerprint.

    Not Alertmanager's own hash (FNV-64a); it only has to tell label sets apart within this
    receiver, and the names are prefixed so they never collide with Alertmanager's 16 hex digits."""
    digest = hashlib.sha256()
    for key in sorted(labels):
        digest.update(key.encode() + b"\xff" + labels[key].encode() + b"\xff")
    return "labels-" + digest.hexdigest()[:16]


def _alert(item: object, path: str) -> Alert:
    raw = _object(item, path)
    if "status" not in raw:
        raise InvalidPayload(f"{path}.status", "missing")
    status = _status(raw["status"], f"{path}.status")
    if "labels" not in raw:
        raise InvalidPayload(f"{path}.labels", "missing")
    labels = _strings(raw["labels"], f"{path}.labels")
    if not labels:
        raise InvalidPayload(f"{path}.labels", "must name at least one label")
    starts_at = _time(raw.get("startsAt"), f"{path}.startsAt", required=True)
    assert starts_at is not None
    fingerprint = _optional_string(raw, "fingerprint", "", path=path) or label_fingerprint(labels)
    return Alert(
        status=status,
        labels=labels,
        annotations=_strings(raw.get("annotations", {}), f"{path}.annotations"),
        starts_at=starts_at,
        ends_at=_time(raw.get("endsAt"), f"{path}.endsAt", required=False),
        fingerprint=fingerprint,
        generator_url=_optional_string(raw, "generatorURL", "", path=path),
    )


def _object(value: object, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidPayload(path, f"must be a JSON object, not {_json_type(value)}")
    return value


def _status(value: object, path: str) -> AlertStatus:
    if value not in (AlertStatus.FIRING.value, AlertStatus.RESOLVED.value):
        raise InvalidPayload(path, f"must be 'firing' or 'resolved', not {value!r}")
    return AlertStatus(str(value))


def _strings(value: object, path: str) -> dict[str, str]:
    if not isinstance(value, dict):
        raise InvalidPayload(path, f"must be an object of strings, not {_json_type(value)}")
    for key, item in value.items():
        if not isinstance(item, str):
            raise InvalidPayload(f"{path}.{key}", f"must be a string, not {_json_type(item)}")
    return dict(value)


def _optional_string(raw: Mapping[str, Any], key: str, default: str, *, path: str = "") -> str:
    value = raw.get(key, default)
    if not isinstance(value, str):
        raise InvalidPayload(f"{path}.{key}" if path else key, f"must be a string, not {_json_type(value)}")
    return value


def _time(value: object, path: str, *, required: bool) -> datetime | None:
    if value is None or value == "":
        if required:
            raise InvalidPayload(path, "missing")
        return None
    if not isinstance(value, str):
        raise InvalidPayload(path, f"must be an RFC 3339 time string, not {_json_type(value)}")
    try:
        parsed = parse_time(value)
        utc = None if parsed.year == _ZERO_TIME_YEAR else parsed.astimezone(UTC)
    except (ValueError, OverflowError) as error:
        raise InvalidPayload(path, str(error)) from None
    if utc is None and required:
        raise InvalidPayload(path, "must be a real time, not Go's zero time")
    return utc


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"
