"""`python -m sandbox up|down|status|serve`: the sandbox as a background service.

`up` starts `serve` as a detached supervisor, waits until everything is ready and prints where it
all is; `down` sends the supervisor SIGTERM, which stops every process it started. `serve` runs in
the foreground until Ctrl-C or SIGTERM. State lives in `--dir` (default out/sandbox/).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from localenv.supervisor import hold_until_signalled, live_state, stop_supervisor
from sandbox.environment import (
    ALERT_ERROR_SHARE,
    ALERT_NAME,
    DEFAULT_TRAFFIC_PER_SECOND,
    EXAMPLE_ROLLOUT,
    NAMESPACE,
    REPO_ROOT,
    VERSIONS,
    Sandbox,
    SandboxSettings,
)

DEFAULT_DIR = REPO_ROOT / "out" / "sandbox"
POLL_SECONDS = 0.2


def _serve(directory: Path, *, traffic_per_second: float) -> int:
    if live_state(directory) is not None:
        print("the sandbox is already running: python -m sandbox status", file=sys.stderr)
        return 1
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    settings = SandboxSettings(
        work_dir=directory / "logs",
        traffic_per_second=traffic_per_second,
        control_plane_work_dir=directory / "control-plane",
    )
    with Sandbox.start(settings, progress=lambda text: logging.info("%s", text)) as sandbox:
        hold_until_signalled(directory, sandbox.describe())
    return 0


ENVOY_COMPLETED = "envoy_cluster_upstream_rq_completed"
"""Envoy's answers per upstream cluster (one per version's Service): what gateway-error-rate counts."""


def _instructions(state: dict[str, Any]) -> str:
    versions = "\n".join(
        f"  {v.version}  {state[f'model_server_{v.version}']:<24} {v.variant:<17} {v.story}" for v in VERSIONS
    )
    return f"""
The sandbox is running.

  Kubernetes API    {state["api_server"]}   (etcd, kube-apiserver, controller-manager, scheduler, KWOK)
  kubeconfig        {state["kubeconfig"]}
  Gateway (Envoy)   {state["gateway"]}   splits /v2/models/breast-cancer/* by the HTTPRoute's weights (Contour)
  Envoy stats       {state["envoy_stats"]}   scraped by Prometheus (job envoy): what the gateway-* presets read
  Prometheus        {state["prometheus"]}   rule {ALERT_NAME}: a version failing > {ALERT_ERROR_SHARE:.0%} of requests
  Alertmanager      {state["alertmanager"]}   posts the alerts, with a bearer token, to the controller's receiver
  alert receiver    {state["alert_receiver"]}
  controller        {state["controller_metrics"]}   log: {state["controller_log"]}
  model servers (Open Inference Protocol, namespace {NAMESPACE}):
{versions}
  traffic           the breast-cancer test split replayed through the Gateway, labels sent as feedback

Try it:
  export KUBECONFIG={state["kubeconfig"]} PATH={Path(state["kubectl"]).parent}:$PATH
  kubectl apply -f {EXAMPLE_ROLLOUT.relative_to(REPO_ROOT)}       # roll out v2 (a good model)
  kubectl -n {NAMESPACE} get mro -w                                       # watch it walk the steps
  kubectl -n {NAMESPACE} patch mro breast-cancer --type=merge -p '{{"spec":{{"candidate":"v3"}}}}'  # then v3 (bad)
  .venv/bin/kubectl-modelrollout -n {NAMESPACE} get breast-cancer          # each metric's evidence so far
  kubectl -n {NAMESPACE} get mro breast-cancer -o jsonpath='{{.status.analysis.evidence[*].latest}}'
  curl -s '{state["prometheus"]}/api/v1/query?query=sum+by+(version)(rate(model_requests_total[30s]))'
  # an incident: roll out v5 with a rollback window; once it is Promoted, make its server fail
  kubectl -n {NAMESPACE} patch mro breast-cancer --type=merge \\
    -p '{{"spec":{{"candidate":"v5","rollbackWindow":"10m"}}}}'
  curl -s -X POST {state["model_server_v5"]}/admin/fault -d '{{"errorRate": 0.3}}'  # the alert undoes it
  curl -s '{state["alertmanager"]}/api/v2/alerts'                                  # as Alertmanager holds it
  curl -s '{state["prometheus"]}/api/v1/query?query=sum+by+(envoy_cluster_name)(rate({ENVOY_COMPLETED}[30s]))'

Stop it:   make sandbox-down      (or: python -m sandbox down)
"""


def _up(directory: Path, *, traffic_per_second: float, timeout_seconds: float) -> int:
    state = live_state(directory)
    if state is None:
        supervisor_log = directory / "supervisor.log"
        print(f"starting the sandbox (progress in {supervisor_log}) ...", file=sys.stderr)
        with supervisor_log.open("wb") as log:
            supervisor = subprocess.Popen(
                [sys.executable, "-m", "sandbox", "serve", f"--dir={directory}", f"--rate={traffic_per_second}"],
                cwd=REPO_ROOT,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        began = time.monotonic()
        while (state := live_state(directory)) is None:
            if supervisor.poll() is not None or time.monotonic() - began > timeout_seconds:
                print(f"the sandbox did not come up; end of {supervisor_log}:", file=sys.stderr)
                print(supervisor_log.read_text(errors="replace")[-4000:], file=sys.stderr)
                if supervisor.poll() is None:
                    os.killpg(supervisor.pid, signal.SIGTERM)
                return 1
            time.sleep(POLL_SECONDS)
        print(f"up in {time.monotonic() - began:.0f}s", file=sys.stderr)
    print(_instructions(state))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["up", "down", "status", "serve"])
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="state and logs (default: %(default)s)")
    parser.add_argument(
        "--rate",
        type=float,
        default=DEFAULT_TRAFFIC_PER_SECOND,
        help="inference requests per second of the traffic (default: %(default)g)",
    )
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds `up` waits, first builds included")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    directory: Path = args.dir.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    if args.command == "serve":
        return _serve(directory, traffic_per_second=args.rate)
    if args.command == "up":
        return _up(directory, traffic_per_second=args.rate, timeout_seconds=args.timeout)
    if args.command == "down":
        return stop_supervisor(directory, timeout_seconds=args.timeout, what="sandbox")
    state = live_state(directory)
    if state is None:
        print("no sandbox running: make sandbox", file=sys.stderr)
        return 1
    print(_instructions(state))
    return 0


if __name__ == "__main__":
    sys.exit(main())
