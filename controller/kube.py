"""The Kubernetes API edge: every call the controller makes goes through `Kube`.

Calls map API errors onto the retry meaning of `controller.errors`: a conflict or a server or
connection error is a `TemporaryError`; reads of objects that may legitimately be absent return
None. Idempotent reads are retried a few times with tenacity before giving up for this pass.

Reads of ModelRollouts (`read_rollout`) and of the kinds given an informer's cache (`use_cache`:
HTTPRoutes, Services) come from that cache when it holds the object, and from the API server otherwise.
Every write carries the resourceVersion it was based on; its result is kept in the cache, and a
conflict drops the object there, so that the pass that runs again reads it fresh.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from tenacity import retry, retry_if_exception, stop_after_attempt, wait_exponential
from urllib3.exceptions import HTTPError

from controller import telemetry
from controller.api import GROUP, PLURAL, VERSION
from controller.errors import TemporaryError
from controller.watch import ObjectCache

log = logging.getLogger(__name__)

T = TypeVar("T")
JSON = dict[str, Any]

READ_ATTEMPTS = 3
"""Tries for an idempotent read before the pass gives up and is requeued."""
SCALED_DOWN_FROM_ANNOTATION = f"{GROUP}/scaled-down-from"
"""Set on a Deployment the controller scaled to zero: the replicas to restore on a retry."""


def _transient(error: BaseException) -> bool:
    if isinstance(error, ApiException):
        return error.status in (409, 429) or error.status >= 500
    return isinstance(error, HTTPError | OSError)


_retry_reads = retry(
    retry=retry_if_exception(_transient),
    stop=stop_after_attempt(READ_ATTEMPTS),
    wait=wait_exponential(multiplier=0.1, max=1.0),
    reraise=True,
)


def _call(operation: str, fn: Callable[[], T]) -> T:
    """Run one API call; transient failures become TemporaryError. `operation` reads "<verb>
    <resource> ...", e.g. "get Service ns/name": the verb and the resource label the call count."""
    kind, _, rest = operation.partition(" ")
    resource = rest.partition(" ")[0]
    telemetry.API_CALLS.labels(operation=kind, resource=resource).inc()
    try:
        with telemetry.API_CALL_SECONDS.labels(operation=kind).time():
            return fn()
    except ApiException as error:
        if _transient(error):
            delay = 0.2 if error.status == 409 else 2.0
            raise TemporaryError(f"{operation}: HTTP {error.status} {error.reason}", delay=delay) from error
        raise
    except (HTTPError, OSError) as error:
        raise TemporaryError(f"{operation}: {error}") from error


def _conflict(error: TemporaryError) -> bool:
    cause = error.__cause__
    return isinstance(cause, ApiException) and cause.status == 409


def _none_if_absent(operation: str, fn: Callable[[], T]) -> T | None:
    try:
        return _call(operation, _retry_reads(fn))
    except ApiException as error:
        if error.status == 404:
            return None
        raise


@dataclass(frozen=True, kw_only=True)
class ObjectRef:
    api_version: str
    kind: str
    namespace: str
    name: str
    uid: str


class Kube:
    """Typed, error-mapped access to the few API calls the controller needs."""

    def __init__(
        self, *, api_client: client.ApiClient, component: str = "model-rollouts", instance: str = "model-rollouts"
    ) -> None:
        self.api_client = api_client
        self.custom = client.CustomObjectsApi(api_client)
        self.core = client.CoreV1Api(api_client)
        self.apps = client.AppsV1Api(api_client)
        self.component = component
        self.instance = instance
        """This replica's name, written into the Events it emits."""
        self._caches: dict[tuple[str, str], ObjectCache] = {}

    def use_cache(self, *, group: str, plural: str, cache: ObjectCache) -> None:
        """Read objects of this kind from `cache` when it holds them (an informer keeps it)."""
        self._caches[(group, plural)] = cache

    def _cached(self, group: str, plural: str, namespace: str, name: str) -> JSON | None:
        cache = self._caches.get((group, plural))
        return None if cache is None else cache.get(namespace, name)

    def _fresh(
        self, group: str, plural: str, namespace: str, name: str, read: Callable[[], JSON | None]
    ) -> JSON | None:
        """Runs a GET; a newer version found refreshes the cache, an absent object leaves it."""
        found = read()
        cache = self._caches.get((group, plural))
        if cache is not None:
            if found is None:
                cache.drop(namespace, name)
            else:
                cache.put_read(found)
        return found

    def _written(self, group: str, plural: str, meta: JSON, write: Callable[[], JSON]) -> JSON:
        """Runs a write; keeps its result in the kind's cache, or drops the object on a conflict."""
        cache = self._caches.get((group, plural))
        try:
            result = write()
        except TemporaryError as error:
            if cache is not None and _conflict(error):
                cache.drop(meta["namespace"], meta["name"])
            raise
        if cache is not None:
            cache.put_written(result)
        return result

    # ModelRollouts -----------------------------------------------------------------------------

    def read_rollout(self, *, namespace: str, name: str) -> JSON | None:
        """The rollout from the cache, or from the API server when the cache does not hold it."""
        cached = self._cached(GROUP, PLURAL, namespace, name)
        return cached if cached is not None else self.get_rollout(namespace=namespace, name=name)

    def get_rollout(self, *, namespace: str, name: str) -> JSON | None:
        """The rollout as stored now (a GET), which the cache then holds if it held an older version."""
        return self._fresh(
            GROUP, PLURAL, namespace, name,
            lambda: _none_if_absent(
                f"get ModelRollout {namespace}/{name}",
                lambda: cast(JSON, self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)),
            ),
        )  # fmt: skip

    def replace_rollout_status(self, *, rollout: JSON, status: JSON) -> JSON:
        meta = rollout["metadata"]
        body = {
            "apiVersion": rollout["apiVersion"],
            "kind": rollout["kind"],
            "metadata": {
                "name": meta["name"],
                "namespace": meta["namespace"],
                "resourceVersion": meta["resourceVersion"],
            },
            "status": status,
        }
        return self._written(
            GROUP, PLURAL, meta,
            lambda: cast(JSON, _call(
                f"write ModelRollout/status {meta['namespace']}/{meta['name']}",
                lambda: self.custom.replace_namespaced_custom_object_status(
                    GROUP, VERSION, meta["namespace"], PLURAL, meta["name"], body
                ),
            )),
        )  # fmt: skip

    def patch_rollout_metadata(self, *, rollout: JSON, patch: list[JSON]) -> JSON:
        """A JSON patch of metadata (finalizers, annotations); `test` ops guard against races."""
        meta = rollout["metadata"]
        return self._written(
            GROUP, PLURAL, meta,
            lambda: cast(JSON, _call(
                f"patch ModelRollout {meta['namespace']}/{meta['name']}",
                lambda: self.custom.patch_namespaced_custom_object(
                    GROUP, VERSION, meta["namespace"], PLURAL, meta["name"], patch,
                    _content_type="application/json-patch+json",
                ),
            )),
        )  # fmt: skip

    # Generic objects ---------------------------------------------------------------------------

    def get_custom(self, *, group: str, version: str, plural: str, namespace: str, name: str) -> JSON | None:
        """The object from the kind's cache (`use_cache`) when it holds it, else from the API server."""
        cached = self._cached(group, plural, namespace, name)
        if cached is not None:
            return cached
        return self._fresh(
            group, plural, namespace, name,
            lambda: _none_if_absent(
                f"get {plural}.{group} {namespace}/{name}",
                lambda: cast(JSON, self.custom.get_namespaced_custom_object(group, version, namespace, plural, name)),
            ),
        )  # fmt: skip

    def replace_custom(self, *, group: str, version: str, plural: str, body: JSON) -> JSON:
        meta = body["metadata"]
        return self._written(
            group, plural, meta,
            lambda: cast(JSON, _call(
                f"update {plural}.{group} {meta['namespace']}/{meta['name']}",
                lambda: self.custom.replace_namespaced_custom_object(
                    group, version, meta["namespace"], plural, meta["name"], body
                ),
            )),
        )  # fmt: skip

    def get_service(self, *, namespace: str, name: str) -> JSON | None:
        """The Service (as JSON) from the Services' cache when it holds it, else from the API server."""
        cached = self._cached("", "services", namespace, name)
        if cached is not None:
            return cached
        return self._fresh(
            "", "services", namespace, name,
            lambda: _none_if_absent(
                f"get Service {namespace}/{name}",
                lambda: cast(JSON, json.loads(
                    cast(Any, self.core.read_namespaced_service(name, namespace, _preload_content=False)).data
                )),
            ),
        )  # fmt: skip

    def get_deployment(self, *, namespace: str, name: str) -> Any | None:
        return _none_if_absent(
            f"get Deployment {namespace}/{name}",
            lambda: self.apps.read_namespaced_deployment(name, namespace),
        )

    def get_configmap_data(self, *, namespace: str, name: str) -> dict[str, str] | None:
        found = _none_if_absent(
            f"get ConfigMap {namespace}/{name}", lambda: self.core.read_namespaced_config_map(name, namespace)
        )
        return None if found is None else dict(found.data or {})

    def get_secret_data(self, *, namespace: str, name: str) -> dict[str, str] | None:
        found = _none_if_absent(
            f"get Secret {namespace}/{name}", lambda: self.core.read_namespaced_secret(name, namespace)
        )
        if found is None:
            return None
        return {k: base64.b64decode(v).decode() for k, v in (found.data or {}).items()}

    def scale_deployment(
        self, *, namespace: str, name: str, replicas: int, annotations: Mapping[str, str | None]
    ) -> None:
        patch = {"metadata": {"annotations": dict(annotations)}, "spec": {"replicas": replicas}}
        _call(
            f"scale Deployment {namespace}/{name} to {replicas}",
            lambda: self.apps.patch_namespaced_deployment(name, namespace, patch),
        )

    # Events ------------------------------------------------------------------------------------

    def emit_event(
        self, *, about: ObjectRef, type: str, reason: str, message: str, now: datetime, name: str | None = None
    ) -> bool:
        """Creates an Event; True once it exists (with a `name`, an Event of that name already
        there counts as created), False when the API server could not be told.

        Created through events.k8s.io/v1 as client-go's event recorder does (core/v1 readers see
        the same object), and sent as plain JSON: the typed core/v1 call of recent clients reads
        eventTime into a datetime and writes it back without its fraction when that is zero, a
        MicroTime the API server refuses."""
        event = {
            "apiVersion": "events.k8s.io/v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": about.namespace}
            if name
            else {"generateName": f"{about.name}.", "namespace": about.namespace},
            "regarding": {
                "apiVersion": about.api_version,
                "kind": about.kind,
                "namespace": about.namespace,
                "name": about.name,
                "uid": about.uid,
            },
            "type": type,
            "reason": reason,
            "note": message[:1024],
            # eventTime keeps microseconds, so the Events of one pass list in the order they
            # happened (MicroTime wants six digits).
            "eventTime": now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "action": reason,
            "reportingController": self.component,
            "reportingInstance": self.instance,
        }

        def create() -> None:
            try:
                # Read raw: building the typed Event of the answer costs more than the call.
                answer = self.custom.create_namespaced_custom_object(
                    "events.k8s.io", "v1", about.namespace, "events", event, _preload_content=False
                )
                cast(Any, answer).read()
            except ApiException as error:
                if error.status != 409:
                    raise

        try:
            _call(f"emit Event {reason}", create)
        except (TemporaryError, ApiException) as error:
            # An Event must not fail the pass that already acted; the caller may try it again.
            log.warning("could not emit event", extra={"reason": reason, "error": str(error)})
            return False
        return True
