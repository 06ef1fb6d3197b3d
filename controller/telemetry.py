"""The controller's own Prometheus metrics, served on /metrics."""

from __future__ import annotations

import contextlib
from typing import Protocol

from prometheus_client import Counter, Gauge, Histogram

from controller.api import ModelRolloutStatus, Phase

RECONCILES = Counter("model_rollouts_reconcile_total", "Reconcile passes by result.", ["result"])
RECONCILE_SECONDS = Histogram(
    "model_rollouts_reconcile_duration_seconds", "Time of one reconcile pass.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)  # fmt: skip
TRANSITIONS = Counter("model_rollouts_transitions_total", "Rollout transitions (Event reasons).", ["reason"])
PHASE = Gauge("model_rollouts_phase", "1 for the phase each rollout is in.", ["namespace", "rollout", "phase"])
CANDIDATE_WEIGHT = Gauge(
    "model_rollouts_candidate_weight_percent", "Candidate share of traffic as verified on the route.",
    ["namespace", "rollout"],
)  # fmt: skip
EVENTS_DEFERRED = Counter(
    "model_rollouts_events_deferred_total",
    "Events the sender's queue could not take; each is sent again by its rollout's next pass.",
)
API_CALLS = Counter(
    "model_rollouts_api_calls_total", "Kubernetes API calls by operation (get, update, ...) and resource (Service...).",
    ["operation", "resource"],
)  # fmt: skip
API_CALL_SECONDS = Histogram(
    "model_rollouts_api_call_duration_seconds", "Time of one Kubernetes API call (retries included), by operation.",
    ["operation"], buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)  # fmt: skip
IS_LEADER = Gauge("model_rollouts_leader", "1 while this replica holds the leader lease.")
NOTIFICATIONS = Counter(
    "model_rollouts_notifications_total",
    "Notifications by sink (a name of --notifications-config, or `rollout` for spec.notifications) and result: "
    "sent, failed (not delivered; a NotificationFailed Event says why), missing (the sink's Secret or key is missing).",
    ["sink", "result"],
)


# The work queue --------------------------------------------------------------------------------
PRIORITIES = ("urgent", "normal")
"""Values of the `priority` label: the lane of the work queue a key was in."""
CAUSES = ("event", "timer", "retry", "resync")
"""Values of the `cause` label (controller.workqueue.Cause): why a key was queued."""
RESULTS = ("success", "retry", "error")

QUEUE_DEPTH = Gauge(
    "model_rollouts_workqueue_depth",
    "Keys due now and waiting for a worker, by lane (keys scheduled for later are not counted).",
    ["priority"],
)
QUEUE_SCHEDULED = Gauge(
    "model_rollouts_workqueue_scheduled", "Keys scheduled for later (timed steps, retries) and not yet due."
)
QUEUE_IN_FLIGHT = Gauge("model_rollouts_workqueue_in_flight", "Keys a worker is reconciling now.")
QUEUE_LATENESS = Histogram(
    "model_rollouts_workqueue_lateness_seconds",
    "From when a key was due (added, or its scheduled time came) to when a worker took it.",
    ["priority", "cause"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 1.5, 2, 3, 5, 10, 30, 60, 300),
)
PASSES = Counter(
    "model_rollouts_passes_total",
    "Reconcile passes by the lane they were taken from, why they were queued, and their result.",
    ["priority", "cause", "result"],
)
for _priority in PRIORITIES:
    for _cause in CAUSES:
        QUEUE_LATENESS.labels(priority=_priority, cause=_cause)
        for _result in RESULTS:
            PASSES.labels(priority=_priority, cause=_cause, result=_result)


class QueueView(Protocol):
    """What the queue gauges read (controller.workqueue.WorkQueue)."""

    def ready(self, *, urgent: bool) -> int: ...

    def scheduled(self) -> int: ...

    def in_flight(self) -> int: ...


def watch_queue(queue: QueueView) -> None:
    """Makes the queue gauges read `queue` at each scrape (a later call replaces the queue read), so
    they are current even when no pass starts, which is exactly when they matter."""
    QUEUE_DEPTH.labels(priority="urgent").set_function(lambda: queue.ready(urgent=True))
    QUEUE_DEPTH.labels(priority="normal").set_function(lambda: queue.ready(urgent=False))
    QUEUE_SCHEDULED.set_function(queue.scheduled)
    QUEUE_IN_FLIGHT.set_function(queue.in_flight)


def record_taken(*, urgent: bool, cause: str, lateness: float) -> None:
    """A worker took a key `lateness` seconds after it was due."""
    QUEUE_LATENESS.labels(priority=_priority_label(urgent), cause=cause).observe(lateness)


def record_pass(*, urgent: bool, cause: str, result: str) -> None:
    """A pass ended with `result` (success, retry, error)."""
    RECONCILES.labels(result=result).inc()
    PASSES.labels(priority=_priority_label(urgent), cause=cause, result=result).inc()


def _priority_label(urgent: bool) -> str:
    return "urgent" if urgent else "normal"


# Analysis --------------------------------------------------------------------------------------
MEASUREMENTS_WAITING = Gauge(
    "model_rollouts_measurements_waiting",
    "Metric measurements asked for and not yet answered (queued for a provider or being queried).",
    ["provider"],
)


def set_measurements_waiting(count: int, *, provider: str = "all") -> None:
    """Reports how many measurements are waiting for an answer now: queued for `provider`'s pool or
    being queried. Call it whenever the number changes (it is a gauge: the last value is shown).
    Pools per provider each report their own `provider`; a single count uses the default "all"
    (use one style, not both, or sums count twice)."""
    MEASUREMENTS_WAITING.labels(provider=provider).set(count)


def record_rollout(*, namespace: str, name: str, status: ModelRolloutStatus) -> None:
    for phase in Phase:
        PHASE.labels(namespace=namespace, rollout=name, phase=phase.value).set(1 if status.phase == phase else 0)
    CANDIDATE_WEIGHT.labels(namespace=namespace, rollout=name).set(status.current_weight)


def forget_rollout(*, namespace: str, name: str) -> None:
    label_sets: list[tuple[Gauge, tuple[str, ...]]] = [(PHASE, (namespace, name, phase.value)) for phase in Phase]
    label_sets.append((CANDIDATE_WEIGHT, (namespace, name)))
    for gauge, labels in label_sets:
        with contextlib.suppress(KeyError):
            gauge.remove(*labels)
