"""The controller's own Prometheus metrics, served on /metrics."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from typing import Protocol

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric

from controller.api import ModelRolloutStatus, Phase


class RolloutGauge:
    """A gauge with one series per rollout (and per `labels`), held as plain values and turned into
    samples at each scrape.

    A prometheus_client child costs about 800 bytes (an object, a lock and a value holder each);
    at one per phase and per measured version, that was about 10 kB a rollout, 50 MB at 5,000
    rollouts (docs/scale.md). Here a series costs a dict entry. `forget_rollout` drops a deleted
    rollout's series from every RolloutGauge."""

    def __init__(
        self, name: str, documentation: str, labels: Sequence[str] = (), *, registry: CollectorRegistry = REGISTRY
    ) -> None:
        self._name = name
        self._documentation = documentation
        self._labels = ("namespace", "rollout", *labels)
        self._lock = threading.Lock()
        self._values: dict[tuple[str, str], dict[tuple[str, ...], float]] = {}
        _ROLLOUT_GAUGES.append(self)
        registry.register(self)

    def set(self, value: float, *, namespace: str, rollout: str, labels: Sequence[str] = ()) -> None:
        with self._lock:
            self._values.setdefault((namespace, rollout), {})[tuple(labels)] = value

    def replace(self, values: dict[tuple[str, ...], float], *, namespace: str, rollout: str) -> None:
        """Exactly these series for the rollout (keyed by the values of `labels`)."""
        with self._lock:
            self._values[(namespace, rollout)] = values

    def forget(self, *, namespace: str, rollout: str) -> None:
        with self._lock:
            self._values.pop((namespace, rollout), None)

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(self._name, self._documentation, labels=self._labels)
        with self._lock:
            held = [(key, dict(series)) for key, series in self._values.items()]
        for (namespace, rollout), series in held:
            for labels, value in series.items():
                family.add_metric([namespace, rollout, *labels], value)
        yield family


_ROLLOUT_GAUGES: list[RolloutGauge] = []

RECONCILES = Counter("model_rollouts_reconcile_total", "Reconcile passes by result.", ["result"])
RECONCILE_SECONDS = Histogram(
    "model_rollouts_reconcile_duration_seconds", "Time of one reconcile pass.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)  # fmt: skip
TRANSITIONS = Counter("model_rollouts_transitions_total", "Rollout transitions (Event reasons).", ["reason"])
PHASE = RolloutGauge("model_rollouts_phase", "1 for the phase each rollout is in.", ["phase"])
CANDIDATE_WEIGHT = RolloutGauge(
    "model_rollouts_candidate_weight_percent", "Candidate share of traffic as verified on the route."
)
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


_PHASE_LABELS: list[tuple[Phase, tuple[str, ...]]] = [(phase, (phase.value,)) for phase in Phase]


def record_rollout(*, namespace: str, name: str, status: ModelRolloutStatus) -> None:
    phases = {labels: 1.0 if status.phase == phase else 0.0 for phase, labels in _PHASE_LABELS}
    PHASE.replace(phases, namespace=namespace, rollout=name)
    CANDIDATE_WEIGHT.set(status.current_weight, namespace=namespace, rollout=name)


def forget_rollout(*, namespace: str, name: str) -> None:
    """Drops a deleted rollout's series from every RolloutGauge (phase, weight, measured values)."""
    for gauge in _ROLLOUT_GAUGES:
        gauge.forget(namespace=namespace, rollout=name)
