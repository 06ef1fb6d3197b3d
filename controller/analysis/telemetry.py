"""The analysis' own metrics on the controller's /metrics (the default prometheus_client registry)."""

from __future__ import annotations

from prometheus_client import Gauge

MEASUREMENT_VALUE = Gauge(
    "model_rollouts_measurement_value",
    "Latest value measured for a rollout's analysis metric, per version (baseline and candidate).",
    ["namespace", "rollout", "metric", "version"],
)
