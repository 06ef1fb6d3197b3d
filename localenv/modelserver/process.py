"""Start and stop model-server processes from Python (tests, the sandbox, the demo)."""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import httpx

from localenv.modelserver.fault import FIELD as FAULT_FIELD
from localenv.modelserver.fault import PATH as FAULT_PATH
from localenv.modelserver.variants import DEFAULT_MODEL_NAME, Variant

SOURCE_ROOT = Path(__file__).resolve().parents[2]
"""The folder holding the `localenv` package: put on the child's path, whatever the caller's cwd."""
PR_SET_PDEATHSIG = 1
"""prctl option: the kernel signals the child when the thread that started it ends."""


class ModelServerError(RuntimeError):
    """The server process did not come up; the message carries the end of its log."""


@dataclass(frozen=True, kw_only=True)
class RunningServer:
    """A model-server process listening on 127.0.0.1."""

    model_name: str
    version: str
    variant: Variant
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    """Its stdout and stderr."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def metrics_url(self) -> str:
        return f"{self.url}/metrics"

    @property
    def infer_url(self) -> str:
        return f"{self.url}/v2/models/{self.model_name}/infer"

    def set_fault(self, *, error_rate: float) -> None:
        """Makes the server fail this share of its inference requests from now on (0: none), through
        its fault switch (localenv/modelserver/fault.py)."""
        answer = httpx.post(f"{self.url}{FAULT_PATH}", json={FAULT_FIELD: error_rate}, timeout=5.0)
        if answer.status_code != 200:
            raise ModelServerError(f"{FAULT_PATH} refused {error_rate}: {answer.text[:300]}")

    def stop(self, *, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after `timeout`; returns once the process is gone."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: a crashed or killed test run leaves no server.
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def start_model_server(
    *,
    variant: Variant,
    model_name: str = DEFAULT_MODEL_NAME,
    version: str = "v1",
    port: int | None = None,
    log_dir: Path | None = None,
    startup_timeout: float = 60.0,
) -> RunningServer:
    """Start `python -m localenv.modelserver` on 127.0.0.1 and wait until it answers ready.

    `port=None` picks a free one. The process gets SIGTERM if the calling thread ends, so start
    servers from a thread that outlives them (normally the main thread)."""
    workdir = Path(tempfile.mkdtemp(prefix=f"modelserver-{model_name}-{version}-", dir=log_dir))
    ready_file, log_path = workdir / "ready.json", workdir / "server.log"
    command = [
        sys.executable,
        "-m",
        "localenv.modelserver",
        "--variant",
        str(variant),
        "--model-name",
        model_name,
        "--version",
        version,
        "--port",
        str(port or 0),
        "--ready-file",
        str(ready_file),
    ]
    python_path = os.pathsep.join(filter(None, [str(SOURCE_ROOT), os.environ.get("PYTHONPATH")]))
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": python_path},
            preexec_fn=_die_with_parent,
        )
    deadline = time.monotonic() + startup_timeout
    try:
        bound_port = _wait_for_port(process, ready_file=ready_file, log_path=log_path, deadline=deadline)
        server = RunningServer(
            model_name=model_name,
            version=version,
            variant=variant,
            port=bound_port,
            process=process,
            log_path=log_path,
        )
        _wait_until_ready(server, deadline=deadline)
    except BaseException:
        process.kill()
        process.wait()
        raise
    return server


def _wait_for_port(process: subprocess.Popen[bytes], *, ready_file: Path, log_path: Path, deadline: float) -> int:
    while not ready_file.exists():
        if process.poll() is not None:
            raise ModelServerError(f"model server exited with {process.returncode}:\n{_tail(log_path)}")
        if time.monotonic() > deadline:
            raise ModelServerError(f"model server wrote no port in time:\n{_tail(log_path)}")
        time.sleep(0.05)
    port: int = json.loads(ready_file.read_text())["port"]
    return port


def _wait_until_ready(server: RunningServer, *, deadline: float) -> None:
    with httpx.Client(base_url=server.url, timeout=2.0) as client:
        while True:
            try:
                if client.get(f"/v2/models/{server.model_name}/ready").status_code == 200:
                    return
            except httpx.TransportError:
                pass  # the socket is bound but the loop may not be accepting yet
            if time.monotonic() > deadline:
                raise ModelServerError(f"model server not ready in time:\n{_tail(server.log_path)}")
            time.sleep(0.05)


def _tail(log_path: Path, *, characters: int = 2000) -> str:
    return log_path.read_text(errors="replace")[-characters:]
