"""The local control plane: real etcd + kube-apiserver, the built kubectl, CRDs, identities, stop."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, cast

import kubernetes
import pytest

from localenv.controlplane import (
    PROJECT_CRD_DIR,
    REPO_ROOT,
    ControlPlane,
    ControlPlaneSettings,
    served_resources,
)

pytestmark = pytest.mark.integration

HTTPROUTE = """
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: model
spec:
  rules:
    - backendRefs:
        - {name: baseline, port: 8080, weight: 90}
        - {name: candidate, port: 8080, weight: 10}
"""


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def _children(pid: int) -> list[int]:
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (FileNotFoundError, ProcessLookupError):
            continue
        if parent == pid:
            children.append(int(stat.parent.name))
    return children


def _wait_until_gone(pids: list[int], *, seconds: float = 30.0) -> list[int]:
    deadline = time.monotonic() + seconds
    while (alive := [pid for pid in pids if _running(pid)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    return alive


def _command_line(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "localenv.controlplane", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


def test_built_kubectl_and_server_report_the_same_release(control_plane: ControlPlane) -> None:
    versions = json.loads(control_plane.kubectl("version", "--output=json").stdout)

    server_version = versions["serverVersion"]["gitVersion"]
    assert re.fullmatch(r"v1\.\d+\.\d+", server_version), "version stamped at build time"
    assert versions["clientVersion"]["gitVersion"] == server_version


def test_project_crds_and_httproute_crd_are_installed(control_plane: ControlPlane) -> None:
    installed = {resource.crd_name for resource in served_resources(control_plane.crd_files)}

    expected = {resource.crd_name for resource in served_resources(sorted(PROJECT_CRD_DIR.glob("*.yaml")))}
    assert expected | {"httproutes.gateway.networking.k8s.io"} <= installed


def test_every_served_crd_version_is_listable_with_kubectl(control_plane: ControlPlane, namespace: str) -> None:
    for resource in served_resources(control_plane.crd_files):
        group, version = resource.group_version.split("/")

        listed = control_plane.kubectl("get", f"{resource.plural}.{version}.{group}", f"--namespace={namespace}")

        assert listed.stdout == "", f"{resource} in a fresh namespace"
        assert "No resources found" in listed.stderr


def test_kubectl_get_modelrollouts_by_name_and_short_name(control_plane: ControlPlane, namespace: str) -> None:
    by_name = control_plane.kubectl("get", "modelrollouts", f"--namespace={namespace}")
    by_short_name = control_plane.kubectl("get", "mro", f"--namespace={namespace}")

    assert "No resources found" in by_name.stderr
    assert "No resources found" in by_short_name.stderr


def test_httproute_applied_with_kubectl_is_read_back_by_the_python_client(
    control_plane: ControlPlane, kube_api: kubernetes.client.ApiClient, namespace: str
) -> None:
    control_plane.kubectl("apply", f"--namespace={namespace}", "--filename=-", input=HTTPROUTE)

    routes = kubernetes.client.CustomObjectsApi(kube_api)
    route = cast(
        dict[str, Any],
        routes.get_namespaced_custom_object(
            group="gateway.networking.k8s.io",
            version="v1",
            namespace=namespace,
            plural="httproutes",
            name="model",
        ),
    )

    weights = [ref["weight"] for ref in route["spec"]["rules"][0]["backendRefs"]]
    assert weights == [90, 10]


def test_minted_identity_is_authenticated_and_has_only_the_rights_rbac_grants(
    control_plane: ControlPlane, namespace: str
) -> None:
    alice = control_plane.mint_identity(user="alice", groups=["ml-team"])

    review = json.loads(control_plane.kubectl("auth", "whoami", "--output=json", kubeconfig=alice).stdout)
    assert review["status"]["userInfo"]["username"] == "alice"
    assert "ml-team" in review["status"]["userInfo"]["groups"]
    denied = control_plane.kubectl("get", "httproutes", f"--namespace={namespace}", kubeconfig=alice, check=False)
    assert denied.returncode != 0
    assert "forbidden" in denied.stderr

    control_plane.kubectl(
        "create",
        "role",
        "route-reader",
        "--verb=get,list",
        "--resource=httproutes",
        f"--namespace={namespace}",
    )
    control_plane.kubectl(
        "create", "rolebinding", "ml-team-reads", "--role=route-reader", "--group=ml-team", f"--namespace={namespace}"
    )

    allowed = control_plane.kubectl("get", "httproutes", f"--namespace={namespace}", kubeconfig=alice)
    assert "No resources found" in allowed.stderr


def test_admin_impersonates_users_and_groups(control_plane: ControlPlane, namespace: str) -> None:
    control_plane.kubectl("create", "role", "route-reader", "--verb=list", "--resource=httproutes", f"-n={namespace}")
    control_plane.kubectl("create", "rolebinding", "bob-reads", "--role=route-reader", "--user=bob", f"-n={namespace}")

    def can_list_routes(*identity: str) -> str:
        result = control_plane.kubectl("auth", "can-i", "list", "httproutes", f"-n={namespace}", *identity, check=False)
        return result.stdout.strip()

    assert can_list_routes("--as=bob") == "yes"
    assert can_list_routes("--as=carol") == "no"
    assert can_list_routes("--as=carol", "--as-group=system:masters") == "yes"


def test_stop_leaves_no_process_and_no_files_behind() -> None:
    plane = ControlPlane.start(ControlPlaneSettings(crd_files=()))
    pids = plane.process_ids()
    assert len(pids) == 2, "etcd and kube-apiserver"

    plane.stop()

    assert [pid for pid in pids if _running(pid)] == []
    assert not plane.work_dir.exists()


def test_command_line_up_env_down(tmp_path: Path) -> None:
    up = _command_line("up", f"--dir={tmp_path}", "--crd=manifests/crds/modelrollouts.yaml")
    assert up.returncode == 0, up.stderr
    environment = _command_line("env", f"--dir={tmp_path}").stdout
    assert environment == up.stdout
    kubeconfig = re.search(r"^export KUBECONFIG=(.+)$", environment, re.MULTILINE)
    assert kubeconfig is not None
    supervisor = json.loads((tmp_path / "state.json").read_text())["supervisor_pid"]
    components = _children(supervisor)
    assert len(components) == 2, "etcd and kube-apiserver"
    kubectl = Path(json.loads((tmp_path / "state.json").read_text())["bin_dir"]) / "kubectl"
    crds = subprocess.run(
        [str(kubectl), f"--kubeconfig={kubeconfig[1]}", "get", "crd", "--output=name"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert crds.stdout.split() == ["customresourcedefinition.apiextensions.k8s.io/modelrollouts.rollouts.mlops.dev"]

    down = _command_line("down", f"--dir={tmp_path}")

    assert down.returncode == 0, down.stderr
    assert _wait_until_gone([supervisor, *components]) == []
    assert _command_line("env", f"--dir={tmp_path}").returncode != 0
    assert not (tmp_path / "run").exists()


def test_components_die_with_a_killed_supervisor(tmp_path: Path) -> None:
    assert _command_line("up", f"--dir={tmp_path}", "--crd=manifests/crds/modelrollouts.yaml").returncode == 0
    supervisor = json.loads((tmp_path / "state.json").read_text())["supervisor_pid"]
    components = _children(supervisor)
    assert len(components) == 2, "etcd and kube-apiserver"

    os.kill(supervisor, signal.SIGKILL)

    assert _wait_until_gone([supervisor, *components]) == []
