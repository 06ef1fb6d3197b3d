"""The real alerting path on 127.0.0.1, for the incident tests and bench/incident.py:

    model metrics (ModelMetricsExporter) --scrape--> Prometheus with an alerting rule
        --alerts--> Alertmanager --webhook--> [WebhookTap] --> the controller's receiver

`AlertingPrometheus` is `LocalPrometheus` with a rule file and Alertmanager as its alerting target.
The rule `ModelErrorRate` fires for a model version whose share of failed requests over the last
few seconds is above 10 %, labelled with the namespace the model's rollout lives in: the tests
and the benchmark name each model after the namespace of its rollout (as bench/rollback_latency.py
does), and the rule copies the `model` label into `namespace`. `WebhookTap` forwards Alertmanager's
webhook calls to the controller unchanged and notes when each arrived, so that a benchmark can
time from the delivery.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import yaml

from localenv.controller import RunningController, start_controller
from localenv.controlplane import ControlPlane
from localenv.prometheus import LocalPrometheus, free_port

ALERT_NAME = "ModelErrorRate"
ERROR_SHARE = 0.1
"""The rule fires above this share of failed requests."""
RATE_WINDOW = "3s"
_ERROR_SHARE_BY_VERSION = (
    f"sum by (model, version) (rate(model_request_errors_total[{RATE_WINDOW}]))"
    f" / sum by (model, version) (rate(model_requests_total[{RATE_WINDOW}]))"
)
RULE = {
    "alert": ALERT_NAME,
    "expr": f'label_replace({_ERROR_SHARE_BY_VERSION} > {ERROR_SHARE}, "namespace", "$1", "model", "(.+)")',
    "labels": {"severity": "page"},
    "annotations": {"summary": "{{ $labels.model }} {{ $labels.version }} fails {{ $value | humanizePercentage }}"},
}
WEBHOOK_PATH = "/alertmanager/webhook"


class AlertingPrometheus(LocalPrometheus):
    """A LocalPrometheus that evaluates RULE every `evaluation_interval_seconds` and sends the alerts
    to the Alertmanager at `alertmanager` (host:port)."""

    def __init__(
        self, *, scrape_targets: list[str], alertmanager: str, evaluation_interval_seconds: float = 1.0
    ) -> None:
        super().__init__(scrape_targets=scrape_targets)
        self.alertmanager = alertmanager
        self.evaluation_interval = f"{evaluation_interval_seconds:g}s"

    def _write_config(self) -> Path:
        path = super()._write_config()
        rules = path.parent / "rules.yml"
        rules.write_text(yaml.safe_dump({"groups": [{"name": "models", "interval": self.evaluation_interval,
                                                      "rules": [RULE]}]}))  # fmt: skip
        config = yaml.safe_load(path.read_text())
        config["global"]["evaluation_interval"] = self.evaluation_interval
        config["rule_files"] = [str(rules)]
        config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [self.alertmanager]}]}]}
        path.write_text(yaml.safe_dump(config))
        return path

    def firing(self) -> list[dict[str, Any]]:
        """The alerts of the rule that fire now (GET /api/v1/alerts), with their labels and activeAt."""
        response = httpx.get(f"{self.url}/api/v1/alerts", timeout=5.0)
        response.raise_for_status()
        alerts: list[dict[str, Any]] = response.json()["data"]["alerts"]
        return [alert for alert in alerts if alert.get("state") == "firing"]


@dataclass(frozen=True, kw_only=True)
class ReceiverEnd:
    """The controller's receiver as the tests configure it: a loopback port and a token file."""

    port: int
    token: str
    token_file: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{WEBHOOK_PATH}"

    def controller_args(self) -> list[str]:
        return [
            "--alert-receiver-token-file", str(self.token_file),
            "--alert-receiver-bind-address", "127.0.0.1",
            "--alert-receiver-port", str(self.port),
        ]  # fmt: skip


def receiver_end(directory: Path) -> ReceiverEnd:
    """A free port and a fresh token, written to a file only its owner reads (a mounted Secret)."""
    token = secrets.token_urlsafe(24)
    token_file = directory / "alert-receiver-token"
    token_file.write_text(token + "\n")  # a Secret written by hand often ends with a line end
    token_file.chmod(0o600)
    return ReceiverEnd(port=free_port(), token=token, token_file=token_file)


@contextmanager
def controller_with_receiver(
    *, control_plane: ControlPlane, namespace: str, log_file: Path, receiver: ReceiverEnd
) -> Iterator[RunningController]:
    """The real controller, watching `namespace`, with its Alertmanager receiver on; its log's end
    is printed when it stops (pytest shows it for a failed test)."""
    running = start_controller(
        kubeconfig=control_plane.kubeconfig,
        namespace=namespace,
        log_file=log_file,
        extra_args=receiver.controller_args(),
    )
    try:
        yield running
    finally:
        running.stop()
        print(running.log()[-5000:])


@dataclass(frozen=True, kw_only=True)
class Delivery:
    arrived: float
    """time.monotonic() when the call's first byte was read."""
    arrived_wall: float
    """time.time() at the same moment."""
    alerts: tuple[tuple[str, dict[str, str], str], ...]
    """(status, labels, startsAt) of each alert in the call."""
    answer: int
    """The controller's HTTP status."""


class WebhookTap:
    """An HTTP server that forwards every call to `upstream` (the controller's receiver) as it came,
    returns its answer, and notes each call's arrival in `deliveries`. Use as a context manager."""

    def __init__(self, *, upstream: str) -> None:
        self.upstream = upstream
        self.deliveries: list[Delivery] = []
        self._lock = threading.Lock()
        tap = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                arrived, arrived_wall = time.monotonic(), time.time()
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k: v for k, v in self.headers.items() if k.lower() in ("authorization", "content-type")}
                answer = httpx.post(tap.upstream, content=body, headers=headers, timeout=10.0)
                try:
                    payload = json.loads(body)
                    alerts = tuple((a["status"], dict(a["labels"]), a["startsAt"]) for a in payload.get("alerts", []))
                except (ValueError, KeyError, TypeError):
                    alerts = ()
                with tap._lock:
                    tap.deliveries.append(
                        Delivery(arrived=arrived, arrived_wall=arrived_wall, alerts=alerts, answer=answer.status_code)
                    )
                self.send_response(answer.status_code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}{WEBHOOK_PATH}"

    def first(self, *, status: str, label: str, value: str, after: float) -> Delivery | None:
        """The first call at or after `after` (monotonic) carrying an alert of `status` whose `label` is `value`."""
        with self._lock:
            found = list(self.deliveries)
        return next(
            (
                d
                for d in found
                if d.arrived >= after and any(s == status and labels.get(label) == value for s, labels, _ in d.alerts)
            ),
            None,
        )

    def __enter__(self) -> WebhookTap:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
