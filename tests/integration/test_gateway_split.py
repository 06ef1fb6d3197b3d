"""A real Gateway API implementation serves the split our router writes, and follows changes fast.

Contour + Envoy (localenv/gateway.py) run on 127.0.0.1 in front of two loopback HTTP servers that
answer with their version name, reached through Services whose EndpointSlices point at them. The
HTTPRoute's weights are written by the controller's own `GatewayAPIRouter.write_weights`, exactly
as a rollout step writes them; the test then counts which server answered each request.

Sampling error: Envoy picks a weighted cluster at random per request, so with the candidate at
p %, the number of its answers among N requests is Binomial(N, p). N = 2000 per split and the
tolerance is 4.5 standard deviations, sqrt(N p (1 - p)): +-60 answers (7.0-13.0 %) at 10 %, +-101
(45.0-55.0 %) at 50 %; a correct gateway fails one check with a probability of about 1e-5. At 0 %
and 100 % there is no sampling error: every answer must come from the one version.
"""

from __future__ import annotations

import contextlib
import json
import math
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast

import httpx
import pytest
from kubernetes import client

from controller.api import ModelRolloutSpec, parse_spec
from controller.kube import Kube
from controller.routers.gatewayapi import GatewayAPIRouter
from localenv.controlplane import ControlPlane
from localenv.gateway import LocalGateway, expose_loopback_server

pytestmark = pytest.mark.integration

MODEL = "iris"
VERSIONS = ("v1", "v2")
SERVICE_PORT = 8080
ROUTE = "iris"
OWNER = "split-test"
"""The ModelRollout name the router records as the route's owner (no rollout object is needed)."""
REQUESTS_PER_SPLIT = 2000
TOLERANCE_SIGMAS = 4.5
CHANGE_DEADLINE_SECONDS = 1.0
FLIPS = 6
"""Weight changes timed in the latency test, alternating all-v1 and all-v2."""
STABLE_REQUESTS_AFTER_FLIP = 200
"""Requests after a change's first new answer that must all come from the new version."""


class _VersionHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: Envoy reuses its upstream connections
    # Headers and body go out in two writes; with Nagle's algorithm the second waits for Envoy's
    # delayed ACK, 40 ms per request.
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        body = self.server.version.encode()  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: thousands of requests per test."""


class VersionServer:
    """An HTTP server on 127.0.0.1 answering every GET with its version name."""

    def __init__(self, version: str) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _VersionHandler)
        self.server.daemon_threads = True
        self.server.version = version  # type: ignore[attr-defined]
        self.port: int = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _tolerance(requests: int, share: float) -> float:
    return TOLERANCE_SIGMAS * math.sqrt(requests * share * (1 - share))


@dataclass
class Split:
    """Two versions behind the gateway, an HTTPRoute between them, and a client of the gateway."""

    gateway: LocalGateway
    namespace: str
    router: GatewayAPIRouter
    spec: ModelRolloutSpec
    http: httpx.Client

    def write(self, v2_percent: int) -> None:
        """Writes the weights through the controller's router, as a rollout step does."""
        weights = {"v1": 100 - v2_percent, "v2": v2_percent}
        written = self.router.write_weights(namespace=self.namespace, spec=self.spec, weights=weights, owner=OWNER)
        assert written == weights

    def ask(self) -> str:
        response = self.http.get("/predict")
        assert response.status_code == 200, f"{response.status_code}: {response.text}"
        return response.text

    def sample(self, requests: int) -> Counter[str]:
        return Counter(self.ask() for _ in range(requests))

    def envoy_v2_share(self) -> float | None:
        """v2's share of this test's route's weights in Envoy's running configuration (None: no
        route), read from the virtual host of the route's own hostname."""
        dump = json.loads(self.gateway.envoy_admin("/config_dump?resource=dynamic_route_configs"))
        weights = {version: 0 for version in VERSIONS}
        found = False
        for config in dump.get("configs", []):
            for host in config.get("route_config", {}).get("virtual_hosts", []):
                if not any(domain.startswith(_hostname(self.namespace)) for domain in host.get("domains", [])):
                    continue  # another test's route on the same Gateway
                for route in host.get("routes", []):
                    action = route.get("route", {})
                    clusters = action.get("weighted_clusters", {}).get("clusters") or (
                        [{"name": action["cluster"], "weight": 1}] if "cluster" in action else []
                    )
                    for cluster in clusters:
                        for version in VERSIONS:
                            if f"/{MODEL}-{version}/" in cluster["name"]:
                                weights[version] += int(cluster.get("weight", 0))
                                found = True
        total = sum(weights.values())
        return weights["v2"] / total if found and total else None

    def wait_until_envoy_has(self, v2_percent: int, *, timeout: float = 10.0) -> float:
        """Seconds until Envoy's configuration carries the split."""
        began = time.monotonic()
        while (share := self.envoy_v2_share()) is None or not math.isclose(share, v2_percent / 100):
            if time.monotonic() - began > timeout:
                raise AssertionError(f"Envoy still has v2 at {share} after {timeout}s, not {v2_percent} %")
            time.sleep(0.01)
        return time.monotonic() - began


@pytest.fixture(scope="module")
def gateway(control_plane: ControlPlane) -> Iterator[LocalGateway]:
    """Contour + Envoy serving one Gateway for this module's tests."""
    with LocalGateway.start(control_plane.kubeconfig, kubectl=control_plane.bin_dir / "kubectl") as running:
        print(f"gateway ready in {running.startup_seconds:.2f}s (Envoy {running.envoy_startup_seconds:.2f}s)")
        yield running


@pytest.fixture
def split(gateway: LocalGateway, kube_api: client.ApiClient, namespace: str) -> Iterator[Split]:
    """v1 and v2 servers behind Services, an HTTPRoute on the gateway sending everything to v1."""
    servers = {version: VersionServer(version) for version in VERSIONS}
    try:
        for version, server in servers.items():
            expose_loopback_server(
                kube_api, namespace=namespace, service=f"{MODEL}-{version}", port=server.port, service_port=SERVICE_PORT
            )
        route = {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": {"name": ROUTE, "namespace": namespace},
            "spec": {
                "parentRefs": [gateway.parent_ref()],
                # A host of its own: routes of other tests on the same Gateway never compete.
                "hostnames": [_hostname(namespace)],
                "rules": [
                    {
                        "backendRefs": [
                            {"name": f"{MODEL}-v1", "port": SERVICE_PORT, "weight": 100},
                            {"name": f"{MODEL}-v2", "port": SERVICE_PORT, "weight": 0},
                        ]
                    }
                ],
            },
        }
        custom = client.CustomObjectsApi(kube_api)
        custom.create_namespaced_custom_object("gateway.networking.k8s.io", "v1", namespace, "httproutes", route)
        spec = parse_spec(
            {
                "model": MODEL,
                "versions": [
                    {"version": v, "backend": {"service": f"{MODEL}-{v}", "port": SERVICE_PORT}} for v in VERSIONS
                ],
                "baseline": "v1",
                "candidate": "v2",
                "trafficRouting": {"gatewayAPI": {"httpRoute": ROUTE}},
                "steps": [{"setWeight": 10}, {"setWeight": 50}],
            }
        )
        with httpx.Client(base_url=gateway.url, headers={"Host": _hostname(namespace)}, timeout=5.0) as http:
            world = Split(
                gateway=gateway, namespace=namespace, router=GatewayAPIRouter(Kube(api_client=kube_api)), spec=spec,
                http=http,
            )  # fmt: skip
            _wait_until_route_serves(world, custom)
            yield world
    finally:
        # The namespace only turns Terminating (no namespace controller): remove the route from
        # the Gateway explicitly.
        with contextlib.suppress(client.ApiException):
            client.CustomObjectsApi(kube_api).delete_namespaced_custom_object(
                "gateway.networking.k8s.io", "v1", namespace, "httproutes", ROUTE
            )
        for server in servers.values():
            server.close()


def _hostname(namespace: str) -> str:
    return f"{namespace}.split.test"


def _wait_until_route_serves(world: Split, custom: client.CustomObjectsApi, *, timeout: float = 30.0) -> None:
    """Until Contour accepted the route with its references resolved and Envoy answers from v1."""
    deadline = time.monotonic() + timeout
    conditions: dict[str, str] = {}
    while time.monotonic() < deadline:
        route: dict[str, Any] = cast(
            dict[str, Any],
            custom.get_namespaced_custom_object(
                "gateway.networking.k8s.io", "v1", world.namespace, "httproutes", ROUTE
            ),
        )
        parents = route.get("status", {}).get("parents", [])
        conditions = {c["type"]: c["status"] for p in parents for c in p.get("conditions", [])}
        if conditions.get("Accepted") == "True" and conditions.get("ResolvedRefs") == "True":
            response = world.http.get("/predict")
            if response.status_code == 200 and response.text == "v1":
                return
        time.sleep(0.1)
    raise AssertionError(f"route not served within {timeout}s; conditions {conditions}\n{world.gateway.log_tail()}")


def test_served_split_matches_written_weights(split: Split) -> None:
    for v2_percent in (0, 10, 50, 100):
        split.write(v2_percent)
        programmed = split.wait_until_envoy_has(v2_percent)
        counts = split.sample(REQUESTS_PER_SPLIT)
        share = v2_percent / 100
        expected = REQUESTS_PER_SPLIT * share
        tolerance = _tolerance(REQUESTS_PER_SPLIT, share)
        print(
            f"v2 at {v2_percent:3d} %: v1 {counts['v1']:4d}, v2 {counts['v2']:4d} of {REQUESTS_PER_SPLIT} "
            f"(expected {expected:.0f} +- {tolerance:.0f}); in Envoy {programmed:.3f}s after the write"
        )
        assert set(counts) <= set(VERSIONS), counts
        assert abs(counts["v2"] - expected) <= tolerance, (v2_percent, counts)


def test_weight_change_takes_effect_within_one_second(split: Split) -> None:
    """From the start of the write until the first answer from the newly weighted version, with
    requests sent back to back; afterwards the old version must not answer again."""
    latencies: list[float] = []
    for flip in range(FLIPS):
        target = "v2" if flip % 2 == 0 else "v1"
        began = time.monotonic()
        split.write(100 if target == "v2" else 0)
        while (answer := split.ask()) != target:
            assert time.monotonic() - began < 10 * CHANGE_DEADLINE_SECONDS, f"{target} never answered"
        latencies.append(time.monotonic() - began)
        after = split.sample(STABLE_REQUESTS_AFTER_FLIP)
        assert after == Counter({target: STABLE_REQUESTS_AFTER_FLIP}), (answer, after)
    print("weight change to first answer of the new version: " + ", ".join(f"{s * 1000:.0f} ms" for s in latencies))
    assert max(latencies) < CHANGE_DEADLINE_SECONDS, latencies
