"""The analysis' own metrics on the controller's /metrics (the default prometheus_client registry)."""

from __future__ import annotations

from controller.telemetry import RolloutGauge

MEASUREMENT_VALUE = RolloutGauge(
    "model_rollouts_measurement_value",
    "Latest value measured for a rollout's analysis metric, per version (baseline and candidate).",
    ["metric", "version"],
)
