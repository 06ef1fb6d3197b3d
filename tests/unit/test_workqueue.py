"""The work queue: one reconcile in flight per key, deduplication, delays and backoff."""

from __future__ import annotations

import math
import threading

import pytest

from controller.workqueue import MAX_DELAY_SECONDS, Backoff, Cause, ShutDown, WorkQueue


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


# Priority: two lanes of ready keys ---------------------------------------------------------------


def test_an_urgent_key_is_handed_out_before_ordinary_keys_added_earlier() -> None:
    # given ordinary keys queued, then an urgent one
    queue = WorkQueue()
    queue.add(("ns", "a"))
    queue.add(("ns", "b"))
    queue.add(("ns", "abort"), urgent=True)

    # when workers take keys, then the urgent one comes first and the others keep their order
    assert [queue.get(), queue.get(), queue.get()] == [("ns", "abort"), ("ns", "a"), ("ns", "b")]


def test_urgent_keys_are_first_in_first_out_among_themselves() -> None:
    queue = WorkQueue()
    queue.add(("ns", "a"))
    queue.add(("ns", "x"), urgent=True)
    queue.add(("ns", "y"), urgent=True)
    assert [queue.get(), queue.get(), queue.get()] == [("ns", "x"), ("ns", "y"), ("ns", "a")]


def test_an_urgent_add_of_a_key_queued_as_ordinary_moves_it_up_once() -> None:
    # given a key queued as ordinary behind another
    queue = WorkQueue()
    queue.add(("ns", "a"))
    queue.add(("ns", "b"))

    # when it is added again as urgent
    queue.add(("ns", "b"), urgent=True)

    # then it is handed out first, and only once
    assert len(queue) == 2
    assert queue.take().key == ("ns", "b")
    assert queue.get() == ("ns", "a")
    assert len(queue) == 0


def test_an_ordinary_add_of_an_urgent_key_leaves_it_urgent() -> None:
    queue = WorkQueue()
    queue.add(("ns", "a"))
    queue.add(("ns", "b"), urgent=True)
    queue.add(("ns", "b"))
    taken = queue.take()
    assert (taken.key, taken.urgent) == (("ns", "b"), True)


def test_an_urgent_add_while_the_key_is_in_flight_waits_for_done_then_goes_first() -> None:
    # given a key being processed and an ordinary key waiting
    queue = WorkQueue()
    queue.add(("ns", "a"))
    key = queue.get()
    queue.add(("ns", "b"))

    # when the key in flight is added as urgent (an abort arrived during its pass)
    queue.add(key, urgent=True)

    # then no second worker gets it meanwhile
    assert queue.get() == ("ns", "b")
    assert queue.ready(urgent=True) == 0
    # and once its pass is done it comes back in the urgent lane
    queue.done(key)
    assert queue.ready(urgent=True) == 1
    taken = queue.take()
    assert (taken.key, taken.urgent) == (key, True)


def test_an_urgent_add_of_a_scheduled_key_makes_it_due_now_and_urgent() -> None:
    # given a key scheduled in 30 s and an ordinary key ready
    clock = FakeClock()
    queue = WorkQueue(clock=clock)
    queue.add_after(("ns", "a"), 30)
    queue.add(("ns", "b"))

    # when it is added as urgent, then it is handed out now, first
    queue.add(("ns", "a"), urgent=True)
    assert queue.get() == ("ns", "a")
    queue.done(("ns", "a"))

    # and its old schedule does not bring it back
    clock.now += 30
    assert queue.get() == ("ns", "b")
    assert len(queue) == 0


def test_an_urgent_schedule_comes_due_in_the_urgent_lane() -> None:
    # given an ordinary key ready and an urgent retry scheduled in 5 s
    clock = FakeClock()
    queue = WorkQueue(clock=clock)
    queue.add_rate_limited(("ns", "abort"), urgent=True)  # 0.5 s
    queue.add(("ns", "a"))

    # when its time comes, then it goes ahead of the ordinary key
    clock.now += 0.5
    taken = queue.take()
    assert (taken.key, taken.urgent, taken.cause) == (("ns", "abort"), True, Cause.RETRY)


def test_an_earlier_ordinary_schedule_keeps_its_time_and_takes_the_urgency_of_a_later_one() -> None:
    clock = FakeClock()
    queue = WorkQueue(clock=clock)
    queue.add_after(("ns", "a"), 10)
    queue.add_after(("ns", "a"), 20, urgent=True)
    queue.add(("ns", "b"))
    clock.now += 10
    taken = queue.take()
    assert (taken.key, taken.urgent) == (("ns", "a"), True)


def test_an_urgent_schedule_of_a_key_already_due_moves_it_up() -> None:
    # given a key in flight, re-added as ordinary by an event meanwhile, and another key ready
    queue = WorkQueue()
    queue.add(("ns", "a"))
    key = queue.get()
    queue.add(key)
    queue.add(("ns", "b"))

    # when its pass fails and it was urgent, the retry keeps it urgent although it is already due
    queue.add_rate_limited(key, urgent=True)
    queue.done(key)

    # then it comes back now (due already, no backoff wait) and first
    assert queue.get() == key
    assert queue.get() == ("ns", "b")


def test_every_key_is_handed_out_once_whatever_the_mix_of_lanes() -> None:
    # given many keys added in both lanes, some twice, some moved up
    queue = WorkQueue()
    keys = [("ns", str(i)) for i in range(50)]
    for i, key in enumerate(keys):
        queue.add(key, urgent=i % 7 == 0)
    for key in keys[::3]:
        queue.add(key, urgent=True)
    for key in keys[::2]:
        queue.add(key)

    # when all are taken, then each exactly once, urgent ones first
    taken = [queue.take() for _ in keys]
    assert sorted(t.key for t in taken) == sorted(keys)
    urgent = [t.urgent for t in taken]
    assert urgent == sorted(urgent, reverse=True)
    assert len(queue) == 0


def test_shut_down_drops_adds_in_both_lanes() -> None:
    queue = WorkQueue()
    queue.shut_down()
    queue.add(("ns", "a"), urgent=True)
    queue.add_after(("ns", "b"), 1, urgent=True)
    assert len(queue) == 0
    with pytest.raises(ShutDown):
        queue.take()


# What the queue reports: ready keys, lateness, cause ------------------------------------------


def test_ready_counts_keys_due_now_per_lane_and_not_those_scheduled_for_later() -> None:
    # given two ordinary keys ready, one urgent, and one scheduled in 30 s
    clock = FakeClock()
    queue = WorkQueue(clock=clock)
    queue.add(("ns", "a"))
    queue.add(("ns", "b"))
    queue.add(("ns", "c"), urgent=True)
    queue.add_after(("ns", "later"), 30)

    # then only the ready ones count as ready
    assert (queue.ready(urgent=True), queue.ready(urgent=False), queue.scheduled()) == (1, 2, 1)

    # when the scheduled key's time comes, then it counts as ready without a worker asking
    clock.now += 30
    assert (queue.ready(urgent=False), queue.scheduled()) == (3, 0)

    # and keys in flight are counted apart
    queue.get()
    assert (queue.ready(urgent=True), queue.in_flight()) == (0, 1)


def test_lateness_counts_from_the_add_for_a_key_added_ready() -> None:
    # given a key added at t=100
    clock = FakeClock()
    queue = WorkQueue(clock=clock)
    queue.add(("ns", "a"))

    # when a worker takes it 3 s later, then it was 3 s late, queued by an event
    clock.now += 3
    taken = queue.take()
    assert (taken.lateness, taken.cause, taken.urgent) == (3, Cause.EVENT, False)


def test_lateness_counts_from_the_scheduled_time_not_from_the_add_after() -> None:
    # given a key scheduled in 10 s
    clock = FakeClock()
    queue = WorkQueue(clock=clock)
    queue.add_after(("ns", "a"), 10)

    # when a worker takes it 12 s later, then it was 2 s late, queued by a timer
    clock.now += 12
    taken = queue.take()
    assert (taken.lateness, taken.cause) == (2, Cause.TIMER)


def test_lateness_of_a_key_added_during_its_own_pass_counts_from_that_add() -> None:
    # given a key in flight that an event adds again
    clock = FakeClock()
    queue = WorkQueue(clock=clock)
    queue.add(("ns", "a"))
    key = queue.get()
    queue.add(key)

    # when its pass ends 4 s later and a worker takes it at once, then it was 4 s late
    clock.now += 4
    queue.done(key)
    assert queue.take().lateness == 4


def test_an_earlier_add_wins_over_a_schedule_and_its_cause_is_the_event() -> None:
    clock = FakeClock()
    queue = WorkQueue(clock=clock)
    queue.add_after(("ns", "a"), 10)
    clock.now += 1
    queue.add(("ns", "a"))
    clock.now += 1
    taken = queue.take()
    assert (taken.lateness, taken.cause) == (1, Cause.EVENT)


def test_a_retry_with_a_delay_counts_as_a_retry() -> None:
    clock = FakeClock()
    queue = WorkQueue(clock=clock)
    queue.add_after(("ns", "a"), 2, retry=True)
    clock.now += 2
    assert queue.take().cause == Cause.RETRY


# Health with two lanes -------------------------------------------------------------------------


def test_a_queue_with_only_urgent_keys_due_and_none_handed_out_counts_as_stalled() -> None:
    clock = FakeClock()
    queue = WorkQueue(clock=clock)
    queue.add(("ns", "abort"), urgent=True)
    clock.now += 40
    assert queue.stalled_seconds() == 40
    queue.get()
    assert queue.stalled_seconds() == 0


def test_moving_a_key_up_does_not_reset_the_stall() -> None:
    # given an ordinary key due for 40 s and no worker taking it
    clock = FakeClock()
    queue = WorkQueue(clock=clock)
    queue.add(("ns", "a"))
    clock.now += 40

    # when it is added as urgent, then the queue still counts as stalled since it became due
    queue.add(("ns", "a"), urgent=True)
    clock.now += 10
    assert queue.stalled_seconds() == 50


def test_handing_out_an_urgent_key_resets_the_stall_while_ordinary_keys_wait() -> None:
    clock = FakeClock()
    queue = WorkQueue(clock=clock)
    queue.add(("ns", "a"))
    queue.add(("ns", "abort"), urgent=True)
    clock.now += 40
    queue.get()
    assert queue.stalled_seconds() == 0
    clock.now += 5
    assert queue.stalled_seconds() == 5


def test_a_done_for_a_key_not_in_flight_does_not_queue_it_twice() -> None:
    queue = WorkQueue()
    queue.add(("ns", "a"))
    queue.done(("ns", "a"))
    assert queue.get() == ("ns", "a")
    assert len(queue) == 0
