"""The work queue: one reconcile in flight per key, deduplication, delays and backoff."""

from __future__ import annotations

import math
import threading

import pytest

from controller.workqueue import MAX_DELAY_SECONDS, Backoff, ShutDown, WorkQueue


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_key_added_twice_is_handed_out_once() -> None:
    queue = WorkQueue()
    queue.add(("ns", "a"))
    queue.add(("ns", "a"))
    queue.add(("ns", "b"))
    assert [queue.get(), queue.get()] == [("ns", "a"), ("ns", "b")]
    assert len(queue) == 0


def test_a_key_added_while_processing_comes_back_only_after_done() -> None:
    queue = WorkQueue()
    queue.add(("ns", "a"))
    key = queue.get()
    queue.add(key)
    assert len(queue) == 0, "never handed to a second worker while the first one runs"
    queue.done(key)
    assert queue.get() == key


def test_add_after_waits_and_the_earliest_schedule_wins() -> None:
    clock = FakeClock()
    queue = WorkQueue(clock=clock)
    queue.add_after(("ns", "a"), 30)
    queue.add_after(("ns", "a"), 10)
    queue.add_after(("ns", "a"), 20)
    clock.now += 10
    assert queue.get() == ("ns", "a")
    queue.done(("ns", "a"))
    clock.now += 30
    assert len(queue) == 0, "later schedules of the same key were dropped"


def test_failures_back_off_exponentially_until_forgotten() -> None:
    queue = WorkQueue(backoff=Backoff(base_seconds=1, max_seconds=5))
    key = ("ns", "a")
    assert [queue.add_rate_limited(key) for _ in range(5)] == [1, 2, 4, 5, 5]
    queue.forget(key)
    assert queue.add_rate_limited(key) == 1


def test_shut_down_wakes_a_blocked_worker() -> None:
    queue = WorkQueue()
    raised = threading.Event()

    def worker() -> None:
        with pytest.raises(ShutDown):
            queue.get()
        raised.set()

    thread = threading.Thread(target=worker)
    thread.start()
    queue.shut_down()
    thread.join(timeout=5)
    assert raised.is_set()


def test_a_delay_longer_than_the_bound_is_clamped_and_a_worker_can_still_wait() -> None:
    # given a key scheduled 9999999h ahead (a typo in a pause), beyond what a lock can wait for
    clock = FakeClock()
    queue = WorkQueue(clock=clock)
    queue.add_after(("ns", "far"), 9_999_999 * 3600.0)

    # when a worker waits for it, then it is handed out after MAX_DELAY_SECONDS, not never
    clock.now += MAX_DELAY_SECONDS
    assert queue.get() == ("ns", "far")


def test_a_delay_that_is_not_a_number_waits_the_longest_delay() -> None:
    clock = FakeClock()
    queue = WorkQueue(clock=clock)
    queue.add_after(("ns", "a"), math.nan)
    assert len(queue) == 1
    clock.now += MAX_DELAY_SECONDS - 1
    assert queue.stalled_seconds() == 0, "not due yet"


def test_a_queue_with_keys_due_and_none_handed_out_counts_as_stalled() -> None:
    # given a key due now and no worker taking it
    clock = FakeClock()
    queue = WorkQueue(clock=clock)
    queue.add(("ns", "a"))

    # when time passes, then the queue counts it as stalled since the key became due
    clock.now += 40
    assert queue.stalled_seconds() == 40

    # and a worker taking the key resets it
    queue.get()
    assert queue.stalled_seconds() == 0


def test_an_idle_queue_is_never_stalled() -> None:
    clock = FakeClock()
    queue = WorkQueue(clock=clock)
    queue.add_after(("ns", "a"), 600)
    clock.now += 500
    assert queue.stalled_seconds() == 0
