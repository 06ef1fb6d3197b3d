"""Workers cannot die: a rollout whose timer overflowed the work queue (issue 13) leaves the real
controller serving every other rollout, and /healthz answering 200.

The schema now refuses such a timer, so the huge pause reaches the controller the way it still can:
stored before an upgrade added the maximum (the API server keeps unchanged fields of stored objects
valid), on a control plane of its own that starts with the CRD of the previous release.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import kubernetes
import pytest
import yaml

from localenv.controller import RunningController, start_controller
from localenv.controlplane import ControlPlane, ControlPlaneSettings, build_binaries, default_crd_files
from tests.integration.rollout_world import MODEL, World, rollout_manifest, wait_for

pytestmark = pytest.mark.integration

CRD = Path(__file__).resolve().parents[2] / "manifests" / "crds" / "modelrollouts.yaml"
HUGE_PAUSE = "9999999h"
"""More than threading.TIMEOUT_MAX seconds: what once raised OverflowError in every worker."""


def without_duration_maxima(crd: dict[str, Any]) -> dict[str, Any]:
    """The CRD as it was before durations had a maximum: every rule that says "at most" removed."""
    older = copy.deepcopy(crd)

    def strip(schema: dict[str, Any]) -> None:
        rules = schema.get("x-kubernetes-validations")
        if rules is not None:
            schema["x-kubernetes-validations"] = [r for r in rules if "is at most" not in r.get("message", "")]
        for child in schema.get("properties", {}).values():
            strip(child)
        if "items" in schema:
            strip(schema["items"])

    strip(older["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
    return older


@pytest.fixture
def upgraded_plane(tmp_path: Path) -> Iterator[ControlPlane]:
    """A control plane started with the previous release's CRD (no duration maxima)."""
    older_crd = tmp_path / "modelrollouts-previous.yaml"
    older_crd.write_text(yaml.safe_dump(without_duration_maxima(yaml.safe_load(CRD.read_text()))))
    project_crd_names = {path.name for path in CRD.parent.glob("*.yaml")}
    others = tuple(path for path in default_crd_files(build_binaries()) if path.name not in project_crd_names)
    others += tuple(path for path in CRD.parent.glob("*.yaml") if path != CRD)
    with ControlPlane.start(ControlPlaneSettings(crd_files=(older_crd, *others))) as plane:
        yield plane


# The official client leaves this function unannotated.
_new_client_from_config: Any = kubernetes.config.new_client_from_config


def healthz(running: RunningController) -> int:
    return httpx.get(f"{running.metrics_url}/healthz", timeout=5).status_code


def test_a_rollout_with_an_overflowing_pause_leaves_another_rollout_served(
    upgraded_plane: ControlPlane, tmp_path: Path
) -> None:
    # given a rollout pausing 9999999h, stored before the upgrade that bounds durations
    with _new_client_from_config(config_file=str(upgraded_plane.kubeconfig)) as api:
        upgraded_plane.kubectl("create", "namespace", "team")
        world = World(plane=upgraded_plane, api=api, namespace="team")
        world.create_services()
        world.create_route()
        world.apply(rollout_manifest(steps=[{"setWeight": 20}, {"pause": {"duration": HUGE_PAUSE}}]))
        upgraded_plane.kubectl("apply", "--server-side", "--force-conflicts", f"--filename={CRD}")
        refused = world.kubectl("apply", "--dry-run=server", "-f", "-", check=False, input=yaml.safe_dump(
            rollout_manifest(name="new", steps=[{"pause": {"duration": HUGE_PAUSE}}])))  # fmt: skip
        assert refused == "", "the upgraded schema refuses the huge pause for new objects"

        # and a second rollout in the same namespace, on a route of its own
        second_route = yaml.safe_load(world.kubectl("get", "httproute", MODEL, "-o", "yaml"))
        second_route["metadata"] = {"name": "iris-b"}
        world.apply(second_route)

        running = start_controller(
            kubeconfig=upgraded_plane.kubeconfig, namespace="team", log_file=tmp_path / "controller.log"
        )
        try:
            # when the controller reaches the huge pause
            wait_for(
                lambda: "pause at weight 20" in world.status().get("message", ""),
                what="the first rollout at its pause",
                last=world.status,
            )
            assert healthz(running) == 200

            # and the second rollout is applied afterwards
            world.apply(rollout_manifest(name="second", trafficRouting={"gatewayAPI": {"httpRoute": "iris-b"}}))

            # then it is still reconciled to the end, and the controller stays live throughout
            world.wait_for_phase("Promoted", name="second", timeout=30)
            assert healthz(running) == 200
            assert world.status()["phase"] == "Progressing", "the first rollout holds its pause"
            assert "OverflowError" not in running.log()
        finally:
            running.stop()
