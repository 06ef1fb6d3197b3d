"""The measurement pool: reads off the reconcile workers, keyed, shared, notified once, expired.

No server: the reads are functions the tests hold back with events.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from controller.analysis.checker import AnalysisChecker
from controller.analysis.measurements import Finished, Lane, Look, MeasurementPool, PoolSettings
from controller.analysis.providers import ProviderUnavailable
from controller.analysis.spec import MetricSource, PrometheusSource
from controller.api import ModelRolloutStatus, parse_spec
from controller.checks import CheckContext, StepWindow, Verdict

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
PROMETHEUS = Lane(provider="prometheus")
WAIT = 5.0


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Notified:
    """Records on_result calls; `wait(n)` blocks until n have come."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self._cond = threading.Condition()

    def __call__(self, namespace: str, name: str) -> None:
        with self._cond:
            self.calls.append((namespace, name))
            self._cond.notify_all()

    def wait(self, count: int) -> list[tuple[str, str]]:
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.calls) >= count, timeout=WAIT), self.calls
            return list(self.calls)


class Gate:
    """A read that answers `value` once released, counting how often it ran."""

    def __init__(self, value: Any = 1.0) -> None:
        self.value = value
        self.release = threading.Event()
        self.started = threading.Event()
        self.runs = 0

    def __call__(self) -> Any:
        self.runs += 1
        self.started.set()
        assert self.release.wait(WAIT)
        if isinstance(self.value, Exception):
            raise self.value
        return self.value


def look(name: str = "a", *, due: datetime = T0, run: str = "step-1") -> Look:
    return Look(owner=("ml", name), run=run, due=due)


def until(pool: MeasurementPool, the_look: Look, key: str, job: Callable[[], Any], **kw: Any) -> Finished[Any]:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        done = pool.read(the_look, key=key, lane=PROMETHEUS, job=job, **kw)
        if done is not None:
            return done
        time.sleep(0.01)
    raise AssertionError(f"read {key} not answered")


def test_a_read_is_submitted_once_and_answered_on_a_later_ask() -> None:
    notified = Notified()
    pool = MeasurementPool(on_result=notified)
    gate = Gate(0.5)
    assert pool.read(look(), key="q", lane=PROMETHEUS, job=gate) is None
    assert pool.read(look(), key="q", lane=PROMETHEUS, job=gate) is None
    assert gate.started.wait(WAIT)
    assert pool.waiting() == {"prometheus": 1}
    gate.release.set()
    assert notified.wait(1) == [("ml", "a")]
    done = pool.read(look(), key="q", lane=PROMETHEUS, job=gate)
    assert done is not None and done.get() == 0.5
    assert gate.runs == 1 and pool.submitted == 1
    assert pool.waiting() == {}


def test_a_look_is_re_enqueued_once_when_its_last_read_is_in() -> None:
    notified = Notified()
    pool = MeasurementPool(on_result=notified)
    first, second = Gate(), Gate()
    pool.read(look(), key="candidate", lane=PROMETHEUS, job=first)
    pool.read(look(), key="baseline", lane=PROMETHEUS, job=second)
    first.release.set()
    time.sleep(0.2)
    assert notified.calls == []
    second.release.set()
    notified.wait(1)
    time.sleep(0.1)
    assert notified.calls == [("ml", "a")]


def test_a_provider_error_is_the_read_s_answer() -> None:
    pool = MeasurementPool()
    gate = Gate(ProviderUnavailable("Prometheus did not answer"))
    gate.release.set()
    done = until(pool, look(), "q", gate)
    with pytest.raises(ProviderUnavailable):
        done.get()
    # Kept for the look: the next pass sees the same answer, without asking again.
    assert pool.read(look(), key="q", lane=PROMETHEUS, job=gate) is done
    assert gate.runs == 1


def test_an_unexpected_exception_is_handed_out_once_then_asked_again() -> None:
    pool = MeasurementPool()
    gate = Gate(RuntimeError("a bug"))
    gate.release.set()
    done = until(pool, look(), "q", gate)
    with pytest.raises(RuntimeError):
        done.get()
    assert pool.read(look(), key="q", lane=PROMETHEUS, job=gate) is None
    until(pool, look(), "q", gate)
    assert gate.runs == 2


class Gathered:
    """A gathered read: records the members of each run, answers once released."""

    def __init__(self) -> None:
        self.gate = Gate()
        self.members: list[frozenset[str]] = []

    def __call__(self, members: frozenset[str]) -> dict[str, float]:
        self.members.append(members)
        self.gate()
        return dict.fromkeys(sorted(members), 1.0)


def gathered(pool: MeasurementPool, name: str, job: Gathered, *, member: str | None = None) -> Finished[Any] | None:
    return pool.read_gathered(look(name), key="batch", member=member or name, lane=PROMETHEUS, job=job)


def test_a_gathered_read_runs_once_for_the_looks_that_ask_while_it_gathers_and_tells_each() -> None:
    notified = Notified()
    pool = MeasurementPool(settings=PoolSettings(gather_seconds=0.5), on_result=notified)
    job = Gathered()
    # Given three looks that ask within the gathering time
    for name in ("a", "b", "c"):
        assert gathered(pool, name, job) is None
    # When the read is answered
    job.gate.release.set()
    # Then it ran once, for the three members, and each look was told
    assert sorted(notified.wait(3)) == [("ml", "a"), ("ml", "b"), ("ml", "c")]
    assert job.members == [frozenset({"a", "b", "c"})]
    for name in ("a", "b", "c"):
        done = gathered(pool, name, job)
        assert done is not None and done.get() == {"a": 1.0, "b": 1.0, "c": 1.0}


def test_a_look_whose_member_the_sent_read_does_not_cover_starts_the_next_round() -> None:
    notified = Notified()
    pool = MeasurementPool(settings=PoolSettings(gather_seconds=0.05), on_result=notified)
    job = Gathered()
    assert gathered(pool, "a", job) is None
    assert job.gate.started.wait(WAIT), "the first round is sent after the gathering time"
    # When a look for another model asks once the first round is sent, and one for the same model
    assert gathered(pool, "late", job) is None
    assert gathered(pool, "a-again", job, member="a") is None
    job.gate.release.set()
    # Then the late look gets a round of its own, and the same model's look shares the first
    assert sorted(notified.wait(3)) == [("ml", "a"), ("ml", "a-again"), ("ml", "late")]
    assert job.members == [frozenset({"a"}), frozenset({"late"})]
    late = gathered(pool, "late", job)
    assert late is not None and late.get() == {"late": 1.0}


def test_the_look_time_is_the_first_pass_s_until_the_look_changes() -> None:
    pool = MeasurementPool()
    assert pool.look_time(look(), T0 + timedelta(seconds=1)) == T0 + timedelta(seconds=1)
    assert pool.look_time(look(), T0 + timedelta(seconds=9)) == T0 + timedelta(seconds=1)
    later = look(due=T0 + timedelta(seconds=30))
    assert pool.look_time(later, T0 + timedelta(seconds=31)) == T0 + timedelta(seconds=31)


def test_a_newer_look_drops_the_older_one_s_reads_and_cancels_those_not_started() -> None:
    notified = Notified()
    pool = MeasurementPool(settings=PoolSettings(workers={"prometheus": 1}), on_result=notified)
    running, queued = Gate(), Gate()
    pool.read(look(), key="running", lane=PROMETHEUS, job=running)
    pool.read(look(), key="queued", lane=PROMETHEUS, job=queued)
    assert running.started.wait(WAIT)
    newer = look(due=T0 + timedelta(seconds=30))
    pool.look_time(newer, T0 + timedelta(seconds=30))
    running.release.set()
    queued.release.set()
    time.sleep(0.2)
    assert queued.runs == 0, "a read of a dropped look that had not started does not run"
    assert notified.calls == [], "nobody waits for a dropped look"
    assert pool.waiting() == {}


def test_a_slow_lane_does_not_hold_another_lane() -> None:
    pool = MeasurementPool(settings=PoolSettings(workers={"prometheus": 1}))
    slow = Gate()
    pool.read(look("slow"), key="q", lane=Lane(provider="prometheus", address="http://slow:9090"), job=slow)
    assert slow.started.wait(WAIT)
    fast = Gate(2.0)
    fast.release.set()
    assert until(pool, look("fast"), "q", fast).get() == 2.0
    slow.release.set()


def test_lanes_are_capped_and_share_their_provider_s_default_beyond() -> None:
    pool = MeasurementPool(settings=PoolSettings(max_lanes=2))
    for i in range(5):
        gate = Gate()
        gate.release.set()
        lane = Lane(provider="prometheus", address=f"http://p{i}:9090")
        pool.read(look(f"r{i}"), key="q", lane=lane, job=gate)
    assert len(pool._lanes) == 3  # two addresses, then the provider's default lane


def test_results_nobody_collects_expire() -> None:
    clock = Clock()
    pool = MeasurementPool(settings=PoolSettings(result_seconds=60, gathered_linger_seconds=10), clock=clock)
    for name in ("a", "b"):
        gate = Gate()
        gate.release.set()
        until(pool, look(name), "own", gate)
        released = Gathered()
        released.gate.release.set()
        while gathered(pool, name, released, member="m") is None:
            time.sleep(0.01)
    assert pool.held() == (2, 1)
    clock.now = 11.0
    assert pool.held() == (2, 0), "a gathered result lingers a while after its last use"
    clock.now = 30.0
    pool.look_time(look("a"), T0)
    clock.now = 70.0
    assert pool.held() == (1, 0), "a look untouched for result_seconds is forgotten"


# ---------------------------------------------------------------------------------------------
# The checker on the pool


class HeldProvider:
    """A Prometheus stand-in whose answers wait until released; answers by query."""

    def __init__(self, table: Mapping[str, float]) -> None:
        self.table = dict(table)
        self.release = threading.Event()
        self.asked: list[PrometheusSource] = []

    def measure(self, *, source: MetricSource, namespace: str) -> float | None:
        assert isinstance(source, PrometheusSource)
        self.asked.append(source)
        assert self.release.wait(WAIT)
        return self.table[source.query]


def context(*, now: datetime, status: ModelRolloutStatus | None = None) -> CheckContext:
    spec = parse_spec(
        {
            "model": "iris",
            "versions": [{"version": v, "backend": {"service": f"iris-{v}", "port": 8080}} for v in ("v1", "v2")],
            "baseline": "v1",
            "candidate": "v2",
            "trafficRouting": {"gatewayAPI": {"httpRoute": "iris"}},
            "steps": [{"setWeight": 20}, {"analyze": {"duration": "1m"}}],
            "analysis": {
                "interval": "30s",
                "metrics": [
                    {
                        "name": "errors",
                        "provider": {"prometheus": {"query": "err{{version}}"}},
                        "comparison": {"maxDifference": 0.01},
                    }
                ],
            },
        }
    )
    return CheckContext(
        namespace="ml",
        name="iris",
        spec=spec,
        status=status or ModelRolloutStatus(current_step_index=1),
        stable_version="v1",
        now=now,
        current_weight=20,
        step=StepWindow(index=1, started_at=T0, seconds=60),
    )


class FlowingClock:
    """Wall time that starts at `start` and flows as real time does (the pool waits in real time
    for a look asked ahead)."""

    def __init__(self, start: datetime) -> None:
        self._start = start
        self._began = time.monotonic()

    def __call__(self) -> datetime:
        return self._start + timedelta(seconds=time.monotonic() - self._began)


def test_the_checker_returns_at_once_while_its_reads_run_and_takes_the_look_when_they_are_in() -> None:
    notified = Notified()
    due = T0 + timedelta(seconds=30)
    pool = MeasurementPool(on_result=notified, wall_clock=FlowingClock(due))
    provider = HeldProvider({"errv1": 0.01, "errv2": 0.012})
    checker = AnalysisChecker(
        providers={"prometheus": provider}, template_lookup=lambda *, namespace, name: None, measurements=pool
    )
    started = time.monotonic()
    waiting = checker(context=context(now=due + timedelta(seconds=0.2)))
    assert time.monotonic() - started < 1.0, "the pass does not wait for the provider"
    assert waiting is not None and waiting.verdict is Verdict.RUNNING
    assert waiting.requeue_after == 30.0, "only a safety net: the pool re-enqueues the rollout"
    assert waiting.status_fields["analysis"]["measurements"] == []
    # A second pass before the answers: nothing asked twice, status unchanged.
    again = checker(context=context(now=due + timedelta(seconds=1)))
    assert again is not None and again.status_fields == waiting.status_fields
    provider.release.set()
    assert notified.wait(1) == [("ml", "iris")]
    taken = checker(context=context(now=due + timedelta(seconds=2)))
    assert taken is not None
    (measurement,) = taken.status_fields["analysis"]["measurements"]
    assert (measurement["verdict"], measurement["candidateValue"]) == ("Successful", 0.012)
    # The look is as of the first pass that asked for it, and so are the queries' evaluation times.
    assert measurement["time"] == "2024-05-01T12:00:30.200Z"
    assert {source.at for source in provider.asked} == {(due + timedelta(seconds=0.2)).timestamp()}
    assert len(provider.asked) == 2
    # The last look, at the window's end (12:01:00), is asked already: its two reads wait in the
    # pool until then, and the pool brings the pass; the requeue is only a safety net after it.
    assert pool.waiting() == {"prometheus": 2}
    assert taken.requeue_after == pytest.approx(28.0 + 30.0)


def test_a_look_asked_ahead_is_read_at_its_due_time_and_brings_its_pass_when_its_answers_are_in() -> None:
    # given a pool whose wall clock is half a second before the window's end (the last look's due
    # time), and a first look taken late, just now
    notified = Notified()
    window_end = T0 + timedelta(seconds=60)
    pool = MeasurementPool(on_result=notified, wall_clock=FlowingClock(window_end - timedelta(seconds=0.5)))
    provider = HeldProvider({"errv1": 0.01, "errv2": 0.012})
    provider.release.set()
    checker = AnalysisChecker(
        providers={"prometheus": provider}, template_lookup=lambda *, namespace, name: None, measurements=pool
    )
    late = window_end - timedelta(seconds=0.5)
    assert checker(context=context(now=late)) is not None
    assert notified.wait(1) == [("ml", "iris")]
    started = time.monotonic()

    # when the pass that takes it runs
    taken = checker(context=context(now=late))

    # then it asked the last look's reads, which wait for the window's end: nothing more is read
    # at once, the pool reads them at 12:01:00 (evaluated then) and then brings the rollout's pass
    assert taken is not None and len(taken.status_fields["analysis"]["measurements"]) == 1
    assert len(provider.asked) == 2
    assert notified.wait(2) == [("ml", "iris"), ("ml", "iris")]
    assert time.monotonic() - started >= 0.4
    assert len(provider.asked) == 4
    assert {source.at for source in provider.asked[2:]} == {window_end.timestamp()}


def test_a_restarted_controller_submits_the_due_look_again() -> None:
    provider = HeldProvider({"errv1": 0.01, "errv2": 0.012})
    provider.release.set()

    def make(pool: MeasurementPool) -> AnalysisChecker:
        return AnalysisChecker(
            providers={"prometheus": provider}, template_lookup=lambda *, namespace, name: None, measurements=pool
        )

    due = T0 + timedelta(seconds=30)
    first = make(MeasurementPool())(context=context(now=due))
    assert first is not None and first.verdict is Verdict.RUNNING
    # The process ends before the next pass; a new one has only status, which holds no look.
    stored = ModelRolloutStatus(current_step_index=1, extra=first.status_fields)
    restarted = make(MeasurementPool())
    assert restarted(context=context(now=due + timedelta(seconds=5), status=stored)) is not None
    deadline = time.monotonic() + WAIT
    while True:
        outcome = restarted(context=context(now=due + timedelta(seconds=6), status=stored))
        assert outcome is not None
        if outcome.status_fields["analysis"]["measurements"]:
            break
        assert time.monotonic() < deadline
        time.sleep(0.01)
    (measurement,) = outcome.status_fields["analysis"]["measurements"]
    assert measurement["time"] == "2024-05-01T12:00:35.000Z"
