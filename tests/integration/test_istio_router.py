"""The Istio router against the real API server with Istio's CRDs (istio.io/api v1.32.0) installed.

No Istio control plane or proxy runs here (its data plane needs the istio-proxy Envoy build):
the API server stores and validates the VirtualServices and DestinationRules, and the tests
check what the router reads and writes there, through the controller's real `Kube`.
"""

from __future__ import annotations

import copy
from typing import Any, cast

import pytest
from kubernetes import client

from controller.api import Mirror, parse_spec
from controller.errors import ReferenceProblem, TemporaryError
from controller.kube import Kube
from controller.routers.istio import (
    ADDED_DESTINATIONS_ANNOTATION,
    DESTINATION_RULES,
    GROUP,
    MIRROR_ANNOTATION,
    PLURAL,
    IstioRouter,
)
from controller.routers.ownership import OWNER_ANNOTATION, RouteOwnedElsewhere
from controller.watch import ObjectCache
from localenv.controlplane import ControlPlane
from localenv.router_crds import ISTIO, install_router_crds

pytestmark = pytest.mark.integration

JSON = dict[str, Any]
VERSION = "v1"


@pytest.fixture(scope="module")
def istio_crds(control_plane: ControlPlane) -> None:
    """VirtualService and DestinationRule served by the session's API server (installing again,
    from another module, changes nothing)."""
    install_router_crds(control_plane, ISTIO)


def rollout_spec(istio: JSON, *, candidate: str = "v2") -> Any:
    return parse_spec(
        {
            "model": "iris",
            "versions": [{"version": v, "backend": {"service": f"iris-{v}", "port": 8080}} for v in ("v1", "v2", "v3")],
            "candidate": candidate,
            "baseline": "v1",
            "trafficRouting": {"istio": istio},
            "steps": [{"setWeight": 10}],
        }
    )


BY_HOST = rollout_spec({"virtualService": "iris", "routes": ["predict"]})
BY_SUBSET = rollout_spec({"virtualService": "iris", "destinationRule": {"name": "iris"}})


class Istio:
    """The namespace's Istio objects, read and written with the official client as a person would."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.custom = client.CustomObjectsApi(api)
        self.namespace = namespace

    def create(self, plural: str, kind: str, name: str, spec: JSON) -> None:
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": kind, "metadata": {"name": name}, "spec": spec}
        self.custom.create_namespaced_custom_object(GROUP, VERSION, self.namespace, plural, body)

    def get(self, plural: str = PLURAL, name: str = "iris") -> JSON:
        return cast(JSON, self.custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace, plural, name))

    def replace(self, body: JSON) -> None:
        name = body["metadata"]["name"]
        self.custom.replace_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name, body)

    def annotations(self) -> dict[str, str]:
        return dict(self.get()["metadata"].get("annotations") or {})


@pytest.fixture
def istio(istio_crds: None, kube_api: client.ApiClient, namespace: str) -> Istio:
    return Istio(kube_api, namespace)


@pytest.fixture
def router(kube_api: client.ApiClient) -> IstioRouter:
    return IstioRouter(Kube(api_client=kube_api))


PREDICT_ROUTE: JSON = {
    "name": "predict",
    "match": [{"uri": {"prefix": "/v2/models/iris"}}],
    "timeout": "5s",
    "retries": {"attempts": 2, "perTryTimeout": "2s"},
    "route": [
        {"destination": {"host": "iris-v1", "port": {"number": 8080}}, "weight": 100},
        {"destination": {"host": "shadow-logger", "port": {"number": 8080}}, "weight": 0},
    ],
}
HEALTH_ROUTE: JSON = {"name": "health", "route": [{"destination": {"host": "health-checker"}}]}


def test_by_host_the_router_claims_reads_writes_and_releases_the_stored_virtual_service(
    istio: Istio, router: IstioRouter, namespace: str
) -> None:
    # given a VirtualService with the managed route and another one, all traffic on v1
    istio.create(
        PLURAL,
        "VirtualService",
        "iris",
        {"hosts": ["iris.example.com"], "gateways": ["models"], "http": [PREDICT_ROUTE, HEALTH_ROUTE]},
    )

    # when the rollout reads it, then it sees v1 at 100 % (and claims it only with its first write)
    assert router.read_weights(namespace=namespace, spec=BY_HOST, owner="iris") == {"v1": 100, "v2": 0, "v3": 0}
    assert OWNER_ANNOTATION not in istio.annotations()

    # when it sends 10 % to v2
    returned = router.write_weights(namespace=namespace, spec=BY_HOST, weights={"v1": 90, "v2": 10}, owner="iris")

    # then what it returns is what the API server stored: weights, one destination added, the
    # rest of the route and the other route as they were
    stored = istio.get()
    predict, health = stored["spec"]["http"]
    assert returned == {"v1": 90, "v2": 10, "v3": 0}
    assert predict["route"] == [
        {"destination": {"host": "iris-v1", "port": {"number": 8080}}, "weight": 90},
        {"destination": {"host": "shadow-logger", "port": {"number": 8080}}, "weight": 0},
        {"destination": {"host": "iris-v2", "port": {"number": 8080}}, "weight": 10},
    ]
    assert predict | {"route": None} == PREDICT_ROUTE | {"route": None}
    assert health == HEALTH_ROUTE
    assert stored["metadata"]["annotations"][ADDED_DESTINATIONS_ANNOTATION] == "iris-v2:8080"

    # when the rollout is promoted, then v1 (written by the user) stays at 0
    router.write_weights(namespace=namespace, spec=BY_HOST, weights={"v2": 100}, owner="iris")
    assert router.read_weights(namespace=namespace, spec=BY_HOST, owner="iris") == {"v1": 0, "v2": 100, "v3": 0}

    # when it is deleted and releases the VirtualService, then the claim goes and the weights stay
    router.release(namespace=namespace, spec=BY_HOST, owner="iris")
    assert OWNER_ANNOTATION not in istio.annotations()
    assert [d["weight"] for d in istio.get()["spec"]["http"][0]["route"]] == [0, 0, 100]


def test_a_second_rollout_is_refused_and_writes_nothing(istio: Istio, router: IstioRouter, namespace: str) -> None:
    # given a VirtualService claimed by rollout iris (with its first write)
    istio.create(PLURAL, "VirtualService", "iris", {"hosts": ["iris.example.com"], "http": [PREDICT_ROUTE]})
    router.write_weights(namespace=namespace, spec=BY_HOST, weights={"v1": 100}, owner="iris")
    version = istio.get()["metadata"]["resourceVersion"]

    # when rollout iris-b reads or writes it
    with pytest.raises(RouteOwnedElsewhere, match="managed by ModelRollout iris"):
        router.read_weights(namespace=namespace, spec=BY_HOST, owner="iris-b")
    with pytest.raises(RouteOwnedElsewhere):
        router.write_weights(namespace=namespace, spec=BY_HOST, weights={"v1": 50, "v3": 50}, owner="iris-b")

    # then the stored object did not change at all, and iris-b's release leaves iris' claim
    router.release(namespace=namespace, spec=BY_HOST, owner="iris-b")
    assert istio.get()["metadata"]["resourceVersion"] == version
    assert istio.annotations()[OWNER_ANNOTATION] == "iris"


def test_a_write_from_a_stale_copy_is_refused_by_the_api_server(
    istio: Istio, kube_api: client.ApiClient, namespace: str
) -> None:
    # given a router whose informer cache holds the VirtualService from before a person's edit
    istio.create(PLURAL, "VirtualService", "iris", {"hosts": ["iris.example.com"], "http": [PREDICT_ROUTE]})
    cache = ObjectCache()
    cache.apply("ADDED", istio.get())
    kube = Kube(api_client=kube_api)
    kube.use_cache(group=GROUP, plural=PLURAL, cache=cache)
    router = IstioRouter(kube)
    edited = copy.deepcopy(istio.get())
    edited["spec"]["http"][0]["timeout"] = "9s"
    istio.replace(edited)

    # when the rollout writes, then the API server refuses it (409) and the edit stands
    with pytest.raises(TemporaryError, match="409"):
        router.write_weights(namespace=namespace, spec=BY_HOST, weights={"v1": 90, "v2": 10}, owner="iris")
    assert istio.get()["spec"]["http"][0]["timeout"] == "9s"
    assert [d["weight"] for d in istio.get()["spec"]["http"][0]["route"]] == [100, 0]

    # and the pass that runs again reads it fresh and keeps the edit
    router.write_weights(namespace=namespace, spec=BY_HOST, weights={"v1": 90, "v2": 10}, owner="iris")
    assert istio.get()["spec"]["http"][0]["timeout"] == "9s"


def test_by_subset_destinations_are_added_for_subsets_the_destination_rule_has(
    istio: Istio, router: IstioRouter, namespace: str
) -> None:
    # given a DestinationRule with subsets v1 and v2 and a VirtualService sending all to v1
    host = f"iris.{namespace}.svc.cluster.local"
    istio.create(
        DESTINATION_RULES,
        "DestinationRule",
        "iris",
        {"host": host, "subsets": [{"name": v, "labels": {"version": v}} for v in ("v1", "v2")]},
    )
    istio.create(
        PLURAL,
        "VirtualService",
        "iris",
        {"hosts": ["iris"], "http": [{"route": [{"destination": {"host": "iris", "subset": "v1"}}]}]},
    )
    assert router.read_weights(namespace=namespace, spec=BY_SUBSET, owner="iris") == {"v1": 100, "v2": 0, "v3": 0}

    # when v2 gets 25 %, then a destination for subset v2 is stored beside v1's
    weights = router.write_weights(namespace=namespace, spec=BY_SUBSET, weights={"v1": 75, "v2": 25}, owner="iris")
    assert weights == {"v1": 75, "v2": 25, "v3": 0}
    assert istio.get()["spec"]["http"][0]["route"] == [
        {"destination": {"host": "iris", "subset": "v1"}, "weight": 75},
        {"destination": {"host": "iris", "subset": "v2"}, "weight": 25},
    ]

    # when v3, which has no subset, should get traffic, then nothing is written
    version = istio.get()["metadata"]["resourceVersion"]
    with pytest.raises(ReferenceProblem, match=f"DestinationRule {namespace}/iris has no subset named v3"):
        router.write_weights(namespace=namespace, spec=BY_SUBSET, weights={"v1": 75, "v3": 25}, owner="iris")
    assert istio.get()["metadata"]["resourceVersion"] == version

    # and with v3 the candidate and all traffic back on v1, the destination the controller added goes
    next_release = rollout_spec({"virtualService": "iris", "destinationRule": {"name": "iris"}}, candidate="v3")
    router.write_weights(namespace=namespace, spec=next_release, weights={"v1": 100}, owner="iris")
    assert istio.get()["spec"]["http"][0]["route"] == [{"destination": {"host": "iris", "subset": "v1"}, "weight": 100}]
    assert ADDED_DESTINATIONS_ANNOTATION not in istio.annotations()


def test_a_missing_virtual_service_is_a_reference_problem(istio: Istio, router: IstioRouter, namespace: str) -> None:
    with pytest.raises(ReferenceProblem, match=f"VirtualService {namespace}/iris not found"):
        router.read_weights(namespace=namespace, spec=BY_HOST, owner="iris")
    router.release(namespace=namespace, spec=BY_HOST, owner="iris")  # quiet: nothing to release


def test_the_mirror_is_stored_on_the_managed_route_read_back_and_removed_leaving_the_rest(
    istio: Istio, router: IstioRouter, namespace: str
) -> None:
    # given a VirtualService with the managed route (all traffic on v1) and another route, claimed
    # by the rollout's first weight write
    istio.create(
        PLURAL,
        "VirtualService",
        "iris",
        {"hosts": ["iris.example.com"], "gateways": ["models"], "http": [PREDICT_ROUTE, HEALTH_ROUTE]},
    )
    router.write_weights(namespace=namespace, spec=BY_HOST, weights={"v1": 100}, owner="iris")
    before = istio.get()
    assert router.read_mirror(namespace=namespace, spec=BY_HOST, owner="iris") is None

    # when a mirror step copies 40 % of the requests to v2
    returned = router.write_mirror(
        namespace=namespace, spec=BY_HOST, mirror=Mirror(version="v2", percent=40), owner="iris"
    )

    # then the API server stored mirror + mirrorPercentage on the managed route only, naming v2's
    # Service and port as the weights would, and the router reads that mirror back
    stored = istio.get()
    predict, health = stored["spec"]["http"]
    assert predict["mirror"] == {"host": "iris-v2", "port": {"number": 8080}}
    assert predict["mirrorPercentage"] == {"value": 40}
    assert {k: v for k, v in predict.items() if k not in ("mirror", "mirrorPercentage")} == before["spec"]["http"][0]
    assert health == HEALTH_ROUTE
    assert stored["metadata"]["annotations"][MIRROR_ANNOTATION] == "iris-v2:8080"
    assert returned == Mirror(version="v2", percent=40)
    assert router.read_mirror(namespace=namespace, spec=BY_HOST, owner="iris") == returned
    assert router.read_weights(namespace=namespace, spec=BY_HOST, owner="iris") == {"v1": 100, "v2": 0, "v3": 0}

    # and another rollout can neither read nor change it
    with pytest.raises(RouteOwnedElsewhere):
        router.write_mirror(namespace=namespace, spec=BY_HOST, mirror=None, owner="iris-b")

    # when the step ends and the mirror is removed, then the VirtualService is as before the mirror
    assert router.write_mirror(namespace=namespace, spec=BY_HOST, mirror=None, owner="iris") is None
    after = istio.get()
    assert after["spec"] == before["spec"]
    assert after["metadata"]["annotations"] == before["metadata"]["annotations"]
    assert router.read_mirror(namespace=namespace, spec=BY_HOST, owner="iris") is None
