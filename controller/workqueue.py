"""A work queue of object keys, shaped like client-go's: the processing half of the controller.

* a key is in the queue at most once (events deduplicate);
* a key being processed is never handed to a second worker; if it is added meanwhile, it is
  queued again when the first worker is done (one reconcile in flight per object);
* `add_after` schedules a key for later (timed steps); the earliest schedule wins, and no
  schedule is further away than MAX_DELAY_SECONDS;
* `add_rate_limited` backs off exponentially per key until `forget`;
* two lanes of ready keys: a key added as urgent (a safety action: an abort, a deletion, traffic
  still to bring back after a rollback) is handed out before every ordinary ready key. Urgency only
  rises until the key is handed out: an urgent add of a key queued as ordinary moves it to the
  urgent lane; an ordinary add of an urgent key leaves it urgent. Within a lane, first in, first out.

`take` tells the worker, beside the key, why it was queued and how late it is (from when the key
was due: added ready, or its `add_after` time came; a key added while its own pass was in flight
counts from that add), which is what the controller's queue metrics report.
"""

from __future__ import annotations

import heapq
import itertools
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

Key = tuple[str, str]
"""(namespace, name)"""

MAX_DELAY_SECONDS = 3600.0
"""The furthest a key is ever scheduled: one hour. A pass is cheap and works out from the stored
status how long its timer still has to run, so a longer wait costs only a look each hour; and
without a bound a typo such as `pause: {duration: 9999999h}` exceeds what a lock can wait for
(`threading.TIMEOUT_MAX`, about 292 years), which once raised OverflowError in every worker."""


def bounded_delay(seconds: float) -> float:
    """`seconds`, at most MAX_DELAY_SECONDS (also for NaN, which compares false with any bound)."""
    return MAX_DELAY_SECONDS if math.isnan(seconds) else min(seconds, MAX_DELAY_SECONDS)


@dataclass(frozen=True, kw_only=True)
class Backoff:
    base_seconds: float = 0.5
    """Delay after the first failure of a key; doubles with each further failure."""
    max_seconds: float = 120.0
    """Longest delay between retries of a failing key."""

    def delay(self, failures: int) -> float:
        return float(min(self.base_seconds * 2 ** max(failures - 1, 0), self.max_seconds))


class Cause(StrEnum):
    """Why a key was queued: the add that made it due first."""

    EVENT = "event"
    """`add`: a watch event, a list, a measurement answered."""
    RESYNC = "resync"
    """`add(resync=True)`: the periodic resync, with no news (told apart so that its passes do not
    hide the lateness of the passes that carry news)."""
    TIMER = "timer"
    """`add_after`: the rollout asked to be looked at again later (a timed step, a wait)."""
    RETRY = "retry"
    """`add_rate_limited` or `add_after(retry=True)`: a failed pass tried again."""


@dataclass(frozen=True, kw_only=True)
class Taken:
    """A key handed to a worker, with what the queue knows about it."""

    key: Key
    urgent: bool
    """Handed out from the urgent lane."""
    cause: Cause
    lateness: float
    """Seconds from when the key was due to when the worker took it."""


@dataclass(kw_only=True)
class _Pending:
    """A key that is due (ready, or waiting for its own pass in flight to end) or scheduled."""

    due_at: float
    urgent: bool
    cause: Cause


class ShutDown(Exception):
    """The queue was shut down; workers return."""


class WorkQueue:
    def __init__(self, *, backoff: Backoff = Backoff(), clock: Callable[[], float] = time.monotonic) -> None:
        self._backoff = backoff
        self._clock = clock
        self._cond = threading.Condition()
        self._urgent: deque[Key] = deque()
        self._ordinary: deque[Key] = deque()
        self._pending: dict[Key, _Pending] = {}
        """Keys due: in one of the two lanes, or (while processing) to be queued when done."""
        self._processing: set[Key] = set()
        self._delayed: list[tuple[float, int, Key]] = []
        """A heap of (due time, sequence, key); an entry whose time no longer matches the key's
        entry in _scheduled is stale and skipped."""
        self._scheduled: dict[Key, _Pending] = {}
        self._sequence = itertools.count()
        self._failures: dict[Key, int] = {}
        self._shut_down = False
        self._handed_out_at = clock()
        self._ready_since = clock()
        """When the two lanes together last went from empty to not empty."""

    def __len__(self) -> int:
        """Keys waiting: ready in either lane, or scheduled for later (not those in flight)."""
        with self._cond:
            return len(self._urgent) + len(self._ordinary) + len(self._scheduled)

    # Adding --------------------------------------------------------------------------------------

    def add(self, key: Key, *, urgent: bool = False, resync: bool = False) -> None:
        """Makes `key` due now; `urgent` puts it ahead of every ordinary ready key; `resync` marks
        the periodic resync (Cause.RESYNC) rather than news."""
        with self._cond:
            cause = Cause.RESYNC if resync else Cause.EVENT
            self._add_locked(key, _Pending(due_at=self._clock(), urgent=urgent, cause=cause))

    def _add_locked(self, key: Key, entry: _Pending) -> None:
        if self._shut_down:
            return
        pending = self._pending.get(key)
        if pending is not None:
            if entry.urgent and not pending.urgent:
                pending.urgent = True
                if key not in self._processing:
                    self._ordinary.remove(key)  # rare (an abort, a deletion), so O(n) is fine
                    self._urgent.append(key)
            return
        scheduled = self._scheduled.pop(key, None)
        if scheduled is not None and scheduled.urgent:
            entry.urgent = True
        self._pending[key] = entry
        if key not in self._processing:
            self._make_ready_locked(key, urgent=entry.urgent)

    def _make_ready_locked(self, key: Key, *, urgent: bool) -> None:
        if not self._urgent and not self._ordinary:
            self._ready_since = self._clock()
        (self._urgent if urgent else self._ordinary).append(key)
        self._cond.notify()

    def add_after(self, key: Key, delay: float, *, urgent: bool = False, retry: bool = False) -> None:
        """Makes `key` due in `delay` seconds (at most MAX_DELAY_SECONDS); the earliest schedule wins.

        A key already due stays due (an urgent schedule makes it urgent); `retry` marks a failed
        pass tried again (Cause.RETRY) rather than a timer."""
        delay = bounded_delay(delay)
        cause = Cause.RETRY if retry else Cause.TIMER
        with self._cond:
            now = self._clock()
            if delay <= 0:
                self._add_locked(key, _Pending(due_at=now, urgent=urgent, cause=cause))
                return
            if self._shut_down:
                return
            pending = self._pending.get(key)
            if pending is not None:
                if urgent:
                    self._add_locked(key, _Pending(due_at=pending.due_at, urgent=True, cause=pending.cause))
                return
            at = now + delay
            scheduled = self._scheduled.get(key)
            if scheduled is not None and scheduled.due_at <= at:
                scheduled.urgent = scheduled.urgent or urgent
                return
            self._scheduled[key] = _Pending(
                due_at=at, urgent=urgent or (scheduled is not None and scheduled.urgent), cause=cause
            )
            heapq.heappush(self._delayed, (at, next(self._sequence), key))
            self._cond.notify()

    def add_rate_limited(self, key: Key, *, urgent: bool = False) -> float:
        """Schedules a retry of `key` after its backoff delay (doubling per failure); returns it."""
        with self._cond:
            failures = self._failures.get(key, 0) + 1
            self._failures[key] = failures
        delay = self._backoff.delay(failures)
        self.add_after(key, delay, urgent=urgent, retry=True)
        return delay

    def forget(self, key: Key) -> None:
        with self._cond:
            self._failures.pop(key, None)

    # Taking ------------------------------------------------------------------------------------

    def get(self) -> Key:
        """Blocks until a key is ready; raises ShutDown when the queue is shut down."""
        return self.take().key

    def take(self) -> Taken:
        """Like `get`, with the key's lane, cause and lateness; urgent keys come first."""
        with self._cond:
            while True:
                if self._shut_down:
                    raise ShutDown
                self._promote_due_locked()
                lane = self._urgent or self._ordinary
                if lane:
                    key = lane.popleft()
                    now = self._clock()
                    self._handed_out_at = now
                    self._processing.add(key)
                    entry = self._pending.pop(key)
                    return Taken(key=key, urgent=entry.urgent, cause=entry.cause, lateness=max(now - entry.due_at, 0.0))
                timeout = self._delayed[0][0] - self._clock() if self._delayed else None
                self._cond.wait(timeout)

    def _promote_due_locked(self) -> None:
        now = self._clock()
        while self._delayed and self._delayed[0][0] <= now:
            at, _, key = heapq.heappop(self._delayed)
            scheduled = self._scheduled.get(key)
            if scheduled is not None and scheduled.due_at == at:
                del self._scheduled[key]
                self._add_locked(key, scheduled)

    def done(self, key: Key) -> None:
        with self._cond:
            if key not in self._processing:
                return  # not handed out (a second done): queueing it again would queue it twice
            self._processing.discard(key)
            pending = self._pending.get(key)
            if pending is not None:
                self._make_ready_locked(key, urgent=pending.urgent)

    # Looking -------------------------------------------------------------------------------------

    def ready(self, *, urgent: bool) -> int:
        """Keys due now in one lane and not yet taken by a worker (not those scheduled for later)."""
        with self._cond:
            self._promote_due_locked()
            return len(self._urgent if urgent else self._ordinary)

    def scheduled(self) -> int:
        """Keys scheduled for later (timers, retries) and not yet due."""
        with self._cond:
            self._promote_due_locked()
            return len(self._scheduled)

    def in_flight(self) -> int:
        """Keys a worker is reconciling now."""
        with self._cond:
            return len(self._processing)

    def stalled_seconds(self) -> float:
        """How long keys have been due while none was handed to a worker; 0 when none is due.

        A healthy queue hands a due key out within one pass; a queue whose workers are gone or
        stuck does not, and the health check tells the kubelet so. Both lanes count: a key handed
        out from either resets it."""
        with self._cond:
            self._promote_due_locked()
            if not self._urgent and not self._ordinary:
                return 0.0
            return max(self._clock() - max(self._handed_out_at, self._ready_since), 0.0)

    def shut_down(self) -> None:
        with self._cond:
            self._shut_down = True
            self._cond.notify_all()
