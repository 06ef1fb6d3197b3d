"""The manager's caches hold what this process's rollouts need: the rollouts of its shard and the
routes they name, nothing else."""

from __future__ import annotations

from typing import Any

from kubernetes import client

from controller.kube import Kube
from controller.manager import Manager, ManagerSettings
from controller.reconcile import Reconciler

JSON = dict[str, Any]
SHARD = "sharding.fluxcd.io/key"


def manager(selector: str = "") -> Manager:
    api = client.ApiClient()
    kube = Kube(api_client=api)
    built = Manager(api_client=api, reconciler=Reconciler(kube=kube), settings=ManagerSettings(label_selector=selector))
    for (group, plural), cache in built.caches().items():
        kube.use_cache(group=group, plural=plural, cache=cache)
    return built


def rollout(name: str, route: str, version: str = "1", labels: dict[str, str] | None = None) -> JSON:
    return {
        "metadata": {"namespace": "ns", "name": name, "resourceVersion": version, "labels": labels or {}},
        "spec": {"trafficRouting": {"gatewayAPI": {"httpRoute": route}}},
    }


def route(name: str, version: str = "1") -> JSON:
    return {"metadata": {"namespace": "ns", "name": name, "resourceVersion": version}, "spec": {}}


def test_only_the_routes_an_owned_rollout_names_are_held() -> None:
    m = manager()
    m._on_rollout_list([rollout("iris", "iris-route")])
    m.route_cache.replace_all([route("iris-route"), route("someone-elses")])
    assert m.route_cache.keys() == [("ns", "iris-route")]


def test_a_route_no_rollout_names_any_more_is_let_go() -> None:
    m = manager()
    m._on_rollout_event("ADDED", rollout("iris", "old-route"))
    m.route_cache.apply("ADDED", route("old-route"))

    m._on_rollout_event("MODIFIED", rollout("iris", "new-route", version="2"))
    assert m.route_cache.get("ns", "old-route") is None

    m.route_cache.apply("ADDED", route("new-route"))
    m._on_rollout_event("DELETED", rollout("iris", "new-route", version="3"))
    assert len(m.route_cache) == 0


def test_the_reconciler_reads_through_the_caches_and_a_rollout_leaving_the_shard_is_not_kept() -> None:
    m = manager(f"{SHARD}=a")
    mine = rollout("iris", "iris", labels={SHARD: "a"})
    m.rollout_cache.apply("ADDED", mine)
    assert m.reconciler.kube.read_rollout(namespace="ns", name="iris") == mine

    # a write of this process that returns it relabelled (another shard's now) drops it
    m.rollout_cache.put_written(rollout("iris", "iris", version="2", labels={SHARD: "b"}))
    assert m.rollout_cache.get("ns", "iris") is None
