"""Traffic routers: one module per router, each exporting one `RouterPlugin` (see `plugin`), found
by the key used under spec.trafficRouting. Adding a router is one module, one line below, and its
CRD and RBAC lines (docs/architecture.md, "Adding a plug-in")."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from controller.routers import gatewayapi, istio, kserve
from controller.routers.plugin import RoutedKind, RoutedVersions, Router, RouterPlugin


def registry(plugins: Iterable[RouterPlugin]) -> Mapping[str, RouterPlugin]:
    """Plug-ins by key; a key given twice is a mistake in this table, caught at import."""
    table: dict[str, RouterPlugin] = {}
    for plugin in plugins:
        if plugin.key in table:
            raise ValueError(f"two router plug-ins under spec.trafficRouting.{plugin.key}")
        table[plugin.key] = plugin
    return table


ROUTERS: Mapping[str, RouterPlugin] = registry((gatewayapi.PLUGIN, istio.PLUGIN, kserve.PLUGIN))

__all__ = ["ROUTERS", "RoutedKind", "RoutedVersions", "Router", "RouterPlugin", "registry"]
