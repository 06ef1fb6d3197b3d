"""Model-aware checks: one module per check, each exporting one `ModelCheckPlugin` (see `plugin`),
found by the key that configures it in a metric. Adding a check is one module and one line below
(docs/architecture.md, "Adding a plug-in")."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from controller.analysis.modelchecks import drift, offline_online, paired, slices, training_skew
from controller.analysis.modelchecks.plugin import ModelCheck, ModelCheckPlugin
from controller.plugins import registry as keyed

__all__ = ["MODEL_CHECKS", "ModelCheck", "ModelCheckPlugin", "registry"]


def registry(plugins: Iterable[ModelCheckPlugin]) -> Mapping[str, ModelCheckPlugin]:
    """Plug-ins by key, in the order the spec's messages list them; a key given twice is a
    mistake in the tuple, caught at import."""
    return keyed(plugins, under="spec.analysis.metrics[]")


MODEL_CHECKS: Mapping[str, ModelCheckPlugin] = registry(
    (drift.PLUGIN, slices.PLUGIN, offline_online.PLUGIN, training_skew.PLUGIN, paired.PLUGIN)
)
"""The key configuring a check in a metric -> its plug-in."""
