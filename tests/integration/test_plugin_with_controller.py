"""The kubectl plugin steering rollouts that the real controller runs (no status is faked here)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from controller.cli.render import ExitCode
from localenv.controller import RunningController
from tests.integration.rollout_world import World, rollout_manifest

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]


def plugin(world: World, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "controller.cli", args[0], "--kubeconfig", str(world.plane.kubeconfig)]
    argv += ["-n", world.namespace, *args[1:]]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False, cwd=REPO_ROOT)


def test_a_pipeline_promotes_with_the_plugin_and_waits_for_the_outcome(
    world: World, controller: RunningController
) -> None:
    # Given a rollout the controller holds at an indefinite pause at 30 %
    world.apply(rollout_manifest(steps=[{"setWeight": 30}, {"pause": {}}, {"setWeight": 60}, {"pause": {}}]))
    world.wait_for_phase("Paused")

    # When a pipeline waits briefly, the wait times out: nothing is decided yet
    assert plugin(world, "status", "iris", "--watch", "--timeout", "2s").returncode == ExitCode.TIMED_OUT

    # When it promotes one step, the controller moves on to the next pause at 60 %
    assert plugin(world, "promote", "iris").returncode == ExitCode.OK
    world.wait_for_phase("Paused", timeout=20)
    assert world.route_weights() == {"v1": 40, "v2": 60}

    # When it promotes fully and waits, the wait ends with success once the controller promoted
    assert plugin(world, "promote", "iris", "--full").returncode == ExitCode.OK
    waited = plugin(world, "status", "iris", "--watch", "--timeout", "30s")
    assert waited.returncode == ExitCode.OK, waited.stdout + waited.stderr
    assert world.route_weights() == {"v1": 0, "v2": 100}

    # Then get and history tell the story
    got = plugin(world, "get", "iris")
    assert "Promoted" in got.stdout
    history = plugin(world, "history", "iris")
    assert history.returncode == ExitCode.OK and "Promoted" in history.stdout


def test_an_abort_through_the_plugin_ends_a_waiting_pipeline_with_the_aborted_code(
    world: World, controller: RunningController
) -> None:
    # Given a pipeline waiting on a paused rollout
    world.apply(rollout_manifest(steps=[{"setWeight": 30}, {"pause": {}}]))
    world.wait_for_phase("Paused")
    waiting = subprocess.Popen(
        [sys.executable, "-m", "controller.cli", "status", "--kubeconfig", str(world.plane.kubeconfig),
         "-n", world.namespace, "iris", "--watch", "--timeout", "60s"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO_ROOT,
    )  # fmt: skip

    # When someone aborts it with the plugin
    assert plugin(world, "abort", "iris").returncode == ExitCode.OK

    # Then the controller sends all traffic back, and the pipeline's wait ends with the aborted code
    assert waiting.wait(timeout=60) == ExitCode.ABORTED
    assert world.route_weights() == {"v1": 100, "v2": 0}
    assert world.status()["phase"] == "Aborted"
