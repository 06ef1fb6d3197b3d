"""Waiting for a process started here to answer on loopback."""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Callable
from typing import Any

import httpx

POLL_SECONDS = 0.1


def wait_until_answering(
    *, url: str, process: subprocess.Popen[Any], what: str, timeout_seconds: float, log_tail: Callable[[], str]
) -> None:
    """Polls `url` until it answers 200. Raises RuntimeError if the process exits first and
    TimeoutError when time runs out, both quoting the end of its log; the caller stops it."""
    deadline = time.monotonic() + timeout_seconds
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}:\n{log_tail()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not ready within {timeout_seconds:g}s:\n{log_tail()}")
        time.sleep(POLL_SECONDS)


def stop_process(process: subprocess.Popen[Any], *, timeout_seconds: float) -> None:
    """SIGTERM, then SIGKILL if it has not exited within `timeout_seconds`."""
    process.terminate()
    try:
        process.wait(timeout=timeout_seconds)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout_seconds)
