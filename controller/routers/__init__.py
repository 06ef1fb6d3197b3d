"""Traffic routers: one module per router, each exporting one `RouterPlugin` (see `plugin`), found
by the key used under spec.trafficRouting. Adding a router is one module, one line below, and its
CRD and RBAC lines (docs/architecture.md, "Adding a plug-in")."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from controller import plugins
from controller.routers import gatewayapi, istio, kserve
from controller.routers.plugin import RoutedKind, RoutedVersions, Router, RouterPlugin


def registry(routers: Iterable[RouterPlugin]) -> Mapping[str, RouterPlugin]:
    """Plug-ins by their key under spec.trafficRouting; a key given twice is caught at import."""
    return plugins.registry(routers, under="spec.trafficRouting")


ROUTERS: Mapping[str, RouterPlugin] = registry((gatewayapi.PLUGIN, istio.PLUGIN, kserve.PLUGIN))

__all__ = ["ROUTERS", "RoutedKind", "RoutedVersions", "Router", "RouterPlugin", "registry"]
