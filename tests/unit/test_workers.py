"""The reconcile workers survive every exception of a pass, report it on the rollout and retry it;
the health rule tells the kubelet when workers are gone or the queue stopped moving."""

from __future__ import annotations

import threading

from prometheus_client import REGISTRY

from controller import telemetry
from controller.errors import TemporaryError
from controller.workers import WorkerPool
from controller.workqueue import Cause, Key, WorkQueue

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


def test_health_fails_when_only_urgent_keys_are_due_and_none_is_taken() -> None:
    # given a pool with no worker running and an urgent key (an abort) due
    clock = Clock()
    queue = WorkQueue(clock=clock)
    pool = WorkerPool(queue=queue, reconciler=Reconciles(), workers=0, stall_seconds=300)
    queue.add(HEALTHY, urgent=True)

    # when more than the limit passes, then the pool is not healthy
    clock.now += 301
    assert pool.health_problem() is not None and "301s" in (pool.health_problem() or "")


# Priority and the queue metrics ----------------------------------------------------------------


class Recorder(Reconciles):
    """Records the order of passes; FAILING fails, TEMPORARY raises a TemporaryError, others ask
    to be looked at again in `requeue` seconds."""

    def __init__(self, *, requeue: float | None = None) -> None:
        super().__init__()
        self.requeue = requeue

    def reconcile(self, *, namespace: str, name: str) -> float | None:
        super().reconcile(namespace=namespace, name=name)
        if (namespace, name) == TEMPORARY:
            raise TemporaryError("conflict", delay=2)
        return self.requeue


TEMPORARY: Key = ("ns", "conflict")
URGENT: Key = ("ns", "aborting")


def sample(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


def test_an_urgent_key_is_reconciled_before_the_ordinary_keys_ahead_of_it() -> None:
    # given one worker and many ordinary rollouts queued before an aborted one
    queue = WorkQueue()
    reconciler = Recorder()
    pool = WorkerPool(queue=queue, reconciler=reconciler, workers=1, stall_seconds=60)
    ordinary: list[Key] = [("ns", f"r{i}") for i in range(20)]
    for key in ordinary:
        queue.add(key)
    queue.add(URGENT, urgent=True)
    queue.add(HEALTHY)  # the last one: its pass sets healthy_done

    # when the worker runs
    pool.start()
    assert reconciler.healthy_done.wait(timeout=5)
    queue.shut_down()

    # then the aborted rollout had the first pass
    assert reconciler.passes == [URGENT, *ordinary, HEALTHY]


def test_a_failed_urgent_pass_is_retried_as_urgent_and_a_successful_one_asks_again_as_ordinary() -> None:
    # given urgent keys: one whose pass fails, one whose pass meets a conflict, one whose pass works
    clock = Clock()
    queue = WorkQueue(clock=clock)
    pool = WorkerPool(queue=queue, reconciler=Recorder(requeue=10), workers=0, stall_seconds=60)
    for key in (FAILING, TEMPORARY, HEALTHY):
        queue.add(key, urgent=True)

    # when each pass runs
    for _ in range(3):
        pool._process(queue.take())

    # then the retries come due in the urgent lane, the requeue of the successful pass in the other
    clock.now += 10
    assert (queue.ready(urgent=True), queue.ready(urgent=False)) == (2, 1)
    retried = {taken.key: taken for taken in (queue.take(), queue.take())}
    assert set(retried) == {FAILING, TEMPORARY}
    assert all(taken.urgent and taken.cause == Cause.RETRY for taken in retried.values())
    last = queue.take()
    assert (last.key, last.urgent, last.cause) == (HEALTHY, False, Cause.TIMER)


def test_a_pass_records_its_lateness_and_its_kind() -> None:
    # given an urgent key due for 3 s and a key whose timer came 1.5 s ago
    clock = Clock()
    queue = WorkQueue(clock=clock)
    pool = WorkerPool(queue=queue, reconciler=Recorder(), workers=0, stall_seconds=60)
    queue.add(URGENT, urgent=True)
    queue.add_after(TEMPORARY, 1.5)
    clock.now += 3
    urgent_event = {"priority": "urgent", "cause": "event"}
    normal_timer = {"priority": "normal", "cause": "timer"}
    before = {
        "late_count": sample("model_rollouts_workqueue_lateness_seconds_count", urgent_event),
        "late_sum": sample("model_rollouts_workqueue_lateness_seconds_sum", urgent_event),
        "late_under_2": sample("model_rollouts_workqueue_lateness_seconds_bucket", {**normal_timer, "le": "2.0"}),
        "urgent_ok": sample("model_rollouts_passes_total", {**urgent_event, "result": "success"}),
        "timer_retry": sample("model_rollouts_passes_total", {**normal_timer, "result": "retry"}),
        "retry": sample("model_rollouts_reconcile_total", {"result": "retry"}),
    }

    # when a worker runs both passes (the second meets a conflict)
    pool._process(queue.take())
    pool._process(queue.take())

    # then the lateness of each is observed under its lane and cause
    assert sample("model_rollouts_workqueue_lateness_seconds_count", urgent_event) == before["late_count"] + 1
    assert sample("model_rollouts_workqueue_lateness_seconds_sum", urgent_event) == before["late_sum"] + 3
    assert (
        sample("model_rollouts_workqueue_lateness_seconds_bucket", {**normal_timer, "le": "2.0"})
        == before["late_under_2"] + 1
    )
    # and each pass is counted by lane, cause and result (and in the total by result, as before)
    assert sample("model_rollouts_passes_total", {**urgent_event, "result": "success"}) == before["urgent_ok"] + 1
    assert sample("model_rollouts_passes_total", {**normal_timer, "result": "retry"}) == before["timer_retry"] + 1
    assert sample("model_rollouts_reconcile_total", {"result": "retry"}) == before["retry"] + 1


def test_the_depth_metrics_read_the_queue_at_scrape_time() -> None:
    # given a pool's queue with keys ready in both lanes, one scheduled and one in flight
    clock = Clock()
    queue = WorkQueue(clock=clock)
    WorkerPool(queue=queue, reconciler=Recorder(), workers=0, stall_seconds=60)
    queue.add(("ns", "in-flight"))
    queue.get()
    queue.add(("ns", "a"))
    queue.add(("ns", "b"))
    queue.add(URGENT, urgent=True)
    queue.add_after(("ns", "later"), 30)

    # then the metrics show keys ready now apart from those scheduled, with no pass having started
    assert sample("model_rollouts_workqueue_depth", {"priority": "normal"}) == 2
    assert sample("model_rollouts_workqueue_depth", {"priority": "urgent"}) == 1
    assert sample("model_rollouts_workqueue_scheduled") == 1
    assert sample("model_rollouts_workqueue_in_flight") == 1

    # when the scheduled key comes due, then it counts as ready at the next scrape
    clock.now += 30
    assert sample("model_rollouts_workqueue_depth", {"priority": "normal"}) == 3
    assert sample("model_rollouts_workqueue_scheduled") == 0


def test_measurements_waiting_is_a_gauge_the_analysis_sets() -> None:
    # when the analysis reports measurements waiting for a provider, then the gauge shows the last value
    telemetry.set_measurements_waiting(7, provider="prometheus")
    telemetry.set_measurements_waiting(3, provider="prometheus")
    assert sample("model_rollouts_measurements_waiting", {"provider": "prometheus"}) == 3
    telemetry.set_measurements_waiting(5)
    assert sample("model_rollouts_measurements_waiting", {"provider": "all"}) == 5
