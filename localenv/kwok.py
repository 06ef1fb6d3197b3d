"""Workloads on the local control plane: kube-controller-manager, kube-scheduler and KWOK.

`start_workload_controllers(plane)` adds them to a running `ControlPlane` (through
`ControlPlane.start_component`, so `plane.stop()` stops them too), plus one fake Node that KWOK
plays the kubelet of. Deployments then really roll out: the Deployment and ReplicaSet controllers
create Pods, the scheduler binds them to the fake Node, KWOK's fast Stages mark them Running and
Ready, and the Deployment becomes Available; a scale to zero really deletes the Pods. The Pods
run nothing: their containers are never pulled or started.

Optional: tests that only need the API server never call this and never pay for it.
KWOK is built by hack/build-kwok.sh (cached by version), the others by hack/build-control-plane.sh.
"""

from __future__ import annotations

import json
import logging
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from localenv.controlplane import REPO_ROOT, ControlPlane, ControlPlaneError, free_local_port

LOG = logging.getLogger(__name__)

BUILD_SCRIPT = REPO_ROOT / "hack" / "build-kwok.sh"
FAKE_NODE_ANNOTATION = "kwok.x-k8s.io/node"
"""KWOK manages exactly the Nodes carrying this annotation with the value "fake"."""
# Only what Deployments, ServiceAccounts and namespace clean-up need. Not the node lifecycle
# controller: the fake Node sends no heartbeats, and that controller would mark it NotReady after
# 40 s and evict every Pod. Its one useful job, lifting the not-ready taint that the API server
# puts on every new Node, is done here once the Node is Ready.
CONTROLLERS = (
    "deployment-controller",
    "replicaset-controller",
    "garbage-collector-controller",
    "namespace-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "root-ca-certificate-publisher-controller",
)
NOT_READY_TAINT = "node.kubernetes.io/not-ready:NoSchedule"
"""Put on a new Node by the API server (admission plugin TaintNodesByCondition)."""
POD_CIDR = "10.244.0.0/16"
"""Addresses KWOK writes into Pod status; nothing ever dials them."""


@dataclass(frozen=True, kw_only=True)
class WorkloadSettings:
    """How to start the workload controllers and the fake Node."""

    node_name: str = "kwok-node-0"
    """Name of the one fake Node."""
    node_cpu: str = "32"
    """Allocatable CPU of the fake Node: enough that the scheduler never refuses a sandbox Pod."""
    node_memory: str = "256Gi"
    """Allocatable memory of the fake Node."""
    node_pods: str = "110"
    """Pods the fake Node accepts."""
    ready_timeout_seconds: float = 60.0
    """How long the Node may take to turn Ready and kube-controller-manager to start working."""


def build_kwok() -> Path:
    """Runs the (cached) build script; the directory holding `kwok` and `stages/*.yaml`."""
    result = subprocess.run(["bash", str(BUILD_SCRIPT)], stdout=subprocess.PIPE, text=True, check=False)
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines:
        raise ControlPlaneError(f"{BUILD_SCRIPT} exited with {result.returncode}; its progress and errors are above")
    return Path(lines[-1])


def fake_node(settings: WorkloadSettings) -> dict[str, object]:
    """The Node object KWOK will manage (no taint: any Pod may land on it)."""
    resources = {"cpu": settings.node_cpu, "memory": settings.node_memory, "pods": settings.node_pods}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": settings.node_name,
            "annotations": {FAKE_NODE_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {"kubernetes.io/hostname": settings.node_name, "kubernetes.io/os": "linux", "type": "kwok"},
        },
        "status": {"allocatable": resources, "capacity": resources},
    }


def start_workload_controllers(plane: ControlPlane, settings: WorkloadSettings = WorkloadSettings()) -> None:
    """Starts kube-controller-manager, kube-scheduler and KWOK against `plane`, registers the fake
    Node and returns once it is Ready and kube-controller-manager has made the default
    ServiceAccount (its controllers are running)."""
    began = time.monotonic()
    kwok_dir = build_kwok()
    pki = plane.work_dir / "pki"
    kubeconfig = str(plane.kubeconfig)

    def component_flags() -> list[str]:
        """What kube-controller-manager and kube-scheduler share: one identity, loopback only."""
        return [
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={free_local_port()}",
            "--leader-elect=false",
        ]

    plane.start_component(
        name="kube-controller-manager",
        argv=[
            str(plane.bin_dir / "kube-controller-manager"),
            *component_flags(),
            f"--controllers={','.join(CONTROLLERS)}",
            f"--service-account-private-key-file={pki / 'service-account.key'}",
            f"--root-ca-file={pki / 'serving' / 'apiserver.crt'}",
        ],
    )
    plane.start_component(
        name="kube-scheduler",
        argv=[
            str(plane.bin_dir / "kube-scheduler"),
            *component_flags(),
        ],
    )
    plane.start_component(
        name="kwok",
        argv=[
            str(kwok_dir / "kwok"),
            f"--kubeconfig={kubeconfig}",
            f"--manage-nodes-with-annotation-selector={FAKE_NODE_ANNOTATION}=fake",
            f"--cidr={POD_CIDR}",
            "--node-ip=127.0.0.1",
            *(f"--config={stage}" for stage in sorted((kwok_dir / "stages").glob("*.yaml"))),
        ],
    )
    plane.kubectl("apply", "--filename=-", input=json.dumps(fake_node(settings)))
    deadline = time.monotonic() + settings.ready_timeout_seconds
    plane._wait_until(f"Node {settings.node_name} is Ready", lambda: _node_ready(plane, settings), deadline=deadline)
    plane.kubectl("taint", "node", settings.node_name, f"{NOT_READY_TAINT}-")
    plane._wait_until(
        "kube-controller-manager made the default ServiceAccount",
        lambda: plane.kubectl("get", "serviceaccount", "default", "--namespace=default", check=False).returncode == 0,
        deadline=deadline,
    )
    LOG.info("workload controllers and KWOK ready in %.1fs", time.monotonic() - began)


def _node_ready(plane: ControlPlane, settings: WorkloadSettings) -> bool:
    result = plane.kubectl(
        "get",
        "node",
        settings.node_name,
        "--output=jsonpath={.status.conditions[?(@.type=='Ready')].status}",
        check=False,
    )
    return result.stdout.strip() == "True"
