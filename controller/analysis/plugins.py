"""The analysis plug-ins one parse and one checker use, as one value.

The registries' defaults are every plug-in the controller ships (`controller.analysis.providers.PROVIDERS`,
`controller.analysis.modelchecks.MODEL_CHECKS`);
a test registers another by passing its own tuple here, never by changing a module's table."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from controller.analysis.modelchecks import MODEL_CHECKS, ModelCheckPlugin
from controller.analysis.providers import PROVIDERS, ProviderPlugin


@dataclass(frozen=True, kw_only=True)
class AnalysisPlugins:
    providers: Mapping[str, ProviderPlugin] = field(default_factory=lambda: PROVIDERS)
    """Metric providers by the key under a metric's `provider`."""
    checks: Mapping[str, ModelCheckPlugin] = field(default_factory=lambda: MODEL_CHECKS)
    """Model-aware checks by the key that configures one in a metric."""

    @property
    def provider_keys(self) -> str:
        """The providers a metric may name, for messages: `prometheus or web`."""
        return " or ".join(self.providers)


DEFAULT_PLUGINS = AnalysisPlugins()
