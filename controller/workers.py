"""The reconcile workers: a fixed pool of threads taking keys from the work queue.

A worker never ends on an exception. Whatever a pass raises is logged with the rollout's key,
reported on the rollout (a condition and a Warning Event) and retried with backoff; only a shut
down queue ends a worker. `health_problem` tells the liveness probe when that promise is broken
anyway (a worker thread gone, or due keys no worker takes), so that Kubernetes restarts the pod.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol

from controller import telemetry
from controller.errors import TemporaryError
from controller.workqueue import Key, ShutDown, Taken, WorkQueue

log = logging.getLogger(__name__)

QUEUE_ERROR_PAUSE_SECONDS = 1.0
"""Pause before a worker asks the queue again after the queue itself failed, so as not to spin."""


class Reconciles(Protocol):
    def reconcile(self, *, namespace: str, name: str) -> float | None:
        """Runs one pass; returns seconds until the rollout wants another look, if any."""
        ...

    def report_failure(self, *, namespace: str, name: str, error: Exception) -> None:
        """Tells the rollout's readers that a pass failed, and why."""
        ...


class WorkerPool:
    def __init__(
        self,
        *,
        queue: WorkQueue,
        reconciler: Reconciles,
        workers: int,
        stall_seconds: float,
        pause: Callable[[float], None] = time.sleep,
    ) -> None:
        self.queue = queue
        self.reconciler = reconciler
        self.workers = workers
        self.stall_seconds = stall_seconds
        self._pause = pause
        self._threads: list[threading.Thread] = []
        telemetry.watch_queue(queue)

    def start(self) -> None:
        for i in range(self.workers):
            thread = threading.Thread(target=self.work, name=f"worker-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def health_problem(self) -> str | None:
        """Why the pool cannot be trusted to reconcile any more, or None while it can."""
        gone = [thread.name for thread in self._threads if not thread.is_alive()]
        if gone:
            return f"reconcile worker threads ended: {', '.join(gone)}"
        stalled = self.queue.stalled_seconds()
        if stalled > self.stall_seconds:
            return (
                f"the work queue has had keys due for {stalled:.0f}s without handing one out "
                f"(limit {self.stall_seconds:.0f}s, --queue-stall-seconds)"
            )
        return None

    def work(self) -> None:
        """The loop of one worker thread; returns only when the queue shuts down."""
        while True:
            try:
                taken = self.queue.take()
            except ShutDown:
                return
            except Exception:
                log.exception("the work queue failed; asking it again")
                self._pause(QUEUE_ERROR_PAUSE_SECONDS)
                continue
            try:
                self._process(taken)
            except Exception:
                # Bookkeeping after the pass failed (a requeue, a metric): the key may wait for the
                # next event or resync, but the worker goes on.
                log.exception("worker bookkeeping failed", extra={"key": "/".join(taken.key)})

    def _process(self, taken: Taken) -> None:
        started = time.monotonic()
        try:
            telemetry.record_taken(urgent=taken.urgent, cause=taken.cause.value, lateness=taken.lateness)
            self._reconcile(taken)
        finally:
            telemetry.RECONCILE_SECONDS.observe(time.monotonic() - started)
            self.queue.done(taken.key)

    def _reconcile(self, taken: Taken) -> None:
        """One pass of `taken.key`. A failed urgent pass is retried as urgent (an abort that met a
        conflict keeps its place ahead of the measurements); what a successful pass asks for later
        is ordinary (the next event says again whether the rollout is urgent)."""
        key = taken.key
        namespace, name = key
        try:
            requeue = self.reconciler.reconcile(namespace=namespace, name=name)
        except TemporaryError as error:
            self._record(taken, "retry")
            log.info("reconcile will be retried", extra={"key": "/".join(key), "error": str(error)})
            self.queue.add_after(key, error.delay, urgent=taken.urgent, retry=True)
        except Exception as error:
            self._record(taken, "error")
            delay = self.queue.add_rate_limited(key, urgent=taken.urgent)
            log.exception("reconcile failed", extra={"key": "/".join(key), "retry_in": delay})
            self._report(key, error)
        else:
            self._record(taken, "success")
            self.queue.forget(key)
            if requeue is not None:
                self.queue.add_after(key, requeue)

    @staticmethod
    def _record(taken: Taken, result: str) -> None:
        telemetry.record_pass(urgent=taken.urgent, cause=taken.cause.value, result=result)

    def _report(self, key: Key, error: Exception) -> None:
        try:
            self.reconciler.report_failure(namespace=key[0], name=key[1], error=error)
        except Exception as report_error:
            # The API server may be what failed the pass; the log line above already has the cause.
            log.warning(
                "could not report the failure on the rollout",
                extra={"key": "/".join(key), "error": f"{type(report_error).__name__}: {report_error}"},
            )
