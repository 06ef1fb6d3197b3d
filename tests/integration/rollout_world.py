"""A namespace with what a ModelRollout points at: Services per version and an HTTPRoute.

Shared by the integration tests that drive the real controller; every call goes to the real
API server (kubectl for what a user would type, the official client for reading state).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar, cast

import urllib3
import yaml
from kubernetes import client, watch

from localenv.controller import RunningController, start_controller
from localenv.controlplane import ControlPlane
from localenv.modelserver import RunningServer, Variant, start_model_server
from localenv.prometheus import LocalPrometheus

T = TypeVar("T")
JSON = dict[str, Any]
MODEL = "iris"
VERSIONS = ("v1", "v2", "v3")
PORT = 8080


def service_name(version: str) -> str:
    return f"{MODEL}-{version}"


def rollout_manifest(
    *, name: str = MODEL, candidate: str = "v2", baseline: str = "v1", steps: list[JSON] | None = None, **spec: Any
) -> JSON:
    return {
        "apiVersion": "rollouts.mlops.dev/v1alpha1",
        "kind": "ModelRollout",
        "metadata": {"name": name},
        "spec": {
            "model": MODEL,
            "versions": [{"version": v, "backend": {"service": service_name(v), "port": PORT}} for v in VERSIONS],
            "candidate": candidate,
            "baseline": baseline,
            "trafficRouting": {"gatewayAPI": {"httpRoute": MODEL}},
            "steps": steps
            if steps is not None
            else [{"setWeight": 20}, {"pause": {"duration": "1s"}}, {"setWeight": 60}],
            **spec,
        },
    }


@dataclass
class World:
    plane: ControlPlane
    api: client.ApiClient
    namespace: str

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> str:
        return self.plane.kubectl("-n", self.namespace, *args, input=input, check=check).stdout

    def apply(self, manifest: JSON) -> None:
        self.kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest))

    def create_services(self, versions: tuple[str, ...] = VERSIONS) -> None:
        core = client.CoreV1Api(self.api)
        for version in versions:
            core.create_namespaced_service(
                self.namespace,
                client.V1Service(
                    metadata=client.V1ObjectMeta(name=service_name(version)),
                    spec=client.V1ServiceSpec(
                        selector={"app": MODEL, "version": version}, ports=[client.V1ServicePort(port=PORT)]
                    ),
                ),
            )

    def create_route(self, name: str = MODEL) -> None:
        """An HTTPRoute `name` sending all traffic to v1 (v2's backendRef at weight 0)."""
        self.apply(
            {
                "apiVersion": "gateway.networking.k8s.io/v1",
                "kind": "HTTPRoute",
                "metadata": {"name": name},
                "spec": {
                    "parentRefs": [{"name": "gateway"}],
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
        )

    def route_weights(self) -> dict[str, int]:
        return split_of(self.custom("gateway.networking.k8s.io", "httproutes", MODEL, version="v1"))

    def custom(self, group: str, plural: str, name: str, *, version: str = "v1alpha1") -> JSON:
        found = client.CustomObjectsApi(self.api).get_namespaced_custom_object(
            group, version, self.namespace, plural, name
        )
        return cast(JSON, found)

    def rollout(self, name: str = MODEL) -> JSON:
        return self.custom("rollouts.mlops.dev", "modelrollouts", name)

    def status(self, name: str = MODEL) -> JSON:
        return dict(self.rollout(name).get("status") or {})

    def printed(self, name: str = MODEL) -> dict[str, object]:
        """`kubectl get modelrollout NAME` as the API server prints it: the cells of the CRD's
        printer columns (every priority) by column name, from the Table kubectl asks for."""
        method, url, headers, _, _ = self.api.param_serialize(
            "GET",
            f"/apis/rollouts.mlops.dev/v1alpha1/namespaces/{self.namespace}/modelrollouts/{name}",
            header_params={"Accept": "application/json;as=Table;g=meta.k8s.io;v=v1"},
            auth_settings=["BearerToken"],
        )
        response = self.api.call_api(method, url, header_params=headers)
        body = response.response.data
        assert response.status == 200, f"GET {url} as a Table: HTTP {response.status}: {body!r}"
        table = json.loads(body)
        names = [column["name"] for column in table["columnDefinitions"]]
        return dict(zip(names, table["rows"][0]["cells"], strict=True))

    def action(self, action: str, name: str = MODEL) -> None:
        self.kubectl("annotate", "modelrollout", name, f"rollouts.mlops.dev/action={action}", "--overwrite")

    def events(self, name: str = MODEL) -> list[JSON]:
        listed = json.loads(self.kubectl("get", "events", "-o", "json", f"--field-selector=involvedObject.name={name}"))
        return list(listed["items"])

    def wait_for_phase(self, phase: str, *, timeout: float = 30.0, name: str = MODEL) -> JSON:
        return wait_for(lambda: self.status(name) if self.status(name).get("phase") == phase else None,
                        what=f"phase {phase}", timeout=timeout, last=lambda: self.status(name))  # fmt: skip


def split_of(route: JSON) -> dict[str, int]:
    """Weight per version label in the route's first rule."""
    refs = route["spec"]["rules"][0]["backendRefs"]
    return {ref["name"].removeprefix(f"{MODEL}-"): ref.get("weight", 1) for ref in refs}


def wait_for(
    probe: Callable[[], T | None], *, what: str, timeout: float = 30.0, last: Callable[[], object] | None = None
) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value is not None and value is not False:
            return value
        if time.monotonic() > deadline:
            seen = f"; last seen: {last()}" if last else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {what}{seen}")
        time.sleep(0.1)


class WeightRecorder:
    """Watches the route and keeps every distinct split stored on it, in order (none is missed,
    however fast the controller moves), when each was first seen, and how often the route was written."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.seen: list[dict[str, int]] = []
        self.seen_at: list[float] = []
        """time.monotonic() when each split of `seen` arrived."""
        self.writes = 0
        """Changes of the route seen after the recorder started (any field, not only weights)."""
        self._lock = threading.Lock()
        self._watch = watch.Watch()  # type: ignore[no-untyped-call]
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._started = threading.Event()
        self._thread.start()
        self._started.wait(10)

    def _record(self, route: JSON) -> None:
        weights = split_of(route)
        with self._lock:
            self.writes += 1
            if not self.seen or self.seen[-1] != weights:
                self.seen.append(weights)
                self.seen_at.append(time.monotonic())

    def _run(self) -> None:
        api = client.CustomObjectsApi(self.world.api)
        route = self.world.custom("gateway.networking.k8s.io", "httproutes", MODEL, version="v1")
        self._record(route)
        self._started.set()
        # The stream ends with an error when the control plane stops at the end of the session.
        with contextlib.suppress(urllib3.exceptions.HTTPError):
            self._stream(api, route["metadata"]["resourceVersion"])

    def _stream(self, api: client.CustomObjectsApi, resource_version: str) -> None:
        for event in self._watch.stream(  # type: ignore[no-untyped-call]
            api.list_namespaced_custom_object, "gateway.networking.k8s.io", "v1", self.world.namespace, "httproutes",
            resource_version=resource_version, field_selector=f"metadata.name={MODEL}",
        ):  # fmt: skip
            self._record(event["object"])

    def latest(self) -> dict[str, int]:
        with self._lock:
            return dict(self.seen[-1])

    def candidate_weights(self, version: str = "v2") -> list[int]:
        with self._lock:
            return [w.get(version, 0) for w in self.seen]

    def stop(self) -> None:
        self._watch.stop()  # type: ignore[no-untyped-call]


class ObjectRecorder(Generic[T]):
    """Watches one object of a custom resource in the world's namespace and keeps every distinct
    value `read` gives of it, in order. A watch delivers every change, so none is missed however
    fast the controller writes: a poll could miss a value written and overwritten between two
    looks, which is exactly what a flap looks like."""

    def __init__(
        self, world: World, *, group: str, version: str, plural: str, name: str, read: Callable[[JSON], T]
    ) -> None:
        self._read = read
        self._values: list[T] = []
        self._lock = threading.Lock()
        self._watch = watch.Watch()  # type: ignore[no-untyped-call]
        self._list = client.CustomObjectsApi(world.api).list_namespaced_custom_object
        self._args = (group, version, world.namespace, plural)
        self._selector = f"metadata.name={name}"
        # Listed before returning, and watched from that version on: the caller's next write is seen.
        listed = cast(JSON, self._list(*self._args, field_selector=self._selector))
        for item in listed["items"]:
            self._record(item)
        resource_version = listed["metadata"]["resourceVersion"]
        threading.Thread(target=self._run, args=(resource_version,), daemon=True).start()

    def _record(self, found: JSON) -> None:
        value = self._read(found)
        with self._lock:
            if not self._values or self._values[-1] != value:
                self._values.append(value)

    def _run(self, resource_version: str) -> None:
        # The stream ends with an error when the control plane stops at the end of the session.
        with contextlib.suppress(urllib3.exceptions.HTTPError):
            for event in self._watch.stream(  # type: ignore[no-untyped-call]
                self._list, *self._args, field_selector=self._selector, resource_version=resource_version
            ):
                if event["type"] in ("ADDED", "MODIFIED"):
                    self._record(event["object"])

    def values(self) -> list[T]:
        with self._lock:
            return list(self._values)

    def stop(self) -> None:
        self._watch.stop()  # type: ignore[no-untyped-call]


@contextmanager
def controller_reading(
    prometheus: LocalPrometheus, *, control_plane: ControlPlane, namespace: str, log_file: Path
) -> Iterator[RunningController]:
    """The real controller process, watching `namespace` and measuring from `prometheus`."""
    running = start_controller(
        kubeconfig=control_plane.kubeconfig,
        namespace=namespace,
        log_file=log_file,
        extra_args=["--prometheus-address", prometheus.url],
    )
    try:
        yield running
    finally:
        running.stop()
        print(running.log()[-5000:])


@contextmanager
def model_servers(variants: Mapping[str, Variant], *, model: str) -> Iterator[dict[str, RunningServer]]:
    """A real model server per version, each serving its variant, stopped at the end."""
    started: dict[str, RunningServer] = {}
    try:
        for version, variant in variants.items():
            started[version] = start_model_server(variant=variant, model_name=model, version=version)
        yield started
    finally:
        for server in started.values():
            server.stop()
