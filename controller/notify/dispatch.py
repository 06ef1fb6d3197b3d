"""Telling people about a rollout's transitions: the controller's sinks and the rollout's own.

    reconcile pass: prepare (pure) ──> a Transition, carried with the Event that records it
    Event sender thread, once that Event is created: send ──> the rollout's sinks read from
        their Secrets ──> Notifier.notify (queues and returns) ──> notifier threads POST, retry
    a delivery that fails ──> a NotificationFailed Warning Event on the rollout, and
        model_rollouts_notifications_total{result="failed"}

Nothing here runs on a reconcile worker but `prepare`, which reads only the rollout it is given,
so a slow or dead sink never holds up a pass: it costs a notifier thread, within its deadline.

Once per transition: a transition's Event is created once, under a name that stays the same
whenever it is sent again, and the notification goes out when this process creates it. After a
restart (or a change of leader) the new process hands over the Events its predecessor recorded;
those recorded up to `replay_seconds` before it started are notified again, since the
predecessor may have died before its notification went out. So a notification is sent at least
once for a transition that happened up to `replay_seconds` before a crash, and may then be sent
twice: its `id` (the Event's name) is the same both times, for receivers that drop repeats.

A sink of spec.notifications whose Secret (or key) is missing does not hold the rollout: it gets
a `NotificationSinkMissing` Warning Event, when the rollout starts and whenever a notification is
due for it, and the other sinks are told as usual (docs/incidents.md says why).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import httpx

from controller import telemetry
from controller.api import (
    ModelRolloutStatus,
    NotificationSink,
    RecordedEvent,
    SpecError,
    parse_notifications,
    parse_time,
)
from controller.notify.config import ControllerSink
from controller.notify.notification import Kind, Notification
from controller.notify.notifier import DeliveryFailed, Notifier, NotifierSettings
from controller.notify.sinks import SINK_TYPES, Sink
from controller.notify.transitions import notification_for
from controller.outbound import DEFAULT_POLICY, OutboundPolicy

log = logging.getLogger(__name__)

STARTED_REASON = "RolloutStarted"
"""The Event of a rollout's start: its sinks are checked then, before any notification is due."""
SINK_MISSING_REASON = "NotificationSinkMissing"
FAILED_REASON = "NotificationFailed"
ROLLOUT_SINK_LABEL = "rollout"
"""The `sink` label of model_rollouts_notifications_total for every sink of spec.notifications
(one label value per rollout's sink would grow without bound)."""
DEFAULT_REPLAY_SECONDS = 300.0
"""Events a previous controller recorded this recently are notified again after a restart."""
EVENT_NAME_PREFIX_LIMIT = 200


@dataclass(frozen=True, kw_only=True)
class RolloutRef:
    """The rollout an Event is about."""

    namespace: str
    name: str
    uid: str


@dataclass(frozen=True, kw_only=True)
class Transition:
    """What a recorded Event asks of the notifications, prepared by the pass that hands it over."""

    rollout: RolloutRef
    event: str
    """The Event's name: Events about this transition are named after it, so a repeat is refused."""
    notification: Notification | None
    """What people are told; None for a start, when only the rollout's sinks are checked."""
    sinks: tuple[NotificationSink, ...]
    """spec.notifications."""


class ReportsEvent(Protocol):
    def __call__(self, *, rollout: RolloutRef, reason: str, message: str, name: str) -> None:
        """Creates a Warning Event `name` about `rollout`, later and elsewhere; never raises."""
        ...


ReadSecret = Callable[[str, str], Mapping[str, str] | None]
"""(namespace, name) -> the Secret's data, None when it does not exist."""


class Notifications:
    """Sends transitions to the controller's sinks and to each rollout's own."""

    def __init__(
        self,
        *,
        report: ReportsEvent,
        sinks: Sequence[ControllerSink] = (),
        read_secret: ReadSecret | None = None,
        settings: NotifierSettings | None = None,
        policy: OutboundPolicy = DEFAULT_POLICY,
        transport: httpx.BaseTransport | None = None,
        replay_seconds: float = DEFAULT_REPLAY_SECONDS,
    ) -> None:
        """`read_secret` None: the controller reads no Secrets, and a rollout's own sinks are
        reported as missing. `transport`: None is the real network (tests pass a mock)."""
        self.sinks = tuple(sinks)
        self._report = report
        self._read_secret = read_secret
        self._replay_seconds = replay_seconds
        self.notifier = Notifier(
            settings=settings, policy=policy, on_failure=self._failed, on_sent=self._sent, transport=transport
        )

    def start(self) -> None:
        self.notifier.start()

    def close(self) -> None:
        self.notifier.close()

    def prepare(
        self,
        *,
        rollout: Mapping[str, Any],
        event: RecordedEvent,
        before: ModelRolloutStatus | None,
        after: ModelRolloutStatus,
        since: datetime,
    ) -> Transition | None:
        """The Transition of a recorded Event, None when it asks nothing. Pure. `since`: when this
        process started; an Event recorded before was recorded by a predecessor, which may have
        died before sending its notification: one recorded up to `replay_seconds` before is sent
        again, an older one not (its notification went out long ago, or is news no more)."""
        when = parse_time(event.time)
        if when is None or (since - when).total_seconds() > self._replay_seconds:
            return None
        notification = notification_for(rollout=rollout, event=event, before=before, after=after)
        if notification is None and event.reason != STARTED_REASON:
            return None
        try:
            own = parse_notifications((rollout.get("spec") or {}).get("notifications"))
        except SpecError:
            own = ()  # the rollout fails on it (InvalidSpec), and the controller's sinks say so
        if notification is None and not own:
            return None
        meta = rollout["metadata"]
        return Transition(
            rollout=RolloutRef(namespace=meta["namespace"], name=meta["name"], uid=str(meta.get("uid") or "")),
            event=event.name,
            notification=notification,
            sinks=own,
        )

    def send(self, transition: Transition) -> None:
        """Queues the notification for every sink that wants it and returns. Never raises: it runs
        on the thread that created the transition's Event, which must go on with other Events."""
        try:
            self._send(transition)
        except Exception:
            log.exception("notifications: sending a transition failed", extra={"event": transition.event})

    def _send(self, transition: Transition) -> None:
        notification = transition.notification
        kind = notification.kind if notification is not None else None
        targets = [own.sink for own in self.sinks if kind is not None and _wants(own.kinds, kind)]
        for declared in transition.sinks:
            if kind is not None and not _wants(declared.kinds, kind):
                continue
            sink, problem = self._resolve(transition.rollout.namespace, declared)
            if sink is None:
                telemetry.NOTIFICATIONS.labels(sink=ROLLOUT_SINK_LABEL, result="missing").inc()
                consequence = (
                    f"the {kind.value} notification was not sent to it"
                    if kind is not None
                    else "this rollout's notifications will not reach it until that is fixed"
                )
                message = f"{problem}; {consequence}"
                self._warn(transition.rollout, SINK_MISSING_REASON, message, transition.event, declared.field_path)
            elif notification is not None:
                targets.append(sink)
        if notification is not None and targets:
            self.notifier.notify(notification, sinks=targets)

    def _resolve(self, namespace: str, declared: NotificationSink) -> tuple[Sink | None, str]:
        """The sink with its URL and headers from their Secrets, or None and what is wrong (naming
        the field and the Secret, never a value)."""
        where = declared.field_path
        if self._read_secret is None:
            return None, (
                f"{where}: this controller does not read Secrets; start it with --read-secrets "
                "(chart: rbac.secrets.enabled=true)"
            )
        ref = declared.url_from
        url, problem = self._secret_value(namespace, ref.name, f"{where}.urlFrom.secretKeyRef", key=ref.key)
        if url is None:
            return None, problem
        headers: Mapping[str, str] = {}
        if declared.headers_secret is not None:
            found, problem = self._secret(namespace, declared.headers_secret, f"{where}.headersFrom.secretName")
            if found is None:
                return None, problem
            headers = found
        try:
            return SINK_TYPES[declared.type](name=where, url=url.strip(), headers=headers), ""
        except ValueError as error:
            # The sinks' own errors name no part of the URL or of a header's value.
            return None, f"{where}: Secret {namespace}/{ref.name} key {ref.key}: {error}"

    def _secret_value(self, namespace: str, name: str, field: str, *, key: str) -> tuple[str | None, str]:
        found, problem = self._secret(namespace, name, field)
        if found is None:
            return None, problem
        if key not in found:
            return None, f"{field}: Secret {namespace}/{name} has no key {key}; add it or fix {field}.key"
        return found[key], ""

    def _secret(self, namespace: str, name: str, field: str) -> tuple[Mapping[str, str] | None, str]:
        assert self._read_secret is not None
        try:
            found = self._read_secret(namespace, name)
        except Exception as error:
            return None, f"{field}: Secret {namespace}/{name} could not be read: {type(error).__name__}"
        if found is None:
            return None, f"{field}: Secret {namespace}/{name} does not exist; create it or fix the name"
        return found, ""

    # The notifier's callbacks (on its threads) ---------------------------------------------------
    def _sent(self, notification: Notification, sink: Sink) -> None:
        telemetry.NOTIFICATIONS.labels(sink=self._label(sink), result="sent").inc()

    def _failed(self, notification: Notification, sink: Sink, error: DeliveryFailed) -> None:
        telemetry.NOTIFICATIONS.labels(sink=self._label(sink), result="failed").inc()
        rollout = RolloutRef(namespace=notification.namespace, name=notification.rollout, uid=notification.uid)
        message = f"{error}; the {notification.kind.value} notification was not delivered"
        self._warn(rollout, FAILED_REASON, message, notification.id, sink.name)

    def _label(self, sink: Sink) -> str:
        return sink.name if any(own.sink is sink for own in self.sinks) else ROLLOUT_SINK_LABEL

    def _warn(self, rollout: RolloutRef, reason: str, message: str, transition: str, sink: str) -> None:
        """A Warning Event named after the rollout, the transition, the sink and the reason: the
        same problem of the same transition, reported again after a restart, is one Event."""
        identity = "\x00".join((rollout.uid, transition, sink, reason))
        name = f"{rollout.name[:EVENT_NAME_PREFIX_LIMIT]}.{hashlib.sha256(identity.encode()).hexdigest()[:16]}"
        self._report(rollout=rollout, reason=reason, message=message, name=name)


def _wants(kinds: Collection[str], kind: Kind) -> bool:
    """Whether a sink's `kinds` take `kind` (a Kind is its name: `Kind.FAILED == "Failed"`)."""
    return not kinds or kind in kinds
