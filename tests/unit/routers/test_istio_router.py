"""The Istio router: destination weights of a VirtualService's HTTP routes, by host or by subset.

The real `Kube` runs over the in-memory API server of tests/unit/test_cheaper_passes.py, which
keeps resourceVersions and refuses a write based on an old one with 409 Conflict; what a test
checks is the object as that server stores it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from kubernetes import client

from controller.api import SpecError, parse_spec
from controller.errors import ReferenceProblem, TemporaryError, UnsafeTrafficSplit
from controller.kube import Kube
from controller.routers import Router, istio
from controller.routers.istio import (
    ADDED_DESTINATIONS_ANNOTATION,
    DESTINATION_RULES,
    PLURAL,
    IstioRouter,
    IstioRouting,
    parse_config,
    service_of,
)
from controller.routers.ownership import OWNER_ANNOTATION, RouteOwnedElsewhere
from controller.watch import ObjectCache
from tests.unit.test_cheaper_passes import FakeServer

JSON = dict[str, Any]
NS = "ns"
FQDN = f"{NS}.svc.cluster.local"


def rollout_spec(istio: JSON, *, versions: tuple[str, ...] = ("v1", "v2", "v3"), candidate: str = "v2") -> Any:
    return parse_spec(
        {
            "model": "iris",
            "versions": [{"version": v, "backend": {"service": f"iris-{v}", "port": 8080}} for v in versions],
            "candidate": candidate,
            "baseline": "v1",
            "trafficRouting": {"istio": istio},
            "steps": [{"setWeight": 10}],
        }
    )


BY_HOST = rollout_spec({"virtualService": "iris"})
BY_SUBSET = rollout_spec({"virtualService": "iris", "destinationRule": {"name": "iris"}})


def dest(host: str, weight: int | None = None, *, subset: str | None = None, port: int | None = None) -> JSON:
    destination: JSON = {"host": host}
    if subset is not None:
        destination["subset"] = subset
    if port is not None:
        destination["port"] = {"number": port}
    entry: JSON = {"destination": destination}
    if weight is not None:
        entry["weight"] = weight
    return entry


def virtual_service(*http: JSON, annotations: dict[str, str] | None = None) -> JSON:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "iris", "namespace": NS, "annotations": dict(annotations or {})},
        "spec": {"hosts": ["iris.example.com"], "gateways": ["models"], "http": list(http)},
    }


def destination_rule(*subsets: str, host: str = "iris") -> JSON:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "DestinationRule",
        "metadata": {"name": "iris", "namespace": NS},
        "spec": {"host": host, "subsets": [{"name": s, "labels": {"version": s}} for s in subsets]},
    }


class World:
    """An in-memory API server holding one VirtualService (and maybe a DestinationRule), the real
    Kube over it, and the router under test."""

    def __init__(self, service: JSON, *, rule: JSON | None = None) -> None:
        self.server = FakeServer()
        kube = Kube(api_client=client.ApiClient())
        kube.custom = self.server  # type: ignore[assignment]
        kube.core = self.server  # type: ignore[assignment]
        self.kube = kube
        self.server.create(PLURAL, service)
        if rule is not None:
            self.server.create(DESTINATION_RULES, rule)
        self.router: Router = IstioRouter(kube)

    @property
    def stored(self) -> JSON:
        return copy.deepcopy(self.server.objects[(PLURAL, "iris")])

    def routes(self) -> list[list[JSON]]:
        return [route.get("route", []) for route in self.stored["spec"]["http"]]

    @property
    def writes(self) -> int:
        return self.server.calls[f"update {PLURAL}"]

    def someone_edits(self, edit: Callable[[JSON], None]) -> None:
        """A change made by someone else (a person, another controller): a new resourceVersion."""
        changed = self.stored
        edit(changed)
        self.server.create(PLURAL, changed)

    def read(self, spec: Any = BY_HOST, owner: str = "iris", replacing: str | None = None) -> dict[str, int]:
        return self.router.read_weights(namespace=NS, spec=spec, owner=owner, replacing=replacing)

    def write(self, weights: dict[str, int], spec: Any = BY_HOST, owner: str = "iris") -> dict[str, int]:
        return self.router.write_weights(namespace=NS, spec=spec, weights=weights, owner=owner)


# ---------------------------------------------------------------------------------------------
# Configuration and hosts


def test_the_configuration_parses_into_a_typed_value_and_errors_name_the_field() -> None:
    assert parse_config({"virtualService": "iris"}) == IstioRouting(virtual_service="iris")
    assert parse_config(
        {"virtualService": "iris", "routes": ["predict"], "destinationRule": {"name": "iris-dr"}}
    ) == IstioRouting(virtual_service="iris", routes=("predict",), destination_rule="iris-dr")

    with pytest.raises(SpecError, match=r"^spec.trafficRouting.istio.virtualService: must be the name"):
        parse_config({})
    with pytest.raises(SpecError, match=r"^spec.trafficRouting.istio.routes\[1\]: "):
        parse_config({"virtualService": "iris", "routes": ["predict", ""]})
    with pytest.raises(SpecError, match=r"^spec.trafficRouting.istio.routes: names a route twice"):
        parse_config({"virtualService": "iris", "routes": ["predict", "predict"]})
    with pytest.raises(SpecError, match=r"^spec.trafficRouting.istio.destinationRule.name: "):
        parse_config({"virtualService": "iris", "destinationRule": {}})


def test_a_host_names_a_service_of_the_namespace_by_short_name_or_fully_qualified() -> None:
    assert service_of("iris-v1", NS) == "iris-v1"
    assert service_of(f"iris-v1.{FQDN}", NS) == "iris-v1"
    assert service_of("iris-v1.ns.svc.corp.example", NS) == "iris-v1"  # another cluster domain
    assert service_of("iris-v1.other.svc.cluster.local", NS) is None  # another namespace's Service
    assert service_of("iris-v1.ns", NS) is None  # Istio does not expand NAME.NAMESPACE
    assert service_of("iris.example.com", NS) is None


def test_a_broken_configuration_is_a_reference_problem_of_the_rollout_and_the_route_is_not_touched() -> None:
    # given a rollout whose istio section names no VirtualService
    world = World(virtual_service({"route": [dest("iris-v1")]}))

    # when it reads, then it is told which field to fix
    with pytest.raises(ReferenceProblem, match=r"spec\.trafficRouting\.istio\.virtualService"):
        world.read(rollout_spec({"routes": ["predict"]}))
    assert world.writes == 0


# ---------------------------------------------------------------------------------------------
# Reading by host


def test_weights_are_read_as_percent_per_version_whatever_the_host_form() -> None:
    # given a route splitting 3:1 between v1 (short host) and v2 (fully qualified, with its port)
    world = World(virtual_service({"route": [dest("iris-v1", 3), dest(f"iris-v2.{FQDN}", 1, port=8080)]}))

    # when the rollout reads it, then it sees 75/25 (and claims the VirtualService only with its first write)
    assert world.read() == {"v1": 75, "v2": 25, "v3": 0}
    assert OWNER_ANNOTATION not in (world.stored["metadata"].get("annotations") or {})


def test_a_routes_only_destination_gets_all_traffic_whatever_its_weight() -> None:
    world = World(virtual_service({"route": [dest("iris-v1")]}))

    assert world.read() == {"v1": 100, "v2": 0, "v3": 0}


def test_a_destination_on_another_port_of_the_service_is_not_the_version() -> None:
    world = World(virtual_service({"route": [dest("iris-v1", 100, port=8080), dest("iris-v2", 0, port=9090)]}))

    assert world.read() == {"v1": 100, "v2": 0, "v3": 0}


def test_a_destination_outside_the_versions_with_traffic_is_a_reference_problem() -> None:
    # given a route that also sends 10 % to a legacy Service (and 0 % to a dark one)
    world = World(virtual_service({"route": [dest("iris-v1", 90), dest("legacy", 10), dest("dark", 0)]}))

    # when the rollout reads it, then it is told which destination to fix
    with pytest.raises(ReferenceProblem, match=r"weight 10\) to destination 'legacy'"):
        world.read()


def test_a_routes_only_destination_outside_the_versions_is_a_reference_problem() -> None:
    world = World(virtual_service({"route": [dest("legacy", 0)]}))

    with pytest.raises(ReferenceProblem, match="legacy"):
        world.read()


def test_a_portless_host_shared_by_two_versions_is_a_reference_problem() -> None:
    # given two versions on one Service, told apart by port, and a destination without a port
    spec = parse_spec(
        {
            "model": "iris",
            "versions": [
                {"version": "v1", "backend": {"service": "iris", "port": 8080}},
                {"version": "v2", "backend": {"service": "iris", "port": 8081}},
            ],
            "candidate": "v2",
            "baseline": "v1",
            "trafficRouting": {"istio": {"virtualService": "iris"}},
            "steps": [{"setWeight": 10}],
        }
    )
    world = World(virtual_service({"route": [dest("iris", 100)]}))

    with pytest.raises(ReferenceProblem, match=r"set destination\.port\.number"):
        world.read(spec)


def test_only_the_named_routes_are_managed_and_a_missing_or_answering_one_is_reported() -> None:
    # given a route to manage, one to another service, and a redirect
    predict = {"name": "predict", "route": [dest("iris-v1", 100)]}
    health = {"name": "health", "route": [dest("health-checker")]}
    legacy = {"name": "legacy", "redirect": {"uri": "/v2"}}
    world = World(virtual_service(legacy, health, predict))

    # when the rollout names the route, it reads it alone
    assert world.read(rollout_spec({"virtualService": "iris", "routes": ["predict"]})) == {"v1": 100, "v2": 0, "v3": 0}
    # and a route that does not exist, or redirects, is reported by name
    with pytest.raises(ReferenceProblem, match="no HTTP route named missing"):
        world.read(rollout_spec({"virtualService": "iris", "routes": ["predict", "missing"]}))
    with pytest.raises(ReferenceProblem, match="legacy of VirtualService iris has redirect"):
        world.read(rollout_spec({"virtualService": "iris", "routes": ["legacy"]}))


def test_without_route_names_every_forwarding_route_is_managed_and_disagreeing_routes_read_minus_one() -> None:
    # given two forwarding routes that disagree and a redirect
    world = World(
        virtual_service(
            {"name": "a", "route": [dest("iris-v1", 90), dest("iris-v2", 10)]},
            {"name": "old", "redirect": {"uri": "/a"}},
            {"name": "b", "route": [dest("iris-v1", 100)]},
        )
    )

    # when the rollout reads, then it cannot report one split
    assert world.read() == {"v1": -1, "v2": -1, "v3": -1}

    # and the next write makes them agree, leaving the redirect alone
    assert world.write({"v1": 80, "v2": 20}) == {"v1": 80, "v2": 20, "v3": 0}
    assert world.stored["spec"]["http"][1] == {"name": "old", "redirect": {"uri": "/a"}}


# ---------------------------------------------------------------------------------------------
# Writing by host


def test_writing_sets_only_the_weights_and_adds_a_missing_destination_in_the_routes_host_form() -> None:
    # given a route with matches, headers and retries, sending all traffic to v1 by its full name
    route = {
        "name": "predict",
        "match": [{"uri": {"prefix": "/v2/models/iris"}}],
        "retries": {"attempts": 2},
        "route": [
            {**dest(f"iris-v1.{FQDN}", 100, port=8080), "headers": {"request": {"set": {"x-model": "iris"}}}},
            dest("dark", 0),
        ],
    }
    world = World(virtual_service(route))

    # when the rollout sends 10 % to v2
    returned = world.write({"v1": 90, "v2": 10})

    # then the stored route has only its weights changed, and a destination for v2 in the same form
    stored = world.stored["spec"]["http"][0]
    assert returned == {"v1": 90, "v2": 10, "v3": 0}
    assert stored["match"] == route["match"]
    assert stored["retries"] == route["retries"]
    assert stored["route"] == [
        {**dest(f"iris-v1.{FQDN}", 90, port=8080), "headers": {"request": {"set": {"x-model": "iris"}}}},
        dest("dark", 0),
        dest(f"iris-v2.{FQDN}", 10, port=8080),
    ]
    assert world.stored["metadata"]["annotations"] == {
        OWNER_ANNOTATION: "iris",
        ADDED_DESTINATIONS_ANNOTATION: f"iris-v2.{FQDN}:8080",
    }
    assert world.writes == 1


def test_a_destination_the_controller_added_goes_once_it_serves_nothing_but_the_users_own_stay() -> None:
    # given the user's v1 destination and v2 added by the controller, v2 now promoted
    world = World(
        virtual_service(
            {"route": [dest("iris-v1", 0), dest("iris-v2", 100, port=8080)]},
            annotations={ADDED_DESTINATIONS_ANNOTATION: "iris-v2:8080"},
        )
    )
    next_release = replace(BY_HOST, candidate="v3")

    # when v3, the next candidate, takes 10 %, then all traffic
    world.write({"v2": 90, "v3": 10}, next_release)
    world.write({"v3": 100}, next_release)

    # then v2's destination went with its traffic, the user's v1 stays at 0, v3 is recorded as added
    assert world.routes() == [[dest("iris-v1", 0), dest("iris-v3", 100, port=8080)]]
    assert world.stored["metadata"]["annotations"][ADDED_DESTINATIONS_ANNOTATION] == "iris-v3:8080"


def test_the_candidates_added_destination_stays_at_zero_after_a_rollback_so_a_retry_reuses_it() -> None:
    world = World(
        virtual_service(
            {"route": [dest("iris-v1", 90), dest("iris-v2", 10, port=8080)]},
            annotations={ADDED_DESTINATIONS_ANNOTATION: "iris-v2:8080"},
        )
    )

    assert world.write({"v1": 100}) == {"v1": 100, "v2": 0, "v3": 0}

    assert world.routes() == [[dest("iris-v1", 100), dest("iris-v2", 0, port=8080)]]


def test_a_version_with_two_destinations_gets_its_share_on_the_first_only() -> None:
    world = World(virtual_service({"route": [dest("iris-v1", 50), dest(f"iris-v1.{FQDN}", 50), dest("iris-v2", 0)]}))

    world.write({"v1": 70, "v2": 30})

    assert world.routes() == [[dest("iris-v1", 70), dest(f"iris-v1.{FQDN}", 0), dest("iris-v2", 30)]]
    assert world.read() == {"v1": 70, "v2": 30, "v3": 0}


def test_an_unsafe_split_is_refused_before_anything_is_sent() -> None:
    world = World(virtual_service({"route": [dest("iris-v1", 100)]}))

    with pytest.raises(UnsafeTrafficSplit, match="sum to 90"):
        world.write({"v1": 80, "v2": 10})

    assert world.writes == 0
    assert world.routes() == [[dest("iris-v1", 100)]]


def test_a_write_based_on_a_stale_copy_is_refused_by_its_resource_version_and_changes_nothing() -> None:
    # given a router reading VirtualServices from an informer's cache that missed an edit
    world = World(virtual_service({"route": [dest("iris-v1", 100)]}))
    cache = ObjectCache()
    cache.apply("ADDED", world.stored)
    world.kube.use_cache(group="networking.istio.io", plural=PLURAL, cache=cache)
    world.server.deliver = False
    world.someone_edits(lambda vs: vs["spec"]["http"][0].update({"timeout": "5s"}))

    # when the rollout writes, then the API server refuses the stale body and the pass will retry
    with pytest.raises(TemporaryError, match="409"):
        world.write({"v1": 90, "v2": 10})
    assert world.routes() == [[dest("iris-v1", 100)]]
    assert world.stored["spec"]["http"][0]["timeout"] == "5s"

    # and the retry, reading fresh (the conflict dropped the cached copy), keeps the edit
    assert world.write({"v1": 90, "v2": 10}) == {"v1": 90, "v2": 10, "v3": 0}
    assert world.stored["spec"]["http"][0]["timeout"] == "5s"


# ---------------------------------------------------------------------------------------------
# By DestinationRule subset


def test_by_subset_versions_are_the_destination_rules_host_with_the_version_label_as_subset() -> None:
    # given a route over the DestinationRule's host, written fully qualified, and another subset
    world = World(
        virtual_service({"route": [dest(f"iris.{FQDN}", 80, subset="v1"), dest("iris", 20, subset="v2")]}),
        rule=destination_rule("v1", "v2"),
    )

    assert world.read(BY_SUBSET) == {"v1": 80, "v2": 20, "v3": 0}


def test_by_subset_a_destination_on_another_host_or_subset_with_traffic_is_a_reference_problem() -> None:
    world = World(
        virtual_service({"route": [dest("iris", 90, subset="v1"), dest("iris", 10, subset="canary")]}),
        rule=destination_rule("v1", "v2", "canary"),
    )

    with pytest.raises(ReferenceProblem, match="'iris/canary'"):
        world.read(BY_SUBSET)


def test_by_subset_a_missing_destination_is_added_with_the_routes_host_and_port() -> None:
    # given a route sending all traffic to subset v1, the rule having v1 and v2
    world = World(
        virtual_service({"route": [dest(f"iris.{FQDN}", 100, subset="v1", port=8080)]}),
        rule=destination_rule("v1", "v2"),
    )

    # when v2 gets 10 %
    assert world.write({"v1": 90, "v2": 10}, BY_SUBSET) == {"v1": 90, "v2": 10, "v3": 0}

    # then a destination for subset v2 is added like v1's, and recorded as added
    assert world.routes() == [
        [dest(f"iris.{FQDN}", 90, subset="v1", port=8080), dest(f"iris.{FQDN}", 10, subset="v2", port=8080)]
    ]
    annotations = world.stored["metadata"]["annotations"]
    assert annotations[ADDED_DESTINATIONS_ANNOTATION] == f"iris.{FQDN}/v2:8080"


def test_by_subset_traffic_for_a_version_without_a_subset_is_refused_before_anything_is_sent() -> None:
    # given a rule with subset v1 only
    world = World(virtual_service({"route": [dest("iris", 100, subset="v1")]}), rule=destination_rule("v1"))

    # when v2 should get traffic, then the write is refused naming the rule and the subset
    with pytest.raises(ReferenceProblem, match="DestinationRule ns/iris has no subset named v2"):
        world.write({"v1": 90, "v2": 10}, BY_SUBSET)
    assert world.writes == 0

    # and all traffic back on v1 needs no subset for v2
    assert world.write({"v1": 100}, BY_SUBSET) == {"v1": 100, "v2": 0, "v3": 0}


def test_by_subset_a_version_label_that_cannot_be_a_subset_name_is_named() -> None:
    spec = rollout_spec(
        {"virtualService": "iris", "destinationRule": {"name": "iris"}}, versions=("v1", "v2.1"), candidate="v2.1"
    )
    world = World(virtual_service({"route": [dest("iris", 100, subset="v1")]}), rule=destination_rule("v1"))

    with pytest.raises(ReferenceProblem, match=r"v2.1 cannot be a subset name"):
        world.write({"v1": 90, "v2.1": 10}, spec)


def test_by_subset_a_missing_destination_rule_is_a_reference_problem() -> None:
    world = World(virtual_service({"route": [dest("iris", 100, subset="v1")]}))

    with pytest.raises(ReferenceProblem, match="DestinationRule ns/iris not found"):
        world.read(BY_SUBSET)


# ---------------------------------------------------------------------------------------------
# Ownership


def test_a_second_rollout_on_an_owned_virtual_service_is_told_the_owner_and_writes_nothing() -> None:
    # given a VirtualService owned by rollout iris-a
    world = World(virtual_service({"route": [dest("iris-v1", 100)]}, annotations={OWNER_ANNOTATION: "iris-a"}))

    # when rollout iris-b reads it, or tries to write it
    with pytest.raises(RouteOwnedElsewhere, match="VirtualService ns/iris is managed by ModelRollout iris-a") as seen:
        world.read(owner="iris-b")
    with pytest.raises(RouteOwnedElsewhere):
        world.write({"v1": 90, "v2": 10}, owner="iris-b")

    # then nothing was written, and the error names the owner
    assert world.writes == 0
    assert seen.value.owner == "iris-a"


def test_an_owner_that_is_gone_is_replaced_and_only_the_owner_releases() -> None:
    world = World(virtual_service({"route": [dest("iris-v1", 100)]}, annotations={OWNER_ANNOTATION: "iris-gone"}))

    world.read(owner="iris-b", replacing="iris-gone")
    assert world.stored["metadata"]["annotations"][OWNER_ANNOTATION] == "iris-b"

    world.router.release(namespace=NS, spec=BY_HOST, owner="someone-else")
    assert world.stored["metadata"]["annotations"][OWNER_ANNOTATION] == "iris-b"
    world.router.release(namespace=NS, spec=BY_HOST, owner="iris-b")
    assert OWNER_ANNOTATION not in world.stored["metadata"]["annotations"]


def test_reading_an_owned_virtual_service_writes_nothing_and_release_of_a_missing_one_is_quiet() -> None:
    world = World(virtual_service({"route": [dest("iris-v1", 100)]}, annotations={OWNER_ANNOTATION: "iris"}))

    world.read()
    world.router.release(namespace=NS, spec=rollout_spec({"virtualService": "gone"}), owner="iris")

    assert world.writes == 0


def test_the_routed_object_is_the_virtual_service() -> None:
    assert istio.PLUGIN.kind.plural == "virtualservices"
    assert istio.PLUGIN.routed_object({"virtualService": "iris"}) == "iris"
    assert istio.PLUGIN.routed_object({"routes": ["predict"]}) is None
