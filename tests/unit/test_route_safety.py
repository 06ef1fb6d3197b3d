"""No route write may cause an outage: the invariant, parse_spec's refusals, and the router
refusing a write before sending it."""

from __future__ import annotations

from typing import Any

import pytest

from controller.api import Backend, ModelRolloutSpec, ModelVersion, SetWeightStep, SpecError, TrafficRouting, parse_spec
from controller.errors import UnsafeTrafficSplit
from controller.routers.gatewayapi import GatewayAPIRouter
from controller.routers.safety import split_problem

JSON = dict[str, Any]


def raw_spec(*versions: tuple[str, str, int]) -> JSON:
    return {
        "model": "iris",
        "versions": [{"version": v, "backend": {"service": s, "port": p}} for v, s, p in versions],
        "candidate": versions[1][0],
        "baseline": versions[0][0],
        "trafficRouting": {"gatewayAPI": {"httpRoute": "iris"}},
        "steps": [{"setWeight": 10}],
    }


SPEC = parse_spec(raw_spec(("v1", "iris-v1", 80), ("v2", "iris-v2", 80)))


def slipped_past_validation(*versions: tuple[str, str, int]) -> ModelRolloutSpec:
    """A spec as no check would let through: built directly, not parsed."""
    return ModelRolloutSpec(
        model="iris",
        versions=tuple(ModelVersion(version=v, backend=Backend(service=s, port=p)) for v, s, p in versions),
        candidate=versions[1][0],
        baseline=versions[0][0],
        traffic_routing=TrafficRouting(router="gatewayAPI", config={"httpRoute": "iris"}),
        steps=(SetWeightStep(weight=10),),
    )


@pytest.mark.parametrize("weights", [{"v1": 100}, {"v1": 90, "v2": 10}, {"v1": 0, "v2": 100}])
def test_weights_that_give_the_versions_all_traffic_are_safe(weights: dict[str, int]) -> None:
    assert split_problem(spec=SPEC, weights=weights) is None


@pytest.mark.parametrize(
    ("weights", "reason"),
    [
        ({"v1": 0, "v2": 0}, "sum to 0, not 100"),
        ({"v1": 90, "v2": 20}, "sum to 110, not 100"),
        ({"v1": 110, "v2": -10}, "not percentages from 0 to 100"),
        ({"v1": 90, "v9": 10}, "v9 not in spec.versions"),
    ],
    ids=["outage", "over-full", "negative", "unknown-version"],
)
def test_weights_that_lose_traffic_are_unsafe_and_say_why(weights: dict[str, int], reason: str) -> None:
    assert reason in (split_problem(spec=SPEC, weights=weights) or "")


def test_versions_sharing_a_backend_make_every_split_unsafe() -> None:
    # given two versions on one Service and port (a copy-paste slip no check caught)
    spec = slipped_past_validation(("v1", "iris-v1", 80), ("v2", "iris-v1", 80))

    # when any split is checked, then it is unsafe: the route cannot tell the versions apart
    problem = split_problem(spec=spec, weights={"v1": 100})
    assert problem is not None and "share Service iris-v1 port 80" in problem


def test_parse_spec_refuses_two_versions_on_one_service_and_port() -> None:
    with pytest.raises(SpecError, match=r"iris-v1 port 80 already serves version v1") as refused:
        parse_spec(raw_spec(("v1", "iris-v1", 80), ("v2", "iris-v1", 80)))
    assert refused.value.field_path == "spec.versions[1].backend"


def test_parse_spec_accepts_two_versions_on_one_service_at_different_ports() -> None:
    spec = parse_spec(raw_spec(("v1", "iris", 80), ("v2", "iris", 81)))
    assert split_problem(spec=spec, weights={"v1": 90, "v2": 10}) is None


def test_parse_spec_refuses_version_labels_equal_but_for_letter_case() -> None:
    with pytest.raises(
        SpecError, match=r"'V1' differs from 'v1' \(spec.versions\[0\]\) only in letter case"
    ) as refused:
        parse_spec(raw_spec(("v1", "iris-v1", 80), ("V1", "iris-v1b", 80)))
    assert refused.value.field_path == "spec.versions[1].version"


class RouteStore:
    """The two calls the Gateway API router makes, on one route held in memory."""

    def __init__(self, route: JSON) -> None:
        self.route = route
        self.writes: list[JSON] = []

    def get_custom(self, **_: str) -> JSON:
        return {**self.route, "spec": {"rules": [dict(rule) for rule in self.route["spec"]["rules"]]}}

    def replace_custom(self, *, body: JSON, **_: str) -> JSON:
        self.writes.append(body)
        return body


def test_the_router_refuses_a_write_that_would_send_every_request_nowhere() -> None:
    # given a route all on v1, and a spec (slipped past validation) whose v2 shares v1's backend
    store = RouteStore(
        {
            "metadata": {"name": "iris", "namespace": "ns"},
            "spec": {"rules": [{"backendRefs": [{"name": "iris-v1", "port": 80, "weight": 100}]}]},
        }
    )
    spec = slipped_past_validation(("v1", "iris-v1", 80), ("v2", "iris-v1", 80))
    router = GatewayAPIRouter(store)  # type: ignore[arg-type]

    # when the router is asked to send all traffic to v1 (which it would write as 0 for v2's twin)
    with pytest.raises(
        UnsafeTrafficSplit, match=r"refused to write weights .* to HTTPRoute ns/iris: .*share"
    ) as refused:
        router.write_weights(namespace="ns", spec=spec, weights={"v1": 100}, owner="iris")

    # then nothing was sent, and the refusal says what and why
    assert store.writes == []
    assert refused.value.reason == "UnsafeSplitRefused"


def test_the_router_tells_two_versions_on_one_service_apart_by_port() -> None:
    # given a route whose one Service serves v1 on port 80 and v2 on port 81
    store = RouteStore(
        {
            "metadata": {"name": "iris", "namespace": "ns"},
            "spec": {"rules": [{"backendRefs": [{"name": "iris", "port": 80, "weight": 100}]}]},
        }
    )
    spec = parse_spec(raw_spec(("v1", "iris", 80), ("v2", "iris", 81)))

    # when 10 % goes to v2
    router = GatewayAPIRouter(store)  # type: ignore[arg-type]
    written = router.write_weights(namespace="ns", spec=spec, weights={"v1": 90, "v2": 10}, owner="iris")

    # then each port gets its own version's weight
    assert written == {"v1": 90, "v2": 10}
    assert store.writes[0]["spec"]["rules"][0]["backendRefs"] == [
        {"name": "iris", "port": 80, "weight": 90},
        {"name": "iris", "port": 81, "weight": 10},
    ]
