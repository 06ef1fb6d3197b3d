"""What a pass costs in API calls when it reads its rollout and route from the informers' caches,
and why a stale cache cannot make a write land on a state the pass did not see.

The real `Kube` runs over an in-memory API server that keeps resourceVersions, refuses a write
based on an old one with 409 Conflict, and feeds its watch events to the caches as an informer
does (at once, or when a test lets them through)."""

from __future__ import annotations

import copy
import itertools
import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from controller.api import ACTION_ANNOTATION, GROUP, PLURAL
from controller.checks import CheckContext, CheckOutcome, Verdict
from controller.errors import TemporaryError
from controller.events import SendsEvents
from controller.kube import Kube
from controller.reconcile import Checkers, Reconciler
from controller.routers import gatewayapi
from controller.watch import LabelSelector, ObjectCache

JSON = dict[str, Any]
NS = "ns"
T0 = datetime(2026, 1, 1, tzinfo=UTC)


class FakeServer:
    """The calls Kube makes on CustomObjectsApi and CoreV1Api, over objects held in memory."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], JSON] = {}
        self.calls: Counter[str] = Counter()
        self.caches: dict[str, ObjectCache] = {}
        self.deliver = True
        self.undelivered: list[tuple[str, JSON]] = []
        self._versions = itertools.count(100)

    # What the informers receive
    def _store(self, plural: str, obj: JSON, *, event: str = "MODIFIED") -> JSON:
        obj = copy.deepcopy(obj)
        obj["metadata"]["resourceVersion"] = str(next(self._versions))
        self.objects[(plural, obj["metadata"]["name"])] = obj
        self.undelivered.append((plural, obj))
        if self.deliver:
            self.flush()
        return copy.deepcopy(obj)

    def flush(self) -> None:
        for plural, obj in self.undelivered:
            if plural in self.caches:
                self.caches[plural].apply("MODIFIED", copy.deepcopy(obj))
        self.undelivered.clear()

    def create(self, plural: str, obj: JSON) -> None:
        self._store(plural, obj, event="ADDED")

    def change(self, plural: str, name: str, **metadata: Any) -> None:
        """A change made by someone else (a person, another controller)."""
        obj = copy.deepcopy(self.objects[(plural, name)])
        obj["metadata"].update(metadata)
        self._store(plural, obj)

    def _current(self, plural: str, name: str, version: str | None) -> JSON:
        found = self.objects[(plural, name)]
        if version is not None and found["metadata"]["resourceVersion"] != version:
            raise ApiException(status=409, reason="Conflict")
        return copy.deepcopy(found)

    # CustomObjectsApi
    def get_namespaced_custom_object(self, group: str, version: str, ns: str, plural: str, name: str) -> JSON:
        self.calls[f"get {plural}"] += 1
        if (plural, name) not in self.objects:
            raise ApiException(status=404, reason="Not Found")
        return copy.deepcopy(self.objects[(plural, name)])

    def replace_namespaced_custom_object(
        self, group: str, version: str, ns: str, plural: str, name: str, body: JSON
    ) -> JSON:
        self.calls[f"update {plural}"] += 1
        self._current(plural, name, body["metadata"].get("resourceVersion"))
        return self._store(plural, body)

    def replace_namespaced_custom_object_status(
        self, group: str, version: str, ns: str, plural: str, name: str, body: JSON
    ) -> JSON:
        self.calls[f"write status of {plural}"] += 1
        current = self._current(plural, name, body["metadata"].get("resourceVersion"))
        return self._store(plural, {**current, "status": body["status"]})

    def patch_namespaced_custom_object(
        self, group: str, version: str, ns: str, plural: str, name: str, patch: list[JSON], **_: Any
    ) -> JSON:
        self.calls[f"patch {plural}"] += 1
        current = self._current(plural, name, None)
        meta = current["metadata"]
        for op in patch:
            path = op["path"].split("/")[2:]
            if path == ["resourceVersion"]:
                self._current(plural, name, op["value"])
            elif path[0] == "finalizers" and op["op"] == "add":
                meta["finalizers"] = op["value"] if len(path) == 1 else [*meta.get("finalizers", []), op["value"]]
            elif path[0] == "annotations" and op["op"] == "remove":
                meta.get("annotations", {}).pop(path[1].replace("~1", "/"), None)
        return self._store(plural, current)

    # CoreV1Api, answering as raw responses (`_preload_content=False`), and Events
    def read_namespaced_service(self, name: str, namespace: str, **_: Any) -> Any:
        self.calls["get services"] += 1
        if ("services", name) not in self.objects:
            raise ApiException(status=404, reason="Not Found")
        return SimpleNamespace(data=json.dumps(self.objects[("services", name)]).encode())

    def create_namespaced_custom_object(
        self, group: str, version: str, ns: str, plural: str, body: JSON, **_: Any
    ) -> Any:
        assert (group, plural) == ("events.k8s.io", "events"), "the reconciler creates no other object"
        self.calls["emit event"] += 1
        return SimpleNamespace(read=lambda: b"{}")


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


class RunStartingChecker:
    """An analysis checker that starts a run on the analyze step it is shown and measures nothing
    before its first look, due in 30 s; it records the step of every call."""

    def __init__(self) -> None:
        self.ran_on: list[int | None] = []

    def __call__(self, *, context: CheckContext) -> CheckOutcome:
        step = context.step.index if context.step is not None else None
        self.ran_on.append(step)
        run = {"runs": [{"name": f"step-{step}", "startedAt": context.status.step_started_at}]}
        return CheckOutcome(verdict=Verdict.RUNNING, requeue_after=30, status_fields={"analysis": run})

    def validate(self, *, context: CheckContext) -> None:
        return None


def world(
    steps: list[JSON], *, events: SendsEvents | None = None, sharded: bool = False, checkers: Checkers | None = None
) -> tuple[FakeServer, Reconciler, Clock]:
    """A route, two Services and a rollout on them; `sharded`: the rollout is labelled shard=a and
    the reconciler owns that shard."""
    server = FakeServer()
    kube = Kube(api_client=client.ApiClient())
    kube.custom = server  # type: ignore[assignment]
    kube.core = server  # type: ignore[assignment]
    for plural, group in ((PLURAL, GROUP), (gatewayapi.PLURAL, gatewayapi.GROUP), ("services", "")):
        server.caches[plural] = ObjectCache()
        kube.use_cache(group=group, plural=plural, cache=server.caches[plural])
    for version in ("v1", "v2"):
        server.create(
            "services", {"metadata": {"name": f"iris-{version}", "namespace": NS}, "spec": {"ports": [{"port": 8080}]}}
        )
    server.create(
        gatewayapi.PLURAL,
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": {"name": "iris", "namespace": NS},
            "spec": {"rules": [{"backendRefs": [{"name": "iris-v1", "port": 8080, "weight": 100}]}]},
        },
    )
    server.create(
        PLURAL,
        {
            "apiVersion": "rollouts.mlops.dev/v1alpha1",
            "kind": "ModelRollout",
            "metadata": {
                "name": "iris",
                "namespace": NS,
                "uid": "u1",
                "generation": 1,
                "labels": {"shard": "a"} if sharded else {},
            },
            "spec": {
                "model": "iris",
                "versions": [{"version": v, "backend": {"service": f"iris-{v}", "port": 8080}} for v in ("v1", "v2")],
                "baseline": "v1",
                "candidate": "v2",
                "trafficRouting": {"gatewayAPI": {"httpRoute": "iris"}},
                "steps": steps,
            },
        },
    )
    clock = Clock()
    selector = LabelSelector.parse("shard=a" if sharded else "")
    return (
        server,
        Reconciler(kube=kube, clock=clock, events=events, selector=selector, checkers=checkers or Checkers()),
        clock,
    )


def phase(server: FakeServer) -> str | None:
    return (server.objects[(PLURAL, "iris")].get("status") or {}).get("phase")


def weights(server: FakeServer) -> list[int]:
    return [ref["weight"] for ref in server.objects[(gatewayapi.PLURAL, "iris")]["spec"]["rules"][0]["backendRefs"]]


def run_pass(server: FakeServer, reconciler: Reconciler) -> Counter[str]:
    before = Counter(server.calls)
    reconciler.reconcile(namespace=NS, name="iris")
    return server.calls - before


def test_a_traffic_step_costs_one_route_write_and_one_status_write_and_reads_nothing() -> None:
    # given a rollout with two weight steps (then the promotion: three traffic steps)
    server, reconciler, _ = world([{"setWeight": 10}, {"setWeight": 50}])

    # when passes run until it is promoted, and once more
    passes = []
    while phase(server) != "Promoted":
        passes.append(run_pass(server, reconciler))
        assert len(passes) < 10, passes
    idle = run_pass(server, reconciler)

    # then each of the three traffic steps writes the route once and the status once, and reads
    # nothing from the server (rollout, route and Services come from the caches); the first pass
    # also adds the finalizer, and passes the gates and claims the route on its way to the first
    # weight (RolloutStarted with StepCompleted)
    assert weights(server) == [0, 100]
    traffic_step = {"update httproutes": 1, "write status of modelrollouts": 1}
    assert passes == [
        {**traffic_step, "patch modelrollouts": 1, "emit event": 2},
        {**traffic_step, "emit event": 1},
        {**traffic_step, "emit event": 1},
    ]
    # and a pass with nothing to do makes no call at all
    assert idle == {}


def test_the_pass_that_enters_an_analyze_step_starts_its_run_in_the_same_status_write() -> None:
    # given a rollout whose first weight is followed by an analyze step
    checker = RunStartingChecker()
    server, reconciler, _ = world(
        [{"setWeight": 10}, {"analyze": {"duration": "60s", "templates": [{"name": "errors"}]}}],
        checkers=Checkers(analysis=checker),
    )

    # when its first pass runs
    before = Counter(server.calls)
    requeue = reconciler.reconcile(namespace=NS, name="iris")
    calls = server.calls - before

    # then that pass wrote the weight, entered the analyze step and stored the run the checker
    # started on it, in one status write; the checker ran on the analyze step in that pass
    status = server.objects[(PLURAL, "iris")]["status"]
    assert weights(server) == [90, 10]
    assert calls["write status of modelrollouts"] == 1
    assert status["currentStepIndex"] == 1
    assert status["analysis"]["runs"] == [{"name": "step-1", "startedAt": status["stepStartedAt"]}]
    assert checker.ran_on[0] == 1
    # and the next pass is the first look's, not one at once to start the run
    assert requeue == 30


def test_a_stale_route_makes_the_write_fail_and_the_pass_that_runs_again_reads_it_fresh() -> None:
    # given a new rollout, whose route changed on the server (a label added) while the cache has
    # not seen it yet
    server, reconciler, _ = world([{"setWeight": 10}])
    server.deliver = False
    server.change(gatewayapi.PLURAL, "iris", labels={"team": "ml"})

    # when its first pass writes the first weight on the cached version
    with pytest.raises(TemporaryError, match="409"):
        reconciler.reconcile(namespace=NS, name="iris")

    # then nothing landed, and the pass that runs again (before any watch event) reads the route
    # fresh and moves traffic on it, keeping the label
    assert weights(server) == [100]
    again = run_pass(server, reconciler)
    assert again["get httproutes"] >= 1 and again["update httproutes"] == 1
    assert weights(server) == [90, 10]
    assert server.objects[(gatewayapi.PLURAL, "iris")]["metadata"]["labels"] == {"team": "ml"}


def aborted_while_the_cache_has_not_seen_it(*, sharded: bool) -> tuple[FakeServer, Reconciler]:
    """A rollout paused for 10 s at 10 %, aborted by a person when the pause has run out, the
    cache not having seen the abort yet."""
    server, reconciler, clock = world(
        [{"setWeight": 10}, {"pause": {"duration": "10s"}}, {"setWeight": 50}], sharded=sharded
    )
    while phase(server) != "Progressing" or weights(server) != [90, 10]:
        run_pass(server, reconciler)
    server.deliver = False
    server.change(PLURAL, "iris", annotations={ACTION_ANNOTATION: "abort"})
    clock.now = T0 + timedelta(seconds=11)
    return server, reconciler


def test_a_sharded_controller_confirms_the_rollout_before_each_route_write() -> None:
    # given a sharded controller's rollout
    server, reconciler, _ = world([{"setWeight": 10}], sharded=True)

    # when its first pass moves traffic
    first = run_pass(server, reconciler)

    # then it read the rollout from the server once, just before the route write
    assert first["get modelrollouts"] == 1 and first["update httproutes"] == 1


def test_a_sharded_controller_never_moves_traffic_on_a_decision_it_did_not_see() -> None:
    # given a sharded controller's rollout, aborted while the cache has not seen it
    server, reconciler = aborted_while_the_cache_has_not_seen_it(sharded=True)

    # when a pass decides from the cached rollout to move on to 50 %
    with pytest.raises(TemporaryError, match="changed during the pass; traffic not moved"):
        reconciler.reconcile(namespace=NS, name="iris")

    # then no traffic moved; the pass that runs again sees the abort and sends all traffic home
    assert weights(server) == [90, 10]
    run_pass(server, reconciler)
    assert weights(server) == [100, 0]
    assert phase(server) == "Aborted"


def test_unsharded_a_change_made_during_a_pass_is_acted_on_by_the_next_pass() -> None:
    # given an unsharded controller's rollout, aborted while the cache has not seen it
    server, reconciler = aborted_while_the_cache_has_not_seen_it(sharded=False)

    # when a pass decides from the cached rollout to move on to 50 %
    with pytest.raises(TemporaryError, match="409"):
        reconciler.reconcile(namespace=NS, name="iris")

    # then that one step landed on the route, but its status write was refused; the pass that
    # runs again reads the rollout fresh, sees the abort and sends all traffic home
    assert weights(server) == [50, 50]
    assert phase(server) == "Progressing"
    again = run_pass(server, reconciler)
    assert again["get modelrollouts"] == 1
    assert weights(server) == [100, 0]
    assert phase(server) == "Aborted"
    reasons = [event["reason"] for event in server.objects[(PLURAL, "iris")]["status"]["recentEvents"]]
    assert "TrafficDrift" not in reasons, "the step the refused pass wrote is the controller's own"
