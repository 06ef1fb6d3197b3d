"""A background supervisor process that records its state in a folder: shared by
`python -m localenv.controlplane up|down` and `python -m sandbox up|down`."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

POLL_SECONDS = 0.1


def state_file(directory: Path) -> Path:
    return directory / "state.json"


def process_alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    # The field after the parenthesised command name is the state; Z is a zombie, already dead.
    return status.rsplit(")", 1)[1].split()[0] != "Z"


def live_state(directory: Path) -> dict[str, Any] | None:
    """The state a running supervisor wrote, or None (a stale file is removed)."""
    path = state_file(directory)
    if not path.exists():
        return None
    state: dict[str, Any] = json.loads(path.read_text())
    if process_alive(state["supervisor_pid"]):
        return state
    path.unlink()
    return None


def stop_supervisor(directory: Path, *, timeout_seconds: float, what: str) -> int:
    """SIGTERM to the running supervisor, then wait for it to exit; an exit code for a CLI."""
    state = live_state(directory)
    if state is None:
        print(f"no {what} running", file=sys.stderr)
        return 0
    os.kill(state["supervisor_pid"], signal.SIGTERM)
    deadline = time.monotonic() + timeout_seconds
    while process_alive(state["supervisor_pid"]):
        if time.monotonic() > deadline:
            print(f"supervisor {state['supervisor_pid']} still running after SIGTERM", file=sys.stderr)
            return 1
        time.sleep(POLL_SECONDS)
    print(f"{what} stopped", file=sys.stderr)
    return 0


def hold_until_signalled(directory: Path, state: dict[str, Any]) -> None:
    """Publishes `state` for `up`, `env` and `down`, then waits for SIGTERM or Ctrl-C; the state
    file goes away when this returns, so a later `up` never finds a dead supervisor's state."""
    # Written whole, then renamed: `up` polls for the file and must never read it half written.
    written = state_file(directory).with_suffix(".json.tmp")
    written.write_text(json.dumps({"supervisor_pid": os.getpid(), **state}, indent=2))
    written.replace(state_file(directory))
    try:
        signal.pause()
    except KeyboardInterrupt:
        print("stopping", file=sys.stderr)
    finally:
        state_file(directory).unlink(missing_ok=True)
