"""A real proxy on 127.0.0.1 that splits traffic by the weights of an HTTPRoute: the sandbox's
stand-in for a Gateway API implementation.

In a cluster, a Gateway API implementation (Envoy Gateway, Istio, NGINX Gateway Fabric, ...)
watches HTTPRoutes and programs its data plane; the controller only ever writes the route. The
sandbox has no such implementation and its model servers are loopback processes, not Pods, so:

- `NginxProxy` runs nginx (Debian package `nginx-light`) with one weighted `upstream` per route
  rule; nginx's weighted random balancing sends each backend its share of requests.
- `RouteSync` is the sandbox-only loop that plays the implementation's controller: it polls the
  HTTPRoute and the Services it names, renders the nginx configuration and reloads nginx
  (SIGHUP: old workers finish their requests) whenever the configuration changes.
- A Service is mapped to the loopback server of its version by the annotation
  `sandbox.mlops.dev/loopback-address: 127.0.0.1:PORT`, which the sandbox sets.

Only what the sandbox needs of the Gateway API is honoured: PathPrefix and Exact path matches and
backendRef weights. A weight of 0 leaves the backend out (nginx refuses weight=0); a rule whose
weights are all 0 answers 503. A backendRef whose Service has no loopback address is left out
and logged (a real implementation would answer 500 for its share).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import tempfile
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from localenv.controlplane import free_local_port
from localenv.readiness import wait_until_answering

LOG = logging.getLogger(__name__)

LOOPBACK_ADDRESS_ANNOTATION = "sandbox.mlops.dev/loopback-address"
"""On a Service: host:port of the loopback model server that stands for its Pods."""
GATEWAY_GROUP, GATEWAY_VERSION, HTTPROUTE_PLURAL = "gateway.networking.k8s.io", "v1", "httproutes"
READY_TIMEOUT_SECONDS = 15.0
STOP_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True, kw_only=True)
class WeightedBackend:
    """One upstream server of a rule."""

    address: str
    """host:port on 127.0.0.1."""
    weight: int
    """Relative share of the rule's requests, 1 or more."""


@dataclass(frozen=True, kw_only=True)
class PathMatch:
    """Which request paths a rule takes."""

    kind: str
    """"PathPrefix" or "Exact", as in the Gateway API."""
    value: str
    """The path, e.g. /v2/models/breast-cancer."""


@dataclass(frozen=True, kw_only=True)
class ProxyRule:
    """One HTTPRoute rule as the proxy serves it."""

    name: str
    """The rule's name, or rule-INDEX when it has none; names the nginx upstream."""
    matches: tuple[PathMatch, ...]
    """Paths the rule takes; empty means every path."""
    backends: tuple[WeightedBackend, ...]
    """Servers with a weight above 0; empty means the rule answers 503."""


def rules_from_httproute(route: Mapping[str, Any], *, addresses: Mapping[str, str]) -> tuple[ProxyRule, ...]:
    """The proxy rules of an HTTPRoute object; `addresses` maps Service name to loopback host:port."""
    rules = []
    for index, rule in enumerate(route.get("spec", {}).get("rules", [])):
        backends = []
        for ref in rule.get("backendRefs", []):
            weight = int(ref.get("weight", 1))
            address = addresses.get(ref["name"])
            if address is None:
                LOG.warning("backendRef %s has no %s: left out", ref["name"], LOOPBACK_ADDRESS_ANNOTATION)
            elif weight > 0:
                backends.append(WeightedBackend(address=address, weight=weight))
        matches = tuple(
            PathMatch(kind=match["path"].get("type", "PathPrefix"), value=match["path"].get("value", "/"))
            for match in rule.get("matches", [])
            if "path" in match
        )
        rules.append(ProxyRule(name=rule.get("name") or f"rule-{index}", matches=matches, backends=tuple(backends)))
    return tuple(rules)


def _location(match: PathMatch | None) -> str:
    if match is None:
        return "location /"
    # `^~`: a prefix location that wins over regular-expression locations, like PathPrefix.
    return f"location = {match.value}" if match.kind == "Exact" else f"location ^~ {match.value}"


def render_nginx_config(*, rules: Sequence[ProxyRule], listen_port: int, work_dir: Path) -> str:
    """The whole nginx.conf: one upstream per rule with backends, one location per path match."""
    upstreams: list[str] = []
    locations: list[str] = []
    for rule in rules:
        upstream = f"rule_{''.join(c if c.isalnum() else '_' for c in rule.name)}"
        if rule.backends:
            servers = "".join(f"    server {b.address} weight={b.weight};\n" for b in rule.backends)
            # random, not round-robin: a client that alternates two kinds of request (inference,
            # then feedback) would otherwise meet the round-robin's period and skew the shares.
            upstreams.append(f"  upstream {upstream} {{\n    random;\n{servers}    keepalive 16;\n  }}\n")
            body = (
                f"      proxy_pass http://{upstream};\n"
                "      proxy_http_version 1.1;\n"
                '      proxy_set_header Connection "";\n'
            )
        else:
            body = "      return 503;\n"
        locations.extend(f"    {_location(match)} {{\n{body}    }}\n" for match in rule.matches or (None,))
    temp = work_dir / "temp"
    return (
        "daemon off;\n"
        "worker_processes 1;\n"
        f"pid {work_dir / 'nginx.pid'};\n"
        f"error_log {work_dir / 'error.log'} warn;\n"
        "events { worker_connections 1024; }\n"
        "http {\n"
        "  access_log off;\n"
        "  client_body_buffer_size 1m;\n"
        + "".join(
            f"  {kind}_temp_path {temp / kind};\n" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        + "".join(upstreams)
        + f"  server {{\n    listen 127.0.0.1:{listen_port};\n"
        + "".join(locations)
        + "    location = /-/healthy { return 200 'ok'; }\n"
        + "  }\n}\n"
    )


class NginxProxy:
    """An nginx process on a free 127.0.0.1 port serving `ProxyRule`s; `apply` reloads it."""

    def __init__(self, *, binary: str = "nginx") -> None:
        # /usr/sbin is not on every user's PATH.
        found = shutil.which(binary) or shutil.which(binary, path="/usr/sbin:/sbin")
        if found is None:
            raise FileNotFoundError(f"{binary} not found; install it with: apt-get install -y nginx-light")
        self._binary = found
        self._work_dir = Path(tempfile.mkdtemp(prefix="sandbox-nginx-"))
        self._config_file = self._work_dir / "nginx.conf"
        self.port = free_local_port()
        self.reloads = 0
        """How many times the configuration changed since start (for logs and tests)."""
        self._process: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def config_file(self) -> Path:
        return self._config_file

    def start(self, rules: Sequence[ProxyRule] = ()) -> None:
        """Writes the configuration, starts nginx and waits until it answers."""
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (self._work_dir / "temp" / kind).mkdir(parents=True, exist_ok=True)
        self._config_file.write_text(self._render(rules))
        log = (self._work_dir / "nginx.out").open("ab")
        # -e: the error log before the configuration is read (the packaged default is /var/log).
        self._process = subprocess.Popen(
            [
                self._binary,
                "-c",
                str(self._config_file),
                "-p",
                str(self._work_dir),
                "-e",
                str(self._work_dir / "error.log"),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        try:
            wait_until_answering(
                url=f"{self.url}/-/healthy", process=self._process, what="nginx",
                timeout_seconds=READY_TIMEOUT_SECONDS, log_tail=self.log_tail,
            )  # fmt: skip
        except (RuntimeError, TimeoutError):
            self.stop()
            raise

    def _render(self, rules: Sequence[ProxyRule]) -> str:
        return render_nginx_config(rules=rules, listen_port=self.port, work_dir=self._work_dir)

    def apply(self, rules: Sequence[ProxyRule]) -> bool:
        """Serves `rules` from now on; True if that changed the configuration (nginx reloaded)."""
        config = self._render(rules)
        with self._lock:
            if self._process is None or config == self._config_file.read_text():
                return False
            self._config_file.write_text(config)
            # SIGHUP: the master re-reads the file, starts new workers, old ones drain and exit.
            os.kill(self._process.pid, signal.SIGHUP)
            self.reloads += 1
            return True

    def log_tail(self, *, characters: int = 2000) -> str:
        texts = [p.read_text(errors="replace") for p in (self._work_dir / "error.log", self._work_dir / "nginx.out")]
        return "\n".join(text[-characters:] for text in texts if text)

    def stop(self) -> None:
        """SIGQUIT (graceful), SIGKILL to the group after a grace period; removes the files."""
        if self._process is not None:
            try:
                os.killpg(self._process.pid, signal.SIGQUIT)
                self._process.wait(timeout=STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                os.killpg(self._process.pid, signal.SIGKILL)
                self._process.wait()
            except ProcessLookupError:
                self._process.wait()
            self._process = None
        shutil.rmtree(self._work_dir, ignore_errors=True)


@dataclass(frozen=True, kw_only=True)
class RouteSyncSettings:
    """Which HTTPRoute the sync loop follows, and how often it looks."""

    namespace: str
    """Namespace of the HTTPRoute and of the Services it names."""
    httproute: str
    """Name of the HTTPRoute."""
    poll_seconds: float = 0.25
    """Time between two looks at the route; the lag between a weight change and the proxy."""


class RouteSync:
    """The sandbox-only loop that keeps `NginxProxy` in step with an HTTPRoute (a thread)."""

    def __init__(self, *, api_client: client.ApiClient, proxy: NginxProxy, settings: RouteSyncSettings) -> None:
        self._custom = client.CustomObjectsApi(api_client)
        self._core = client.CoreV1Api(api_client)
        self._proxy = proxy
        self._settings = settings
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="route-sync", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def sync_once(self) -> bool:
        """Reads the route and Services once and applies them; True if nginx reloaded."""
        namespace = self._settings.namespace
        try:
            route = self._custom.get_namespaced_custom_object(
                GATEWAY_GROUP, GATEWAY_VERSION, namespace, HTTPROUTE_PLURAL, self._settings.httproute
            )
        except ApiException as error:
            if error.status == 404:
                return self._proxy.apply(())
            raise
        addresses: dict[str, str] = {}
        for service in self._core.list_namespaced_service(namespace).items:
            metadata = service.metadata
            address = ((metadata and metadata.annotations) or {}).get(LOOPBACK_ADDRESS_ANNOTATION)
            if metadata is not None and metadata.name and address:
                addresses[metadata.name] = address
        rules = rules_from_httproute(cast(Mapping[str, Any], route), addresses=addresses)
        changed = self._proxy.apply(rules)
        if changed:
            weights = "; ".join(f"{r.name}: {', '.join(f'{b.address}={b.weight}' for b in r.backends)}" for r in rules)
            LOG.info("proxy reloaded for HTTPRoute %s/%s (%s)", namespace, self._settings.httproute, weights)
        return changed

    def _run(self) -> None:
        while not self._stop.wait(self._settings.poll_seconds):
            try:
                self.sync_once()
            except Exception:  # keep following the route through API hiccups; the log says why
                LOG.exception("route sync failed; retrying")

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
