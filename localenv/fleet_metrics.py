"""The model-metrics convention for a whole fleet at once: many (namespace, model, version) on one
loopback exporter, cheap enough for Prometheus to scrape thousands of models every few seconds.

`ModelMetricsExporter` (localenv/prometheus.py) keeps one `prometheus_client` child per series
and is moved by a thread per model; at thousands of models that costs more than the controller
being measured. Here every version of every model serves the same steady, healthy traffic, and
each counter is computed at scrape time from the time since the exporter started:

* `model_requests_total{namespace,model,version,code}`: `requests_per_second` per version,
  `error_rate` of them with code 500;
* `model_request_errors_total{namespace,model,version}`: those errors;
* `model_request_duration_seconds_{bucket,sum,count}{namespace,model,version}`: the requests
  spread over the buckets in the fixed shares of `LATENCY_SHARES`.

Counts are whole numbers that never go down, so `increase()` sees a counter. Baseline and
candidate look alike: analysis of any rollout over these series passes. The series of every
model exist from `add()` on, as a well-behaved model server initialises its counters.

    exporter = FleetMetricsExporter()
    exporter.add(namespace="bench", model="model-0", versions=("v1", "v2"))
    with LocalPrometheus(scrape_targets=[exporter.target], scrape_interval_seconds=5) as prometheus: ...
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType

LATENCY_SHARES: tuple[tuple[str, float], ...] = (
    ("0.01", 0.50),
    ("0.025", 0.90),
    ("0.05", 0.99),
    ("0.1", 0.999),
    ("0.25", 1.0),
    ("0.5", 1.0),
    ("1", 1.0),
    ("+Inf", 1.0),
)
"""Histogram bucket (`le`) and the share of requests at or below it, cumulative."""
MEAN_LATENCY_SECONDS = 0.012


class FleetMetricsExporter:
    """Serves the model-metrics convention for every added (namespace, model, version) on 127.0.0.1."""

    def __init__(self, *, requests_per_second: float = 50.0, error_rate: float = 0.001) -> None:
        self.requests_per_second = requests_per_second
        self.error_rate = error_rate
        self._started = time.monotonic()
        self._labels: list[str] = []
        """`namespace="..",model="..",version=".."` of each series, in the order added."""
        self._lock = threading.Lock()
        self.scrapes = 0
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="fleet-metrics", daemon=True).start()
        self.target = f"127.0.0.1:{self._server.server_address[1]}"
        """host:port for a Prometheus scrape config."""

    def add(self, *, namespace: str, model: str, versions: Iterable[str] = ("v1", "v2")) -> None:
        with self._lock:
            self._labels.extend(f'namespace="{namespace}",model="{model}",version="{v}"' for v in versions)

    @property
    def series(self) -> int:
        """Series served per scrape."""
        with self._lock:
            return len(self._labels) * (3 + len(LATENCY_SHARES) + 2)

    def render(self) -> bytes:
        """The exposition text as of now."""
        elapsed = time.monotonic() - self._started
        requests = math.floor(self.requests_per_second * elapsed)
        errors = math.floor(requests * self.error_rate)
        with self._lock:
            labels = list(self._labels)
        parts: list[str] = []

        def family(name: str, kind: str, lines: Iterable[str]) -> None:
            parts.append(f"# TYPE {name} {kind}\n")
            parts.extend(lines)

        family(
            "model_requests_total",
            "counter",
            (f'model_requests_total{{{lab},code="{code}"}} {value}\n' for lab in labels
             for code, value in (("200", requests - errors), ("500", errors))),
        )  # fmt: skip
        family(
            "model_request_errors_total",
            "counter",
            (f"model_request_errors_total{{{lab}}} {errors}\n" for lab in labels),
        )
        buckets = [(le, math.floor(requests * share)) for le, share in LATENCY_SHARES]
        total_seconds = f"{requests * MEAN_LATENCY_SECONDS:.3f}"
        family(
            "model_request_duration_seconds",
            "histogram",
            (line for lab in labels for line in (
                *(f'model_request_duration_seconds_bucket{{{lab},le="{le}"}} {count}\n' for le, count in buckets),
                f"model_request_duration_seconds_sum{{{lab}}} {total_seconds}\n",
                f"model_request_duration_seconds_count{{{lab}}} {requests}\n",
            )),
        )  # fmt: skip
        return "".join(parts).encode()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FleetMetricsExporter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                body = exporter.render()
                exporter.scrapes += 1
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler
