"""Measurements off the reconcile workers: metric queries run on their own bounded pool.

A reconcile pass never waits for a provider. When a look is due, the analysis checker asks this
module for every read the look needs (`Measurements.read`) and returns at once: a read already
answered gives its `Finished` result, one not answered yet is submitted (once: reads are keyed)
and gives None, and the checker then reports the look as not taken yet (a RUNNING outcome with a
short requeue). When the last read a rollout waits for is answered, the pool calls
`on_result(namespace, name)`, which the controller wires to its work queue's `add`, so the next
pass comes as soon as the answers are in and consumes them.

* **Lanes.** Reads run on daemon threads, a few per lane; a lane is one provider at one address
  (the controller's Prometheus, a metric's own Prometheus address, a web host), so a slow
  Prometheus holds its own lane only. The number of lanes is capped; beyond the cap, reads of a
  provider share its default lane. Each read has the provider's own timeout.
* **Looks.** A look is identified by the rollout, the run and the time it was due (all read from
  stored status, so every pass of the same look asks with the same keys). The moment the look
  is taken (`look_time`) is fixed by the first pass that asks, and kept, so that a look whose
  reads take longer than a batch period is not asked again under a new time.
* **Gathered reads.** A gathered read (a batched query serving many rollouts,
  controller.analysis.batch) is one read for all the looks that ask for its key, each naming its
  `member` (its model). It waits `PoolSettings.gather_seconds` after its first ask, so the looks
  due at the same moment join it, and is then sent once, for the members gathered: the answer
  carries only their series, never the whole fleet's. A look that asks once it is sent, for a
  member it does not cover, starts the next round. Each look is told when its round is in.
* **Memory.** A rollout keeps the reads of its latest look per run only: a newer look drops the
  older one's (and cancels those not started). Results nobody collects expire (`PoolSettings`),
  and so do looks of rollouts that went away. Gathered results stay a short while after their last
  use, for rollouts whose pass comes a little later.
* **Looks asked ahead.** A look may be asked before it is due (the checker asks for the next look
  as soon as it stored the last one): its reads wait in the pool until the look's due time, and a
  gathered round asked ahead waits until then too, so every look due at that moment joins it. The
  rollout's pass then comes when the answers are in, not at the due time and again once they are.
* **Re-enqueues.** One call of `on_result` per look when its last read is answered (never one per
  read), so re-enqueues are bounded by the looks taken.

Crash safety: nothing here is needed to resume. A restarted controller finds the due look in
status and submits its reads again.

`InlineMeasurements` runs every read at once on the calling thread: unit tests, benchmarks and
tools that drive the checker without a controller.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, Protocol, TypeVar

from controller import telemetry
from controller.api import now_utc
from controller.errors import PermanentError, TemporaryError

log = logging.getLogger(__name__)

T = TypeVar("T")
Owner = tuple[str, str]
"""(namespace, name) of a rollout."""
Notify = Callable[[str, str], None]
"""`on_result(namespace, name)`: the rollout's reads are in; queue it for a pass."""


@dataclass(frozen=True, kw_only=True)
class Lane:
    """Where a read goes: one provider at one address."""

    provider: str
    """The provider's name (`prometheus`, `web`)."""
    address: str = ""
    """The Prometheus base URL or web host the read calls; empty: the provider's default."""


@dataclass(frozen=True, kw_only=True)
class Look:
    """One look of one rollout's analysis run, as stored status identifies it."""

    owner: Owner
    run: str
    due: datetime
    """When the look was due (from the run's last look and the interval)."""


@dataclass(frozen=True, kw_only=True)
class Finished(Generic[T]):
    """An answered read: its value, or the error the provider raised."""

    value: T | None = None
    error: Exception | None = None

    def get(self) -> T:
        if self.error is not None:
            raise self.error
        return self.value  # type: ignore[return-value]


def run_read(job: Callable[[], T]) -> Finished[T]:
    """`job()` as a Finished result. A provider's TemporaryError or PermanentError is the read's
    answer; any other exception (a bug) too, and the checker re-raises it in the pass."""
    try:
        return Finished(value=job())
    except Exception as error:
        return Finished(error=error)


class Measurements(Protocol):
    """How the analysis checker reads providers (see the module docstring)."""

    @property
    def notifies(self) -> bool:
        """True when a rollout is re-enqueued once its reads are in (it need not poll)."""
        ...

    @property
    def deferred(self) -> bool:
        """True when reads may run after the pass that asked: queries then carry the look's time."""
        ...

    def look_time(self, look: Look, proposed: datetime) -> datetime:
        """The moment `look` is taken: `proposed` at the first ask, the same moment after."""
        ...

    def read(self, look: Look, *, key: Hashable, lane: Lane, job: Callable[[], T]) -> Finished[T] | None:
        """The result of the read `key` of `look`, or None while it is not answered (it is submitted
        at the first ask)."""
        ...

    def read_gathered(
        self, look: Look, *, key: Hashable, member: str, lane: Lane, job: Callable[[frozenset[str]], T]
    ) -> Finished[T] | None:
        """The result of the read `key` shared by every look that asks for it, run as
        `job(members)` for the members of the looks gathered (see the module docstring), or None
        while the round covering `member` is not answered."""
        ...


class InlineMeasurements:
    """Every read runs at once on the calling thread; for tests, benchmarks and tools. The latest
    few gathered reads are kept, so that the versions of a look ask a batched query once."""

    notifies = False
    deferred = False
    KEPT_GATHERED = 16

    def __init__(self) -> None:
        self._gathered: dict[Hashable, tuple[frozenset[str], Finished[Any]]] = {}

    def look_time(self, look: Look, proposed: datetime) -> datetime:
        return proposed

    def read(self, look: Look, *, key: Hashable, lane: Lane, job: Callable[[], T]) -> Finished[T] | None:
        return run_read(job)

    def read_gathered(
        self, look: Look, *, key: Hashable, member: str, lane: Lane, job: Callable[[frozenset[str]], T]
    ) -> Finished[T] | None:
        members, done = self._gathered.pop(key, (frozenset(), None))
        if done is None or member not in members or not _keeps(done):
            members = frozenset({member})
            done = run_read(lambda: job(members))
        self._gathered[key] = (members, done)
        while len(self._gathered) > self.KEPT_GATHERED:
            del self._gathered[next(iter(self._gathered))]
        return done


DEFAULT_GATHER_SECONDS = 0.25
"""How long a batched query waits for the other rollouts due at its moment: the passes of the
looks due together come within a fraction of a second of each other, so a few rounds at most
serve a grid moment, and each look is that much later (the lateness target is 2 s)."""


@dataclass(frozen=True, kw_only=True)
class PoolSettings:
    workers: Mapping[str, int] = field(default_factory=lambda: {"prometheus": 8, "web": 8})
    """Threads per lane, by provider: reads of one lane that run at once."""
    default_workers: int = 4
    """Threads per lane of a provider not named in `workers`."""
    max_lanes: int = 16
    """Lanes at most (provider x address); reads beyond share their provider's default lane."""
    result_seconds: float = 600.0
    """A look untouched this long is forgotten, answered or not (its rollout went away or moved
    on); a gathered result is kept at most this long."""
    gather_seconds: float = DEFAULT_GATHER_SECONDS
    """A gathered read is sent this long after its first ask, for the looks that ask meanwhile."""
    gathered_linger_seconds: float = 10.0
    """A gathered result stays this long after it was last asked for, for passes that come a little
    late (two batch periods); a pass later still asks again (a batched answer may be large)."""
    sweep_seconds: float = 5.0
    """Expired entries are looked for at most this often."""


@dataclass(kw_only=True, eq=False)
class _Read:
    """One submitted read: queued, running, or answered."""

    lane: Lane
    done: Finished[Any] | None = None
    cancelled: bool = False
    started: bool = False


@dataclass(kw_only=True, eq=False)
class _GatheredRead(_Read):
    """One round of a gathered read."""

    members: set[str] = field(default_factory=set)
    """Whom it is asked for: fixed when it starts."""
    waiting: set[tuple[Owner, str]] = field(default_factory=set)
    """Looks (owner, run) told when it is answered."""
    done_at: float = 0.0
    used_at: float = 0.0


@dataclass(kw_only=True, eq=False)
class _LookState:
    due: datetime
    at: datetime
    touched: float
    reads: dict[Hashable, _Read] = field(default_factory=dict)
    """Its own reads, answered or not."""
    waiting_on: set[Hashable] = field(default_factory=set)
    """Reads (own keys, and gathered keys) not answered yet."""


class _Later:
    """Hands tasks to their lanes at given times, from one daemon thread started at the first: a
    look asked ahead can wait half a minute, and a thread (a `threading.Timer`) per waiting read
    would be thousands at scale."""

    def __init__(self) -> None:
        self._due: list[tuple[float, int, _Lane, Callable[[], None]]] = []
        """(time.monotonic() due, sequence, lane, task), a heap."""
        self._sequence = itertools.count()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def submit(self, lane: _Lane, task: Callable[[], None], *, delay: float) -> None:
        with self._cond:
            heapq.heappush(self._due, (time.monotonic() + delay, next(self._sequence), lane, task))
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="measure-later", daemon=True)
                self._thread.start()
            self._cond.notify()

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._due or self._due[0][0] > time.monotonic():
                    self._cond.wait(self._due[0][0] - time.monotonic() if self._due else None)
                _, _, lane, task = heapq.heappop(self._due)
            lane.submit(task)


class _Lane:
    """A queue of reads and up to `workers` daemon threads taking them, started as needed. Daemon
    threads: a controller shutting down does not wait for a slow Prometheus."""

    def __init__(self, name: str, workers: int) -> None:
        self._name = name
        self._workers = max(workers, 1)
        self._tasks: deque[Callable[[], None]] = deque()
        self._cond = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._idle = 0

    def submit(self, task: Callable[[], None]) -> None:
        with self._cond:
            self._tasks.append(task)
            if len(self._tasks) > self._idle and len(self._threads) < self._workers:
                thread = threading.Thread(
                    target=self._work, name=f"measure-{self._name}-{len(self._threads)}", daemon=True
                )
                self._threads.append(thread)
                thread.start()
            self._cond.notify()

    def _work(self) -> None:
        while True:
            with self._cond:
                self._idle += 1
                while not self._tasks:
                    self._cond.wait()
                self._idle -= 1
                task = self._tasks.popleft()
            try:
                task()
            except Exception:  # the task records its own errors; this is a bug in the pool
                log.exception("a measurement task failed", extra={"lane": self._name})


class MeasurementPool:
    """The controller's `Measurements`: reads on lanes of daemon threads (module docstring)."""

    def __init__(
        self,
        *,
        settings: PoolSettings | None = None,
        on_result: Notify | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = now_utc,
    ) -> None:
        self.settings = settings or PoolSettings()
        self._on_result = on_result
        self._clock = clock
        self._wall_clock = wall_clock
        """Reads of a look asked before it is due wait until its due time, on this clock."""
        self._lock = threading.Lock()
        self._lanes: dict[Lane, _Lane] = {}
        self._later = _Later()
        self._looks: dict[tuple[Owner, str], _LookState] = {}
        self._gathered: dict[Hashable, list[_GatheredRead]] = {}
        """Rounds of each gathered read, the one still gathering last."""
        self._waiting: dict[str, int] = {}
        """Reads queued or running, by provider."""
        self._swept_at = clock()
        self.submitted = 0
        """Reads submitted since start (tests and benchmarks count queries with it)."""

    def connect(self, on_result: Notify) -> None:
        """Tells the pool whom to call when a rollout's reads are in (the work queue's add)."""
        self._on_result = on_result

    @property
    def notifies(self) -> bool:
        return self._on_result is not None

    @property
    def deferred(self) -> bool:
        return True

    def waiting(self) -> dict[str, int]:
        """Reads queued or running now, by provider."""
        with self._lock:
            return {provider: count for provider, count in self._waiting.items() if count}

    # Looks -----------------------------------------------------------------------------------

    def look_time(self, look: Look, proposed: datetime) -> datetime:
        with self._lock:
            self._sweep_locked()
            return self._look_locked(look, proposed).at

    def _look_locked(self, look: Look, proposed: datetime) -> _LookState:
        slot = (look.owner, look.run)
        state = self._looks.get(slot)
        now = self._clock()
        if state is not None and state.due == look.due:
            state.touched = now
            return state
        if state is not None:
            self._drop_locked(slot, state)
        state = _LookState(due=look.due, at=proposed, touched=now)
        self._looks[slot] = state
        return state

    def _drop_locked(self, slot: tuple[Owner, str], state: _LookState) -> None:
        """Forgets a look: its own reads not started are cancelled; it waits for no gathered one."""
        for read in state.reads.values():
            if read.done is None and not read.started:
                read.cancelled = True
        for key in state.waiting_on:
            for read in self._gathered.get(key, ()):
                read.waiting.discard(slot)

    # Reads -------------------------------------------------------------------------------------

    def read(self, look: Look, *, key: Hashable, lane: Lane, job: Callable[[], T]) -> Finished[T] | None:
        with self._lock:
            state = self._look_locked(look, look.due)
            slot = (look.owner, look.run)
            read = state.reads.get(key)
            if read is None:
                read = _Read(lane=self._lane_for(lane))
                state.reads[key] = read
                state.waiting_on.add(key)
                self._submit_locked(
                    read,
                    job,
                    lambda done: self._answered(slot, state, key, read, done),
                    delay=self._until(look.due),
                )
                return None
            if read.done is not None and not _keeps(read.done):
                # An unexpected exception is reported once; the next pass asks again.
                del state.reads[key]
            return read.done

    def read_gathered(
        self, look: Look, *, key: Hashable, member: str, lane: Lane, job: Callable[[frozenset[str]], T]
    ) -> Finished[T] | None:
        with self._lock:
            state = self._look_locked(look, look.due)
            slot = (look.owner, look.run)
            rounds = self._gathered.setdefault(key, [])
            read = next((r for r in rounds if member in r.members), None)
            if read is not None and read.done is not None and not _keeps(read.done):
                rounds.remove(read)
                read = None
            if read is None:
                read = rounds[-1] if rounds and not rounds[-1].started else None
                if read is None:
                    read = self._start_round_locked(key, lane, job, not_before=look.due)
                    rounds.append(read)
                read.members.add(member)
            if read.done is None:
                read.waiting.add(slot)
                state.waiting_on.add(key)
                return None
            read.used_at = self._clock()
            return read.done

    def _start_round_locked(
        self, key: Hashable, lane: Lane, job: Callable[[frozenset[str]], T], *, not_before: datetime
    ) -> _GatheredRead:
        read = _GatheredRead(lane=self._lane_for(lane))
        # Members change only under the lock before the round starts; after, they are fixed.
        self._submit_locked(
            read,
            lambda: job(frozenset(read.members)),
            lambda done: self._gathered_answered(key, read, done),
            delay=self._until(not_before) + self.settings.gather_seconds,
        )
        return read

    def _until(self, due: datetime) -> float:
        """Seconds until `due` (0 once it passed): a look asked ahead is read at its due time."""
        return max(0.0, (due - self._wall_clock()).total_seconds())

    def _lane_for(self, lane: Lane) -> Lane:
        if lane in self._lanes or len(self._lanes) < self.settings.max_lanes:
            return lane
        return Lane(provider=lane.provider)

    def _submit_locked(
        self, read: _Read, job: Callable[[], Any], answered: Callable[[Finished[Any]], None], *, delay: float = 0.0
    ) -> None:
        lane = read.lane
        runner = self._lanes.get(lane)
        if runner is None:
            workers = self.settings.workers.get(lane.provider, self.settings.default_workers)
            runner = _Lane(f"{lane.provider}{len(self._lanes)}", workers)
            self._lanes[lane] = runner
        self._count_locked(lane.provider, +1)
        self.submitted += 1

        def task() -> None:
            with self._lock:
                if read.cancelled:
                    self._count_locked(lane.provider, -1)
                    return
                read.started = True
            done = run_read(job)
            with self._lock:
                self._count_locked(lane.provider, -1)
            answered(done)

        if delay <= 0:
            runner.submit(task)
        else:
            self._later.submit(runner, task, delay=delay)

    def _count_locked(self, provider: str, change: int) -> None:
        count = self._waiting.get(provider, 0) + change
        self._waiting[provider] = count
        telemetry.set_measurements_waiting(count, provider=provider)

    def _answered(
        self, slot: tuple[Owner, str], state: _LookState, key: Hashable, read: _Read, done: Finished[Any]
    ) -> None:
        with self._lock:
            read.done = done
            notify = self._looks.get(slot) is state and self._settle_locked(state, key)
        if notify:
            self._notify(slot[0])

    def _gathered_answered(self, key: Hashable, read: _GatheredRead, done: Finished[Any]) -> None:
        owners: list[Owner] = []
        with self._lock:
            now = self._clock()
            read.done, read.done_at, read.used_at = done, now, now
            for slot in read.waiting:
                state = self._looks.get(slot)
                if state is not None and self._settle_locked(state, key):
                    owners.append(slot[0])
            read.waiting.clear()
        for owner in dict.fromkeys(owners):
            self._notify(owner)

    @staticmethod
    def _settle_locked(state: _LookState, key: Hashable) -> bool:
        """Marks `key` answered for the look; True when it was the last read the look waited for."""
        if key not in state.waiting_on:
            return False
        state.waiting_on.discard(key)
        return not state.waiting_on

    def _notify(self, owner: Owner) -> None:
        callback = self._on_result
        if callback is None:
            return
        try:
            callback(*owner)
        except Exception:
            log.exception("could not queue a rollout whose measurements are in", extra={"key": "/".join(owner)})

    # Expiry ------------------------------------------------------------------------------------

    def _sweep_locked(self) -> None:
        now = self._clock()
        if now - self._swept_at < self.settings.sweep_seconds:
            return
        self._swept_at = now
        limit = self.settings.result_seconds
        for slot, state in list(self._looks.items()):
            if now - state.touched > limit:
                self._drop_locked(slot, state)
                del self._looks[slot]
        linger = self.settings.gathered_linger_seconds
        for key, rounds in list(self._gathered.items()):
            rounds[:] = [
                read
                for read in rounds
                if read.done is None
                or not (now - read.done_at > limit or (not read.waiting and now - read.used_at > linger))
            ]
            if not rounds:
                del self._gathered[key]

    def held(self) -> tuple[int, int]:
        """(looks, gathered results) held now: what expiry keeps bounded."""
        with self._lock:
            self._swept_at = float("-inf")
            self._sweep_locked()
            return len(self._looks), sum(len(rounds) for rounds in self._gathered.values())


def _keeps(done: Finished[Any]) -> bool:
    """A provider's answer (a value, or its TemporaryError / PermanentError) is kept for the look;
    an unexpected exception is handed out once."""
    return done.error is None or isinstance(done.error, TemporaryError | PermanentError)
