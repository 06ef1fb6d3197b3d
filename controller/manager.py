"""Runs the pieces together: informers feed the work queue, a fixed pool of workers reconciles.

Informer(ModelRollouts) ──┐
Informer(HTTPRoutes) ─────┼──> WorkQueue ──> WorkerPool (N threads) ──> Reconciler.reconcile(key)
resync timer ─────────────┘        ^                                       │
                                   └──────────── requeue-after / backoff ───┘
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from kubernetes import client

from controller.api import GROUP, PLURAL, VERSION
from controller.reconcile import Reconciler
from controller.routers import gatewayapi
from controller.urgency import is_urgent
from controller.watch import Informer, LabelSelector, ObjectCache, Resource
from controller.workers import WorkerPool
from controller.workqueue import Key, WorkQueue

log = logging.getLogger(__name__)

JSON = dict[str, Any]


@dataclass(frozen=True, kw_only=True)
class ManagerSettings:
    namespace: str | None = None
    """Watch ModelRollouts in this namespace only; None watches all namespaces."""
    label_selector: str = ""
    """Own only the ModelRollouts whose labels match this selector (a shard of the controller);
    empty owns them all. HTTPRoutes are watched in full, but enqueue only the rollouts owned."""
    workers: int = 4
    """Reconcile passes running at once (each on a different rollout)."""
    resync_seconds: float = 300.0
    """Every rollout is reconciled at least this often, even with no event."""
    queue_stall_seconds: float = 300.0
    """The liveness check fails when keys are due this long and no worker takes one."""


class Manager:
    def __init__(self, *, api_client: client.ApiClient, reconciler: Reconciler, settings: ManagerSettings) -> None:
        self.settings = settings
        self.reconciler = reconciler
        self.queue = WorkQueue()
        self.workers = WorkerPool(
            queue=self.queue,
            reconciler=reconciler,
            workers=settings.workers,
            stall_seconds=settings.queue_stall_seconds,
        )
        self._lock = threading.Lock()
        self._route_of: dict[Key, tuple[str, str]] = {}
        self._rollouts_of_route: dict[tuple[str, str], set[Key]] = defaultdict(set)
        self.rollout_cache = ObjectCache(keep=LabelSelector.parse(settings.label_selector).matches_object)
        """The rollouts of this shard, as last received; passes read them from here."""
        self.route_cache = ObjectCache(keep=self._names_a_route_of_ours)
        """The routes that owned rollouts name (not every route in the cluster)."""
        self.rollouts = Informer(
            api_client=api_client,
            resource=Resource(
                group=GROUP,
                version=VERSION,
                plural=PLURAL,
                namespace=settings.namespace,
                label_selector=settings.label_selector,
            ),
            on_event=self._on_rollout_event,
            on_list=self._on_rollout_list,
            cache=self.rollout_cache,
        )
        self.routes = Informer(
            api_client=api_client,
            resource=Resource(
                group=gatewayapi.GROUP,
                version=gatewayapi.VERSION,
                plural=gatewayapi.PLURAL,
                namespace=settings.namespace,
            ),
            on_event=self._on_route_event,
            on_list=lambda routes: None,
            cache=self.route_cache,
        )
        self.service_cache = ObjectCache()
        """Every Service of the watched namespaces: passes check that the versions' Services exist
        (a few hundred bytes each, as compact JSON)."""
        self.services = Informer(
            api_client=api_client,
            resource=Resource(group="", version="v1", plural="services", namespace=settings.namespace),
            on_event=lambda kind, service: None,
            on_list=lambda services: None,
            cache=self.service_cache,
        )
        self._threads: list[threading.Thread] = []

    def caches(self) -> dict[tuple[str, str], ObjectCache]:
        """The informers' caches by (group, plural), for the reconciler's reads (`Kube.use_cache`)."""
        return {
            (GROUP, PLURAL): self.rollout_cache,
            (gatewayapi.GROUP, gatewayapi.PLURAL): self.route_cache,
            ("", "services"): self.service_cache,
        }

    @property
    def synced(self) -> bool:
        return all(informer.synced.is_set() for informer in (self.rollouts, self.routes, self.services))

    def start(self, stop: threading.Event) -> None:
        def spawn(name: str, target: Any, *args: Any) -> None:
            thread = threading.Thread(target=target, args=args, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

        spawn("watch-modelrollouts", self.rollouts.run, stop)
        spawn("watch-httproutes", self._watch_routes, stop)
        spawn("watch-services", self.services.run, stop)
        spawn("resync", self._resync, stop)
        self.workers.start()

    def _watch_routes(self, stop: threading.Event) -> None:
        # The route cache keeps the routes the rollouts name: list them once the rollouts are known.
        while not stop.is_set() and not self.rollouts.synced.wait(0.5):
            pass
        self.routes.run(stop)

    def health_problem(self) -> str | None:
        """Why this replica should be restarted, or None; before start() there is none."""
        return self.workers.health_problem()

    def stop(self) -> None:
        self.queue.shut_down()
        for informer in (self.rollouts, self.routes, self.services):
            informer.stop()

    # Event handlers: quick, they only index and enqueue ----------------------------------------

    @staticmethod
    def _key(obj: JSON) -> Key:
        return obj["metadata"]["namespace"], obj["metadata"]["name"]

    def _names_a_route_of_ours(self, route: JSON) -> bool:
        with self._lock:
            return self._key(route) in self._rollouts_of_route

    def _index(self, key: Key, obj: JSON | None) -> None:
        unused = None
        with self._lock:
            old = self._route_of.pop(key, None)
            if old is not None:
                self._rollouts_of_route[old].discard(key)
                if not self._rollouts_of_route[old]:
                    del self._rollouts_of_route[old]
                    unused = old
            route_name = (
                None
                if obj is None
                else ((obj.get("spec") or {}).get("trafficRouting") or {}).get("gatewayAPI", {}).get("httpRoute")
            )
            if route_name:
                route = (key[0], str(route_name))
                self._route_of[key] = route
                self._rollouts_of_route[route].add(key)
                if route == unused:
                    unused = None
        if unused is not None:
            # Outside the lock: the cache takes its own, and asks the index under this one.
            self.route_cache.drop(*unused)

    def _on_rollout_list(self, items: Iterable[JSON]) -> None:
        keys = set()
        for obj in items:
            key = self._key(obj)
            keys.add(key)
            self._index(key, obj)
            self.queue.add(key, urgent=is_urgent(obj))
        for gone in set(self._route_of) - keys:
            self._index(gone, None)

    def _on_rollout_event(self, kind: str, obj: JSON) -> None:
        key = self._key(obj)
        self._index(key, None if kind == "DELETED" else obj)
        self.queue.add(key, urgent=kind != "DELETED" and is_urgent(obj))

    def _on_route_event(self, kind: str, obj: JSON) -> None:
        with self._lock:
            keys = list(self._rollouts_of_route.get(self._key(obj), ()))
        for key in keys:
            self.queue.add(key)

    def _resync(self, stop: threading.Event) -> None:
        while not stop.wait(self.settings.resync_seconds):
            with self._lock:
                keys = list(self._route_of)
            for key in keys:
                self.queue.add(key)
