"""Whole rollouts through the Istio router, with the real controller process, on the real API server
with Istio's CRDs (istio.io/api v1.32.0) installed.

No Istio control plane or proxy runs here: the API server stores the VirtualService, and the tests
check the weights the controller writes there (by host: one Service per version)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest
import yaml
from kubernetes import client

from controller.routers import ROUTERS
from localenv.controller import RunningController, start_controller
from localenv.controlplane import ControlPlane
from localenv.router_crds import ISTIO, install_router_crds
from tests.integration.rollout_world import MODEL, ObjectRecorder, World, rollout_manifest, service_name, wait_for

pytestmark = pytest.mark.integration

JSON = dict[str, Any]
GROUP, VERSION, PLURAL = "networking.istio.io", "v1", "virtualservices"
OWNER = "rollouts.mlops.dev/managed-by"


@pytest.fixture(scope="module")
def istio_crds(control_plane: ControlPlane) -> None:
    install_router_crds(control_plane, ISTIO)


@pytest.fixture
def on_istio(istio_crds: None, world: World) -> World:
    """The test's world, its CRDs installed before its controller starts (ask for this first)."""
    return world


def istio_rollout(**spec: Any) -> JSON:
    manifest = rollout_manifest(**spec)
    manifest["spec"]["trafficRouting"] = {"istio": {"virtualService": MODEL, "routes": ["predict"]}}
    return manifest


def create_virtual_service(world: World) -> None:
    world.apply(
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "VirtualService",
            "metadata": {"name": MODEL},
            "spec": {
                "hosts": [MODEL],
                "http": [{"name": "predict", "route": [{"destination": {"host": service_name("v1")}, "weight": 100}]}],
            },
        }
    )


def virtual_service(world: World) -> JSON:
    found = client.CustomObjectsApi(world.api).get_namespaced_custom_object(
        GROUP, VERSION, world.namespace, PLURAL, MODEL
    )
    return cast(JSON, found)


def split(vs: JSON) -> dict[str, int]:
    """Percent per version of the route `predict`, by the Service each destination names."""
    route = next(r for r in vs["spec"]["http"] if r.get("name") == "predict")
    weights = {d["destination"]["host"].removeprefix(f"{MODEL}-"): int(d.get("weight", 0)) for d in route["route"]}
    return {version: weight for version, weight in weights.items() if weight}


def candidate_recorder(world: World) -> ObjectRecorder[int]:
    """v2's weight on the VirtualService, every change as a watch sees it."""
    return ObjectRecorder(
        world, group=GROUP, version=VERSION, plural=PLURAL, name=MODEL, read=lambda vs: split(vs).get("v2", 0)
    )


def test_an_istio_rollout_moves_the_destinations_weights_step_by_step_to_promotion(
    on_istio: World, controller: RunningController
) -> None:
    # given a VirtualService sending everything to v1, and a rollout of v2 on it
    create_virtual_service(on_istio)
    recorder = candidate_recorder(on_istio)
    try:
        on_istio.apply(istio_rollout())

        # when the controller runs it
        on_istio.wait_for_phase("Promoted")
        wait_for(lambda: recorder.values()[-1:] == [100], what="v2 at 100 on the VirtualService")
    finally:
        recorder.stop()

    # then v2's destination went 20, 60, 100 (added by the controller), claimed by the rollout
    assert recorder.values() == [0, 20, 60, 100]
    vs = virtual_service(on_istio)
    assert split(vs) == {"v2": 100}
    assert vs["metadata"]["annotations"][OWNER] == MODEL


def shadow(vs: JSON) -> tuple[int, str | None, float | None]:
    """v2's weight on the route `predict`, and the host and percent its mirror copies to (None: no mirror)."""
    route = next(r for r in vs["spec"]["http"] if r.get("name") == "predict")
    mirror = route.get("mirror")
    percent = (route.get("mirrorPercentage") or {}).get("value")
    return split(vs).get("v2", 0), mirror["host"] if mirror else None, percent


def test_an_istio_rollout_with_a_mirror_step_copies_requests_to_the_candidate_then_removes_the_mirror(
    on_istio: World, controller: RunningController
) -> None:
    # given a VirtualService sending everything to v1, and a rollout shadowing v2 before its canary
    create_virtual_service(on_istio)
    recorder = ObjectRecorder(on_istio, group=GROUP, version=VERSION, plural=PLURAL, name=MODEL, read=shadow)
    try:
        on_istio.apply(
            istio_rollout(
                steps=[
                    {"setWeight": 0},
                    {"mirror": {"percent": 50, "duration": "2s"}},
                    {"setWeight": 20},
                    {"pause": {}},
                ]
            )
        )

        # when the controller runs it up to the pause
        on_istio.wait_for_phase("Paused")
        wait_for(lambda: recorder.values()[-1:] == [(20, None, None)], what="v2 at 20 without a mirror")
    finally:
        recorder.stop()

    # then the route mirrored half the requests to v2 during the step, and the mirror was gone
    # before v2 got any weight
    assert recorder.values() == [(0, None, None), (0, service_name("v2"), 50), (0, None, None), (20, None, None)]
    assert "mirror" not in next(r for r in virtual_service(on_istio)["spec"]["http"] if r["name"] == "predict")


def test_an_aborted_istio_rollout_sends_everything_back_to_the_stable_version(
    on_istio: World, controller: RunningController
) -> None:
    # given an Istio rollout holding v2 at 20 %
    create_virtual_service(on_istio)
    on_istio.apply(istio_rollout(steps=[{"setWeight": 20}, {"pause": {}}]))
    on_istio.wait_for_phase("Paused")
    assert split(virtual_service(on_istio)) == {"v1": 80, "v2": 20}

    # when a person aborts it
    on_istio.action("abort")

    # then all traffic is back on v1
    on_istio.wait_for_phase("Aborted")
    assert split(virtual_service(on_istio)) == {"v1": 100}


def test_deleting_an_istio_rollout_mid_way_returns_the_traffic_and_the_virtual_service(
    on_istio: World, controller: RunningController
) -> None:
    # given an Istio rollout holding v2 at 20 %
    create_virtual_service(on_istio)
    on_istio.apply(istio_rollout(steps=[{"setWeight": 20}, {"pause": {}}]))
    on_istio.wait_for_phase("Paused")

    # when it is deleted
    on_istio.kubectl("delete", "modelrollout", MODEL, "--wait=false")

    # then it is gone only once all traffic is on v1 and its claim on the VirtualService is released
    wait_for(
        lambda: not on_istio.kubectl("get", "modelrollouts", "-o", "name").strip(), what="the rollout gone", timeout=30
    )
    vs = virtual_service(on_istio)
    assert split(vs) == {"v1": 100}
    assert OWNER not in (vs["metadata"].get("annotations") or {})


def test_an_istio_rollout_whose_virtual_service_is_missing_waits_and_moves_no_traffic_until_it_exists(
    on_istio: World, controller: RunningController
) -> None:
    # given a rollout naming a VirtualService that does not exist
    on_istio.apply(istio_rollout(steps=[{"setWeight": 20}]))

    # then it waits, naming the object and the field
    condition = wait_for(
        lambda: next((c for c in on_istio.status().get("conditions", []) if c["type"] == "ReferencesValid"), None),
        what="ReferencesValid",
    )
    assert condition["status"] == "False"
    assert f"VirtualService {on_istio.namespace}/{MODEL} not found" in condition["message"]
    assert "spec.trafficRouting.istio.virtualService" in condition["message"]

    # and when the VirtualService is created, it goes on to promotion
    create_virtual_service(on_istio)
    on_istio.wait_for_phase("Promoted", timeout=60)
    assert split(virtual_service(on_istio)) == {"v2": 100}


def test_an_istio_rollout_survives_sigkills_mid_way_without_a_flap(
    istio_crds: None, world: World, control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    # given an Istio rollout with a pause between two weights
    create_virtual_service(world)
    recorder = candidate_recorder(world)
    world.apply(istio_rollout(steps=[{"setWeight": 20}, {"pause": {"duration": "3s"}}, {"setWeight": 60}]))
    try:
        # when the controller is killed with SIGKILL at 20 % and during the pause, and started again
        for round_ in range(2):
            running = start_controller(
                kubeconfig=control_plane.kubeconfig, namespace=namespace, log_file=tmp_path / f"c{round_}.log"
            )
            wait_for(lambda: 20 in recorder.values(), what="v2 at 20")
            running.kill()
        final = start_controller(
            kubeconfig=control_plane.kubeconfig, namespace=namespace, log_file=tmp_path / "final.log"
        )
        try:
            world.wait_for_phase("Promoted", timeout=60)
            wait_for(lambda: recorder.values()[-1:] == [100], what="v2 at 100")
        finally:
            final.stop()
    finally:
        recorder.stop()

    # then the weights only ever went up, each step once
    assert recorder.values() == [0, 20, 60, 100]


def test_the_istio_example_is_accepted_and_parsed_by_the_istio_plugin(on_istio: World) -> None:
    # given the example manifest (Services, VirtualService, ModelRollout)
    example = Path(__file__).resolve().parents[2] / "manifests" / "examples" / "canary-istio.yaml"

    # when it is applied
    on_istio.kubectl("apply", "-f", str(example))

    # then the rollout is stored as written and its router configuration parses
    stored = on_istio.rollout()
    written = next(doc for doc in yaml.safe_load_all(example.read_text()) if doc["kind"] == "ModelRollout")
    assert stored["spec"] == written["spec"]
    config = ROUTERS["istio"].parse_config(stored["spec"]["trafficRouting"]["istio"])
    assert ROUTERS["istio"].object_name(config) == "iris"
    assert split(virtual_service(on_istio)) == {"v1": 100}
