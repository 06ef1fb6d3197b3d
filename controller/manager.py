"""Runs the pieces together: informers feed the work queue, a fixed pool of workers reconciles.

Informer(ModelRollouts) ────────────┐
Informer(each router's kind) ───────┼──> WorkQueue ──> WorkerPool (N threads) ──> Reconciler.reconcile(key)
resync timer ───────────────────────┤        ^                                       │
alert receiver (on_alerts), urgent ─┘        └──────────── requeue-after / backoff ───┘
Informer(Services): cache only

The routed objects (HTTPRoutes, VirtualServices, ...) are watched once per kind that a registered
router writes (`controller.routers.ROUTERS`), and cached only when an owned rollout names them.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

from kubernetes import client

from controller.api import GROUP, PLURAL, VERSION, SpecError, parse_incidents
from controller.incidents.alerts import Alert
from controller.incidents.firing import matches
from controller.reconcile import Reconciler
from controller.routers import ROUTERS, RoutedKind, RouterPlugin
from controller.urgency import is_urgent
from controller.watch import Informer, LabelSelector, ObjectCache, Resource
from controller.workers import WorkerPool
from controller.workqueue import Key, WorkQueue

log = logging.getLogger(__name__)

JSON = dict[str, Any]
RouteKey = tuple[str, str, str]
"""(kind plural, namespace, name) of a routed object."""


@dataclass(frozen=True, kw_only=True)
class AlertTarget:
    """What an alert must match to name a rollout: its model and its spec.incidents.alertSelector."""

    model: str
    selector: LabelSelector | None


def alert_target(obj: JSON) -> AlertTarget | None:
    """The alert target of a rollout as stored; None when its spec cannot say (its pass reports why)."""
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return None
    try:
        policy = parse_incidents(spec.get("incidents"))
    except SpecError:
        return None
    return AlertTarget(model=str(spec.get("model") or ""), selector=policy.alert_selector)


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
    """Every rollout is reconciled at least this often, even with no event (spread evenly over
    the period, not all at once)."""
    queue_stall_seconds: float = 300.0
    """The liveness check fails when keys are due this long and no worker takes one."""


class Manager:
    def __init__(
        self,
        *,
        api_client: client.ApiClient,
        reconciler: Reconciler,
        settings: ManagerSettings,
        routers: Mapping[str, RouterPlugin] = ROUTERS,
    ) -> None:
        self.settings = settings
        self.plugins = routers
        self.reconciler = reconciler
        self.queue = WorkQueue()
        self.workers = WorkerPool(
            queue=self.queue,
            reconciler=reconciler,
            workers=settings.workers,
            stall_seconds=settings.queue_stall_seconds,
        )
        self._lock = threading.Lock()
        self._route_of: dict[Key, RouteKey | None] = {}
        """Every known rollout of this shard, with the routed object it names (if its spec names one)."""
        self._alert_target_of: dict[Key, AlertTarget] = {}
        """Every known rollout of this shard whose spec says which alerts name it."""
        self._rollouts_of_route: dict[RouteKey, set[Key]] = defaultdict(set)
        self.rollout_cache = ObjectCache(keep=LabelSelector.parse(settings.label_selector).matches_object)
        """The rollouts of this shard, as last received; passes read them from here."""
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
        kinds = list(dict.fromkeys(plugin.kind for plugin in routers.values()))
        self.route_caches = {kind: ObjectCache(keep=partial(self._names_a_route_of_ours, kind)) for kind in kinds}
        """Per routed kind, the objects that owned rollouts name (not every such object in the cluster)."""
        self.routes = [
            Informer(
                api_client=api_client,
                resource=Resource(
                    group=kind.group, version=kind.version, plural=kind.plural, namespace=settings.namespace
                ),
                on_event=partial(self._on_route_event, kind),
                on_list=lambda routes: None,
                cache=self.route_caches[kind],
            )
            for kind in kinds
        ]
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
        routes = {(kind.group, kind.plural): cache for kind, cache in self.route_caches.items()}
        return {(GROUP, PLURAL): self.rollout_cache, ("", "services"): self.service_cache, **routes}

    @property
    def synced(self) -> bool:
        return all(informer.synced.is_set() for informer in self._informers())

    def _informers(self) -> list[Informer]:
        return [self.rollouts, self.services, *self.routes]

    def start(self, stop: threading.Event) -> None:
        def spawn(name: str, target: Any, *args: Any) -> None:
            thread = threading.Thread(target=target, args=args, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

        spawn("watch-modelrollouts", self.rollouts.run, stop)
        for informer in self.routes:
            spawn(f"watch-{informer.resource.plural}", self._watch_routes, informer, stop)
        spawn("watch-services", self.services.run, stop)
        spawn("resync", self._resync, stop)
        self.workers.start()

    def _watch_routes(self, informer: Informer, stop: threading.Event) -> None:
        # A route cache keeps the routes the rollouts name: list them once the rollouts are known.
        while not stop.is_set() and not self.rollouts.synced.wait(0.5):
            pass
        informer.run(stop)

    def health_problem(self) -> str | None:
        """Why this replica should be restarted, or None; before start() there is none."""
        return self.workers.health_problem()

    def stop(self) -> None:
        self.queue.shut_down()
        for informer in self._informers():
            informer.stop()

    # Event handlers: quick, they only index and enqueue ----------------------------------------

    @staticmethod
    def _key(obj: JSON) -> Key:
        return obj["metadata"]["namespace"], obj["metadata"]["name"]

    def _names_a_route_of_ours(self, kind: RoutedKind, route: JSON) -> bool:
        with self._lock:
            return (kind.plural, *self._key(route)) in self._rollouts_of_route

    def _route_named(self, key: Key, obj: JSON) -> RouteKey | None:
        """The routed object the rollout's spec names, if its router is known and its config parses."""
        routing = (obj.get("spec") or {}).get("trafficRouting")
        if not isinstance(routing, dict):
            return None
        for router_key, raw in routing.items():
            plugin = self.plugins.get(router_key)
            name = None if plugin is None else plugin.routed_object(raw)
            if plugin is not None and name is not None:
                return (plugin.kind.plural, key[0], name)
        return None

    def _index(self, key: Key, obj: JSON | None) -> None:
        route = None if obj is None else self._route_named(key, obj)
        target = None if obj is None else alert_target(obj)
        unused = None
        with self._lock:
            if target is None:
                self._alert_target_of.pop(key, None)
            else:
                self._alert_target_of[key] = target
            old = self._route_of.pop(key, None)
            if old is not None:
                self._rollouts_of_route[old].discard(key)
                if not self._rollouts_of_route[old]:
                    del self._rollouts_of_route[old]
                    unused = old
            if obj is not None:
                self._route_of[key] = route
            if route is not None:
                self._rollouts_of_route[route].add(key)
                if route == unused:
                    unused = None
        if unused is not None:
            # Outside the lock: the cache takes its own, and asks the index under this one.
            plural, namespace, name = unused
            for kind, cache in self.route_caches.items():
                if kind.plural == plural:
                    cache.drop(namespace, name)

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

    def _on_route_event(self, kind: RoutedKind, event: str, obj: JSON) -> None:
        with self._lock:
            keys = list(self._rollouts_of_route.get((kind.plural, *self._key(obj)), ()))
        for key in keys:
            self.queue.add(key)

    def on_alerts(self, alerts: tuple[Alert, ...]) -> None:
        """The alert receiver's callback (on its request thread): queues every rollout of this shard
        that one of `alerts` names, firing or resolved, in the urgent lane, so that a rollback (or
        the end of a freeze) never waits behind measurements and timers. Quick: it only matches
        labels against the index the watch keeps."""
        with self._lock:
            targets = list(self._alert_target_of.items())
        named = {
            key
            for key, target in targets
            for alert in alerts
            if matches(alert, namespace=key[0], model=target.model, rollout=key[1], selector=target.selector)
        }
        for key in named:
            self.queue.add(key, urgent=True)
        if named:
            log.info("alerts name rollouts", extra={"alerts": len(alerts), "rollouts": len(named)})

    def _resync(self, stop: threading.Event) -> None:
        """Every known rollout, whatever its router (or none that parses), once per period, the
        adds spread evenly over the period. All at once, 5,000 keys would queue ahead of every
        timer and measurement due meanwhile and make them seconds late (bench/scale.py, staggered);
        spread, they are a trickle of N/period passes per second."""
        while not stop.is_set():
            with self._lock:
                keys = list(self._route_of)
            gap = self.settings.resync_seconds / max(len(keys), 1)
            if not keys and stop.wait(self.settings.resync_seconds):
                return
            for key in keys:
                if stop.wait(gap):
                    return
                self.queue.add(key, resync=True)
