"""What the reconcile passes read of the alerts: the firing alerts that name a rollout, and since
when this process hears them.

The receiver writes the registry (`FiringAlerts`) from its request threads; a pass reads it
through `AlertFeed.matching` and hands the result to the pure decision (`controller.plan`) with
`since` and `complete_at`, which tell the decision whether an alert missing from the registry has
stopped, or was only never sent to this process: a controller that restarted (or a new leader)
hears of an alert that fired before it started only when Alertmanager sends it again, which it does
every `repeat_interval` while the alert fires.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from controller.incidents.alerts import Alert
from controller.incidents.firing import FiringAlerts, utc_now
from controller.watch import LabelSelector

DEFAULT_REPEAT_INTERVAL = timedelta(hours=4)
"""Alertmanager's default repeat_interval: a firing alert is sent again at least this often."""
REPEAT_SLACK = timedelta(minutes=5)
"""On top of repeat_interval: Alertmanager sends a repeat at its next group_interval tick (5m by
default), and the webhook call takes its own time."""


def stale_after(repeat_interval: timedelta) -> timedelta:
    """How long a firing alert that Alertmanager did not send again is kept: twice its
    repeat_interval (one lost repeat is no end), plus the slack. Past it the alert counts as
    resolved, so that a lost resolved notification (or a silence, which sends none) cannot hold a
    rollout for ever."""
    return 2 * repeat_interval + REPEAT_SLACK


class AlertFeed:
    """The registry the receiver fills, as the reconcile passes read it. Thread-safe."""

    def __init__(
        self,
        *,
        alerts: FiringAlerts,
        repeat_interval: timedelta = DEFAULT_REPEAT_INTERVAL,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.alerts = alerts
        self.repeat_interval = repeat_interval
        self._clock = clock
        self._since: datetime | None = None

    def listening(self) -> None:
        """The receiver now takes notifications: alerts sent from now on reach the registry."""
        self._since = self._clock()

    @property
    def since(self) -> datetime:
        """When the receiver started listening (now, before it did: nothing was heard yet)."""
        return self._since or self._clock()

    @property
    def complete_at(self) -> datetime:
        """From then on, every alert that fires has been sent to this process at least once."""
        return self.since + self.repeat_interval + REPEAT_SLACK

    def matching(
        self, *, namespace: str, model: str, rollout: str, selector: LabelSelector | None, now: datetime
    ) -> tuple[Alert, ...]:
        """The firing alerts that name this rollout, earliest started first."""
        return self.alerts.matching(namespace=namespace, model=model, rollout=rollout, selector=selector, now=now)

    def resolved(self, *, fingerprint: str, starts_at: datetime) -> bool:
        """Whether this process heard that firing of the alert resolved (see FiringAlerts.resolved)."""
        return self.alerts.resolved(fingerprint, starts_at=starts_at)
