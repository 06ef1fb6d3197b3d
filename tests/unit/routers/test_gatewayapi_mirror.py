"""The Gateway API router's mirror: one RequestMirror filter per managed rule, its own and no other."""

from __future__ import annotations

import copy
from typing import Any, cast

import pytest

from controller.api import Mirror, parse_spec
from controller.errors import ReferenceProblem
from controller.kube import Kube
from controller.reconcile import Reconciler
from controller.routers.gatewayapi import MIRROR_ANNOTATION, GatewayAPIRouter
from controller.routers.ownership import OWNER_ANNOTATION, RouteOwnedElsewhere

SPEC = parse_spec(
    {
        "model": "iris",
        "versions": [{"version": v, "backend": {"service": f"iris-{v}", "port": 80}} for v in ("v1", "v2")],
        "candidate": "v2",
        "baseline": "v1",
        "trafficRouting": {"gatewayAPI": {"httpRoute": "iris", "ruleNames": ["predict", "explain"]}},
        "steps": [{"setWeight": 0}, {"mirror": {"duration": "1m"}}],
    }
)
HEADER = {"type": "RequestHeaderModifier", "requestHeaderModifier": {"set": [{"name": "x-model", "value": "iris"}]}}
THEIRS = {"type": "RequestMirror", "requestMirror": {"backendRef": {"name": "audit-log", "port": 80}}}


class OneRoute:
    """The API server as far as the router sees it: one HTTPRoute, get and replace (the
    resourceVersion guard is the API server's, tested in tests/integration)."""

    def __init__(self, route: dict[str, Any]) -> None:
        self.route = route
        self.writes = 0

    def get_custom(self, **_: Any) -> dict[str, Any]:
        return copy.deepcopy(self.route)

    def replace_custom(self, *, body: dict[str, Any], **_: Any) -> dict[str, Any]:
        self.writes += 1
        self.route = copy.deepcopy(body)
        return copy.deepcopy(body)


def a_route(**annotations: str) -> dict[str, Any]:
    refs = [{"name": "iris-v1", "port": 80, "weight": 100}, {"name": "iris-v2", "port": 80, "weight": 0}]
    return {
        "metadata": {"name": "iris", "namespace": "ns", "annotations": dict(annotations)},
        "spec": {
            "rules": [
                {"name": "predict", "filters": [HEADER], "backendRefs": copy.deepcopy(refs)},
                {"name": "explain", "filters": [THEIRS], "backendRefs": copy.deepcopy(refs)},
                {"name": "health", "backendRefs": [{"name": "health", "port": 80}]},
            ]
        },
    }


def router_on(route: dict[str, Any]) -> tuple[OneRoute, GatewayAPIRouter]:
    server = OneRoute(route)
    return server, GatewayAPIRouter(cast(Kube, server))


def test_the_mirror_is_a_request_mirror_filter_on_each_managed_rule_beside_the_others() -> None:
    # given a route whose rules carry filters of their own
    server, router = router_on(a_route())
    assert router.read_mirror(namespace="ns", spec=SPEC, owner="iris") is None

    # when a mirror step copies half the requests to v2
    stored = router.write_mirror(namespace="ns", spec=SPEC, mirror=Mirror(version="v2", percent=50), owner="iris")

    # then each managed rule has one more filter, the others are untouched, and the route is claimed
    ours = {"type": "RequestMirror", "requestMirror": {"backendRef": {"name": "iris-v2", "port": 80}, "percent": 50}}
    rules = server.route["spec"]["rules"]
    assert [rule.get("filters") for rule in rules] == [[HEADER, ours], [THEIRS, ours], None]
    assert server.route["metadata"]["annotations"] == {OWNER_ANNOTATION: "iris", MIRROR_ANNOTATION: "iris-v2:80"}
    assert stored == Mirror(version="v2", percent=50)
    assert router.read_mirror(namespace="ns", spec=SPEC, owner="iris") == stored
    # and the weights are as they were
    assert router.read_weights(namespace="ns", spec=SPEC, owner="iris") == {"v1": 100, "v2": 0}


def test_removing_the_mirror_removes_only_the_controllers_filter() -> None:
    server, router = router_on(a_route())
    router.write_mirror(namespace="ns", spec=SPEC, mirror=Mirror(version="v2", percent=100), owner="iris")

    assert router.write_mirror(namespace="ns", spec=SPEC, mirror=None, owner="iris") is None

    assert [rule.get("filters") for rule in server.route["spec"]["rules"]] == [[HEADER], [THEIRS], None]
    assert MIRROR_ANNOTATION not in server.route["metadata"]["annotations"]


def test_rules_that_disagree_read_as_percent_minus_one_and_a_write_makes_them_agree() -> None:
    server, router = router_on(a_route())
    router.write_mirror(namespace="ns", spec=SPEC, mirror=Mirror(version="v2", percent=100), owner="iris")
    server.route["spec"]["rules"][1]["filters"] = [THEIRS]  # a person removed it from one rule

    assert router.read_mirror(namespace="ns", spec=SPEC, owner="iris") == Mirror(version="v2", percent=-1)
    router.write_mirror(namespace="ns", spec=SPEC, mirror=Mirror(version="v2", percent=100), owner="iris")
    assert router.read_mirror(namespace="ns", spec=SPEC, owner="iris") == Mirror(version="v2", percent=100)


def test_a_mirror_to_the_version_that_the_controller_did_not_add_is_a_reference_problem() -> None:
    route = a_route()
    route["spec"]["rules"][0]["filters"].append(
        {"type": "RequestMirror", "requestMirror": {"backendRef": {"name": "iris-v2", "port": 80}}}
    )
    server, router = router_on(route)
    with pytest.raises(ReferenceProblem, match="did not add"):
        router.write_mirror(namespace="ns", spec=SPEC, mirror=Mirror(version="v2", percent=100), owner="iris")
    assert server.writes == 0


def test_a_route_of_another_rollout_is_neither_read_nor_written() -> None:
    server, router = router_on(a_route(**{OWNER_ANNOTATION: "other"}))
    with pytest.raises(RouteOwnedElsewhere):
        router.read_mirror(namespace="ns", spec=SPEC, owner="iris")
    with pytest.raises(RouteOwnedElsewhere):
        router.write_mirror(namespace="ns", spec=SPEC, mirror=Mirror(version="v2", percent=100), owner="iris")
    assert server.writes == 0


def test_a_mirror_step_on_kserve_is_a_spec_error_naming_the_step_and_the_routers_that_can() -> None:
    raw: dict[str, Any] = {
        "model": "iris",
        "trafficRouting": {"kserve": {"inferenceService": "iris"}},
        "steps": [{"setWeight": 0}, {"mirror": {"duration": "1m"}}],
    }
    reconciler = Reconciler(kube=cast(Kube, OneRoute(a_route())))
    spec, error, built = reconciler._parse({"spec": raw})
    assert spec is None and built is None
    assert error is not None
    assert error.startswith("spec.steps[1].mirror: the kserve router (spec.trafficRouting.kserve) cannot copy")
    assert "(spec.trafficRouting.gatewayAPI, spec.trafficRouting.istio)" in error
