"""How the controller scales: N ModelRollouts in one process, on a real local API server.

Creates N rollouts (each with its own HTTPRoute and two headless Services), starts the real
controller, and measures the time until all are Promoted, the controller's resident memory,
and the Kubernetes API calls it made per rollout and per step.

    .venv/bin/python bench/scale.py --rollouts 1000
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import kubernetes
from kubernetes import client

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from localenv.controller import start_controller
from localenv.controlplane import ControlPlane

NAMESPACE = "bench"
STEPS = [{"setWeight": 10}, {"setWeight": 50}]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def create_one(api: client.ApiClient, i: int) -> None:
    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    name = f"model-{i}"
    for version in ("v1", "v2"):
        core.create_namespaced_service(
            NAMESPACE,
            client.V1Service(
                metadata=client.V1ObjectMeta(name=f"{name}-{version}"),
                # Headless: the local API server has only 254 cluster IPs to hand out.
                spec=client.V1ServiceSpec(cluster_ip="None", ports=[client.V1ServicePort(port=80)]),
            ),
        )
    custom.create_namespaced_custom_object(
        "gateway.networking.k8s.io", "v1", NAMESPACE, "httproutes",
        {
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": name},
            "spec": {"rules": [{"backendRefs": [{"name": f"{name}-v1", "port": 80, "weight": 100}]}]},
        },
    )  # fmt: skip
    custom.create_namespaced_custom_object(
        "rollouts.mlops.dev", "v1alpha1", NAMESPACE, "modelrollouts",
        {
            "apiVersion": "rollouts.mlops.dev/v1alpha1", "kind": "ModelRollout", "metadata": {"name": name},
            "spec": {
                "model": name,
                "versions": [{"version": v, "backend": {"service": f"{name}-{v}", "port": 80}} for v in ("v1", "v2")],
                "baseline": "v1", "candidate": "v2",
                "trafficRouting": {"gatewayAPI": {"httpRoute": name}},
                "steps": STEPS,
            },
        },
    )  # fmt: skip


def count_promoted(api: client.ApiClient) -> int:
    listed: dict[str, Any] = client.CustomObjectsApi(api).list_namespaced_custom_object(  # type: ignore[assignment]
        "rollouts.mlops.dev", "v1alpha1", NAMESPACE, "modelrollouts"
    )
    items = listed["items"]
    return sum(1 for item in items if (item.get("status") or {}).get("phase") == "Promoted")


def api_calls(metrics: str) -> dict[str, float]:
    return {
        m[0]: float(m[1])
        for m in re.findall(r'^model_rollouts_api_calls_total\{operation="(\w+)"\} (\S+)$', metrics, re.M)
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rollouts", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--timeout", type=float, default=900)
    args = parser.parse_args()

    with ControlPlane.start() as plane, tempfile.TemporaryDirectory() as tmp:
        api = kubernetes.config.new_client_from_config(config_file=str(plane.kubeconfig))  # type: ignore[no-untyped-call]
        client.CoreV1Api(api).create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=NAMESPACE)))
        started = time.monotonic()
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda i: create_one(api, i), range(args.rollouts)))
        print(f"created {args.rollouts} rollouts (+{2 * args.rollouts} Services, {args.rollouts} HTTPRoutes) "
              f"in {time.monotonic() - started:.1f}s")  # fmt: skip

        controller = start_controller(
            kubeconfig=plane.kubeconfig, namespace=NAMESPACE, log_file=Path(tmp) / "controller.log",
            extra_args=["--workers", str(args.workers), "--log-level", "WARNING"],
        )  # fmt: skip
        idle_rss = rss_mib(controller.process.pid)
        started = time.monotonic()
        peak_rss, promoted = idle_rss, 0
        while promoted < args.rollouts and time.monotonic() - started < args.timeout:
            time.sleep(2)
            peak_rss = max(peak_rss, rss_mib(controller.process.pid))
            promoted = count_promoted(api)
            print(
                f"  {time.monotonic() - started:6.1f}s  promoted {promoted}/{args.rollouts}  rss {peak_rss:.0f} MiB",
                flush=True,
            )
        elapsed = time.monotonic() - started
        calls = api_calls(controller.metrics())
        steady_rss = rss_mib(controller.process.pid)
        controller.stop()

    total_calls = sum(calls.values())
    steps_per_rollout = len(STEPS) + 1  # the promotion writes the route once more
    print()
    print(
        f"rollouts promoted:        {promoted}/{args.rollouts} in {elapsed:.1f}s "
        f"({promoted / elapsed:.1f} rollouts/s, {args.workers} workers)"
    )
    print(
        f"controller memory (RSS):  {idle_rss:.0f} MiB at start, peak {peak_rss:.0f} MiB, "
        f"{steady_rss:.0f} MiB after; {(peak_rss - idle_rss) * 1024 / max(args.rollouts, 1):.1f} KiB per rollout"
    )
    print(f"API calls:                {total_calls:.0f} in all, {total_calls / max(promoted, 1):.1f} per rollout, "
          f"{total_calls / max(promoted * steps_per_rollout, 1):.1f} per traffic step; {calls}")  # fmt: skip
    return 0 if promoted == args.rollouts else 1


if __name__ == "__main__":
    sys.exit(main())
