"""A router plug-in is one object registered in one place: the reconciler parses its
configuration with it, asks it what must exist, and moves traffic through it; the manager watches
its kind. Shown with a fake plug-in that keeps its weights in memory."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from kubernetes import client

from controller.api import ModelRolloutSpec, SpecError
from controller.kube import Kube
from controller.manager import Manager, ManagerSettings
from controller.reconcile import Reconciler
from controller.routers import ROUTERS, RoutedKind, RouterPlugin, registry
from tests.unit.test_cheaper_passes import FakeServer, phase

JSON = dict[str, Any]
NS = "ns"


@dataclass(frozen=True, kw_only=True)
class LoopConfig:
    loop: str


def parse_loop(raw: object) -> LoopConfig:
    if not isinstance(raw, Mapping) or not isinstance(raw.get("loop"), str):
        raise SpecError("spec.trafficRouting.fake.loop", "name the loop, a string")
    return LoopConfig(loop=raw["loop"])


class MemoryRouter:
    """Weights kept here; `missing` versions are what `reference_problem` reports."""

    def __init__(self) -> None:
        self.weights: dict[str, int] = {"v1": 100, "v2": 0}
        self.writes: list[dict[str, int]] = []
        self.configs: list[object] = []
        self.missing: tuple[str, ...] = ()

    def read_weights(
        self, *, namespace: str, spec: ModelRolloutSpec, owner: str, replacing: str | None = None
    ) -> dict[str, int]:
        self.configs.append(spec.traffic_routing.parsed)
        return dict(self.weights)

    def write_weights(
        self, *, namespace: str, spec: ModelRolloutSpec, weights: Mapping[str, int], owner: str
    ) -> dict[str, int]:
        self.weights = {version.version: weights.get(version.version, 0) for version in spec.versions}
        self.writes.append(dict(self.weights))
        return dict(self.weights)

    def release(self, *, namespace: str, spec: ModelRolloutSpec, owner: str) -> None:
        return None

    def reference_problem(self, *, namespace: str, spec: ModelRolloutSpec, versions: tuple[str, ...]) -> str | None:
        missing = [version for version in versions if version in self.missing]
        return f"loop for {missing} not found; fix spec.trafficRouting.fake" if missing else None


class Built:
    """The router the fake plug-in builds, fresh for each test."""

    router = MemoryRouter()


FAKE = RouterPlugin(
    key="fake",
    kind=RoutedKind(group="loops.example.com", version="v1", plural="loops"),
    parse_config=parse_loop,
    object_name=lambda config: config.loop,
    build=lambda kube: Built.router,
)


def world(routing: object) -> tuple[FakeServer, Reconciler]:
    server = FakeServer()
    kube = Kube(api_client=client.ApiClient())
    kube.custom = server  # type: ignore[assignment]
    kube.core = server  # type: ignore[assignment]
    server.create(
        "modelrollouts",
        {
            "apiVersion": "rollouts.mlops.dev/v1alpha1",
            "kind": "ModelRollout",
            "metadata": {"name": "iris", "namespace": NS, "uid": "u1", "generation": 1},
            "spec": {
                "model": "iris",
                "versions": [{"version": v, "backend": {"service": f"iris-{v}", "port": 8080}} for v in ("v1", "v2")],
                "baseline": "v1",
                "candidate": "v2",
                "trafficRouting": {"fake": routing},
                "steps": [{"setWeight": 30}],
            },
        },
    )
    reconciler = Reconciler(
        kube=kube, routers=registry((*ROUTERS.values(), FAKE)), clock=lambda: datetime(2026, 1, 1, tzinfo=UTC)
    )
    return server, reconciler


@pytest.fixture(autouse=True)
def fresh_router() -> None:
    Built.router = MemoryRouter()


def test_a_registered_router_moves_the_traffic_of_the_rollouts_that_name_it_with_its_typed_config() -> None:
    # given the fake plug-in registered beside the real ones, and a rollout naming it
    server, reconciler = world({"loop": "blue"})

    # when passes run until the rollout is promoted
    for _ in range(5):
        reconciler.reconcile(namespace=NS, name="iris")

    # then the fake router moved the traffic, step by step, reading its own typed configuration
    assert phase(server) == "Promoted"
    assert Built.router.writes == [{"v1": 70, "v2": 30}, {"v1": 0, "v2": 100}]
    assert set(Built.router.configs) == {LoopConfig(loop="blue")}


def test_its_config_errors_are_spec_errors_and_its_missing_references_hold_the_traffic() -> None:
    # given a rollout whose fake config does not parse, and one whose loop is missing
    broken, reconciler = world({"loop": 7})
    reconciler.reconcile(namespace=NS, name="iris")
    status = broken.objects[("modelrollouts", "iris")]["status"]
    assert "spec.trafficRouting.fake.loop: name the loop" in status["message"]

    Built.router.missing = ("v2",)
    waiting, reconciler = world({"loop": "blue"})
    reconciler.reconcile(namespace=NS, name="iris")

    # then neither moved any traffic, and the second waits naming what is missing
    assert Built.router.writes == []
    condition = next(
        c for c in waiting.objects[("modelrollouts", "iris")]["status"]["conditions"] if c["type"] == "ReferencesValid"
    )
    assert condition["status"] == "False" and "loop for ['v2'] not found" in condition["message"]


def test_the_manager_watches_the_kind_of_every_registered_router() -> None:
    api = client.ApiClient()
    manager = Manager(
        api_client=api,
        reconciler=Reconciler(kube=Kube(api_client=api)),
        settings=ManagerSettings(),
        routers=registry((*ROUTERS.values(), FAKE)),
    )
    assert {informer.resource.plural for informer in manager.routes} == {
        "httproutes",
        "virtualservices",
        "inferenceservices",
        "loops",
    }
    assert ("loops.example.com", "loops") in manager.caches()


def test_a_key_registered_twice_is_refused() -> None:
    with pytest.raises(ValueError, match=r"two plug-ins under spec\.trafficRouting\.fake"):
        registry((FAKE, FAKE))
