"""What one ModelRollout status write costs the API server and etcd, by the status's size (issue 14).

On a fresh local control plane (kube-apiserver + etcd on 127.0.0.1, the project's CRDs), 100
ModelRollouts take `--writes` status writes (PUT .../status, 4 threads) for each of three
statuses, then `--writes / 2` Events are created (events.k8s.io/v1, as the controller creates
them). Printed: CPU milliseconds of kube-apiserver and of etcd per call (from /proc, so the
client's own CPU is not counted), and calls per second.

The statuses: `bench/data/status-sample.json`, a status as the controller wrote it for a rollout of
`bench/scale.py --scenario staggered` (step 3 of 4, two metrics, six measurements: 13.7 kB); the
same without `analysis`; and a minimal one. Run: `PYTHONPATH=. .venv/bin/python bench/status_write_cost.py`.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from localenv.controlplane import ControlPlane

JSON = dict[str, Any]
SAMPLE = Path(__file__).parent / "data" / "status-sample.json"
ROLLOUTS = 100
THREADS = 4
NAMESPACE = "bench"
ROLLOUTS_PATH = f"/apis/rollouts.mlops.dev/v1alpha1/namespaces/{NAMESPACE}/modelrollouts"
SPEC: JSON = {
    "model": "m",
    "versions": [{"version": v, "backend": {"service": f"m-{v}", "port": 80}} for v in ("v1", "v2")],
    "candidate": "v2",
    "baseline": "v1",
    "trafficRouting": {"gatewayAPI": {"httpRoute": "m"}},
    "steps": [{"setWeight": 10}, {"analyze": {"duration": "60s"}}, {"setWeight": 50}, {"analyze": {"duration": "60s"}}],
    "analysis": {
        "interval": "30s",
        "metrics": [{"name": "errors", "preset": "error-rate"}, {"name": "latency", "preset": "latency-p99"}],
    },
}


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measured(plane: ControlPlane, calls: int, run: Callable[[], None]) -> str:
    """`run()`'s CPU per call in kube-apiserver and etcd, and its rate."""
    pids = {name: plane.component(name).process.pid for name in ("kube-apiserver", "etcd")}
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    started = time.monotonic()
    run()
    elapsed = time.monotonic() - started
    spent = {name: 1000 * (cpu_seconds(pid) - before[name]) / calls for name, pid in pids.items()}
    return f"apiserver {spent['kube-apiserver']:.1f} ms, etcd {spent['etcd']:.2f} ms | {calls / elapsed:.0f}/s"


def status_writes(http: httpx.Client, status: JSON, *, writes: int) -> Callable[[], None]:
    stored = {f"r{i}": http.get(f"{ROLLOUTS_PATH}/r{i}").json() for i in range(ROLLOUTS)}
    lock = threading.Lock()

    def work(first: int) -> None:
        for index in range(first, writes, THREADS):
            name = f"r{index % ROLLOUTS}"
            with lock:
                body = copy.deepcopy(stored[name])
            # A new message each time: the API server skips a write that changes nothing.
            body["status"] = {**status, "message": f"write {index}"}
            response = http.put(f"{ROLLOUTS_PATH}/{name}/status", json=body)
            response.raise_for_status()
            with lock:
                stored[name] = response.json()

    def run() -> None:
        threads = [threading.Thread(target=work, args=(first,)) for first in range(THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    return run


def event_creates(http: httpx.Client, *, count: int) -> Callable[[], None]:
    def run() -> None:
        for index in range(count):
            event = {
                "apiVersion": "events.k8s.io/v1",
                "kind": "Event",
                "metadata": {"name": f"r0.{index}"},
                "eventTime": "2026-12-01T00:00:00.000000Z",
                "reportingController": "rollouts.mlops.dev/controller",
                "reportingInstance": "bench",
                "action": "Reconcile",
                "reason": "StepCompleted",
                "note": "step 1 completed",
                "type": "Normal",
                "regarding": {
                    "apiVersion": "rollouts.mlops.dev/v1alpha1",
                    "kind": "ModelRollout",
                    "namespace": NAMESPACE,
                    "name": "r0",
                },
            }
            http.post(f"/apis/events.k8s.io/v1/namespaces/{NAMESPACE}/events", json=event).raise_for_status()

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--writes", type=int, default=1000, help="status writes per status size")
    args = parser.parse_args()
    sample: JSON = json.loads(SAMPLE.read_text())
    statuses = {
        "status as written (step 3 of 4)": sample,
        "the same without analysis": {k: v for k, v in sample.items() if k != "analysis"},
        "minimal": {"phase": "Progressing", "currentStepIndex": 1},
    }
    with ControlPlane.start() as plane:
        headers = {"Authorization": f"Bearer {plane.token}"}
        with httpx.Client(base_url=plane.server_url, headers=headers, verify=False, timeout=30) as http:
            http.post("/api/v1/namespaces", json={"metadata": {"name": NAMESPACE}}).raise_for_status()
            for index in range(ROLLOUTS):
                rollout = {"apiVersion": "rollouts.mlops.dev/v1alpha1", "kind": "ModelRollout"}
                http.post(ROLLOUTS_PATH, json={**rollout, "metadata": {"name": f"r{index}"}, "spec": SPEC})
            print(f"| call | size | CPU per call; rate ({THREADS} threads for status writes) |")
            print("|---|---|---|")
            for label, status in statuses.items():
                figures = measured(plane, args.writes, status_writes(http, status, writes=args.writes))
                print(f"| status write: {label} | {len(json.dumps(status))} B | {figures} |", flush=True)
            events = args.writes // 2
            print(f"| Event create | | {measured(plane, events, event_creates(http, count=events))} |")


if __name__ == "__main__":
    main()
