"""The controller's own Prometheus metrics, served on /metrics."""

from __future__ import annotations

import contextlib

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
API_CALLS = Counter("model_rollouts_api_calls_total", "Kubernetes API calls by operation.", ["operation"])
QUEUE_DEPTH = Gauge("model_rollouts_workqueue_depth", "Keys waiting in the work queue.")
IS_LEADER = Gauge("model_rollouts_leader", "1 while this replica holds the leader lease.")


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
