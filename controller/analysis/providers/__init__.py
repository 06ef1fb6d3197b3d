"""Where metric values come from: one module per provider, found through `PROVIDERS`.

A provider turns a rendered `MetricSource` into one number (or None for no data); a
`VectorProvider` (Prometheus) also gives one number per value of a label, for the model-aware
checks that compare histograms and slices. It raises
`ProviderUnavailable` when it cannot answer now (the measurement is an Error, retried next
interval) and `InvalidQuery` when the configuration is wrong (retrying cannot help). Providers do
no Kubernetes calls: what they need from the cluster (a Secret) comes in as a callable.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from controller.analysis.providers.base import (
    InvalidQuery,
    MetricProvider,
    ProviderUnavailable,
    SecretReader,
    SeriesProvider,
    VectorProvider,
)
from controller.analysis.providers.prometheus import PrometheusProvider
from controller.analysis.providers.web import WebProvider
from controller.outbound import DEFAULT_POLICY, OutboundPolicy

__all__ = [
    "PROVIDERS",
    "InvalidQuery",
    "MetricProvider",
    "ProviderSettings",
    "ProviderUnavailable",
    "SecretReader",
    "SeriesProvider",
    "VectorProvider",
    "build_providers",
]


@dataclass(frozen=True, kw_only=True)
class ProviderSettings:
    prometheus_address: str
    """Base URL of the Prometheus used when a metric names none, e.g. http://127.0.0.1:9090."""
    secret_reader: SecretReader | None = None
    """Reads the Secrets that web metrics take headers from; None rejects such metrics."""
    timeout_seconds: int = 5
    """Longest wait for one Prometheus query; a thread of the measurement pool waits this long at
    most per query (controller.analysis.measurements), never a reconcile worker."""
    outbound: OutboundPolicy = DEFAULT_POLICY
    """Where web metrics and a metric's own Prometheus address may send requests (controller.outbound)."""


ProviderFactory = Callable[[ProviderSettings], MetricProvider]

PROVIDERS: dict[str, ProviderFactory] = {
    "prometheus": lambda settings: PrometheusProvider(
        default_address=settings.prometheus_address,
        timeout_seconds=settings.timeout_seconds,
        outbound=settings.outbound,
    ),
    "web": lambda settings: WebProvider(secret_reader=settings.secret_reader, outbound=settings.outbound),
}
"""Provider name (the key under a metric's `provider`) -> factory."""


def build_providers(settings: ProviderSettings) -> dict[str, MetricProvider]:
    return {name: factory(settings) for name, factory in PROVIDERS.items()}
