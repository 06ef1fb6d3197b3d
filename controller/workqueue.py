"""A work queue of object keys, shaped like client-go's: the processing half of the controller.

* a key is in the queue at most once (events deduplicate);
* a key being processed is never handed to a second worker; if it is added meanwhile, it is
  queued again when the first worker is done (one reconcile in flight per object);
* `add_after` schedules a key for later (timed steps); the earliest schedule wins, and no
  schedule is further away than MAX_DELAY_SECONDS;
* `add_rate_limited` backs off exponentially per key until `forget`.
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


class ShutDown(Exception):
    """The queue was shut down; workers return."""


class WorkQueue:
    def __init__(self, *, backoff: Backoff = Backoff(), clock: Callable[[], float] = time.monotonic) -> None:
        self._backoff = backoff
        self._clock = clock
        self._cond = threading.Condition()
        self._queue: deque[Key] = deque()
        self._dirty: set[Key] = set()
        self._processing: set[Key] = set()
        self._delayed: list[tuple[float, int, Key]] = []
        self._due: dict[Key, float] = {}
        self._sequence = itertools.count()
        self._failures: dict[Key, int] = {}
        self._shut_down = False
        self._handed_out_at = clock()
        self._ready_since = clock()
        """When the ready deque last went from empty to not empty."""

    def __len__(self) -> int:
        with self._cond:
            return len(self._queue) + len(self._due)

    def add(self, key: Key) -> None:
        with self._cond:
            self._add_locked(key)

    def _add_locked(self, key: Key) -> None:
        if self._shut_down or key in self._dirty:
            return
        self._dirty.add(key)
        self._due.pop(key, None)
        if key not in self._processing:
            self._make_ready_locked(key)

    def _make_ready_locked(self, key: Key) -> None:
        if not self._queue:
            self._ready_since = self._clock()
        self._queue.append(key)
        self._cond.notify()

    def add_after(self, key: Key, delay: float) -> None:
        delay = bounded_delay(delay)
        if delay <= 0:
            self.add(key)
            return
        with self._cond:
            at = self._clock() + delay
            if key in self._dirty or self._due.get(key, float("inf")) <= at:
                return
            self._due[key] = at
            heapq.heappush(self._delayed, (at, next(self._sequence), key))
            self._cond.notify()

    def add_rate_limited(self, key: Key) -> float:
        with self._cond:
            failures = self._failures.get(key, 0) + 1
            self._failures[key] = failures
        delay = self._backoff.delay(failures)
        self.add_after(key, delay)
        return delay

    def forget(self, key: Key) -> None:
        with self._cond:
            self._failures.pop(key, None)

    def get(self) -> Key:
        """Blocks until a key is ready; raises ShutDown when the queue is shut down."""
        with self._cond:
            while True:
                if self._shut_down:
                    raise ShutDown
                self._promote_due_locked()
                if self._queue:
                    key = self._queue.popleft()
                    self._handed_out_at = self._clock()
                    self._processing.add(key)
                    self._dirty.discard(key)
                    return key
                timeout = self._delayed[0][0] - self._clock() if self._delayed else None
                self._cond.wait(timeout)

    def _promote_due_locked(self) -> None:
        now = self._clock()
        while self._delayed and self._delayed[0][0] <= now:
            at, _, key = heapq.heappop(self._delayed)
            if self._due.get(key) == at:
                del self._due[key]
                self._add_locked(key)

    def done(self, key: Key) -> None:
        with self._cond:
            self._processing.discard(key)
            if key in self._dirty:
                self._make_ready_locked(key)

    def stalled_seconds(self) -> float:
        """How long keys have been due while none was handed to a worker; 0 when none is due.

        A healthy queue hands a due key out within one pass; a queue whose workers are gone or
        stuck does not, and the health check tells the kubelet so."""
        with self._cond:
            self._promote_due_locked()
            if not self._queue:
                return 0.0
            return max(self._clock() - max(self._handed_out_at, self._ready_since), 0.0)

    def shut_down(self) -> None:
        with self._cond:
            self._shut_down = True
            self._cond.notify_all()
