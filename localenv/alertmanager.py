"""A real Alertmanager on 127.0.0.1 that sends its notifications to one webhook receiver.

`LocalAlertmanager` runs the `prometheus-alertmanager` binary (Debian package
`prometheus-alertmanager`, installed by `make setup` with its service disabled; the service plays
no part) as a process of its own: a generated config file whose single route sends every alert to
`receiver_url` with `http_config.authorization` bearer credentials (read from a file, mode 0600,
as a mounted Secret would be), gossip off (`--cluster.listen-address=`: no port 9094, no peers),
its storage in a temporary directory, short `group_wait` and `group_interval` so that a test sees
a notification within about a second. Alerts go in through Alertmanager's own API v2
(`POST /api/v2/alerts`), exactly as Prometheus sends them.

Used by tests/integration/test_alertmanager_receiver.py, the incident tests and benchmark, and the
sandbox (sandbox/environment.py), where Prometheus sends it the alerts of a real rule (issue 10).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import yaml

from localenv.prometheus import free_port
from localenv.readiness import stop_process, wait_until_answering

BINARY = "prometheus-alertmanager"
READY_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 10.0
API_TIMEOUT_SECONDS = 5.0
"""Of each call to Alertmanager's API from here."""
DEFAULT_GROUP_WAIT_SECONDS = 0.2
"""Alertmanager waits this long after a new group's first alert before notifying: short for tests."""
DEFAULT_GROUP_INTERVAL_SECONDS = 1.0
"""Then notifies of changes in the group (new alerts, resolved ones) at most this often."""
DEFAULT_REPEAT_INTERVAL = "1h"
DEFAULT_GROUP_BY: tuple[str, ...] = ("...",)
"""Group by every label: one notification per alert, none waits for another's group."""


def _duration(seconds: float) -> str:
    """A Prometheus duration string, in milliseconds so that fractions survive (`200ms`)."""
    return f"{round(seconds * 1000)}ms"


class LocalAlertmanager:
    """An Alertmanager process on a free 127.0.0.1 port; use as a context manager."""

    def __init__(
        self,
        *,
        receiver_url: str,
        bearer_token: str,
        receiver_ca_file: Path | None = None,
        group_by: Sequence[str] = DEFAULT_GROUP_BY,
        group_wait_seconds: float = DEFAULT_GROUP_WAIT_SECONDS,
        group_interval_seconds: float = DEFAULT_GROUP_INTERVAL_SECONDS,
        repeat_interval: str = DEFAULT_REPEAT_INTERVAL,
        binary: str = BINARY,
    ) -> None:
        """`receiver_ca_file`: for an https `receiver_url`, the CA that signed its certificate."""
        found = shutil.which(binary)
        if found is None:
            raise FileNotFoundError(
                f"{binary} not found; install it with `make system-packages` (never as a running service)"
            )
        self._binary = found
        self._receiver_url = receiver_url
        self._bearer_token = bearer_token
        self._receiver_ca_file = receiver_ca_file
        self._group_by = list(group_by)
        self._group_wait = _duration(group_wait_seconds)
        self._group_interval = _duration(group_interval_seconds)
        self._repeat_interval = repeat_interval
        self._workdir = Path(tempfile.mkdtemp(prefix="local-alertmanager-"))
        self.port = free_port()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self._workdir / "alertmanager.log"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def _write_config(self) -> Path:
        token_file = self._workdir / "receiver-token"
        token_file.write_text(self._bearer_token)
        os.chmod(token_file, 0o600)
        http_config: dict[str, Any] = {"authorization": {"type": "Bearer", "credentials_file": str(token_file)}}
        if self._receiver_ca_file is not None:
            http_config["tls_config"] = {"ca_file": str(self._receiver_ca_file)}
        config = {
            "route": {
                "receiver": "controller",
                "group_by": self._group_by,
                "group_wait": self._group_wait,
                "group_interval": self._group_interval,
                "repeat_interval": self._repeat_interval,
            },
            "receivers": [
                {
                    "name": "controller",
                    "webhook_configs": [
                        {"url": self._receiver_url, "send_resolved": True, "http_config": http_config},
                    ],
                }
            ],
        }
        path = self._workdir / "alertmanager.yml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    def start(self) -> None:
        """Start and wait until Alertmanager answers /-/ready (a deadline of READY_TIMEOUT_SECONDS)."""
        if self._process is not None:
            return
        command = [
            self._binary,
            f"--config.file={self._write_config()}",
            f"--storage.path={self._workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            f"--web.external-url={self.url}",
            "--cluster.listen-address=",  # no gossip: no second port, no peers, ready at once
            "--log.level=debug",  # its log is read only when a test fails
        ]
        log = self.log_path.open("ab")
        # Own session: a test runner's Ctrl-C reaches us, and stop() ends exactly this process.
        self._process = subprocess.Popen(command, stdout=log, stderr=log, start_new_session=True)
        log.close()
        try:
            wait_until_answering(
                url=f"{self.url}/-/ready",
                process=self._process,
                what="alertmanager",
                timeout_seconds=READY_TIMEOUT_SECONDS,
                log_tail=lambda: self.log()[-2000:],
            )
        except (RuntimeError, TimeoutError):
            self.stop()
            raise

    def stop(self) -> None:
        """Stop the process (SIGTERM, then SIGKILL after STOP_TIMEOUT_SECONDS)."""
        if self._process is None:
            return
        stop_process(self._process, timeout_seconds=STOP_TIMEOUT_SECONDS)
        self._process = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self._workdir, ignore_errors=True)

    def __enter__(self) -> LocalAlertmanager:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # Alertmanager's API v2 ------------------------------------------------------------------------
    def fire(
        self,
        labels: Mapping[str, str],
        *,
        annotations: Mapping[str, str] | None = None,
        starts_at: datetime | None = None,
        generator_url: str = "",
    ) -> datetime:
        """Posts a firing alert, as Prometheus does; returns its startsAt (needed to resolve it)."""
        start = starts_at or datetime.now(UTC)
        alert: dict[str, Any] = {
            "labels": dict(labels),
            "annotations": dict(annotations or {}),
            "startsAt": _rfc3339(start),
        }
        if generator_url:
            alert["generatorURL"] = generator_url
        self._post_alerts([alert])
        return start

    def resolve(self, labels: Mapping[str, str], *, starts_at: datetime, ends_at: datetime | None = None) -> None:
        """Posts the same alert with an end time now (or `ends_at`): Alertmanager resolves it."""
        end = ends_at or datetime.now(UTC)
        self._post_alerts([{"labels": dict(labels), "startsAt": _rfc3339(starts_at), "endsAt": _rfc3339(end)}])

    def alerts(self) -> list[dict[str, Any]]:
        """The alerts Alertmanager holds (GET /api/v2/alerts)."""
        response = httpx.get(f"{self.url}/api/v2/alerts", timeout=API_TIMEOUT_SECONDS)
        response.raise_for_status()
        found: list[dict[str, Any]] = response.json()
        return found

    def _post_alerts(self, alerts: list[dict[str, Any]]) -> None:
        response = httpx.post(f"{self.url}/api/v2/alerts", json=alerts, timeout=API_TIMEOUT_SECONDS)
        if response.status_code != 200:
            raise RuntimeError(f"alertmanager refused the alerts ({response.status_code}): {response.text[:500]}")


def loopback_certificate(directory: Path) -> tuple[Path, Path]:
    """(certificate, key): a self-signed P-256 certificate for 127.0.0.1, valid a day, for a TLS
    receiver in tests. The certificate is its own CA (give it to the client as the CA file)."""
    cert, key = directory / "loopback-cert.pem", directory / "loopback-key.pem"
    command = [
        *("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"),
        *("-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1"),
        *("-addext", "subjectAltName=IP:127.0.0.1"),
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=30)
    if result.returncode != 0:
        raise RuntimeError(f"openssl could not make a certificate: {result.stderr.strip()}")
    return cert, key


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
