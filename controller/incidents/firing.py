"""The alerts firing now, as the receiver last heard of them, and which rollouts they name.

`FiringAlerts` is the one piece of shared state between the webhook receiver (which writes it
from its request threads) and the reconcile workers (which will read it in their passes): a dict
under a lock, keyed by Alertmanager's fingerprint, so that the many notifications Alertmanager
sends for one alert (every `group_interval` while the group changes, every `repeat_interval`
while it fires) keep one entry. A resolved alert removes it. An alert whose `endsAt` has passed
no longer fires, whatever its last status said, so it is dropped when seen (Alertmanager writes
no `endsAt` for an alert that fires, but other senders of this payload may).

Two ways an alert could otherwise stay for ever, freezing a model's rollouts:
* a late firing notification after the resolved one (Alertmanager retries a failed webhook call,
  and HA replicas each send). The registry remembers recently resolved alerts (fingerprint and
  `startsAt`) for `resolved_memory`; a firing notification of the same alert instance (same
  `startsAt`, or an earlier one) is stale and ignored. A new instance of the alert starts later.
* a lost resolved notification (the receiver was down when it was sent). With `stale_after`
  set above Alertmanager's `repeat_interval`, an alert that was not sent again within it counts
  as gone, since Alertmanager sends a firing group again at least that often.

Matching is pure (`matches`) and explained in docs/incidents.md.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from controller.incidents.alerts import Alert, AlertStatus
from controller.watch import LabelSelector

DEFAULT_MAX_FIRING_ALERTS = 10_000
"""Firing alerts kept at most; beyond it new ones are ignored (and counted), so that a sender
cannot grow the controller's memory without bound. Far above any sane number of incidents."""
DEFAULT_RESOLVED_MEMORY = timedelta(hours=1)
"""How long a resolved alert is remembered to refuse its late firing notifications: above
Alertmanager's webhook retry horizon (it gives up on a notification after its group_interval)."""
DEFAULT_MAX_RESOLVED_REMEMBERED = 10_000
"""Resolved alerts remembered at most (the oldest are forgotten first)."""

NAMESPACE_LABEL = "namespace"
MODEL_LABEL = "model"
ROLLOUT_LABEL = "rollout"


def utc_now() -> datetime:
    return datetime.now(UTC)


def matches(alert: Alert, *, namespace: str, model: str, rollout: str, selector: LabelSelector | None = None) -> bool:
    """Whether `alert` names the rollout `namespace/rollout` of `model`.

    Without a selector: the alert's `namespace` and `model` labels equal the rollout's, and its
    `rollout` label too when it has one (an alert about one rollout of a model leaves the model's
    other rollouts alone). An alert without `namespace` or `model` names no rollout.

    With a selector (the rollout's own, in its spec): the selector alone decides, over the alert's
    labels; the rollout's author opted in to exactly those alerts. Which namespaces alerts may
    come from at all is the receiver's fence, applied before anything reaches the registry."""
    if selector is not None:
        return selector.matches(alert.labels)
    labels = alert.labels
    if labels.get(NAMESPACE_LABEL) != namespace or labels.get(MODEL_LABEL) != model:
        return False
    return ROLLOUT_LABEL not in labels or labels[ROLLOUT_LABEL] == rollout


@dataclass(frozen=True, kw_only=True)
class Applied:
    """What one notification changed in the registry: counts for metrics and logs."""

    firing: int = 0
    """Firing alerts added or refreshed."""
    resolved: int = 0
    """Alerts removed because they were resolved."""
    expired: int = 0
    """Firing alerts whose `endsAt` had already passed: removed, as they no longer fire."""
    stale: int = 0
    """Firing notifications of an alert instance already resolved, ignored."""
    full: int = 0
    """New firing alerts ignored because the registry holds `max_alerts`."""


@dataclass(frozen=True)
class _Entry:
    alert: Alert
    last_seen: datetime


class FiringAlerts:
    """Thread-safe registry of the firing alerts, by fingerprint. Every method is quick (no I/O)."""

    def __init__(
        self,
        *,
        max_alerts: int = DEFAULT_MAX_FIRING_ALERTS,
        resolved_memory: timedelta = DEFAULT_RESOLVED_MEMORY,
        max_resolved: int = DEFAULT_MAX_RESOLVED_REMEMBERED,
        stale_after: timedelta | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        """`stale_after`: None keeps a firing alert until it is resolved or ends; otherwise an alert
        not sent again for that long is dropped (set it above Alertmanager's repeat_interval)."""
        if max_alerts < 1 or max_resolved < 0:
            raise ValueError("max_alerts must be at least 1 and max_resolved at least 0")
        self._max_alerts = max_alerts
        self._resolved_memory = resolved_memory
        self._max_resolved = max_resolved
        self._stale_after = stale_after
        self._clock = clock
        self._lock = threading.Lock()
        self._firing: dict[str, _Entry] = {}
        self._resolved: dict[str, tuple[datetime, datetime]] = {}
        """fingerprint -> (startsAt of the resolved instance, when it was resolved), oldest first."""

    def apply(self, alerts: Iterable[Alert], *, now: datetime | None = None) -> Applied:
        """Takes in the alerts of one notification, in order."""
        at = now or self._clock()
        firing = resolved = expired = stale = full = 0
        with self._lock:
            self._prune(at)
            for alert in alerts:
                key = alert.fingerprint
                if alert.status == AlertStatus.RESOLVED:
                    self._firing.pop(key, None)
                    self._remember_resolved(key, alert.starts_at, at)
                    resolved += 1
                elif alert.expired(at):
                    self._firing.pop(key, None)
                    expired += 1
                elif key in self._resolved and alert.starts_at <= self._resolved[key][0]:
                    stale += 1
                elif key not in self._firing and len(self._firing) >= self._max_alerts:
                    full += 1
                else:
                    self._resolved.pop(key, None)
                    self._firing[key] = _Entry(alert=alert, last_seen=at)
                    firing += 1
        return Applied(firing=firing, resolved=resolved, expired=expired, stale=stale, full=full)

    def matching(
        self,
        *,
        namespace: str,
        model: str,
        rollout: str,
        selector: LabelSelector | None = None,
        now: datetime | None = None,
    ) -> tuple[Alert, ...]:
        """The firing alerts that name this rollout (see `matches`), earliest started first."""
        found = [
            alert
            for alert in self.firing(now=now)
            if matches(alert, namespace=namespace, model=model, rollout=rollout, selector=selector)
        ]
        return tuple(found)

    def firing(self, *, now: datetime | None = None) -> tuple[Alert, ...]:
        """Every firing alert, earliest started first (then by fingerprint, for a stable order)."""
        at = now or self._clock()
        with self._lock:
            self._prune(at)
            alerts = [entry.alert for entry in self._firing.values()]
        return tuple(sorted(alerts, key=lambda alert: (alert.starts_at, alert.fingerprint)))

    def resolved(self, fingerprint: str, *, starts_at: datetime) -> bool:
        """Whether the firing of the alert that started at `starts_at` (or a later one) was heard
        resolved, within `resolved_memory`: a hold a previous controller recorded can end on it."""
        with self._lock:
            remembered = self._resolved.get(fingerprint)
        return remembered is not None and remembered[0] >= starts_at

    def get(self, fingerprint: str) -> Alert | None:
        """The firing alert with this fingerprint, if any (not pruned: a test's or a log's view)."""
        with self._lock:
            entry = self._firing.get(fingerprint)
        return None if entry is None else entry.alert

    def __len__(self) -> int:
        """Alerts held, before pruning: what the `alerts_firing` gauge shows between notifications."""
        with self._lock:
            return len(self._firing)

    def _prune(self, at: datetime) -> None:
        """Drops ended and stale alerts, and forgets resolved ones past `resolved_memory`. Holds the lock."""
        for key, entry in list(self._firing.items()):
            stale = self._stale_after is not None and at - entry.last_seen > self._stale_after
            if entry.alert.expired(at) or stale:
                # Not remembered as resolved: a later notification of the same instance (a new
                # endsAt, a resend after lost ones) is evidence that it fires after all.
                del self._firing[key]
        horizon = at - self._resolved_memory
        for key, (_, resolved_at) in list(self._resolved.items()):
            if resolved_at >= horizon:
                break  # oldest first: the rest are younger
            del self._resolved[key]

    def _remember_resolved(self, key: str, starts_at: datetime, at: datetime) -> None:
        previous = self._resolved.pop(key, None)
        latest = starts_at if previous is None else max(starts_at, previous[0])
        self._resolved[key] = (latest, at)
        while len(self._resolved) > self._max_resolved:
            del self._resolved[next(iter(self._resolved))]


def labels_text(labels: Mapping[str, str]) -> str:
    """`{alertname="X", model="iris"}`, as Prometheus writes a label set: for messages and Events."""
    inner = ", ".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    return "{" + inner + "}"
