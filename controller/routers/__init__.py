"""Traffic routers: one module per router, found by the key used under spec.trafficRouting.

A router reads and writes the share of traffic each model version gets, and nothing else on
the objects it touches. Weights are percentages per version label of spec.versions.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol

from controller.api import ModelRolloutSpec
from controller.kube import Kube
from controller.routers.gatewayapi import GatewayAPIRouter


class Router(Protocol):
    def read_weights(self, *, namespace: str, spec: ModelRolloutSpec) -> dict[str, int]:
        """Percent per version as the route has it; raises ReferenceProblem when it cannot."""
        ...

    def write_weights(self, *, namespace: str, spec: ModelRolloutSpec, weights: Mapping[str, int]) -> dict[str, int]:
        """Sets the split (versions not named get 0) and returns it as stored by the API server."""
        ...

    def watched_route(self, *, spec: ModelRolloutSpec) -> tuple[str, str] | None:
        """(kind plural, name) of the object to watch for outside changes, if any."""
        ...


RouterFactory = Callable[[Kube], Router]

ROUTERS: Mapping[str, RouterFactory] = {
    "gatewayAPI": GatewayAPIRouter,
}
