"""Traffic routers: one module per router, found by the key used under spec.trafficRouting.

A router reads and writes the share of traffic each model version gets, and nothing else on
the objects it touches but the owner annotation (see `ownership`). Weights are percentages per
version label of spec.versions. `owner` is the name of the ModelRollout acting.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol

from controller.api import ModelRolloutSpec
from controller.kube import Kube
from controller.routers.gatewayapi import GatewayAPIRouter


class Router(Protocol):
    def read_weights(
        self, *, namespace: str, spec: ModelRolloutSpec, owner: str, replacing: str | None = None
    ) -> dict[str, int]:
        """Percent per version as the route has it; raises ReferenceProblem when it cannot read,
        RouteOwnedElsewhere when another rollout owns the route. An unowned route is claimed for
        `owner` by its first `write_weights`; one owned by `replacing` (an owner found to be gone)
        is claimed at once."""
        ...

    def write_weights(
        self, *, namespace: str, spec: ModelRolloutSpec, weights: Mapping[str, int], owner: str
    ) -> dict[str, int]:
        """Sets the split (versions not named get 0), claiming the route for `owner` in the same
        write, and returns the split as stored by the API server."""
        ...

    def release(self, *, namespace: str, spec: ModelRolloutSpec, owner: str) -> None:
        """Removes `owner`'s claim from the route, if it is there (the route may be gone)."""
        ...

    def watched_route(self, *, spec: ModelRolloutSpec) -> tuple[str, str] | None:
        """(kind plural, name) of the object to watch for outside changes, if any."""
        ...


RouterFactory = Callable[[Kube], Router]

ROUTERS: Mapping[str, RouterFactory] = {
    "gatewayAPI": GatewayAPIRouter,
}
