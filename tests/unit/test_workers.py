"""The reconcile workers survive every exception of a pass, report it on the rollout and retry it;
the health rule tells the kubelet when workers are gone or the queue stopped moving."""

from __future__ import annotations

import threading

from controller.workers import WorkerPool
from controller.workqueue import Key, WorkQueue

FAILING: Key = ("ns", "broken")
HEALTHY: Key = ("ns", "fine")


class Reconciles:
    """Fails every pass of FAILING with an OverflowError (a bug of the kind that once killed every
    worker); passes of other keys succeed."""

    def __init__(self) -> None:
        self.passes: list[Key] = []
        self.reported: list[tuple[Key, Exception]] = []
        self.healthy_done = threading.Event()

    def reconcile(self, *, namespace: str, name: str) -> float | None:
        self.passes.append((namespace, name))
        if (namespace, name) == FAILING:
            raise OverflowError("timeout value is too large")
        self.healthy_done.set()
        return None

    def report_failure(self, *, namespace: str, name: str, error: Exception) -> None:
        self.reported.append(((namespace, name), error))


def test_a_pass_that_raises_is_reported_and_retried_and_the_worker_goes_on() -> None:
    # given one worker, and a rollout whose pass raises ahead of a rollout whose pass works
    queue = WorkQueue()
    reconciler = Reconciles()
    pool = WorkerPool(queue=queue, reconciler=reconciler, workers=1, stall_seconds=60)
    queue.add(FAILING)
    queue.add(HEALTHY)

    # when the worker runs
    pool.start()

    # then the second rollout is still reconciled, by the same (living) worker
    assert reconciler.healthy_done.wait(timeout=5)
    assert pool.health_problem() is None
    # and the failure was reported on its rollout and scheduled again with backoff
    assert [(key, type(error)) for key, error in reconciler.reported] == [(FAILING, OverflowError)]
    assert len(queue) == 1, "the failing key waits for its retry"
    queue.shut_down()


def test_a_failure_to_report_the_failure_does_not_end_the_worker() -> None:
    # given a reconciler whose reporting fails too (the API server is what failed the pass)
    queue = WorkQueue()
    reconciler = Reconciles()

    def report_failure(**_: object) -> None:
        raise ConnectionError("API server unreachable")

    reconciler.report_failure = report_failure  # type: ignore[method-assign]
    pool = WorkerPool(queue=queue, reconciler=reconciler, workers=1, stall_seconds=60)
    queue.add(FAILING)
    queue.add(HEALTHY)

    # when the worker runs, then it goes on to the next rollout
    pool.start()
    assert reconciler.healthy_done.wait(timeout=5)
    assert pool.health_problem() is None
    queue.shut_down()


def test_health_fails_when_a_worker_thread_is_gone() -> None:
    # given a pool whose workers ended (here: the queue shut down under them)
    queue = WorkQueue()
    pool = WorkerPool(queue=queue, reconciler=Reconciles(), workers=2, stall_seconds=60)
    pool.start()
    queue.shut_down()
    for thread in threading.enumerate():
        if thread.name.startswith("worker-"):
            thread.join(timeout=5)

    # then the health rule names them
    assert pool.health_problem() == "reconcile worker threads ended: worker-0, worker-1"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_health_fails_when_keys_are_due_longer_than_the_limit_and_none_is_taken() -> None:
    # given a pool with no worker running and a key due
    clock = Clock()
    queue = WorkQueue(clock=clock)
    pool = WorkerPool(queue=queue, reconciler=Reconciles(), workers=0, stall_seconds=300)
    queue.add(HEALTHY)

    # when less than the limit passes, then the pool is healthy; when more passes, it is not
    clock.now += 300
    assert pool.health_problem() is None
    clock.now += 1
    assert pool.health_problem() == (
        "the work queue has had keys due for 301s without handing one out (limit 300s, --queue-stall-seconds)"
    )
