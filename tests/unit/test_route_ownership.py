"""One rollout per route: the owner annotation, and the write budget that stops write storms."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from controller.api import parse_spec
from controller.errors import RouteWriteLoop
from controller.routers.gatewayapi import GatewayAPIRouter
from controller.routers.ownership import OWNER_ANNOTATION, RouteOwnedElsewhere
from controller.routers.safety import RouteWriteBudget

JSON = dict[str, Any]

SPEC = parse_spec(
    {
        "model": "iris",
        "versions": [{"version": v, "backend": {"service": f"iris-{v}", "port": 80}} for v in ("v1", "v2")],
        "candidate": "v2",
        "baseline": "v1",
        "trafficRouting": {"gatewayAPI": {"httpRoute": "iris"}},
        "steps": [{"setWeight": 10}],
    }
)


class RouteStore:
    """Stands in for the API server's copy of one HTTPRoute (the router only gets and replaces)."""

    def __init__(self, *, owner: str | None = None) -> None:
        annotations = {OWNER_ANNOTATION: owner} if owner else {}
        self.route: JSON = {
            "metadata": {"name": "iris", "namespace": "ns", "annotations": annotations},
            "spec": {"rules": [{"backendRefs": [{"name": "iris-v1", "port": 80, "weight": 100}]}]},
        }
        self.writes = 0

    def get_custom(self, **_: str) -> JSON:
        return copy.deepcopy(self.route)

    def replace_custom(self, *, body: JSON, **_: str) -> JSON:
        self.writes += 1
        self.route = body
        return body

    @property
    def owner(self) -> str | None:
        owner: str | None = self.route["metadata"].get("annotations", {}).get(OWNER_ANNOTATION)
        return owner


def test_the_first_rollout_to_write_weights_on_an_unowned_route_claims_it_in_that_write() -> None:
    # given an unowned route
    store = RouteStore()
    router = GatewayAPIRouter(store)  # type: ignore[arg-type]

    # when a rollout reads it, then writes its first weights
    weights = router.read_weights(namespace="ns", spec=SPEC, owner="iris-a")
    writes_after_reading = store.writes
    router.write_weights(namespace="ns", spec=SPEC, weights={"v1": 90, "v2": 10}, owner="iris-a")

    # then reading wrote nothing, and the one weight write claimed it
    assert weights == {"v1": 100, "v2": 0}
    assert writes_after_reading == 0
    assert (store.writes, store.owner) == (1, "iris-a")


def test_a_second_rollout_on_an_owned_route_is_told_the_owner_and_writes_nothing() -> None:
    # given a route owned by rollout iris-a
    store = RouteStore(owner="iris-a")
    router = GatewayAPIRouter(store)  # type: ignore[arg-type]

    # when rollout iris-b reads it, or tries to write it
    with pytest.raises(RouteOwnedElsewhere, match="managed by ModelRollout iris-a") as refused:
        router.read_weights(namespace="ns", spec=SPEC, owner="iris-b")
    with pytest.raises(RouteOwnedElsewhere):
        router.write_weights(namespace="ns", spec=SPEC, weights={"v1": 90, "v2": 10}, owner="iris-b")

    # then the route is untouched, and the error names the owner
    assert store.writes == 0
    assert refused.value.owner == "iris-a"


def test_a_route_whose_owner_is_gone_can_be_taken_over_and_is_released_on_deletion() -> None:
    store = RouteStore(owner="iris-gone")
    router = GatewayAPIRouter(store)  # type: ignore[arg-type]

    router.read_weights(namespace="ns", spec=SPEC, owner="iris-b", replacing="iris-gone")
    assert store.owner == "iris-b"

    router.release(namespace="ns", spec=SPEC, owner="someone-else")
    assert store.owner == "iris-b"
    router.release(namespace="ns", spec=SPEC, owner="iris-b")
    assert store.owner is None


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_write_budget_stops_a_write_storm_on_one_route_and_recovers_after_the_window() -> None:
    # given a budget of 3 writes per 60 s
    clock = Clock()
    budget = RouteWriteBudget(limit=3, window_seconds=60, clock=clock)
    route = ("gatewayAPI", "ns", "httproutes", "iris")

    # when a fourth write comes within the minute
    for _ in range(3):
        budget.spend(route, label="HTTPRoute iris")
        clock.now += 1
    with pytest.raises(RouteWriteLoop, match="3 writes to HTTPRoute iris within 60s") as stopped:
        budget.spend(route, label="HTTPRoute iris")

    # then it is refused (another route is not), and writes are allowed again once the window moved on
    budget.spend(("gatewayAPI", "ns", "httproutes", "other"), label="HTTPRoute other")
    assert stopped.value.reason == "RouteWriteLoop"
    clock.now += 60
    budget.spend(route, label="HTTPRoute iris")
