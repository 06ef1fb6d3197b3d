"""Every `kubectl modelrollout` command against real ModelRollouts on a real kube-apiserver.

No controller runs here: the tests write the status a controller would write (through the status
subresource) and check what the plugin shows, which exit code it returns, and which action
annotation it leaves for the controller.
"""

from __future__ import annotations

import json
import os
import pty
import stat
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from controller.api import ACTION_ANNOTATION
from controller.cli.render import ExitCode
from localenv.controlplane import ControlPlane

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]


def manifest(name: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "rollouts.mlops.dev/v1alpha1",
        "kind": "ModelRollout",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "model": "iris",
            "versions": [
                {"version": "v1", "backend": {"service": "iris-v1", "port": 8080}, "deployment": "iris-v1"},
                {"version": "v2", "backend": {"service": "iris-v2", "port": 8080}},
            ],
            "baseline": "v1",
            "candidate": "v2",
            "trafficRouting": {"gatewayAPI": {"httpRoute": "iris"}},
            "steps": [{"setWeight": 10}, {"pause": {"duration": "30s"}}, {"setWeight": 50}, {"pause": {}}],
        },
    }


def now_text() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def progressing_status() -> dict[str, Any]:
    return {
        "phase": "Progressing",
        "message": "holding 30s at 10%",
        "observedGeneration": 1,
        "stableVersion": "v1",
        "candidateVersion": "v2",
        "currentStepIndex": 1,
        "currentWeight": 10,
        "conditions": [
            {"type": "Progressing", "status": "True", "reason": "StepStarted", "message": "pause 30s",
             "lastTransitionTime": now_text(), "observedGeneration": 1},
        ],
        "analysis": {
            "measurements": [
                {"metric": "error-rate", "baselineValue": 0.01, "candidateValue": 0.012, "verdict": "Successful",
                 "time": now_text(), "reason": "within 0.5 points"},
            ]
        },
        "gates": {"verdict": "Passed", "message": "every gate passed", "ran": ["contract"],
                  "contract": {"verdict": "Passed", "summary": "inputs and outputs match"}},
        "history": [
            {"time": now_text(), "phase": "Progressing", "step": 0, "weight": 10, "reason": "StepCompleted",
             "message": "weight 10 verified on the route"},
        ],
    }  # fmt: skip


class Plugin:
    """Runs the plugin as a person or a pipeline would: a separate process, a kubeconfig."""

    def __init__(self, control_plane: ControlPlane, namespace: str) -> None:
        self.control_plane = control_plane
        self.namespace = namespace

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "controller.cli", *args]

    def run(self, *args: str, namespaced: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        scope = ["-n", self.namespace] if namespaced else []
        argv = self.argv(*args[:1], "--kubeconfig", str(self.control_plane.kubeconfig), *scope, *args[1:])
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False, cwd=REPO_ROOT)

    def create(self, name: str) -> None:
        self.control_plane.kubectl("apply", "-f", "-", input=json.dumps(manifest(name, self.namespace)))

    def set_status(self, name: str, status: dict[str, Any]) -> None:
        self.control_plane.kubectl(
            *("patch", "modelrollout", name, "-n", self.namespace, "--subresource=status", "--type=merge"),
            *("-p", json.dumps({"status": status})),
        )

    def stored(self, name: str) -> dict[str, Any]:
        out = self.control_plane.kubectl("get", "modelrollout", name, "-n", self.namespace, "-o", "json").stdout
        stored: dict[str, Any] = json.loads(out)
        return stored


@pytest.fixture
def plugin(control_plane: ControlPlane, namespace: str) -> Plugin:
    return Plugin(control_plane, namespace)


def test_list_shows_each_rollout_and_all_namespaces_adds_the_namespace(plugin: Plugin) -> None:
    plugin.create("iris")
    plugin.create("fresh")
    plugin.set_status("iris", progressing_status())

    listed = plugin.run("list")
    assert listed.returncode == 0, listed.stderr
    rows = {line.split()[0]: line.split() for line in listed.stdout.splitlines()[1:]}
    assert rows["iris"][1:7] == ["iris", "Progressing", "2/4", "v1", "v2", "10%"]
    assert rows["fresh"][2] == "<none>"
    assert "\x1b[" not in listed.stdout, "no colour when stdout is not a terminal"

    everywhere = plugin.run("list", "-A", namespaced=False)
    assert everywhere.returncode == 0, everywhere.stderr
    assert any(line.split()[:3] == [plugin.namespace, "iris", "iris"] for line in everywhere.stdout.splitlines())


def test_list_and_get_print_the_stored_object_as_json_or_yaml(plugin: Plugin) -> None:
    plugin.create("iris")
    as_json = json.loads(plugin.run("list", "-o", "json").stdout)
    assert [item["metadata"]["name"] for item in as_json["items"]] == ["iris"]
    as_yaml = yaml.safe_load(plugin.run("get", "iris", "-o", "yaml").stdout)
    assert as_yaml["spec"] == plugin.stored("iris")["spec"]


def test_get_shows_phase_steps_weights_measurements_gates_conditions_and_events(
    plugin: Plugin, control_plane: ControlPlane
) -> None:
    plugin.create("iris")
    plugin.set_status("iris", progressing_status())
    uid = plugin.stored("iris")["metadata"]["uid"]
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": "iris.step", "namespace": plugin.namespace},
        "involvedObject": {"apiVersion": "rollouts.mlops.dev/v1alpha1", "kind": "ModelRollout", "name": "iris",
                           "namespace": plugin.namespace, "uid": uid},
        "type": "Normal",
        "reason": "WeightChanged",
        "message": "candidate v2 now gets 10%",
        "source": {"component": "model-rollouts"},
        "firstTimestamp": now_text(),
        "lastTimestamp": now_text(),
    }  # fmt: skip
    control_plane.kubectl("create", "-f", "-", input=json.dumps(event))

    shown = plugin.run("get", "iris")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    fields = {k: v.strip() for k, v in (line.split(":", 1) for line in shown.stdout.split("\n\n")[0].splitlines())}
    assert fields["Phase"] == "Progressing"
    assert fields["Step"] == "2/4"
    assert fields["Weights"] == "v1 90% / v2 10%"
    assert any(line.split()[:4] == ["error-rate", "0.01", "0.012", "Successful"] for line in lines)
    assert any(line.split()[:2] == ["contract", "Passed"] for line in lines)
    assert any(line.split()[:3] == ["Progressing", "True", "StepStarted"] for line in lines)
    event_rows = lines[lines.index("Events:") + 2 :]
    assert [row.split()[:2] for row in event_rows] == [["Normal", "WeightChanged"]]
    assert event_rows[0].endswith("candidate v2 now gets 10%")


def test_history_lists_the_recorded_decisions(plugin: Plugin) -> None:
    plugin.create("iris")
    assert plugin.run("history", "iris").stdout.strip() == "No decisions recorded for iris yet."
    plugin.set_status("iris", progressing_status())
    shown = plugin.run("history", "iris")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines()[1].split()[2:6] == ["Progressing", "1/4", "10%", "StepCompleted"]
    assert json.loads(plugin.run("history", "iris", "-o", "json").stdout)[0]["reason"] == "StepCompleted"


@pytest.mark.parametrize(
    ("command", "expected_action"),
    [
        (["promote"], "promote"),
        (["promote", "--full"], "promote-full"),
        (["abort"], "abort"),
        (["retry"], "retry"),
        (["pause"], "pause"),
        (["resume"], "resume"),
    ],
)
def test_actions_leave_the_annotation_the_controller_acts_on(
    plugin: Plugin, command: list[str], expected_action: str
) -> None:
    plugin.create("iris")
    done = plugin.run(command[0], "iris", *command[1:])
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"modelrollout iris: {expected_action} requested"
    assert plugin.stored("iris")["metadata"]["annotations"][ACTION_ANNOTATION] == expected_action


def test_status_without_watch_reports_the_phase_and_exits_with_its_code(plugin: Plugin) -> None:
    plugin.create("iris")
    plugin.set_status("iris", progressing_status())
    running = plugin.run("status", "iris")
    assert running.returncode == ExitCode.IN_PROGRESS
    assert running.stdout.startswith("iris: Progressing")
    plugin.set_status("iris", {"phase": "Aborted", "currentWeight": 0, "message": "aborted by a person"})
    assert plugin.run("status", "iris").returncode == ExitCode.ABORTED
    plugin.set_status("iris", {"phase": "Failed"})
    assert plugin.run("status", "iris").returncode == ExitCode.FAILED


@pytest.mark.parametrize(
    ("final_status", "expected_code"),
    [
        ({"phase": "Promoted", "currentStepIndex": 4, "currentWeight": 100, "stableVersion": "v2",
          "message": "v2 promoted"}, ExitCode.OK),
        ({"phase": "RolledBack", "currentWeight": 0, "message": "error-rate 0.2 vs 0.01"}, ExitCode.ROLLED_BACK),
    ],
)  # fmt: skip
def test_status_watch_waits_for_the_outcome_and_exits_with_its_code(
    plugin: Plugin, final_status: dict[str, Any], expected_code: ExitCode
) -> None:
    plugin.create("iris")
    plugin.set_status("iris", progressing_status())
    argv = plugin.argv("status", "iris", "--watch", "--timeout", "60s", "-n", plugin.namespace)
    argv += ["--kubeconfig", str(plugin.control_plane.kubeconfig)]
    waiting = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO_ROOT)
    try:
        assert waiting.stdout is not None
        first = waiting.stdout.readline()
        assert first.startswith("iris: Progressing"), first
        plugin.set_status("iris", {"phase": "Paused", "message": "paused by a person", "pausedByUser": True})
        assert waiting.stdout.readline().startswith("iris: Paused"), "a pause is not the end: keep waiting"
        assert waiting.poll() is None
        began = time.monotonic()
        plugin.set_status("iris", final_status)
        out, err = waiting.communicate(timeout=30)
        latency = time.monotonic() - began
    finally:
        waiting.kill()
    assert waiting.returncode == expected_code, err
    assert out.startswith(f"iris: {final_status['phase']}")
    assert latency < 5, f"the watch took {latency:.1f}s to notice the outcome"


def test_status_watch_ignores_an_outcome_of_an_older_generation(plugin: Plugin) -> None:
    plugin.create("iris")
    plugin.set_status("iris", {"phase": "Promoted", "observedGeneration": 1})
    changed = manifest("iris", plugin.namespace)
    changed["spec"]["steps"] = [{"setWeight": 20}]
    plugin.control_plane.kubectl("apply", "-f", "-", input=json.dumps(changed))
    waited = plugin.run("status", "iris", "--watch", "--timeout", "2s")
    assert waited.returncode == ExitCode.TIMED_OUT
    assert "timed out after 2s" in waited.stderr


def test_missing_rollout_is_an_error_naming_it(plugin: Plugin) -> None:
    missing = plugin.run("get", "nope")
    assert missing.returncode == ExitCode.ERROR
    assert missing.stderr.strip() == 'error: modelrollouts.rollouts.mlops.dev "nope" not found'


def test_kubectl_finds_the_plugin_and_it_follows_kubeconfig_and_context(
    plugin: Plugin, control_plane: ControlPlane, tmp_path: Path
) -> None:
    plugin.create("iris")
    # A kubeconfig whose current context points at another namespace, and a second context
    # naming the test's namespace: --context must pick the namespace the way kubectl does.
    config = yaml.safe_load(control_plane.kubeconfig.read_text())
    base = config["contexts"][0]
    config["contexts"] = [
        {"name": "elsewhere", "context": {**base["context"], "namespace": "kube-system"}},
        {"name": "models", "context": {**base["context"], "namespace": plugin.namespace}},
    ]
    config["current-context"] = "elsewhere"
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(config))
    executable = tmp_path / "bin" / "kubectl-modelrollout"
    executable.parent.mkdir()
    executable.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m controller.cli "$@"\n')
    executable.chmod(executable.stat().st_mode | stat.S_IXUSR)
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "PATH": f"{executable.parent}:{os.environ['PATH']}"}

    def kubectl(*args: str) -> subprocess.CompletedProcess[str]:
        argv = [str(control_plane.bin_dir / "kubectl"), *args]
        return subprocess.run(argv, capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=60, check=False)

    assert kubectl("modelrollout", "list").stdout.strip() == "No ModelRollouts found."
    in_context = kubectl("modelrollout", "list", "--context", "models")
    assert in_context.returncode == 0, in_context.stderr
    assert in_context.stdout.splitlines()[1].split()[0] == "iris"


def test_colour_on_a_terminal_unless_no_color_is_set(plugin: Plugin) -> None:
    plugin.create("iris")
    plugin.set_status("iris", progressing_status())

    def on_a_terminal(extra_env: dict[str, str]) -> str:
        primary, secondary = pty.openpty()
        argv = plugin.argv("list", "--kubeconfig", str(plugin.control_plane.kubeconfig), "-n", plugin.namespace)
        env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"} | extra_env
        done = subprocess.run(argv, stdout=secondary, stderr=subprocess.PIPE, env=env, cwd=REPO_ROOT, timeout=60)
        os.close(secondary)
        assert done.returncode == 0, done.stderr
        with os.fdopen(primary, "rb") as terminal:
            return terminal.read1(65536).decode()

    assert "\x1b[36mProgressing\x1b[0m" in on_a_terminal({})
    assert "\x1b[" not in on_a_terminal({"NO_COLOR": "1"})
