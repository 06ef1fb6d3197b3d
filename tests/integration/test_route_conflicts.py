"""The route under conflicts and surprises, with the real controller (issue 13, items 4 to 8):
two rollouts on one route, a hand edit, a serving version removed from the spec, twenty versions
shipped through one route, a route write the API server refuses, and a pause after a slow pass.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from localenv.controller import RunningController
from tests.integration.rollout_world import (
    JSON,
    MODEL,
    PORT,
    WeightRecorder,
    World,
    rollout_manifest,
    service_name,
    wait_for,
)

pytestmark = pytest.mark.integration

ROUTE_GROUP = "gateway.networking.k8s.io"


def condition(status: JSON, type: str) -> JSON | None:
    return next((c for c in status.get("conditions", []) if c["type"] == type), None)


def reasons(world: World, name: str = MODEL) -> list[str]:
    return [event["reason"] for event in world.events(name)]


def route(world: World) -> JSON:
    return world.custom(ROUTE_GROUP, "httproutes", MODEL, version="v1")


def test_a_second_rollout_on_an_owned_route_waits_naming_the_first_and_writes_nothing(
    world: World, controller: RunningController
) -> None:
    # given rollout iris holding v2 at 20 % on the route
    world.apply(rollout_manifest(steps=[{"setWeight": 20}, {"pause": {}}]))
    world.wait_for_phase("Paused")
    recorder = WeightRecorder(world)
    try:
        # when a second rollout points at the same route, with another candidate
        world.apply(rollout_manifest(name="iris-b", candidate="v3", steps=[{"setWeight": 50}]))

        # then it waits, naming the owner, and in 20 s the route is hardly written at all
        refused = wait_for(
            lambda: condition(world.status("iris-b"), "ReferencesValid"),
            what="iris-b's ReferencesValid condition",
        )
        time.sleep(20)
        assert recorder.writes - 1 <= 3, f"{recorder.writes - 1} writes to the route in 20 s"
    finally:
        recorder.stop()
    refused = condition(world.status("iris-b"), "ReferencesValid") or refused
    assert refused["status"] == "False"
    assert "managed by ModelRollout iris" in refused["message"]
    assert world.route_weights() == {"v1": 80, "v2": 20}
    assert world.status("iris")["phase"] == "Paused"
    owner = route(world)["metadata"]["annotations"]["rollouts.mlops.dev/managed-by"]
    assert owner == MODEL

    # and once the first rollout is deleted (its traffic back on v1), the second takes the route
    world.kubectl("delete", "modelrollout", MODEL, "--wait=false")
    world.wait_for_phase("Promoted", name="iris-b", timeout=60)
    assert world.route_weights()["v3"] == 100


def test_a_hand_edit_of_the_weights_is_reported_and_restored(world: World, controller: RunningController) -> None:
    # given a rollout holding v2 at 20 %
    world.apply(rollout_manifest(steps=[{"setWeight": 20}, {"pause": {}}]))
    world.wait_for_phase("Paused")

    # when someone sets the route to 50/50 by hand
    edited = route(world)
    for ref in edited["spec"]["rules"][0]["backendRefs"]:
        ref["weight"] = 50
    client.CustomObjectsApi(world.api).replace_namespaced_custom_object(
        ROUTE_GROUP, "v1", world.namespace, "httproutes", MODEL, edited
    )

    # then the controller restores 80/20 and says what it found and what it restored
    wait_for(lambda: world.route_weights() == {"v1": 80, "v2": 20}, what="the split restored", timeout=30)
    drift = wait_for(
        lambda: [e for e in world.events() if e["reason"] == "TrafficDrift"], what="a TrafficDrift Event", timeout=10
    )
    assert drift[0]["type"] == "Warning"
    assert "found v1 50%, v2 50% where it had set v1 80%, v2 20%; restoring v1 80%, v2 20%" in drift[0]["message"]


def test_a_version_removed_from_the_spec_while_it_serves_is_drained(
    world: World, controller: RunningController
) -> None:
    # given v2 serving 30 %
    world.apply(rollout_manifest(steps=[{"setWeight": 30}, {"pause": {}}]))
    world.wait_for_phase("Paused")
    recorder = WeightRecorder(world)
    try:
        # when the user replaces v2 by v3 in spec.versions (v2 is no longer listed at all)
        manifest = rollout_manifest(candidate="v3", steps=[{"setWeight": 30}, {"pause": {}}])
        manifest["spec"]["versions"] = [v for v in manifest["spec"]["versions"] if v["version"] != "v2"]
        world.apply(manifest)

        # then v2's share goes back to v1 before v3 gets any, and the new rollout goes on
        world.wait_for_phase("Paused", timeout=30)
        wait_for(lambda: world.route_weights().get("v3") == 30, what="v3 at 30 %", timeout=30)
    finally:
        recorder.stop()
    drained_at = next(i for i, split in enumerate(recorder.seen) if split.get("v2", 0) == 0)
    assert all(split.get("v3", 0) == 0 for split in recorder.seen[: drained_at + 1])
    assert world.route_weights().get("v2", 0) == 0


def promoted(world: World, version: str) -> bool:
    status = world.status()
    return status.get("phase") == "Promoted" and status.get("stableVersion") == version


def test_twenty_versions_ship_through_one_route_which_keeps_only_serving_and_user_backends(
    world: World, controller: RunningController
) -> None:
    # given Services for versions v4..v22 besides the world's v1..v3 (the route lists v1 and v2)
    versions = [f"v{i}" for i in range(1, 23)]
    world.create_services(tuple(versions[3:]))
    stable = "v1"
    for candidate in versions[1:21]:
        # when each next version is rolled out, replacing the previous one
        manifest = rollout_manifest(candidate=candidate, baseline=stable, steps=[{"setWeight": 50}])
        manifest["spec"]["versions"] = [
            {"version": v, "backend": {"service": service_name(v), "port": PORT}} for v in (stable, candidate)
        ]
        world.apply(manifest)
        wait_for(partial(promoted, world, candidate), what=f"{candidate} promoted", timeout=30)
        # then the route holds the user's own backendRefs (v1, v2) and the one serving version
        names = [ref["name"] for ref in route(world)["spec"]["rules"][0]["backendRefs"]]
        assert set(names) <= {service_name("v1"), service_name("v2"), service_name(candidate)}, names
        stable = candidate
    assert world.route_weights()[stable] == 100


def test_a_route_write_the_api_server_refuses_is_reported_and_the_deadline_returns_traffic(
    world: World, controller: RunningController
) -> None:
    # given an admission policy that refuses a weight of 40 on any route of the namespace
    policy = f"no-weight-40-{world.namespace}"
    world.plane.kubectl("apply", "-f", "-", input=json.dumps(admission_policy(policy, world.namespace)))
    try:
        wait_for(lambda: refuses_weight_40(world), what="the admission policy in force", timeout=30)

        # when a rollout's second step asks for 40 %
        world.apply(rollout_manifest(steps=[{"setWeight": 20}, {"setWeight": 40}], progressDeadlineSeconds=15))

        # then the refusal is a condition and a Warning Event quoting the API server
        refused = wait_for(
            lambda: (c := condition(world.status(), "Reconciled")) and c["status"] == "False" and c,
            what="Reconciled=False",
            timeout=30,
        )
        assert refused["reason"] == "RouteWriteRefused"
        assert "weight 40 is refused here" in refused["message"]
        events = [e for e in world.events() if e["reason"] == "RouteWriteRefused"]
        assert events and events[0]["type"] == "Warning" and "weight 40 is refused here" in events[0]["message"]

        # and at the progress deadline the rollout fails and all traffic is back on v1
        world.wait_for_phase("Failed", timeout=40)
        wait_for(lambda: world.route_weights() == {"v1": 100, "v2": 0}, what="all traffic on v1", timeout=10)
        assert reasons(world).count("RouteWriteRefused") == 1, "the same refusal is reported once"
    finally:
        world.plane.kubectl("delete", "validatingadmissionpolicybinding,validatingadmissionpolicy", policy)


def refuses_weight_40(world: World) -> bool:
    """Whether the API server now refuses a route of weight 40 (asked as a dry run)."""
    trial = route(world)
    trial["spec"]["rules"][0]["backendRefs"][0]["weight"] = 40
    try:
        client.CustomObjectsApi(world.api).replace_namespaced_custom_object(
            ROUTE_GROUP, "v1", world.namespace, "httproutes", MODEL, trial, dry_run="All"
        )
    except ApiException as error:
        return "weight 40 is refused here" in str(error.body)
    return False


def admission_policy(name: str, namespace: str) -> JSON:
    """A ValidatingAdmissionPolicy and its binding: HTTPRoutes in `namespace` may not weigh 40."""
    return {
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            {
                "apiVersion": "admissionregistration.k8s.io/v1",
                "kind": "ValidatingAdmissionPolicy",
                "metadata": {"name": name},
                "spec": {
                    "failurePolicy": "Fail",
                    "matchConstraints": {
                        "resourceRules": [
                            {
                                "apiGroups": [ROUTE_GROUP],
                                "apiVersions": ["*"],
                                "operations": ["CREATE", "UPDATE"],
                                "resources": ["httproutes"],
                            }
                        ]
                    },
                    "validations": [
                        {
                            "expression": "object.spec.rules.all(r, !has(r.backendRefs) || "
                            "r.backendRefs.all(b, !has(b.weight) || b.weight != 40))",
                            "message": "weight 40 is refused here",
                        }
                    ],
                },
            },
            {
                "apiVersion": "admissionregistration.k8s.io/v1",
                "kind": "ValidatingAdmissionPolicyBinding",
                "metadata": {"name": name},
                "spec": {
                    "policyName": name,
                    "validationActions": ["Deny"],
                    "matchResources": {
                        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}
                    },
                },
            },
        ],
    }


class SlowMetadata(BaseHTTPRequestHandler):
    """An Open Inference Protocol server that is ready at once but takes SLOW_SECONDS to describe
    its model: a gate that takes that long, so the pass that first moves traffic is slow."""

    SLOW_SECONDS = 4.0
    METADATA: ClassVar[JSON] = {
        "name": MODEL,
        "platform": "sklearn",
        "inputs": [{"name": "features", "datatype": "FP64", "shape": [-1, 4]}],
        "outputs": [{"name": "label", "datatype": "INT64", "shape": [-1]}],
    }

    def do_GET(self) -> None:
        if self.path.endswith("/ready"):
            self._answer({"ready": True})
            return
        time.sleep(self.SLOW_SECONDS)
        self._answer(self.METADATA)

    def _answer(self, body: JSON) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def slow_model_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), SlowMetadata)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_pause_counts_from_when_the_route_shows_the_weight_even_after_a_slow_pass(
    world: World, controller: RunningController, slow_model_server: str
) -> None:
    # given a contract gate that takes 4 s per version, then 30 % and a 10 s pause
    manifest = rollout_manifest(steps=[{"setWeight": 30}, {"pause": {"duration": "10s"}}], gates={"contract": {}})
    for version in manifest["spec"]["versions"]:
        version["endpoint"] = slow_model_server
    recorder = WeightRecorder(world)
    try:
        # when the pass that runs the gate also moves the traffic
        world.apply(manifest)
        world.wait_for_phase("Promoted", timeout=60)
    finally:
        recorder.stop()

    # then 30 % was held for the full 10 s from when the route showed it
    shares = recorder.candidate_weights()
    at_30 = recorder.seen_at[shares.index(30)]
    at_100 = recorder.seen_at[shares.index(100)]
    assert at_100 - at_30 >= 10.0, f"30 % held {at_100 - at_30:.2f}s"
