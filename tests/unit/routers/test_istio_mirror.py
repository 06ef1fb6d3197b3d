"""The Istio router's mirror: `mirror` + `mirrorPercentage` on each managed HTTP route, its own
and no other.

The pure editing of a VirtualService first, then the router over the in-memory API server of
tests/unit/test_cheaper_passes.py (resourceVersions kept, stale writes refused with 409).
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from controller.api import Mirror
from controller.errors import ReferenceProblem, TemporaryError
from controller.reconcile import Reconciler
from controller.routers.istio import (
    MIRROR_ANNOTATION,
    IstioRouter,
    IstioRouting,
    Versions,
    mirror_destination,
    set_vs_mirror,
    vs_mirror,
)
from controller.routers.ownership import OWNER_ANNOTATION, RouteOwnedElsewhere
from controller.watch import ObjectCache
from tests.unit.routers.test_istio_router import (
    BY_HOST,
    BY_SUBSET,
    FQDN,
    NS,
    World,
    dest,
    destination_rule,
    rollout_spec,
    virtual_service,
)

JSON = dict[str, Any]
ALL_ROUTES = IstioRouting(virtual_service="iris")
HOSTS = Versions(BY_HOST, NS)
"""Versions told apart by their Services as hosts."""
RETRIES: JSON = {"attempts": 2, "perTryTimeout": "2s"}
AUDIT: JSON = {"host": "audit-log", "port": {"number": 80}}


def predict_route(*destinations: JSON, **fields: Any) -> JSON:
    return {"name": "predict", "retries": copy.deepcopy(RETRIES), "route": list(destinations), **fields}


def mirror_router(world: World) -> IstioRouter:
    return IstioRouter(world.kube)


# ---------------------------------------------------------------------------------------------
# Editing the VirtualService


def test_the_mirror_names_the_candidate_exactly_as_its_weighted_destination_does() -> None:
    # given a route whose v2 destination is written fully qualified, with a port
    route = predict_route(dest("iris-v1", 90, port=8080), dest(f"iris-v2.{FQDN}", 10, port=8080))

    # when the mirror destination for v2 is built, then it is that destination, a copy
    found = mirror_destination(route, versions=HOSTS, version_name="v2")
    assert found == {"host": f"iris-v2.{FQDN}", "port": {"number": 8080}}
    found["host"] = "changed"
    assert route["route"][1]["destination"]["host"] == f"iris-v2.{FQDN}"


def test_a_candidate_without_a_destination_is_mirrored_to_the_one_the_weights_would_add() -> None:
    # given routes where v2 has no destination yet (setWeight: 0), in short and qualified host forms
    short = predict_route(dest("iris-v1", 100, port=8080))
    qualified = predict_route(dest(f"iris-v1.{FQDN}", 100))

    # then the mirror takes the form of the route's version destinations, and the backend's port
    assert mirror_destination(short, versions=HOSTS, version_name="v2") == {"host": "iris-v2", "port": {"number": 8080}}
    assert mirror_destination(qualified, versions=HOSTS, version_name="v2") == {
        "host": f"iris-v2.{FQDN}",
        "port": {"number": 8080},
    }


def test_setting_the_mirror_adds_mirror_and_percentage_to_each_managed_route_and_nothing_else() -> None:
    # given a VirtualService with a forwarding route, a redirecting one, and all traffic on v1
    redirect = {"name": "old", "redirect": {"uri": "/v2"}}
    vs = virtual_service(predict_route(dest("iris-v1", 100, port=8080)), redirect)
    before = copy.deepcopy(vs)

    # when half the requests are mirrored to v2
    set_vs_mirror(vs, config=ALL_ROUTES, versions=HOSTS, mirror=Mirror(version="v2", percent=50))

    # then the forwarding route has mirror + mirrorPercentage, and everything else is as it was
    predict, old = vs["spec"]["http"]
    assert predict["mirror"] == {"host": "iris-v2", "port": {"number": 8080}}
    assert predict["mirrorPercentage"] == {"value": 50}
    assert {k: v for k, v in predict.items() if k not in ("mirror", "mirrorPercentage")} == before["spec"]["http"][0]
    assert old == redirect
    assert vs["metadata"]["annotations"] == {MIRROR_ANNOTATION: "iris-v2:8080"}
    assert vs["spec"] | {"http": None} == before["spec"] | {"http": None}
    # and it reads back as the mirror asked
    assert vs_mirror(vs, config=ALL_ROUTES, versions=HOSTS) == Mirror(version="v2", percent=50)


def test_removing_the_mirror_removes_both_fields_and_leaves_the_virtual_service_as_before() -> None:
    # given a VirtualService the controller mirrored
    vs = virtual_service(predict_route(dest("iris-v1", 100, port=8080)), annotations={OWNER_ANNOTATION: "iris"})
    before = copy.deepcopy(vs)
    set_vs_mirror(vs, config=ALL_ROUTES, versions=HOSTS, mirror=Mirror(version="v2", percent=100))

    # when the mirror is removed
    set_vs_mirror(vs, config=ALL_ROUTES, versions=HOSTS, mirror=None)

    # then the VirtualService is exactly as it was before the mirror
    assert vs == before
    assert vs_mirror(vs, config=ALL_ROUTES, versions=HOSTS) is None


def test_a_mirror_the_controller_did_not_set_is_kept_on_removal_and_refused_for_a_mirror_step() -> None:
    # given a route that mirrors to an audit service of the user's
    vs = virtual_service(predict_route(dest("iris-v1", 100), mirror=copy.deepcopy(AUDIT)))
    before = copy.deepcopy(vs)

    # then it is not the controller's mirror, and removing the controller's leaves it
    assert vs_mirror(vs, config=ALL_ROUTES, versions=HOSTS) is None
    set_vs_mirror(vs, config=ALL_ROUTES, versions=HOSTS, mirror=None)
    assert vs == before

    # and a mirror step is refused rather than overwriting it (Istio has one mirror per route)
    with pytest.raises(ReferenceProblem, match="already has mirror, which the controller did not set"):
        set_vs_mirror(vs, config=ALL_ROUTES, versions=HOSTS, mirror=Mirror(version="v2", percent=100))


def test_routes_that_disagree_read_as_percent_minus_one() -> None:
    # given two managed routes mirrored at 30 %, one of them then edited by hand to 80 %
    vs = virtual_service(predict_route(dest("iris-v1", 100)), {"name": "explain", "route": [dest("iris-v1")]})
    set_vs_mirror(vs, config=ALL_ROUTES, versions=HOSTS, mirror=Mirror(version="v2", percent=30))
    vs["spec"]["http"][1]["mirrorPercentage"] = {"value": 80.0}

    # then the mirror reads as percent -1, and a write makes the routes agree
    assert vs_mirror(vs, config=ALL_ROUTES, versions=HOSTS) == Mirror(version="v2", percent=-1)
    set_vs_mirror(vs, config=ALL_ROUTES, versions=HOSTS, mirror=Mirror(version="v2", percent=30))
    assert vs_mirror(vs, config=ALL_ROUTES, versions=HOSTS) == Mirror(version="v2", percent=30)


def test_a_mirror_without_percentage_copies_every_request() -> None:
    vs = virtual_service(predict_route(dest("iris-v1", 100)), annotations={MIRROR_ANNOTATION: "iris-v2:8080"})
    vs["spec"]["http"][0]["mirror"] = {"host": "iris-v2", "port": {"number": 8080}}

    assert vs_mirror(vs, config=ALL_ROUTES, versions=HOSTS) == Mirror(version="v2", percent=100)


# ---------------------------------------------------------------------------------------------
# The router over an API server


def test_the_router_writes_reads_and_removes_its_mirror_claiming_the_virtual_service() -> None:
    # given a VirtualService sending everything to v1, read before any write
    world = World(virtual_service(predict_route(dest("iris-v1", 100, port=8080))))
    router = mirror_router(world)
    assert router.read_mirror(namespace=NS, spec=BY_HOST, owner="iris") is None

    # when a mirror step copies every request to v2
    stored = router.write_mirror(namespace=NS, spec=BY_HOST, mirror=Mirror(version="v2", percent=100), owner="iris")

    # then the stored route mirrors to v2, the VirtualService is claimed, and the weights are as they were
    assert stored == Mirror(version="v2", percent=100)
    predict = world.stored["spec"]["http"][0]
    assert (predict["mirror"], predict["mirrorPercentage"]) == (
        {"host": "iris-v2", "port": {"number": 8080}},
        {"value": 100},
    )
    assert world.stored["metadata"]["annotations"][OWNER_ANNOTATION] == "iris"
    assert router.read_mirror(namespace=NS, spec=BY_HOST, owner="iris") == stored
    assert world.read() == {"v1": 100, "v2": 0, "v3": 0}

    # and when the step ends, the mirror goes and the claim stays
    assert router.write_mirror(namespace=NS, spec=BY_HOST, mirror=None, owner="iris") is None
    assert "mirror" not in world.stored["spec"]["http"][0]
    assert world.stored["metadata"]["annotations"] == {OWNER_ANNOTATION: "iris"}


def test_by_subset_the_mirror_is_the_candidates_subset_and_a_missing_subset_is_refused() -> None:
    # given subsets for v1 and v2 only
    world = World(
        virtual_service(predict_route(dest("iris", 100, subset="v1", port=8080))), rule=destination_rule("v1", "v2")
    )
    router = mirror_router(world)

    # when v2 is mirrored, then the mirror is the DestinationRule's host with v2's subset, the route's port
    router.write_mirror(namespace=NS, spec=BY_SUBSET, mirror=Mirror(version="v2", percent=20), owner="iris")
    assert world.stored["spec"]["http"][0]["mirror"] == {"host": "iris", "subset": "v2", "port": {"number": 8080}}
    assert router.read_mirror(namespace=NS, spec=BY_SUBSET, owner="iris") == Mirror(version="v2", percent=20)

    # and a mirror to v3, which has no subset, is refused before anything is sent
    writes = world.writes
    v3 = rollout_spec({"virtualService": "iris", "destinationRule": {"name": "iris"}}, candidate="v3")
    with pytest.raises(ReferenceProblem, match="no subset named v3"):
        router.write_mirror(namespace=NS, spec=v3, mirror=Mirror(version="v3", percent=20), owner="iris")
    assert world.writes == writes


def test_a_virtual_service_of_another_rollout_is_neither_read_nor_written() -> None:
    world = World(virtual_service(predict_route(dest("iris-v1", 100)), annotations={OWNER_ANNOTATION: "other"}))
    router = mirror_router(world)

    with pytest.raises(RouteOwnedElsewhere):
        router.read_mirror(namespace=NS, spec=BY_HOST, owner="iris")
    with pytest.raises(RouteOwnedElsewhere):
        router.write_mirror(namespace=NS, spec=BY_HOST, mirror=Mirror(version="v2", percent=100), owner="iris")
    assert world.writes == 0


def test_a_mirror_write_based_on_a_stale_copy_is_refused_by_its_resource_version() -> None:
    # given a router reading VirtualServices from an informer's cache that missed an edit
    world = World(virtual_service(predict_route(dest("iris-v1", 100))))
    cache = ObjectCache()
    cache.apply("ADDED", world.stored)
    world.kube.use_cache(group="networking.istio.io", plural="virtualservices", cache=cache)
    world.server.deliver = False
    world.someone_edits(lambda vs: vs["spec"]["http"][0].update({"timeout": "5s"}))

    # when the rollout writes its mirror, then the stale body is refused and nothing changes
    router = mirror_router(world)
    with pytest.raises(TemporaryError, match="409"):
        router.write_mirror(namespace=NS, spec=BY_HOST, mirror=Mirror(version="v2", percent=100), owner="iris")
    assert "mirror" not in world.stored["spec"]["http"][0]

    # and the retry, reading fresh, keeps the edit
    router.write_mirror(namespace=NS, spec=BY_HOST, mirror=Mirror(version="v2", percent=100), owner="iris")
    assert world.stored["spec"]["http"][0]["timeout"] == "5s"
    assert world.stored["spec"]["http"][0]["mirrorPercentage"] == {"value": 100}


def test_a_mirror_step_on_istio_is_accepted_by_the_reconciler() -> None:
    raw: JSON = {
        "model": "iris",
        "versions": [{"version": v, "backend": {"service": f"iris-{v}", "port": 80}} for v in ("v1", "v2")],
        "baseline": "v1",
        "candidate": "v2",
        "trafficRouting": {"istio": {"virtualService": "iris"}},
        "steps": [{"setWeight": 0}, {"mirror": {"duration": "1m"}}],
    }
    world = World(virtual_service(predict_route(dest("iris-v1", 100))))
    reconciler = Reconciler(kube=world.kube)

    spec, error, built = reconciler._parse({"spec": raw})

    assert error is None
    assert spec is not None and isinstance(built, IstioRouter)
