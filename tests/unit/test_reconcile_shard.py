"""A shard acts only on the rollouts it owns, and never on a decision made before the rollout changed.

The reconciler runs against an in-memory API that keeps resourceVersions and refuses a write
based on an old one, as the API server does."""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from controller.api import FINALIZER
from controller.errors import TemporaryError
from controller.reconcile import Reconciler
from controller.routers.ownership import OWNER_ANNOTATION
from controller.watch import LabelSelector

JSON = dict[str, Any]
SHARD = "sharding.fluxcd.io/key"
NOW = datetime(2026, 1, 1, tzinfo=UTC)


class FakeApi:
    """The calls the reconciler and the Gateway API router make, on one rollout and one route."""

    def __init__(self, rollout: JSON, route: JSON) -> None:
        self._versions = itertools.count(1)
        self.rollout: JSON | None = self._stored(rollout)
        self.route = self._stored(route)
        self.writes: list[str] = []
        self.on_service_read: Callable[[], None] = lambda: None

    def _stored(self, obj: JSON) -> JSON:
        obj = copy.deepcopy(obj)
        obj["metadata"]["resourceVersion"] = str(next(self._versions))
        return obj

    def _check(self, stored: JSON | None, meta: JSON) -> None:
        if stored is None or stored["metadata"]["resourceVersion"] != meta.get("resourceVersion"):
            raise TemporaryError("HTTP 409 Conflict", delay=0.2)

    # Changes a person (or another controller) makes meanwhile.
    def relabel(self, labels: dict[str, str]) -> None:
        assert self.rollout is not None
        self.rollout = self._stored({**self.rollout, "metadata": {**self.rollout["metadata"], "labels": labels}})

    # Kube
    def get_rollout(self, *, namespace: str, name: str) -> JSON | None:
        return copy.deepcopy(self.rollout)

    read_rollout = get_rollout

    def patch_rollout_metadata(self, *, rollout: JSON, patch: list[JSON]) -> JSON:
        assert self.rollout is not None
        self.writes.append("patch rollout")
        meta = copy.deepcopy(self.rollout["metadata"])
        for op in patch:
            path = op["path"].split("/")[2:]
            if path == ["resourceVersion"]:
                self._check(self.rollout, {"resourceVersion": op["value"]})
            elif path[0] == "finalizers":
                finalizers = meta.setdefault("finalizers", [])
                if op["op"] == "add":
                    finalizers[:] = op["value"] if len(path) == 1 else [*finalizers, op["value"]]
                elif op["op"] == "remove":
                    del finalizers[int(path[1])]
        self.rollout = self._stored({**self.rollout, "metadata": meta})
        return copy.deepcopy(self.rollout)

    def replace_rollout_status(self, *, rollout: JSON, status: JSON) -> JSON:
        self.writes.append("write status")
        self._check(self.rollout, rollout["metadata"])
        assert self.rollout is not None
        self.rollout = self._stored({**self.rollout, "status": status})
        return copy.deepcopy(self.rollout)

    def get_custom(self, **_: str) -> JSON:
        return copy.deepcopy(self.route)

    def replace_custom(self, *, body: JSON, **_: str) -> JSON:
        self.writes.append("update route")
        self._check(self.route, body["metadata"])
        self.route = self._stored(body)
        return copy.deepcopy(self.route)

    def get_service(self, *, namespace: str, name: str) -> JSON:
        self.on_service_read()
        return {"metadata": {"namespace": namespace, "name": name}, "spec": {"ports": [{"port": 8080}]}}

    def get_deployment(self, *, namespace: str, name: str) -> Any:
        return None

    def emit_event(self, **_: Any) -> None:
        self.writes.append("emit event")

    def route_weights(self) -> list[int]:
        return [ref["weight"] for ref in self.route["spec"]["rules"][0]["backendRefs"]]


def rollout(*, labels: dict[str, str], **metadata: Any) -> JSON:
    return {
        "apiVersion": "rollouts.mlops.dev/v1alpha1",
        "kind": "ModelRollout",
        "metadata": {"name": "iris", "namespace": "ns", "uid": "u1", "generation": 1, "labels": labels, **metadata},
        "spec": {
            "model": "iris",
            "versions": [{"version": v, "backend": {"service": f"iris-{v}", "port": 8080}} for v in ("v1", "v2")],
            "baseline": "v1",
            "candidate": "v2",
            "trafficRouting": {"gatewayAPI": {"httpRoute": "iris"}},
            "steps": [{"setWeight": 20}, {"pause": {}}],
        },
    }


ROUTE: JSON = {
    "apiVersion": "gateway.networking.k8s.io/v1",
    "kind": "HTTPRoute",
    "metadata": {"name": "iris", "namespace": "ns", "annotations": {OWNER_ANNOTATION: "iris"}},
    "spec": {
        "rules": [
            {
                "backendRefs": [
                    {"name": "iris-v1", "port": 8080, "weight": 100},
                    {"name": "iris-v2", "port": 8080, "weight": 0},
                ]
            }
        ]
    },
}


def shard(api: FakeApi, selector: str) -> Reconciler:
    return Reconciler(kube=api, selector=LabelSelector.parse(selector), clock=lambda: NOW)  # type: ignore[arg-type]


def progress_to_first_weight(api: FakeApi, reconciler: Reconciler) -> None:
    """Passes until the rollout has asked for its first weight (Pending, then traffic)."""
    for _ in range(5):
        if api.route_weights() == [80, 20]:
            return
        reconciler.reconcile(namespace="ns", name="iris")
    raise AssertionError(f"no traffic moved: {api.writes}")


def test_a_shard_does_nothing_at_all_with_a_rollout_of_another_shard() -> None:
    api = FakeApi(rollout(labels={SHARD: "b"}), ROUTE)

    assert shard(api, f"{SHARD}=a").reconcile(namespace="ns", name="iris") is None
    shard(api, f"{SHARD}=a").report_failure(namespace="ns", name="iris", error=RuntimeError("boom"))

    assert api.writes == []


def test_a_rollout_that_left_the_shard_while_deleting_keeps_its_finalizer_for_its_new_owner() -> None:
    # given a rollout being deleted, holding the finalizer, now labelled for shard b
    deleting = rollout(labels={SHARD: "b"}, finalizers=[FINALIZER], deletionTimestamp="2026-01-01T00:00:00Z")
    api = FakeApi(deleting, ROUTE)

    # when shard a, which still had its key queued, processes it
    shard(api, f"{SHARD}=a").reconcile(namespace="ns", name="iris")

    # then shard a neither releases the route nor removes the finalizer: that is shard b's work
    assert api.writes == []
    assert api.rollout is not None and api.rollout["metadata"]["finalizers"] == [FINALIZER]
    assert api.route["metadata"]["annotations"][OWNER_ANNOTATION] == "iris"


def test_the_owning_shard_moves_traffic() -> None:
    api = FakeApi(rollout(labels={SHARD: "a"}), ROUTE)
    progress_to_first_weight(api, shard(api, f"{SHARD}=a"))
    assert api.rollout is not None and api.rollout["status"]["phase"] == "Paused"


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({SHARD: "b"}, id="relabelled-to-another-shard"),
        pytest.param({SHARD: "a", "other": "label"}, id="changed-otherwise"),
    ],
)
def test_a_pass_that_read_the_rollout_before_it_changed_moves_no_traffic(change: dict[str, str]) -> None:
    # given a rollout of shard a, whose first pass will pass the gates and ask for its first weight
    api = FakeApi(rollout(labels={SHARD: "a"}, finalizers=[FINALIZER]), ROUTE)
    reconciler = shard(api, f"{SHARD}=a")
    writes = len(api.writes)

    # when the rollout changes in the middle of that pass, after the pass read it
    api.on_service_read = lambda: api.relabel(change)
    with pytest.raises(TemporaryError, match="traffic not moved"):
        reconciler.reconcile(namespace="ns", name="iris")

    # then that pass wrote nothing: not the route, not the status
    assert api.route_weights() == [100, 0]
    assert api.writes[writes:] == []
