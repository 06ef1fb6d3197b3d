"""Runs the real controller (`python -m controller`) as a separate process on 127.0.0.1.

Tests, benchmarks and the sandbox use it so that what they exercise is the shipped entry point,
killable with SIGKILL like a crashed pod.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from localenv.controlplane import free_local_port
from localenv.readiness import wait_until_answering

READY_TIMEOUT_SECONDS = 30.0


@dataclass(kw_only=True)
class RunningController:
    process: subprocess.Popen[bytes]
    metrics_url: str
    log_file: Path

    def kill(self) -> None:
        """SIGKILL: no clean-up of any kind, as when a node dies."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def metrics(self) -> str:
        return httpx.get(f"{self.metrics_url}/metrics", timeout=5).text


def start_controller(
    *,
    kubeconfig: Path,
    log_file: Path,
    namespace: str = "",
    leader_elect: bool = False,
    lease_namespace: str = "default",
    identity: str | None = None,
    extra_args: Sequence[str] = (),
    wait_ready: bool = True,
    metrics_port: int | None = None,
) -> RunningController:
    # A caller may fix the port beforehand, e.g. to put it in a Prometheus scrape config.
    port = metrics_port or free_local_port()
    argv = [
        sys.executable, "-m", "controller",
        "--kubeconfig", str(kubeconfig),
        "--metrics-host", "127.0.0.1",
        "--metrics-port", str(port),
        "--namespace", namespace,
        "--lease-namespace", lease_namespace,
        "--leader-elect" if leader_elect else "--no-leader-elect",
        *(["--identity", identity] if identity else []),
        *extra_args,
    ]  # fmt: skip
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=Path(__file__).parent.parent)
    running = RunningController(process=process, metrics_url=f"http://127.0.0.1:{port}", log_file=log_file)
    if wait_ready:
        try:
            wait_until_answering(
                url=f"{running.metrics_url}/readyz", process=process, what="controller",
                timeout_seconds=READY_TIMEOUT_SECONDS, log_tail=lambda: running.log()[-5000:],
            )  # fmt: skip
        except (RuntimeError, TimeoutError):
            running.stop()
            raise
    return running
