"""One policy for problems, through whole reconcile passes: whichever kind of object a rollout
names is missing (a version's Service, an AnalysisTemplate, the golden set's ConfigMap, a training
profile's ConfigMap, a web metric's headers Secret), the rollout waits in Pending with
ReferencesValid=False naming the object and the field, one InvalidReference Warning Event, and the
route untouched; it goes on once the object is created, and fails only at its progress deadline.

The real Reconciler and Kube over the in-memory API server of test_cheaper_passes (here also
serving ConfigMaps and Secrets), with the checkers controller.wiring builds; the gates call the
in-memory Open Inference Protocol servers of tests/unit/gates."""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from controller.api import GROUP, PLURAL
from controller.gates.checker import GatesChecker
from controller.kube import Kube
from controller.reconcile import Reconciler
from controller.routers import gatewayapi
from controller.watch import ObjectCache
from controller.wiring import ANALYSIS_TEMPLATE_PLURAL, CheckerSettings, build_checkers
from tests.unit.gates.test_gates_checker import GOLDEN, transport
from tests.unit.gates.test_gates_checker import FakeServer as ModelServer
from tests.unit.test_cheaper_passes import NS, T0, Clock, FakeServer

JSON = dict[str, Any]
DEADLINE_SECONDS = 120
ERRORS: JSON = {
    "name": "errors",
    "provider": {"prometheus": {"query": "err{{version}}"}},
    "comparison": {"maxDifference": 0.01},
}
PROFILE_JSON = json.dumps({"features": [{"name": "radius", "edges": [0.0], "frequencies": [0.5, 0.5]}]})


class Server(FakeServer):
    """The in-memory API server, also serving ConfigMaps and Secrets and keeping each Event."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[JSON] = []

    def read_namespaced_config_map(self, name: str, namespace: str, **_: Any) -> Any:
        self.calls["get configmaps"] += 1
        if ("configmaps", name) not in self.objects:
            raise ApiException(status=404, reason="Not Found")
        return SimpleNamespace(data=dict(self.objects[("configmaps", name)]["data"]))

    def read_namespaced_secret(self, name: str, namespace: str, **_: Any) -> Any:
        self.calls["get secrets"] += 1
        if ("secrets", name) not in self.objects:
            raise ApiException(status=404, reason="Not Found")
        data = self.objects[("secrets", name)]["data"]
        return SimpleNamespace(data={key: base64.b64encode(value.encode()).decode() for key, value in data.items()})

    def create_namespaced_custom_object(
        self, group: str, version: str, ns: str, plural: str, body: JSON, **_: Any
    ) -> Any:
        self.events.append(copy.deepcopy(body))
        return super().create_namespaced_custom_object(group, version, ns, plural, body)


@dataclass(frozen=True)
class Missing:
    """One kind of missing object: what the rollout's spec adds to name it, how it is created, and
    the problem reported meanwhile."""

    spec: JSON
    create: Callable[[Server], None]
    problem: str


def service(name: str) -> JSON:
    return {"metadata": {"name": name, "namespace": NS}, "spec": {"ports": [{"port": 8080}]}}


def obj(name: str, **fields: Any) -> JSON:
    return {"metadata": {"name": name, "namespace": NS}, **fields}


MISSING = {
    "a version's Service": Missing(
        spec={"analysis": {"metrics": [ERRORS]}},
        create=lambda server: server.create("services", service("iris-v2")),
        problem=f"Service {NS}/iris-v2 of version v2 not found; create it or fix spec.versions[].backend.service",
    ),
    "an AnalysisTemplate": Missing(
        spec={"analysis": {"templates": [{"name": "quality"}]}},
        create=lambda server: server.create(ANALYSIS_TEMPLATE_PLURAL, obj("quality", spec={"metrics": [ERRORS]})),
        problem=f"spec.analysis.templates: AnalysisTemplate 'quality' does not exist in namespace {NS}; "
        "create it or fix the name",
    ),
    "the golden set's ConfigMap": Missing(
        spec={
            "analysis": {"metrics": [ERRORS]},
            "gates": {"goldenSet": {"configMapRef": {"name": "golden", "key": "requests.json"}}},
        },
        create=lambda server: server.create("configmaps", obj("golden", data={"requests.json": json.dumps(GOLDEN)})),
        problem=f"spec.gates.goldenSet.configMapRef.name: ConfigMap {NS}/golden does not exist; "
        "create it or fix the name",
    ),
    "a training profile's ConfigMap": Missing(
        spec={"analysis": {"metrics": [{"name": "skew", "trainingSkew": {"profile": {"configMap": "profile"}}}]}},
        create=lambda server: server.create("configmaps", obj("profile", data={"profile.json": PROFILE_JSON})),
        problem=f"spec.analysis.metrics[0].trainingSkew.profile.configMap: ConfigMap {NS}/profile does not exist; "
        "create it from the training pipeline's profile or fix the name",
    ),
    "a web metric's Secret": Missing(
        spec={
            "analysis": {
                "metrics": [
                    {
                        "name": "score",
                        "provider": {
                            "web": {
                                "url": "http://127.0.0.1:1/score?version={{version}}",
                                "jsonPath": "$.value",
                                "headersFrom": {"secretName": "score-api"},
                            }
                        },
                        "comparison": {"maxDifference": 0.1},
                    }
                ]
            }
        },
        create=lambda server: server.create("secrets", obj("score-api", data={"authorization": "Bearer t"})),
        problem=f"spec.analysis.metrics[0].provider.web.headersFrom.secretName: Secret {NS}/score-api does not "
        "exist; create it or fix the name",
    ),
}


def world(missing: Missing) -> tuple[Server, Reconciler, Clock]:
    """The rollout of v2 against v1 naming `missing`'s object, and everything else it names."""
    server = Server()
    kube = Kube(api_client=client.ApiClient())
    kube.custom = server  # type: ignore[assignment]
    kube.core = server  # type: ignore[assignment]
    for plural, group in ((PLURAL, GROUP), (gatewayapi.PLURAL, gatewayapi.GROUP), ("services", "")):
        server.caches[plural] = ObjectCache()
        kube.use_cache(group=group, plural=plural, cache=server.caches[plural])
    server.create("services", service("iris-v1"))
    if missing is not MISSING["a version's Service"]:
        server.create("services", service("iris-v2"))
    server.create(
        gatewayapi.PLURAL,
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": {"name": "iris", "namespace": NS},
            "spec": {"rules": [{"backendRefs": [{"name": "iris-v1", "port": 8080, "weight": 100}]}]},
        },
    )
    endpoints = {"v1": "http://baseline.test:8080", "v2": "http://candidate.test:8080"}
    server.create(
        PLURAL,
        {
            "apiVersion": "rollouts.mlops.dev/v1alpha1",
            "kind": "ModelRollout",
            "metadata": {"name": "iris", "namespace": NS, "uid": "u1", "generation": 1},
            "spec": {
                "model": "iris",
                "versions": [
                    {"version": v, "backend": {"service": f"iris-{v}", "port": 8080}, "endpoint": endpoints[v]}
                    for v in ("v1", "v2")
                ],
                "baseline": "v1",
                "candidate": "v2",
                "trafficRouting": {"gatewayAPI": {"httpRoute": "iris"}},
                "steps": [{"setWeight": 20}, {"analyze": {"duration": "1m"}}],
                "progressDeadlineSeconds": DEADLINE_SECONDS,
                **missing.spec,
            },
        },
    )
    settings = CheckerSettings(prometheus_address="http://127.0.0.1:1", read_secrets=True)
    wired = build_checkers(kube=kube, settings=settings)
    # As wired, but calling the in-memory model servers.
    gates = GatesChecker(
        read_configmap=lambda namespace, name: kube.get_configmap_data(namespace=namespace, name=name),
        transport=transport(ModelServer(), ModelServer()),
        sleep=lambda seconds: None,
    )
    clock = Clock()
    return server, Reconciler(kube=kube, checkers=replace(wired, gates=gates), clock=clock), clock


def status(server: Server) -> JSON:
    found: JSON = server.objects[(PLURAL, "iris")].get("status") or {}
    return found


def references_valid(server: Server) -> JSON:
    found: JSON = next(c for c in status(server)["conditions"] if c["type"] == "ReferencesValid")
    return found


def route(server: Server) -> list[JSON]:
    refs: list[JSON] = server.objects[(gatewayapi.PLURAL, "iris")]["spec"]["rules"][0]["backendRefs"]
    return refs


@pytest.mark.parametrize("missing", MISSING.values(), ids=MISSING.keys())
def test_a_missing_object_holds_the_rollout_before_any_traffic_until_it_is_created(missing: Missing) -> None:
    # given a rollout naming an object that does not exist
    server, reconciler, clock = world(missing)

    # when passes run for a minute and a half (the deadline is two minutes)
    for _ in range(4):
        reconciler.reconcile(namespace=NS, name="iris")
        clock.now += timedelta(seconds=30)

    # then the rollout waits in Pending, ReferencesValid=False naming the object and the field,
    # reported once as a Warning Event, and the route was never written
    assert status(server)["phase"] == "Pending"
    condition = references_valid(server)
    assert (condition["status"], condition["reason"], condition["message"]) == (
        "False",
        "InvalidReference",
        missing.problem,
    )
    warnings = [(e["type"], e["reason"], e["note"]) for e in server.events if e["reason"] == "InvalidReference"]
    assert warnings == [("Warning", "InvalidReference", f"{missing.problem}; no traffic moves until it is fixed")]
    assert server.calls["update httproutes"] == 0
    assert route(server) == [{"name": "iris-v1", "port": 8080, "weight": 100}]

    # when the object is created, then the next pass moves the first weight, references valid again
    missing.create(server)
    reconciler.reconcile(namespace=NS, name="iris")
    assert status(server)["phase"] == "Progressing"
    assert references_valid(server)["status"] == "True"
    assert {ref["name"]: ref["weight"] for ref in route(server)} == {"iris-v1": 80, "iris-v2": 20}


@pytest.mark.parametrize("missing", MISSING.values(), ids=MISSING.keys())
def test_a_missing_object_fails_the_rollout_only_at_its_progress_deadline(missing: Missing) -> None:
    # given a rollout naming an object that does not exist, waiting since its first pass
    server, reconciler, clock = world(missing)
    reconciler.reconcile(namespace=NS, name="iris")

    # when a pass runs just before the progress deadline, then it still waits
    clock.now = T0 + timedelta(seconds=DEADLINE_SECONDS - 1)
    reconciler.reconcile(namespace=NS, name="iris")
    assert status(server)["phase"] == "Pending"

    # when a pass runs past it, then the rollout fails naming the deadline and what it waited for,
    # and the route was never written
    clock.now = T0 + timedelta(seconds=DEADLINE_SECONDS + 1)
    reconciler.reconcile(namespace=NS, name="iris")
    assert status(server)["phase"] == "Failed"
    assert status(server)["message"].startswith("progress deadline exceeded: waited 121s (limit 120s")
    assert status(server)["message"].endswith("for valid references")
    assert server.calls["update httproutes"] == 0
    assert route(server) == [{"name": "iris-v1", "port": 8080, "weight": 100}]
