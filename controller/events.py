"""Events leave the reconcile workers: a pass hands the Events it recorded to a sender, whose own
threads create them, so that creating Events never holds up the next pass of any rollout (as
client-go's event recorder does for Go controllers).

    Reconciler._emit ──> EventSender: bounded queue ──> sender threads ──> Kube.emit_event
           ^                                                                   │
           └──────────────────────── on_done(created) ─────────────────────────┘

Every Event is recorded in its rollout's status.recentEvents before it is sent, under a name that
is the same whenever it is sent again (see `controller.reconcile`). So nothing is lost when the
queue is full or a create fails: the Event stays recorded as not created, and the rollout's next
pass sends it again; an Event created twice is refused as a duplicate and counts as created.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from controller import telemetry
from controller.api import RecordedEvent, parse_time
from controller.kube import Kube, ObjectRef

log = logging.getLogger(__name__)

DEFAULT_SENDER_THREADS = 2
"""Events created at once; each create is one API call of a few milliseconds."""
DEFAULT_QUEUE_LIMIT = 10_000
"""Events waiting to be created; beyond that an Event waits for its rollout's next pass."""
IDLE_POLL_SECONDS = 1.0
"""How often an idle sender thread looks whether it should stop."""


@dataclass(frozen=True, kw_only=True)
class Outgoing:
    about: ObjectRef
    """The object the Event is about."""
    event: RecordedEvent
    on_done: Callable[[bool], None]
    """Called once with whether the Event now exists (False: not sent, or its create failed)."""


class SendsEvents(Protocol):
    def send(self, outgoing: Outgoing) -> None:
        """Creates the Event now or later, and calls `outgoing.on_done` when it knows how it went."""
        ...


def create(kube: Kube, outgoing: Outgoing) -> bool:
    event = outgoing.event
    time = parse_time(event.time)
    if time is None:
        # Recorded by this controller, so always a valid time; never worth an exception here.
        log.warning("recorded event without a valid time", extra={"event": event.name})
        return False
    return kube.emit_event(
        about=outgoing.about, type=event.type, reason=event.reason, message=event.message, now=time, name=event.name
    )


class DirectSender:
    """Creates each Event in the caller's thread: for tools and tests that run single passes."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube

    def send(self, outgoing: Outgoing) -> None:
        outgoing.on_done(create(self.kube, outgoing))


class EventSender:
    """A bounded queue of Events and the threads that create them."""

    def __init__(
        self, *, kube: Kube, threads: int = DEFAULT_SENDER_THREADS, queue_limit: int = DEFAULT_QUEUE_LIMIT
    ) -> None:
        self.kube = kube
        self.threads = threads
        self._queue: queue.Queue[Outgoing] = queue.Queue(maxsize=queue_limit)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for i in range(self.threads):
            thread = threading.Thread(target=self._work, name=f"events-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()

    def send(self, outgoing: Outgoing) -> None:
        try:
            self._queue.put_nowait(outgoing)
        except queue.Full:
            telemetry.EVENTS_DEFERRED.inc()
            outgoing.on_done(False)

    def _work(self) -> None:
        while not self._stop.is_set():
            try:
                outgoing = self._queue.get(timeout=IDLE_POLL_SECONDS)
            except queue.Empty:
                continue
            # A sender thread outlives any one Event: one not created is sent again by a later pass.
            created = False
            try:
                created = create(self.kube, outgoing)
            except Exception:
                log.exception("event create failed", extra={"event": outgoing.event.name})
            try:
                outgoing.on_done(created)
            except Exception:
                log.exception("event bookkeeping failed", extra={"event": outgoing.event.name})
