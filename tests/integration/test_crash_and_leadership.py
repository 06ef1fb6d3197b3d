"""Safety of the real controller process: SIGKILL at any moment, and two replicas at once."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from localenv.controller import start_controller
from localenv.controlplane import ControlPlane
from tests.integration.rollout_world import WeightRecorder, World, rollout_manifest, wait_for

pytestmark = pytest.mark.integration

STEPS: list[dict[str, Any]] = [
    {"setWeight": 10}, {"pause": {"duration": "1s"}},
    {"setWeight": 30}, {"pause": {"duration": "1s"}},
    {"setWeight": 50}, {"pause": {"duration": "1s"}},
    {"setWeight": 70}, {"pause": {"duration": "1s"}},
]  # fmt: skip


def test_killed_and_restarted_it_completes_without_repeating_or_skipping_a_step(
    world: World, control_plane: ControlPlane, tmp_path: Path
) -> None:
    # Given a rollout with four weight steps and the controller running
    recorder = WeightRecorder(world)
    world.apply(rollout_manifest(steps=STEPS))

    # When the controller is killed with SIGKILL five times mid-rollout and started again each time
    kills = 0
    while kills < 5 and world.status().get("phase") != "Promoted":
        running = start_controller(
            kubeconfig=control_plane.kubeconfig, namespace=world.namespace, log_file=tmp_path / f"run{kills}.log"
        )
        time.sleep(0.4 + 0.3 * kills)
        running.kill()
        kills += 1
    final = start_controller(
        kubeconfig=control_plane.kubeconfig, namespace=world.namespace, log_file=tmp_path / "final.log"
    )
    try:
        world.wait_for_phase("Promoted", timeout=40)
    finally:
        final.stop()

    # Then the route saw every step's weight exactly once, in order: no flapping, nothing skipped
    assert kills >= 2
    assert recorder.candidate_weights() == [0, 10, 30, 50, 70, 100]
    history_steps = [h["step"] for h in world.status()["history"] if h["phase"] == "Progressing"]
    assert history_steps == sorted(history_steps)


def _lease_holder(api: client.ApiClient, namespace: str) -> str | None:
    try:
        lease = client.CoordinationV1Api(api).read_namespaced_lease("model-rollouts-controller", namespace)
    except client.ApiException:
        return None
    return lease.spec.holder_identity if lease.spec else None


def _reconciles(metrics: str) -> float:
    return sum(
        float(v) for v in re.findall(r'^model_rollouts_reconcile_total\{result="success"\} (\S+)$', metrics, re.M)
    )


def test_two_replicas_only_the_leader_acts_and_the_other_takes_over(
    world: World, control_plane: ControlPlane, tmp_path: Path
) -> None:
    # Given two replicas competing for one Lease
    replicas = {
        name: start_controller(
            kubeconfig=control_plane.kubeconfig, namespace=world.namespace, leader_elect=True,
            lease_namespace=world.namespace, identity=name, log_file=tmp_path / f"{name}.log",
        )
        for name in ("replica-a", "replica-b")
    }  # fmt: skip
    try:
        leader_name = wait_for(lambda: _lease_holder(world.api, world.namespace), what="a lease holder")
        standby_name = next(name for name in replicas if name != leader_name)
        leader, standby = replicas[leader_name], replicas[standby_name]

        # When a rollout runs up to an indefinite pause
        world.apply(rollout_manifest(steps=[{"setWeight": 40}, {"pause": {}}, {"setWeight": 80}]))
        world.wait_for_phase("Paused")

        # Then only the leader reconciled
        assert _reconciles(leader.metrics()) > 0
        assert _reconciles(standby.metrics()) == 0
        assert "model_rollouts_leader 1.0" in leader.metrics()
        assert "model_rollouts_leader 1.0" not in standby.metrics()

        # When the leader dies and the rollout is resumed
        leader.kill()
        world.action("resume")

        # Then the standby takes the lease over and finishes the rollout
        wait_for(lambda: _lease_holder(world.api, world.namespace) == standby_name, what="takeover", timeout=40)
        world.wait_for_phase("Promoted", timeout=30)
        assert world.route_weights() == {"v1": 0, "v2": 100}
    finally:
        for running in replicas.values():
            running.stop()
