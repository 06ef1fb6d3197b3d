"""Where metric values come from: one module per provider, each exporting one `ProviderPlugin`
(see `base`), found by the key under a metric's `provider`. Adding a provider is one module and
one line below (docs/architecture.md, "Adding a plug-in").

A provider turns a rendered `MetricSource` into one number (or None for no data); a
`VectorProvider` (Prometheus) also gives one number per value of a label, for the model-aware
checks that compare histograms and slices. It raises
`ProviderUnavailable` when it cannot answer now (the measurement is an Error, retried next
interval) and `InvalidQuery` when the configuration is wrong (retrying cannot help). Providers do
no Kubernetes calls: what they need from the cluster (a Secret) comes in as a callable.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from controller.analysis.providers import prometheus, web
from controller.analysis.providers.base import (
    InvalidQuery,
    MetricProvider,
    MetricSource,
    ObjectReference,
    OutboundUrl,
    ProviderPlugin,
    ProviderSettings,
    ProviderUnavailable,
    SecretReader,
    SeriesProvider,
    VectorProvider,
)
from controller.analysis.providers.prometheus import PrometheusSource
from controller.plugins import registry as keyed

__all__ = [
    "PROVIDERS",
    "InvalidQuery",
    "MetricProvider",
    "MetricSource",
    "ObjectReference",
    "OutboundUrl",
    "PrometheusSource",
    "ProviderPlugin",
    "ProviderSettings",
    "ProviderUnavailable",
    "SecretReader",
    "SeriesProvider",
    "VectorProvider",
    "build_providers",
    "registry",
]


def registry(plugins: Iterable[ProviderPlugin]) -> Mapping[str, ProviderPlugin]:
    """Plug-ins by key; a key given twice is a mistake in the tuple, caught at import."""
    return keyed(plugins, under="provider")


PROVIDERS: Mapping[str, ProviderPlugin] = registry((prometheus.PLUGIN, web.PLUGIN))
"""Provider key (under a metric's `provider`) -> its plug-in."""


def build_providers(
    settings: ProviderSettings, *, plugins: Mapping[str, ProviderPlugin] = PROVIDERS
) -> dict[str, MetricProvider]:
    return {key: plugin.build(settings) for key, plugin in plugins.items()}
