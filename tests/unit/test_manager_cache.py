"""The manager's caches hold what this process's rollouts need: the rollouts of its shard and the
routes they name, nothing else."""

from __future__ import annotations

from typing import Any

from kubernetes import client

from controller.kube import Kube
from controller.manager import Manager, ManagerSettings
from controller.reconcile import Reconciler
from controller.routers import gatewayapi, istio
from controller.watch import ObjectCache

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


def httproutes(m: Manager) -> ObjectCache:
    return m.route_caches[gatewayapi.PLUGIN.kind]


def route(name: str, version: str = "1") -> JSON:
    return {"metadata": {"namespace": "ns", "name": name, "resourceVersion": version}, "spec": {}}


def test_only_the_routes_an_owned_rollout_names_are_held() -> None:
    m = manager()
    m._on_rollout_list([rollout("iris", "iris-route")])
    httproutes(m).replace_all([route("iris-route"), route("someone-elses")])
    assert httproutes(m).keys() == [("ns", "iris-route")]


def test_a_route_no_rollout_names_any_more_is_let_go() -> None:
    m = manager()
    m._on_rollout_event("ADDED", rollout("iris", "old-route"))
    httproutes(m).apply("ADDED", route("old-route"))

    m._on_rollout_event("MODIFIED", rollout("iris", "new-route", version="2"))
    assert httproutes(m).get("ns", "old-route") is None

    httproutes(m).apply("ADDED", route("new-route"))
    m._on_rollout_event("DELETED", rollout("iris", "new-route", version="3"))
    assert len(httproutes(m)) == 0


def test_each_routers_kind_has_its_cache_holding_what_its_rollouts_name_and_every_rollout_is_resynced() -> None:
    # given one rollout on an HTTPRoute, one on a VirtualService, one whose router config does not parse
    m = manager()
    on_istio = {**rollout("iris-b", "x"), "spec": {"trafficRouting": {"istio": {"virtualService": "iris-vs"}}}}
    broken = {**rollout("iris-c", "x"), "spec": {"trafficRouting": {"istio": {"virtualService": 7}}}}
    m._on_rollout_list([rollout("iris", "iris-route"), on_istio, broken])

    # when each kind's informer lists its objects
    httproutes(m).replace_all([route("iris-route"), route("iris-vs")])
    m.route_caches[istio.PLUGIN.kind].replace_all([route("iris-vs"), route("iris-route")])

    # then each cache holds the object of its kind its rollout names, and a change of the
    # VirtualService brings back its rollout
    assert httproutes(m).keys() == [("ns", "iris-route")]
    assert m.route_caches[istio.PLUGIN.kind].keys() == [("ns", "iris-vs")]
    m.queue.shut_down()
    assert set(m._route_of) == {("ns", "iris"), ("ns", "iris-b"), ("ns", "iris-c")}, "all three are resynced"


def test_the_reconciler_reads_through_the_caches_and_a_rollout_leaving_the_shard_is_not_kept() -> None:
    m = manager(f"{SHARD}=a")
    mine = rollout("iris", "iris", labels={SHARD: "a"})
    m.rollout_cache.apply("ADDED", mine)
    assert m.reconciler.kube.read_rollout(namespace="ns", name="iris") == mine

    # a write of this process that returns it relabelled (another shard's now) drops it
    m.rollout_cache.put_written(rollout("iris", "iris", version="2", labels={SHARD: "b"}))
    assert m.rollout_cache.get("ns", "iris") is None
