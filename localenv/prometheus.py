"""A real Prometheus on 127.0.0.1, and a loopback exporter it scrapes, for analysis tests.

`LocalPrometheus` runs the `prometheus` binary (Debian package `prometheus`; its systemd service
plays no part) with a generated config scraping the given targets every second (and any other
`ScrapeJob`, such as Envoy's `/stats/prometheus`) and a temporary data directory; given alerting
rules and Alertmanagers, it evaluates the rules and sends their alerts there. `stop()` and
`start()` again keep port and data, so a test can take Prometheus away mid-analysis and bring it
back. `ModelMetricsExporter` serves the model-metrics convention
(docs/model-metrics.md) from a `prometheus_client` registry whose values the test sets, so a test
can make a candidate look good or bad; `MetricsPlayer` moves them steadily from a thread, exactly
or with the noise of real traffic, and can restart a version's counters from 0 as a restarted model
server would.
"""

from __future__ import annotations

import math
import random
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import yaml
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

from localenv.readiness import stop_process, wait_until_answering

READY_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 10.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True, kw_only=True)
class ScrapeJob:
    """A scrape job of its own, for targets serving their metrics elsewhere than `/metrics`."""

    name: str
    """The job's name, which Prometheus adds to its series as `job`."""
    targets: tuple[str, ...]
    """host:port of each target."""
    metrics_path: str = "/metrics"
    """Where the targets serve their metrics (Envoy: /stats/prometheus)."""


class LocalPrometheus:
    """A Prometheus process on a free 127.0.0.1 port; use as a context manager."""

    def __init__(
        self,
        *,
        scrape_targets: Sequence[str],
        jobs: Sequence[ScrapeJob] = (),
        scrape_interval_seconds: float = 1.0,
        remote_write_receiver: bool = False,
        alerting_rules: Sequence[Mapping[str, Any]] = (),
        alertmanagers: Sequence[str] = (),
        binary: str = "prometheus",
    ) -> None:
        """`alerting_rules`: rules (each as a rule file writes it: alert, expr, for, labels,
        annotations) evaluated every scrape interval; `alertmanagers`: host:port of each
        Alertmanager the firing alerts are sent to."""
        found = shutil.which(binary)
        if found is None:
            raise FileNotFoundError(f"{binary} not found; install it with: apt-get install -y prometheus")
        self._binary = found
        self._jobs = (ScrapeJob(name="loopback", targets=tuple(scrape_targets)), *jobs)
        self._scrape_interval = f"{scrape_interval_seconds:g}s"
        self._remote_write_receiver = remote_write_receiver
        self._alerting_rules = [dict(rule) for rule in alerting_rules]
        self._alertmanagers = list(alertmanagers)
        self._workdir = Path(tempfile.mkdtemp(prefix="local-prometheus-"))
        self.port = free_port()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _write_config(self) -> Path:
        config = {
            "global": {"scrape_interval": self._scrape_interval, "evaluation_interval": self._scrape_interval},
            "scrape_configs": [
                {
                    "job_name": job.name,
                    "metrics_path": job.metrics_path,
                    "static_configs": [{"targets": list(job.targets)}],
                }
                for job in self._jobs
            ],
        }
        if self._alerting_rules:
            rules = self._workdir / "rules.yml"
            rules.write_text(yaml.safe_dump({"groups": [{"name": "alerts", "rules": self._alerting_rules}]}))
            config["rule_files"] = [str(rules)]
        if self._alertmanagers:
            config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": self._alertmanagers}]}]}
        path = self._workdir / "prometheus.yml"
        path.write_text(yaml.safe_dump(config))
        return path

    def start(self) -> None:
        """Start (or start again) and wait until Prometheus answers /-/ready."""
        if self._process is not None:
            return
        command = [
            self._binary,
            f"--config.file={self._write_config()}",
            f"--storage.tsdb.path={self._workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--log.level=warn",
        ]
        if self._remote_write_receiver:
            command.append("--web.enable-remote-write-receiver")
        log = (self._workdir / "prometheus.log").open("ab")
        # Own session: a test runner's Ctrl-C reaches us, and stop() ends exactly this process.
        self._process = subprocess.Popen(command, stdout=log, stderr=log, start_new_session=True)
        log.close()
        self._wait_ready()

    def _wait_ready(self) -> None:
        assert self._process is not None
        try:
            wait_until_answering(
                url=f"{self.url}/-/ready", process=self._process, what="prometheus",
                timeout_seconds=READY_TIMEOUT_SECONDS,
                log_tail=lambda: (self._workdir / "prometheus.log").read_text(errors="replace")[-2000:],
            )  # fmt: skip
        except (RuntimeError, TimeoutError):
            self.stop()
            raise

    def stop(self) -> None:
        """Stop the process (SIGTERM, then SIGKILL); data and port stay for a later start()."""
        if self._process is None:
            return
        stop_process(self._process, timeout_seconds=STOP_TIMEOUT_SECONDS)
        self._process = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self._workdir, ignore_errors=True)

    def query(self, promql: str) -> list[Any]:
        """The `result` of an instant query, for tests waiting on what Prometheus has seen."""
        response = httpx.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=5.0)
        response.raise_for_status()
        result: list[Any] = response.json()["data"]["result"]
        return result

    def alerts(self) -> list[dict[str, Any]]:
        """The alerts of the alerting rules, pending or firing (GET /api/v1/alerts): labels, state,
        activeAt (when the rule first held), value."""
        response = httpx.get(f"{self.url}/api/v1/alerts", timeout=5.0)
        response.raise_for_status()
        alerts: list[dict[str, Any]] = response.json()["data"]["alerts"]
        return alerts

    def wait_for_value(self, promql: str, *, at_least: float, timeout: float = 30.0) -> float:
        """Poll until `promql` gives one value of at least `at_least`; that value."""
        deadline = time.monotonic() + timeout
        while True:
            result = self.query(promql)
            if result and float(result[0]["value"][1]) >= at_least:
                return float(result[0]["value"][1])
            if time.monotonic() > deadline:
                raise TimeoutError(f"{promql} did not reach {at_least} within {timeout:g}s (last: {result})")
            time.sleep(0.2)

    def __enter__(self) -> LocalPrometheus:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class ModelMetricsExporter:
    """Serves the model-metrics convention on 127.0.0.1 from counters the test moves."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "model_requests", "Inference requests.", ["model", "version", "code"], registry=self.registry
        )
        self.errors = Counter(
            "model_request_errors", "Failed inference requests.", ["model", "version"], registry=self.registry
        )
        self.duration = Histogram(
            "model_request_duration_seconds",
            "Inference request latency.",
            ["model", "version"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=self.registry,
        )
        self.feedback = Counter(
            "model_feedback", "Labelled feedback received.", ["model", "version", "slice"], registry=self.registry
        )
        self.feedback_correct = Counter(
            "model_feedback_correct",
            "Labelled feedback that matched the prediction.",
            ["model", "version", "slice"],
            registry=self.registry,
        )
        self._slices: dict[tuple[str, str], set[str]] = {}
        """Slices labelled per (model, version), to forget them on restart()."""
        server, _thread = start_http_server(0, addr="127.0.0.1", registry=self.registry)
        self._server = server
        self.target = f"127.0.0.1:{server.server_port}"
        """host:port for a Prometheus scrape config."""

    def serve(
        self,
        *,
        model: str,
        version: str,
        requests: int,
        errors: int = 0,
        latency_seconds: float | Sequence[float] = 0.02,
    ) -> None:
        """Count `requests` answered requests, `errors` of them failed, each taking `latency_seconds`
        (or the given latency of each request).

        Every series is touched even when it does not grow, as a well-behaved model server
        initialises its counters: rate() cannot see the first value of a series that appears late.
        """
        self.requests.labels(model=model, version=version, code="200").inc(requests - errors)
        self.requests.labels(model=model, version=version, code="500").inc(errors)
        self.errors.labels(model=model, version=version).inc(errors)
        histogram = self.duration.labels(model=model, version=version)
        latencies = [latency_seconds] * requests if isinstance(latency_seconds, float | int) else latency_seconds
        for latency in latencies:
            histogram.observe(latency)

    def label(self, *, model: str, version: str, total: int, correct: int, slice: str = "all") -> None:
        """Count `total` labelled feedback events, `correct` of them matching the prediction."""
        self._slices.setdefault((model, version), set()).add(slice)
        self.feedback.labels(model=model, version=version, slice=slice).inc(total)
        self.feedback_correct.labels(model=model, version=version, slice=slice).inc(correct)

    def restart(self, *, model: str, version: str) -> None:
        """Forget every series of this model version, as a restarted model server does: its
        counters start again from 0 with the next serve() or label(), and Prometheus sees them drop
        (a counter reset)."""
        for code in ("200", "500"):
            self.requests.remove(model, version, code)
        self.errors.remove(model, version)
        self.duration.remove(model, version)
        for slice in self._slices.pop((model, version), set()):
            self.feedback.remove(model, version, slice)
            self.feedback_correct.remove(model, version, slice)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@dataclass(frozen=True, kw_only=True)
class Behaviour:
    """How one version looks to Prometheus while the player plays it."""

    error_rate: float = 0.0
    """Share of requests answered with an error."""
    latency_seconds: float = 0.02
    """Time every request takes."""
    accuracy: float = 0.95
    """Share of labelled feedback that matches the prediction."""
    slices: tuple[tuple[str, float], ...] = ()
    """Named data slices with their own accuracy, e.g. `(("borderline", 0.7),)`: each gets as much
    labelled feedback per tick as slice "all" (which keeps `accuracy`)."""
    noisy: bool = False
    """False: every tick counts exactly `round(n * rate)` errors and right answers, and every
    request takes `latency_seconds`. True: like real traffic, each request fails and each label
    matches at random with those chances (binomial counts), and latencies spread around
    `latency_seconds` (log-normal, sigma NOISY_LATENCY_SIGMA), drawn from the player's seeded
    generator."""


GOOD = Behaviour()
NOISY_LATENCY_SIGMA = 0.3
"""Log-normal spread of a noisy request's latency: the p99 is about twice the median."""


class MetricsPlayer:
    """Plays steady traffic of one model's versions on the exporter, from a thread, until stopped.

    Every tick counts REQUESTS_PER_TICK requests and FEEDBACK_PER_TICK feedback events per
    version (and per named slice), so a 10 s window holds hundreds of samples.
    """

    TICK_SECONDS = 0.2
    REQUESTS_PER_TICK = 10
    FEEDBACK_PER_TICK = 20

    def __init__(
        self,
        exporter: ModelMetricsExporter,
        *,
        model: str,
        versions: tuple[str, ...] = ("v1", "v2"),
        seed: int = 0,
    ) -> None:
        self.exporter = exporter
        self.model = model
        self._behaviours = dict.fromkeys(versions, GOOD)
        self._random = random.Random(seed)
        """Draws of noisy behaviours: the same seed plays the same counts, tick after tick."""
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self, *, candidate: Behaviour = GOOD) -> None:
        """Play a good v1 and `candidate` as v2, from the first tick on: every window holds only
        this behaviour."""
        self.play("v2", candidate)
        self._thread.start()

    def play(self, version: str, behaviour: Behaviour) -> None:
        with self._lock:
            self._behaviours[version] = behaviour

    def restart(self, version: str) -> None:
        """The version's model server restarts between two ticks: its counters start again from 0."""
        with self._lock:
            self.exporter.restart(model=self.model, version=version)

    def _count(self, trials: int, chance: float, *, noisy: bool) -> int:
        """How many of `trials` events happen: exactly the expected number, or a binomial draw."""
        if not noisy:
            return round(trials * chance)
        return sum(self._random.random() < chance for _ in range(trials))

    def _latencies(self, behaviour: Behaviour) -> float | list[float]:
        if not behaviour.noisy:
            return behaviour.latency_seconds
        spread = (math.exp(self._random.gauss(0.0, NOISY_LATENCY_SIGMA)) for _ in range(self.REQUESTS_PER_TICK))
        return [behaviour.latency_seconds * factor for factor in spread]

    def _run(self) -> None:
        while not self._stop.wait(self.TICK_SECONDS):
            # Held for the whole tick: a restart() falls between two ticks, never inside one.
            with self._lock:
                for version, behaviour in self._behaviours.items():
                    self._tick(version, behaviour)

    def _tick(self, version: str, behaviour: Behaviour) -> None:
        noisy = behaviour.noisy
        self.exporter.serve(
            model=self.model,
            version=version,
            requests=self.REQUESTS_PER_TICK,
            errors=self._count(self.REQUESTS_PER_TICK, behaviour.error_rate, noisy=noisy),
            latency_seconds=self._latencies(behaviour),
        )
        for slice, accuracy in (("all", behaviour.accuracy), *behaviour.slices):
            self.exporter.label(
                model=self.model,
                version=version,
                total=self.FEEDBACK_PER_TICK,
                correct=self._count(self.FEEDBACK_PER_TICK, accuracy, noisy=noisy),
                slice=slice,
            )

    def wait_until_seen(self, prometheus: LocalPrometheus, *, window: str) -> None:
        """Until Prometheus' `window` holds enough requests and feedback of every version to judge."""
        for version in self._behaviours:
            for counter in ("model_requests_total", "model_feedback_total"):
                selector = f'{counter}{{model="{self.model}",version="{version}"}}'
                prometheus.wait_for_value(f"sum(increase({selector}[{window}]))", at_least=100)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
