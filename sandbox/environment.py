"""Everything a model rollout needs, on 127.0.0.1, started and stopped as one.

- a real control plane (etcd, kube-apiserver) with kube-controller-manager, kube-scheduler and
  KWOK, so the Deployments of each version really become Available and really scale down;
- one real model server per version (localenv.modelserver: scikit-learn models trained at
  start-up on the breast-cancer data set that ships with scikit-learn);
- a real Gateway API implementation, Contour + Envoy (localenv/gateway.py), splitting requests
  by the HTTPRoute's weights as it would in a cluster;
- a real Prometheus scraping every model server, the controller and Envoy's stats every second,
  and evaluating one alerting rule, ModelErrorRate, over the model servers' own metrics;
- a real Alertmanager (localenv/alertmanager.py) to which Prometheus sends that rule's alerts, and
  which posts them, with a bearer token, to the controller's alert receiver;
- the controller itself (`python -m controller`), pointed at that Prometheus, its alert receiver on;
- a traffic generator replaying the data set through the Gateway, with labelled feedback.

In Kubernetes each version has a Deployment (whose Pods KWOK pretends to run) and a Service
without a selector, whose one endpoint (an EndpointSlice written here) is the version's loopback
model server: Envoy sends each version's share there.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
from kubernetes import config as kube_config

from controller.incidents.receiver import DEFAULT_PATH as ALERT_RECEIVER_PATH
from localenv.alertmanager import LocalAlertmanager
from localenv.controller import RunningController, start_controller
from localenv.controlplane import ControlPlane, ControlPlaneSettings, free_local_port
from localenv.gateway import GatewaySettings, LocalGateway, expose_loopback_server
from localenv.kwok import start_workload_controllers
from localenv.modelserver import RunningServer, Variant, start_model_server
from localenv.prometheus import LocalPrometheus
from localenv.traffic import TrafficSettings, TrafficSummary, replay

LOG = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_ROLLOUT = REPO_ROOT / "manifests" / "examples" / "sandbox-rollout.yaml"
"""The ModelRollout the sandbox suggests and the demo applies."""
MODEL = "breast-cancer"
NAMESPACE = "models"
HTTPROUTE = "breast-cancer"
ROUTE_RULE = "predict"
SERVICE_PORT = 8080
"""The port Services declare; Envoy dials the loopback server their EndpointSlice names."""
ROUTE_READY_TIMEOUT_SECONDS = 30.0
"""From the route's creation to Envoy answering it."""
DEFAULT_TRAFFIC_PER_SECOND = 100.0
"""Inference requests per second (each followed by its labelled feedback). The example rollout's
analysis is sized for it: about a tenth of the rows are 'borderline', so at 100 requests/s with
half on the candidate each version gets about 5 labelled borderline answers a second, enough for
the slice's test to catch v3 within the first analyze step (at 40 requests/s, the earlier rate, it
would miss it about one run in four). One replaying thread keeps this rate on a 2-core machine."""
ALERT_NAME = "ModelErrorRate"
ALERT_ERROR_SHARE = 0.1
"""The alert fires for a model version failing more than this share of its inference requests..."""
ALERT_WINDOW = "10s"
"""...over this window (the model servers are scraped every second)..."""
ALERT_FOR = "5s"
"""...for at least this long: short for a demo; a production rule says minutes."""
ALERT_RULE = {
    "alert": ALERT_NAME,
    "expr": f"sum by (model, version) (rate(model_request_errors_total[{ALERT_WINDOW}]))"
    f" / sum by (model, version) (rate(model_requests_total[{ALERT_WINDOW}])) > {ALERT_ERROR_SHARE}",
    "for": ALERT_FOR,
    # `model` and `version` come from the series; `namespace` names the rollouts' namespace, so
    # that the alert names the rollout of this model there (docs/incidents.md).
    "labels": {"namespace": NAMESPACE, "severity": "page"},
    "annotations": {
        "summary": "{{ $labels.model }} {{ $labels.version }} fails {{ $value | humanizePercentage }} of its requests"
    },
}
"""The sandbox's alerting rule over the model servers' own metrics (docs/model-metrics.md)."""


@dataclass(frozen=True, kw_only=True)
class ModelVersion:
    """One version of the model the sandbox serves."""

    version: str
    """The version label, e.g. "v2"; names its Deployment and Service `breast-cancer-v2`."""
    variant: Variant
    """Which model localenv.modelserver trains and serves for it."""
    story: str
    """What this version is, for people reading the sandbox's output."""

    @property
    def workload_name(self) -> str:
        return f"{MODEL}-{self.version}"


VERSIONS = (
    ModelVersion(version="v1", variant=Variant.GOOD, story="baseline: the ten 'mean' measurements"),
    ModelVersion(version="v2", variant=Variant.BETTER, story="good candidate: all 30 measurements"),
    ModelVersion(
        version="v3",
        variant=Variant.SLICE_REGRESSION,
        story="bad candidate: better on average, a threshold bug on the 'borderline' slice",
    ),
    ModelVersion(
        version="v4",
        variant=Variant.UNSCALED,
        story="bad candidate: preprocessing bug, the scaler is skipped at serving time",
    ),
    ModelVersion(
        version="v5",
        variant=Variant.BETTER,
        story="good candidate (v2's recipe, retrained): promoted; the demo then makes its servers fail",
    ),
)


@dataclass(frozen=True, kw_only=True)
class SandboxSettings:
    """How to start the sandbox."""

    work_dir: Path
    """Logs of the controller and the model servers go under it (created if missing)."""
    versions: tuple[ModelVersion, ...] = VERSIONS
    """Versions to serve; the first takes all traffic at start."""
    replicas: int = 2
    """Replicas of each version's Deployment (Pods KWOK pretends to run)."""
    traffic_per_second: float = DEFAULT_TRAFFIC_PER_SECOND
    """Inference requests per second through the Gateway, each followed by its labelled feedback."""
    control_plane_work_dir: Path | None = None
    """Where the control plane keeps its files; None means a temporary directory."""


@dataclass(kw_only=True)
class _Traffic:
    stop: threading.Event = field(default_factory=threading.Event)
    summary: TrafficSummary = field(default_factory=TrafficSummary)
    """Counted into while the replay runs."""
    thread: threading.Thread | None = None


class Sandbox:
    """The running environment; `start()` builds it, `stop()` (or leaving `with`) ends all of it."""

    def __init__(self, settings: SandboxSettings) -> None:
        self.settings = settings
        self.plane: ControlPlane | None = None
        self.servers: dict[str, RunningServer] = {}
        """Model server per version."""
        self.gateway: LocalGateway | None = None
        self.prometheus: LocalPrometheus | None = None
        self.alertmanager: LocalAlertmanager | None = None
        self.alert_receiver_url = ""
        """Where the controller's alert receiver listens (Alertmanager posts there)."""
        self.controller: RunningController | None = None
        self._traffic = _Traffic()

    @classmethod
    def start(cls, settings: SandboxSettings, *, progress: Callable[[str], None] = print) -> Sandbox:
        """Starts everything; `progress(text)` hears each stage. Stops what it started on failure."""
        sandbox = cls(settings)
        try:
            sandbox._start(progress)
        except BaseException:
            sandbox.stop()
            raise
        return sandbox

    def _start(self, progress: Callable[[str], None]) -> None:
        settings = self.settings
        settings.work_dir.mkdir(parents=True, exist_ok=True)
        began = time.monotonic()
        progress("starting the control plane (etcd, kube-apiserver; binaries are built on first use)")
        self.plane = plane = ControlPlane.start(ControlPlaneSettings(work_dir=settings.control_plane_work_dir))
        progress("starting kube-controller-manager, kube-scheduler and KWOK with one fake Node")
        start_workload_controllers(plane)
        progress(f"training and serving {len(settings.versions)} model versions")
        for model_version in settings.versions:
            self.servers[model_version.version] = start_model_server(
                variant=model_version.variant,
                model_name=MODEL,
                version=model_version.version,
                log_dir=settings.work_dir,
            )
        progress("starting the Gateway: Contour and Envoy (Contour is built on first use)")
        self.gateway = gateway = LocalGateway.start(
            plane.kubeconfig, GatewaySettings(work_dir=settings.work_dir / "gateway"), kubectl=plane.bin_dir / "kubectl"
        )
        progress("creating the namespace, Deployments, Services and the HTTPRoute")
        plane.kubectl("apply", "--filename=-", input=json.dumps(self._kubernetes_objects(gateway)))
        api_client = kube_config.new_client_from_config(config_file=str(plane.kubeconfig))  # type: ignore[no-untyped-call]
        with api_client:
            for model_version in settings.versions:
                expose_loopback_server(
                    api_client,
                    namespace=NAMESPACE,
                    service=model_version.workload_name,
                    port=self.servers[model_version.version].port,
                    service_port=SERVICE_PORT,
                )
        plane.kubectl(
            *("wait", "--for=condition=Available", "deployment", "--all"),
            *(f"--namespace={NAMESPACE}", "--timeout=60s"),
        )
        self._wait_for_route(gateway)
        controller_port = free_local_port()
        progress("starting Alertmanager, Prometheus and the controller")
        receiver_port, receiver_token = free_local_port(), secrets.token_urlsafe(24)
        token_file = settings.work_dir / "alert-receiver-token"
        token_file.write_text(receiver_token)
        token_file.chmod(0o600)  # as a mounted Secret would be
        self.alert_receiver_url = f"http://127.0.0.1:{receiver_port}{ALERT_RECEIVER_PATH}"
        self.alertmanager = LocalAlertmanager(receiver_url=self.alert_receiver_url, bearer_token=receiver_token)
        self.alertmanager.start()
        self.prometheus = LocalPrometheus(
            scrape_targets=[
                *(f"127.0.0.1:{server.port}" for server in self.servers.values()),
                f"127.0.0.1:{controller_port}",
            ],
            # Envoy's own per-cluster metrics: what the gateway presets read (docs/analysis.md).
            jobs=[gateway.scrape_job()],
            alerting_rules=[ALERT_RULE],
            alertmanagers=[f"127.0.0.1:{self.alertmanager.port}"],
        )
        self.prometheus.start()
        self.controller = start_controller(
            kubeconfig=plane.kubeconfig,
            log_file=settings.work_dir / "controller.log",
            namespace=NAMESPACE,
            metrics_port=controller_port,
            extra_args=[
                *("--prometheus-address", self.prometheus.url),
                *("--alert-receiver-token-file", str(token_file)),
                *("--alert-receiver-bind-address", "127.0.0.1", "--alert-receiver-port", str(receiver_port)),
            ],
        )
        progress(f"sending {settings.traffic_per_second:g} requests/s with labelled feedback through the Gateway")
        self._start_traffic()
        LOG.info("sandbox up in %.1fs", time.monotonic() - began)

    def _kubernetes_objects(self, gateway: LocalGateway) -> dict[str, Any]:
        """The namespace, each version's Deployment and the HTTPRoute (the Services and their
        loopback endpoints are made by `expose_loopback_server`)."""
        items: list[dict[str, Any]] = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}]
        for model_version in self.settings.versions:
            name = model_version.workload_name
            labels = {"app": MODEL, "version": model_version.version}
            items.append(
                {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "metadata": {"name": name, "namespace": NAMESPACE, "labels": labels},
                    "spec": {
                        "replicas": self.settings.replicas,
                        "selector": {"matchLabels": labels},
                        "template": {
                            "metadata": {"labels": labels},
                            # Never pulled: KWOK runs no container. The real server is a loopback process.
                            "spec": {
                                "containers": [
                                    {"name": "model", "image": f"sandbox.local/{name}:{model_version.version}"}
                                ]
                            },
                        },
                    },
                }
            )
        first = self.settings.versions[0].workload_name
        items.append(
            {
                "apiVersion": "gateway.networking.k8s.io/v1",
                "kind": "HTTPRoute",
                "metadata": {"name": HTTPROUTE, "namespace": NAMESPACE},
                "spec": {
                    "parentRefs": [gateway.parent_ref()],
                    "rules": [
                        {
                            "name": ROUTE_RULE,
                            "matches": [{"path": {"type": "PathPrefix", "value": f"/v2/models/{MODEL}"}}],
                            "backendRefs": [{"name": first, "port": SERVICE_PORT, "weight": 100}],
                        }
                    ],
                },
            }
        )
        return {"apiVersion": "v1", "kind": "List", "items": items}

    def _wait_for_route(self, gateway: LocalGateway) -> None:
        """Until Envoy answers the route (Contour programs the listener once a route attaches)."""
        deadline = time.monotonic() + ROUTE_READY_TIMEOUT_SECONDS
        url = f"{gateway.url}/v2/models/{MODEL}"
        while not _answers(url):
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"Envoy did not serve {url} within {ROUTE_READY_TIMEOUT_SECONDS:g}s\n{gateway.log_tail()}"
                )
            time.sleep(0.1)

    def _start_traffic(self) -> None:
        assert self.gateway is not None
        settings = TrafficSettings(
            url=self.gateway.url,
            model_name=MODEL,
            rate_per_second=self.settings.traffic_per_second,
            max_requests=2**62,  # until stopped
            max_seconds=float("inf"),
        )

        def run() -> None:
            replay(settings, stop=self._traffic.stop, summary=self._traffic.summary)

        self._traffic.thread = threading.Thread(target=run, name="traffic", daemon=True)
        self._traffic.thread.start()

    def client_answers(self) -> dict[str, int]:
        """Inference answers the traffic's clients got so far, per version that gave them (the
        answer's `model_version`): what users saw, as opposed to what each server answered, which
        includes the gateway's mirrored copies."""
        return self._traffic.summary.answers_by_version()

    def client_failures(self) -> dict[str, int]:
        """The clients' failed requests so far, by reason (`infer HTTP 500`, `ReadTimeout`, ...)."""
        return dict(self._traffic.summary.failures)

    def describe(self) -> dict[str, str]:
        """Where everything is, for people and for state files."""
        assert self.plane and self.gateway and self.prometheus and self.alertmanager and self.controller
        described = {
            "kubeconfig": str(self.plane.kubeconfig),
            "kubectl": str(self.plane.bin_dir / "kubectl"),
            "api_server": self.plane.server_url,
            "gateway": self.gateway.url,
            "envoy_stats": f"http://127.0.0.1:{self.gateway.stats_port}/stats",
            "gateway_logs": str(self.gateway.work_dir),
            "prometheus": self.prometheus.url,
            "alertmanager": self.alertmanager.url,
            "alert_receiver": self.alert_receiver_url,
            "controller_metrics": f"{self.controller.metrics_url}/metrics",
            "controller_log": str(self.controller.log_file),
            "control_plane_logs": str(self.plane.work_dir / "logs"),
        }
        for version, server in self.servers.items():
            described[f"model_server_{version}"] = server.url
        return described

    def stop(self) -> None:
        """Stops everything it started, newest first; safe to call more than once."""
        self._traffic.stop.set()
        if self._traffic.thread is not None:
            self._traffic.thread.join(timeout=10)
        if self.controller is not None:
            self.controller.stop()
        if self.prometheus is not None:
            self.prometheus.close()
        if self.alertmanager is not None:
            self.alertmanager.close()
        if self.gateway is not None:
            self.gateway.stop()
        for server in self.servers.values():
            server.stop()
        if self.plane is not None:
            self.plane.stop()

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()


def _answers(url: str) -> bool:
    """Whether Envoy routes `url` to a model server (any answer but Envoy's own 404 or 503)."""
    try:
        return httpx.get(url, timeout=1.0).status_code not in (404, 503)
    except httpx.HTTPError:
        return False
