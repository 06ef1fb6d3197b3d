"""Undoing a promotion (spec.rollbackWindow, the undo annotation, `kubectl modelrollout undo`) with
the real controller on a real API server.

The local control plane runs no kube-controller-manager, so no Deployment controller reports
Deployments ready: the test does it, writing the Deployment's status subresource as that
controller would (replicas, availableReplicas and observedGeneration) once the spec asks for
replicas. Everything else is the controller's own doing, read back from the API server.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes import client

from controller.kube import SCALED_DOWN_FROM_ANNOTATION
from localenv.controller import RunningController
from localenv.controlplane import ControlPlane
from tests.integration.incident_world import ReceiverEnd, controller_with_receiver, receiver_end
from tests.integration.rollout_world import (
    MODEL,
    PORT,
    WeightRecorder,
    World,
    rollout_manifest,
    service_name,
    wait_for,
)

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
UNDO = "rollouts.mlops.dev/undo"


def deployment_name(version: str) -> str:
    return f"{MODEL}-{version}"


def create_deployment(world: World, version: str, *, replicas: int = 2) -> None:
    labels = {"app": MODEL, "version": version}
    world.apply(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": deployment_name(version)},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"containers": [{"name": "model", "image": "example.invalid/model:1"}]},
                },
            },
        }
    )
    report_ready(world, version)


def deployment(world: World, version: str) -> Any:
    return client.AppsV1Api(world.api).read_namespaced_deployment(deployment_name(version), world.namespace)


def report_ready(world: World, version: str) -> None:
    """Plays the Deployment controller: every replica the spec asks for is available."""
    found = deployment(world, version)
    replicas = found.spec.replicas or 0
    status = {
        "observedGeneration": found.metadata.generation,
        "replicas": replicas,
        "readyReplicas": replicas,
        "availableReplicas": replicas,
        "updatedReplicas": replicas,
    }
    client.AppsV1Api(world.api).patch_namespaced_deployment_status(
        deployment_name(version), world.namespace, {"status": status}
    )


def promoted_rollout(world: World, *, rollback_window: str, scale_down_delay: str = "1s") -> WeightRecorder:
    """v1 and v2 with Deployments, v2 rolled out (50 % then 100 %) and promoted."""
    for version in ("v1", "v2"):
        create_deployment(world, version)
    manifest = rollout_manifest(
        steps=[{"setWeight": 50}, {"setWeight": 100}],
        rollbackWindow=rollback_window,
        scaleDown={"delay": scale_down_delay},
    )
    for entry in manifest["spec"]["versions"]:
        entry["deployment"] = deployment_name(entry["version"])
    recorder = WeightRecorder(world)
    world.apply(manifest)
    world.wait_for_phase("Promoted", timeout=30)
    assert world.route_weights() == {"v1": 0, "v2": 100}
    return recorder


def annotate(world: World, **annotations: str) -> None:
    pairs = [f"{key}={value}" for key, value in annotations.items()]
    world.kubectl("annotate", "modelrollout", MODEL, *pairs, "--overwrite")


def reasons(world: World) -> list[str]:
    return [e["reason"] for e in world.events()]


def plugin(world: World, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "controller.cli", args[0], "--kubeconfig", str(world.plane.kubeconfig)]
    argv += ["-n", world.namespace, *args[1:]]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False, cwd=REPO_ROOT)


def test_undo_within_the_window_sends_all_traffic_back_at_once_and_twice_changes_nothing(
    world: World, controller: RunningController
) -> None:
    # given v2 promoted with a one-hour rollback window: v1 keeps its replicas
    recorder = promoted_rollout(world, rollback_window="1h")
    status = world.status()
    assert status["previousStableVersion"] == "v1" and status["scaleDownTarget"] == "v1"
    assert deployment(world, "v1").spec.replicas == 2

    # when a person undoes it with plain kubectl
    annotate(world, **{UNDO: "incident-42"})

    # then all traffic goes back to v1 in one write, and the undo is recorded
    status = world.wait_for_phase("RolledBack", timeout=20)
    wait_for(lambda: recorder.latest() == {"v1": 100, "v2": 0}, what="all traffic on v1", timeout=10)
    assert recorder.candidate_weights() == [0, 50, 100, 0]
    assert status["stableVersion"] == "v1" and status["undoToken"] == "incident-42"
    assert status["undo"]["state"] == "Done" and status["undo"]["fromVersion"] == "v2"
    assert status["undo"]["toVersion"] == "v1"
    assert status["history"][-1]["reason"] == "Undo"
    undone = next(c for c in status["conditions"] if c["type"] == "Undone")
    assert undone["status"] == "True"
    wait_for(lambda: "Undo" in reasons(world), what="the Undo Event", timeout=10)
    # and the undone v2 goes after the scale-down delay, v1 keeps its replicas
    wait_for(lambda: deployment(world, "v2").spec.replicas == 0, what="v2 scaled down", timeout=15)
    assert deployment(world, "v1").spec.replicas == 2

    # when the same annotation value is seen again (a label change brings the rollout back)
    before = world.status()
    world.kubectl("label", "modelrollout", MODEL, "touched=yes")
    annotate(world, **{UNDO: "incident-42"})
    time.sleep(3)

    # then nothing more happened
    after = world.status()
    assert world.route_weights() == {"v1": 100, "v2": 0}
    assert after["undo"] == before["undo"] and after["history"] == before["history"]
    assert reasons(world).count("Undo") == 1
    recorder.stop()
    assert recorder.candidate_weights() == [0, 50, 100, 0]


def test_the_plugin_undoes_after_the_window_scaling_the_old_version_up_first(
    world: World, controller: RunningController
) -> None:
    # given v2 promoted with a one-second window: v1 was then scaled down
    recorder = promoted_rollout(world, rollback_window="1s")
    wait_for(lambda: deployment(world, "v1").spec.replicas == 0, what="v1 scaled down", timeout=15)
    report_ready(world, "v1")

    # when a person runs `kubectl modelrollout undo`
    ran = plugin(world, "undo", MODEL)
    assert ran.returncode == 0, ran.stderr
    assert "undo requested" in ran.stdout

    # then v1 gets its replicas back first, and no traffic moves while it is not ready
    wait_for(lambda: deployment(world, "v1").spec.replicas == 2, what="v1 scaled back to 2", timeout=15)
    assert SCALED_DOWN_FROM_ANNOTATION not in (deployment(world, "v1").metadata.annotations or {})
    wait_for(lambda: world.status().get("undo", {}).get("state") == "Pending", what="the undo pending", timeout=10)
    time.sleep(3)
    assert world.route_weights() == {"v1": 0, "v2": 100}
    assert "waiting for v1 to be ready" in world.status()["message"]

    # when the Deployment controller reports v1 ready
    report_ready(world, "v1")

    # then all traffic goes to v1 at once
    status = world.wait_for_phase("RolledBack", timeout=20)
    assert world.route_weights() == {"v1": 100, "v2": 0}
    assert status["undo"]["state"] == "Done" and status["undoToken"].startswith("undo-")
    recorder.stop()
    assert recorder.candidate_weights() == [0, 50, 100, 0]
    # and `get` and `history` show it
    assert "RolledBack" in plugin(world, "get", MODEL).stdout
    assert "Undo" in plugin(world, "history", MODEL).stdout


@pytest.fixture
def receiver(tmp_path: Path) -> ReceiverEnd:
    return receiver_end(tmp_path)


@pytest.fixture
def incident_controller(
    control_plane: ControlPlane, namespace: str, tmp_path: Path, receiver: ReceiverEnd
) -> Iterator[RunningController]:
    """The real controller with its Alertmanager receiver on."""
    log_file = tmp_path / "controller.log"
    with controller_with_receiver(
        control_plane=control_plane, namespace=namespace, log_file=log_file, receiver=receiver
    ) as running:
        yield running


def post_alert(receiver: ReceiverEnd, namespace: str) -> None:
    """What Alertmanager posts (webhook payload version 4) for an alert about the model."""
    alert = {
        "status": "firing",
        "labels": {"alertname": "ModelErrorRate", "namespace": namespace, "model": MODEL},
        "annotations": {"summary": "iris v2 answers 5xx"},
        "startsAt": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "fingerprint": "f5c05c93fab5ba48",
    }
    answer = httpx.post(
        receiver.url,
        json={"version": "4", "status": "firing", "alerts": [alert]},
        headers={"Authorization": f"Bearer {receiver.token}"},
        timeout=5,
    )
    assert answer.status_code == 200, answer.text


def test_an_alert_within_the_window_undoes_the_promotion(
    world: World, namespace: str, incident_controller: RunningController, receiver: ReceiverEnd
) -> None:
    # given v2 promoted with a one-hour window
    recorder = promoted_rollout(world, rollback_window="1h")

    # when an alert names the rollout
    post_alert(receiver, namespace)

    # then the promotion is undone: all traffic on v1, the alert named
    status = world.wait_for_phase("RolledBack", timeout=20)
    assert world.route_weights() == {"v1": 100, "v2": 0}
    assert status["incident"]["response"] == "Undone" and status["incident"]["alertname"] == "ModelErrorRate"
    assert "ModelErrorRate" in status["undo"]["cause"]
    recorder.stop()
    assert recorder.candidate_weights() == [0, 50, 100, 0]


def test_an_alert_after_the_window_is_recorded_and_nothing_is_undone(
    world: World, namespace: str, incident_controller: RunningController, receiver: ReceiverEnd
) -> None:
    # given v2 promoted with a one-second window, now over
    promoted_rollout(world, rollback_window="1s")
    time.sleep(1.5)

    # when an alert names the rollout
    post_alert(receiver, namespace)

    # then it is recorded, and traffic stays on v2
    wait_for(lambda: (world.status().get("incident") or {}).get("response") == "Recorded", what="the record")
    time.sleep(2)
    status = world.status()
    assert status["phase"] == "Promoted" and world.route_weights() == {"v1": 0, "v2": 100}
    assert "undo" not in status
    assert any(
        "outside spec.rollbackWindow" in e["message"] for e in world.events() if e["reason"] == "IncidentAfterPromotion"
    )


def wait_promoted(world: World, version: str) -> None:
    def promoted() -> bool:
        status = world.status()
        return status.get("phase") == "Promoted" and status.get("stableVersion") == version

    wait_for(promoted, what=f"{version} promoted", timeout=30, last=world.status)


def test_rollback_revisions_keep_the_last_two_replaced_versions_and_an_undo_to_one_moves_traffic_at_once(
    world: World, controller: RunningController
) -> None:
    # given v1 to v4 with Deployments, and a rollout that keeps two revisions (scaleDown 1s, no window)
    world.create_services(("v4",))
    for version in ("v1", "v2", "v3", "v4"):
        create_deployment(world, version)
    manifest = rollout_manifest(
        steps=[{"setWeight": 50}, {"setWeight": 100}], rollbackRevisions=2, scaleDown={"delay": "1s"}
    )
    manifest["spec"]["versions"].append({"version": "v4", "backend": {"service": service_name("v4"), "port": PORT}})
    for entry in manifest["spec"]["versions"]:
        entry["deployment"] = deployment_name(entry["version"])

    # when v2, v3 and v4 are promoted in turn
    for candidate in ("v2", "v3", "v4"):
        manifest["spec"]["candidate"] = candidate
        world.apply(manifest)
        wait_promoted(world, candidate)

    # then v1 is scaled down, and v3 and v2 are kept with their replicas past the scale-down delay
    wait_for(lambda: deployment(world, "v1").spec.replicas == 0, what="v1 scaled down", timeout=15)
    time.sleep(2)
    status = world.status()
    assert status["keptVersions"] == ["v3", "v2"] and "scaleDownTarget" not in status
    assert deployment(world, "v2").spec.replicas == 2 and deployment(world, "v3").spec.replicas == 2
    assert deployment(world, "v4").spec.replicas == 2

    # when a person undoes to v2
    recorder = WeightRecorder(world)
    v2_generation = deployment(world, "v2").metadata.generation
    asked = time.monotonic()
    ran = plugin(world, "undo", MODEL, "--to-version", "v2")
    assert ran.returncode == 0, ran.stderr

    # then all traffic goes to v2 in one write, with no scale-up and no wait for it to be ready
    status = world.wait_for_phase("RolledBack", timeout=20)
    print(f"undo to kept v2: RolledBack {time.monotonic() - asked:.2f}s after `kubectl modelrollout undo` was run")
    weights = world.route_weights()
    assert weights["v2"] == 100 and sum(weights.values()) == 100
    assert status["stableVersion"] == "v2" and status["undo"]["toVersion"] == "v2"
    assert status["undo"]["state"] == "Done" and status["keptVersions"] == ["v3"]
    wait_for(lambda: "Undo" in reasons(world), what="the Undo Event", timeout=10)
    assert "UndoPending" not in reasons(world)
    assert deployment(world, "v2").metadata.generation == v2_generation
    recorder.stop()
    winners = [max(split, key=split.__getitem__) for split in recorder.seen]
    assert all(sum(split.values()) == 100 and 100 in split.values() for split in recorder.seen)
    assert list(dict.fromkeys(winners)) == ["v4", "v2"]
