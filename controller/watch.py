"""Watching: list, then watch from that resourceVersion, with bookmarks and a re-list on 410.

An `Informer` keeps no copy of the objects it sees, only what its handler extracts (a key and a
route name per rollout), so memory per rollout stays small; reconcile passes read the object
fresh. The handler runs on the watch thread and must be quick: it only enqueues keys.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

log = logging.getLogger(__name__)

JSON = dict[str, Any]

WATCH_TIMEOUT_SECONDS = 300
"""Server-side timeout of one watch request; the watch then resumes from the last version."""
ERROR_BACKOFF_SECONDS = 2.0
"""Pause before listing again after an unexpected error."""


class _Gone(Exception):
    """The resourceVersion is too old (HTTP 410): list again."""


@dataclass(frozen=True, kw_only=True)
class Resource:
    group: str
    version: str
    plural: str
    namespace: str | None = None
    """Watch one namespace; None watches all."""


class Informer:
    def __init__(
        self,
        *,
        api_client: client.ApiClient,
        resource: Resource,
        on_event: Callable[[str, JSON], None],
        on_list: Callable[[Iterable[JSON]], None],
    ) -> None:
        self.resource = resource
        self.on_event = on_event
        self.on_list = on_list
        self.synced = threading.Event()
        self._custom = client.CustomObjectsApi(api_client)
        self._watch: watch.Watch | None = None

    def _list_call(self) -> Callable[..., Any]:
        r = self.resource
        namespace = r.namespace
        if namespace:
            return lambda **kw: self._custom.list_namespaced_custom_object(
                r.group, r.version, namespace, r.plural, **kw
            )
        return lambda **kw: self._custom.list_cluster_custom_object(r.group, r.version, r.plural, **kw)

    def run(self, stop: threading.Event) -> None:
        list_call = self._list_call()
        while not stop.is_set():
            try:
                listed = list_call()
                self.on_list(listed.get("items", []))
                self.synced.set()
                self._watch_from(list_call, listed["metadata"]["resourceVersion"], stop)
            except _Gone:
                log.info("watch expired; listing again", extra={"resource": self.resource.plural})
            except Exception:
                if stop.is_set():
                    return
                log.exception("watch failed; listing again", extra={"resource": self.resource.plural})
                stop.wait(ERROR_BACKOFF_SECONDS)

    def _watch_from(self, list_call: Callable[..., Any], resource_version: str, stop: threading.Event) -> None:
        while not stop.is_set():
            self._watch = watch.Watch()  # type: ignore[no-untyped-call]
            try:
                for event in self._watch.stream(  # type: ignore[no-untyped-call]
                    list_call,
                    resource_version=resource_version,
                    allow_watch_bookmarks=True,
                    timeout_seconds=WATCH_TIMEOUT_SECONDS,
                ):
                    kind, obj = event["type"], event["object"]
                    if kind == "ERROR":
                        if obj.get("code") == 410:
                            raise _Gone
                        raise RuntimeError(f"watch error: {obj}")
                    resource_version = obj["metadata"]["resourceVersion"]
                    if kind != "BOOKMARK":
                        self.on_event(kind, obj)
                    if stop.is_set():
                        return
            except ApiException as error:
                if error.status == 410:
                    raise _Gone from error
                raise

    def stop(self) -> None:
        if self._watch is not None:
            self._watch.stop()  # type: ignore[no-untyped-call]
