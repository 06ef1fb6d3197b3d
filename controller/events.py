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

The queue has two lanes: the Events of this process's own passes, which are news (a rollback, and
the notification sent once its Event exists), go before those a predecessor recorded, which a new
process hands over at its first pass of every rollout and which mostly exist already. So a
restart of a controller with thousands of rollouts does not hold the next rollback's Event behind
thousands of creates of old ones.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from controller import telemetry
from controller.api import RecordedEvent, parse_time
from controller.kube import Kube, ObjectRef

log = logging.getLogger(__name__)

DEFAULT_SENDER_THREADS = 2
"""Events created at once; each create is one API call of a few milliseconds."""
DEFAULT_EVENTS_PER_SECOND = 25.0
"""Sustained rate of Event creates (client-go limits its clients the same way): when thousands of
rollouts move at once, their Events wait rather than take the API server from their traffic
steps. Small numbers go at once (`DEFAULT_EVENT_BURST`)."""
DEFAULT_EVENT_BURST = 50
"""Events created without waiting after a quiet time."""
DEFAULT_QUEUE_LIMIT = 10_000
"""Events waiting to be created in each lane; beyond that an Event waits for its rollout's next pass."""
OWN_LANE, INHERITED_LANE = 0, 1
"""The lanes, in the order they are served."""
IDLE_POLL_SECONDS = 1.0
"""How often an idle sender thread looks whether it should stop."""
DRAIN_POLL_SECONDS = 0.05
DEFAULT_DRAIN_SECONDS = 10.0
"""On shutdown, the Events still queued are created for at most this long, without the rate limit
(a pod gets 30 s after SIGTERM); what is left stays recorded for the next controller to create."""


@dataclass(frozen=True, kw_only=True)
class Outgoing:
    about: ObjectRef
    """The object the Event is about."""
    event: RecordedEvent
    on_done: Callable[[bool], None]
    """Called once with whether the Event now exists (False: not sent, or its create failed)."""
    inherited: bool = False
    """Recorded by a predecessor and handed over at this process's first pass of the rollout:
    created after every Event of this process's own passes."""


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


class TokenBucket:
    """At most `rate` a second on average, `burst` at once."""

    def __init__(self, *, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._at = clock()
        self._lock = threading.Lock()

    def wait_seconds(self) -> float:
        """Takes a token and returns 0, or returns how long until one is due (taking none)."""
        with self._lock:
            now = self._clock()
            self._tokens = min(float(self.burst), self._tokens + (now - self._at) * self.rate)
            self._at = now
            if self._tokens >= 1:
                self._tokens -= 1
                return 0.0
            return (1 - self._tokens) / self.rate


@dataclass(frozen=True, kw_only=True)
class SenderSettings:
    threads: int = DEFAULT_SENDER_THREADS
    """Threads creating Events."""
    queue_limit: int = DEFAULT_QUEUE_LIMIT
    """Events waiting at most in each lane; beyond, an Event waits for its rollout's next pass."""
    events_per_second: float = DEFAULT_EVENTS_PER_SECOND
    """Sustained rate of Event creates."""
    burst: int = DEFAULT_EVENT_BURST
    """Event creates without waiting after a quiet time."""


class EventSender:
    """A queue of Events in two bounded lanes, and the threads that create them at a bounded rate."""

    def __init__(self, *, kube: Kube, settings: SenderSettings = SenderSettings()) -> None:
        self.kube = kube
        self.threads = settings.threads
        self._bucket = TokenBucket(rate=settings.events_per_second, burst=settings.burst)
        # (lane, order of arrival, Event): the own lane first, each lane first in first out.
        self._queue: queue.PriorityQueue[tuple[int, int, Outgoing]] = queue.PriorityQueue()
        self._arrivals = itertools.count()
        self._lane_limit = settings.queue_limit
        self._waiting = {OWN_LANE: 0, INHERITED_LANE: 0}
        self._lanes_lock = threading.Lock()
        self._stop = threading.Event()
        self._draining = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for i in range(self.threads):
            thread = threading.Thread(target=self._work, name=f"events-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, *, drain_seconds: float = DEFAULT_DRAIN_SECONDS) -> None:
        """Creates what is queued, at full speed, for at most `drain_seconds`, then stops."""
        self._draining.set()
        deadline = time.monotonic() + drain_seconds
        while self._threads and self._queue.unfinished_tasks and time.monotonic() < deadline:
            self._stop.wait(DRAIN_POLL_SECONDS)
        self._stop.set()

    def send(self, outgoing: Outgoing) -> None:
        lane = INHERITED_LANE if outgoing.inherited else OWN_LANE
        with self._lanes_lock:
            room = self._waiting[lane] < self._lane_limit
            if room:
                self._waiting[lane] += 1
                self._queue.put_nowait((lane, next(self._arrivals), outgoing))
        if not room:
            telemetry.EVENTS_DEFERRED.inc()
            outgoing.on_done(False)

    def _work(self) -> None:
        while not self._stop.is_set():
            try:
                lane, _, outgoing = self._queue.get(timeout=IDLE_POLL_SECONDS)
            except queue.Empty:
                continue
            with self._lanes_lock:
                self._waiting[lane] -= 1
            try:
                self._create(outgoing)
            finally:
                self._queue.task_done()

    def _create(self, outgoing: Outgoing) -> None:
        while not self._draining.is_set() and (wait := self._bucket.wait_seconds()) > 0:
            if self._draining.wait(wait):
                break
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
