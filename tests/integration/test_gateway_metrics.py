"""The gateway presets end to end: a rollout judged on the gateway's own metrics alone.

Contour + Envoy (localenv/gateway.py) split real requests between two loopback servers that
export no metrics at all: they only answer (or fail, or take their time). A real Prometheus
scrapes nothing but Envoy's `/stats/prometheus`, and the real controller, analysing with only
`gateway-error-rate` and `gateway-latency-p99`, moves a real HTTPRoute on a real API server. So
whatever it decides, it decided from what Envoy saw of each version's cluster
(`<namespace>_<service>_<port>`), the way any model server would be judged behind the gateway.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from kubernetes import client

from localenv.controller import RunningController
from localenv.controlplane import ControlPlane
from localenv.gateway import LocalGateway, expose_loopback_server
from localenv.prometheus import LocalPrometheus
from tests.integration.rollout_world import (
    JSON,
    MODEL,
    PORT,
    WeightRecorder,
    World,
    rollout_manifest,
    service_name,
    wait_for,
)

pytestmark = pytest.mark.integration

VERSIONS = ("v1", "v2")
CLIENTS = 4
"""Threads sending requests through Envoy back to back: a slow candidate slows only its own share."""
METRICS: list[JSON] = [
    {"name": "gateway-errors", "preset": "gateway-error-rate"},
    {"name": "gateway-p99", "preset": "gateway-latency-p99"},
]


@dataclass(frozen=True, kw_only=True)
class Behaviour:
    """How a version's server answers."""

    fail_every: int = 0
    """Every n-th request is answered 500 (0: none)."""
    delay_seconds: float = 0.0
    """Time each answer takes."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: Envoy reuses its upstream connections
    disable_nagle_algorithm = True  # no delayed-ACK wait between headers and body

    def do_GET(self) -> None:
        server: ModelServer = self.server.owner  # type: ignore[attr-defined]
        code = server.answer()
        body = server.version.encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: thousands of requests per test."""


class ModelServer:
    """A model server that exports no metrics: it answers every GET with its version name."""

    def __init__(self, version: str, behaviour: Behaviour) -> None:
        self.version = version
        self.behaviour = behaviour
        self._requests = 0
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.daemon_threads = True
        self.server.owner = self  # type: ignore[attr-defined]
        self.port: int = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def answer(self) -> int:
        """The status code of the next answer, after the behaviour's delay."""
        with self._lock:
            self._requests += 1
            count = self._requests
        time.sleep(self.behaviour.delay_seconds)
        fail = self.behaviour.fail_every and count % self.behaviour.fail_every == 0
        return 500 if fail else 200

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Traffic:
    """CLIENTS threads asking the route through Envoy until stopped; counts (version, code)."""

    def __init__(self, *, url: str, host: str) -> None:
        self.answers: Counter[tuple[str, int]] = Counter()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(url, host), daemon=True) for _ in range(CLIENTS)]
        for thread in self._threads:
            thread.start()

    def _run(self, url: str, host: str) -> None:
        with httpx.Client(base_url=url, headers={"Host": host}, timeout=5.0) as http:
            while not self._stop.is_set():
                with contextlib.suppress(httpx.HTTPError):
                    response = http.get("/predict")
                    with self._lock:
                        self.answers[(response.text, response.status_code)] += 1
                time.sleep(0.005)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)


@pytest.fixture(scope="module")
def gateway(control_plane: ControlPlane) -> Iterator[LocalGateway]:
    """Contour + Envoy serving one Gateway for this module's tests."""
    with LocalGateway.start(control_plane.kubeconfig, kubectl=control_plane.bin_dir / "kubectl") as running:
        yield running


@pytest.fixture(scope="module")
def prometheus(gateway: LocalGateway) -> Iterator[LocalPrometheus]:
    """A real Prometheus scraping Envoy's stats, and nothing else, every second (overrides the
    conftest's, which scrapes the model-metrics exporter, so `analysis_controller` reads this one)."""
    with LocalPrometheus(scrape_targets=[], jobs=[gateway.scrape_job()]) as server:
        yield server


@dataclass
class Served:
    """v1 and v2 behind the gateway, an HTTPRoute `iris` between them, and traffic through it."""

    world: World
    prometheus: LocalPrometheus
    traffic: Traffic

    def cluster(self, version: str) -> str:
        """The version's cluster in Envoy's stats, as Contour names it."""
        return f"{self.world.namespace}_{service_name(version)}_{PORT}"


@contextmanager
def served(
    world: World, gateway: LocalGateway, prometheus: LocalPrometheus, kube_api: client.ApiClient, candidate: Behaviour
) -> Iterator[Served]:
    """A good v1 and `candidate` as v2, traffic all on v1 until the rollout moves it, and Prometheus
    holding enough of v1's answers to set the slow-request bound from."""
    servers = {"v1": ModelServer("v1", Behaviour()), "v2": ModelServer("v2", candidate)}
    host = f"{world.namespace}.gateway-metrics.test"
    traffic: Traffic | None = None
    custom = client.CustomObjectsApi(kube_api)
    try:
        for version, server in servers.items():
            expose_loopback_server(
                kube_api, namespace=world.namespace, service=service_name(version), port=server.port, service_port=PORT
            )
        route = {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": {"name": MODEL, "namespace": world.namespace},
            "spec": {
                "parentRefs": [gateway.parent_ref()],
                # A host of its own: routes of other tests on the same Gateway never compete.
                "hostnames": [host],
                "rules": [
                    {
                        "backendRefs": [
                            {"name": service_name("v1"), "port": PORT, "weight": 100},
                            {"name": service_name("v2"), "port": PORT, "weight": 0},
                        ]
                    }
                ],
            },
        }
        custom.create_namespaced_custom_object("gateway.networking.k8s.io", "v1", world.namespace, "httproutes", route)
        wait_for(lambda: _answers_v1(gateway.url, host), what="Envoy serving the route from v1", last=gateway.log_tail)
        traffic = Traffic(url=gateway.url, host=host)
        setup = Served(world=world, prometheus=prometheus, traffic=traffic)
        prometheus.wait_for_value(
            f'envoy_cluster_upstream_rq_completed{{envoy_cluster_name="{setup.cluster("v1")}"}}', at_least=500
        )
        yield setup
    finally:
        if traffic is not None:
            traffic.stop()
            print(f"answers through Envoy (version, code): {dict(traffic.answers)}")
        # The namespace only turns Terminating (no namespace controller): take the route off the Gateway.
        with contextlib.suppress(client.ApiException):
            custom.delete_namespaced_custom_object(
                "gateway.networking.k8s.io", "v1", world.namespace, "httproutes", MODEL
            )
        for server in servers.values():
            server.close()


def _answers_v1(url: str, host: str) -> bool:
    try:
        response = httpx.get(f"{url}/predict", headers={"Host": host}, timeout=1.0)
    except httpx.HTTPError:
        return False
    return response.status_code == 200 and response.text == "v1"


def gateway_rollout(*, steps: list[JSON]) -> JSON:
    """Rollout `iris` of v2 against v1, analysed every 2 s with the gateway presets only."""
    return rollout_manifest(
        versions=[{"version": v, "backend": {"service": service_name(v), "port": PORT}} for v in VERSIONS],
        steps=steps,
        analysis={"interval": "2s", "metrics": METRICS},
    )


def measurements_of(status: JSON, metric: str) -> list[JSON]:
    return [m for m in (status.get("analysis") or {}).get("measurements", []) if m["metric"] == metric]


@pytest.fixture
def bare_world(control_plane: ControlPlane, kube_api: client.ApiClient, namespace: str) -> World:
    """The test's namespace, with nothing in it yet (the Services are made per test)."""
    return World(plane=control_plane, api=kube_api, namespace=namespace)


def test_a_good_candidate_passes_its_analysis_on_gateway_metrics_alone(
    bare_world: World,
    gateway: LocalGateway,
    prometheus: LocalPrometheus,
    kube_api: client.ApiClient,
    analysis_controller: RunningController,
) -> None:
    # Given v2 answering like v1 behind Envoy, and Prometheus scraping only Envoy
    with served(bare_world, gateway, prometheus, kube_api, Behaviour()) as setup:
        assert prometheus.query('count({__name__=~"model_.*"})') == [], "no model metric may reach Prometheus"
        recorder = WeightRecorder(bare_world)

        # When a rollout sends v2 half the traffic and analyses it with the gateway presets for 10 s
        bare_world.apply(gateway_rollout(steps=[{"setWeight": 50}, {"analyze": {"duration": "10s"}}]))
        status = bare_world.wait_for_phase("Promoted", timeout=60)

        # Then v2 is promoted, both gateway metrics measured for both versions and passing
        assert recorder.candidate_weights() == [0, 50, 100]
        assert status["analysis"]["verdict"] == "Successful"
        for metric in ("gateway-errors", "gateway-p99"):
            measured = measurements_of(status, metric)
            assert measured and measured[-1]["verdict"] == "Successful", (metric, measured)
            assert (measured[-1]["baselineVersion"], measured[-1]["candidateVersion"]) == ("v1", "v2")
        errors = measurements_of(status, "gateway-errors")[-1]
        assert errors["candidateValue"] == 0 and errors["baselineValue"] == 0
        [latency] = [e for e in status["analysis"]["evidence"] if e["metric"] == "gateway-p99"]
        # Envoy's milliseconds are read as seconds: a loopback answer's p99 bucket is a few ms
        assert 0 < latency["thresholdSeconds"] <= 0.1, latency
        # and v2 really served its share through Envoy meanwhile
        assert setup.traffic.answers[("v2", 200)] > 100


REGRESSIONS = [
    pytest.param(
        Behaviour(fail_every=5),
        "gateway-errors",
        # Every fifth request fails; the look may fall between a request and its failure.
        [r"candidate v2 (19|20|21)(\.\d)?% of ", "vs baseline v1 0% of ", "beyond tolerance 0%"],
        id="errors",
    ),
    pytest.param(
        Behaviour(delay_seconds=0.12),
        "gateway-p99",
        [r"candidate v2 100% of ", r"share slower than 0\.\d+s \(the baseline's p99\)", "beyond tolerance 20%"],
        id="latency",
    ),
]


@pytest.mark.parametrize(("candidate", "failing", "why"), REGRESSIONS)
def test_a_worse_candidate_is_rolled_back_on_gateway_metrics_alone(
    bare_world: World,
    gateway: LocalGateway,
    prometheus: LocalPrometheus,
    kube_api: client.ApiClient,
    analysis_controller: RunningController,
    candidate: Behaviour,
    failing: str,
    why: list[str],
) -> None:
    """`why`: patterns the rollout's message must hold."""
    # Given v2 failing every fifth request, or answering 120 ms late, behind Envoy; no model metrics
    with served(bare_world, gateway, prometheus, kube_api, candidate) as setup:
        assert prometheus.query('count({__name__=~"model_.*"})') == [], "no model metric may reach Prometheus"
        recorder = WeightRecorder(bare_world)

        # When a rollout sends v2 half the traffic in a long analyze step with the gateway presets
        bare_world.apply(
            gateway_rollout(steps=[{"setWeight": 50}, {"analyze": {"duration": "5m"}}, {"setWeight": 100}])
        )
        began = time.monotonic()
        status = bare_world.wait_for_phase("RolledBack", timeout=60)
        print(f"rolled back {time.monotonic() - began:.1f}s after the rollout was applied: {status['message']}")

        # Then all traffic went back to v1, long before the step's end, naming the gateway metric
        assert recorder.candidate_weights() == [0, 50, 0]
        assert bare_world.route_weights() == {"v1": 100, "v2": 0}
        message = status["message"]
        assert message.startswith(f"{failing} failed 1 time(s), more than failureLimit 0: look "), message
        assert all(re.search(part, message) for part in why), message
        # and what Envoy saw of v2 is what the rollout was judged on
        seen = setup.prometheus.query(
            f'envoy_cluster_upstream_rq_completed{{envoy_cluster_name="{setup.cluster("v2")}"}}'
        )
        assert seen and float(seen[0]["value"][1]) > 0
