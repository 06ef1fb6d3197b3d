"""The manager's event handlers queue a rollout with a safety action to carry out as urgent."""

from __future__ import annotations

from typing import Any, cast

from kubernetes import client

from controller.api import ACTION_ANNOTATION
from controller.manager import Manager, ManagerSettings
from controller.reconcile import Reconciler

JSON = dict[str, Any]


def rollout(name: str, **metadata: Any) -> JSON:
    return {"metadata": {"namespace": "ns", "name": name, "resourceVersion": "1", **metadata}, "spec": {}}


def manager() -> Manager:
    # No thread is started and no request is made: only the handlers and the queue are used.
    return Manager(api_client=client.ApiClient(), reconciler=cast(Reconciler, object()), settings=ManagerSettings())


def test_an_abort_event_is_queued_ahead_of_ordinary_events() -> None:
    # given events of ordinary rollouts, then an abort of another
    m = manager()
    m._on_rollout_event("ADDED", rollout("a"))
    m._on_rollout_event("MODIFIED", rollout("b"))
    m._on_rollout_event("MODIFIED", rollout("c", annotations={ACTION_ANNOTATION: "abort"}))

    # then the abort is handed out first
    assert [m.queue.get() for _ in range(3)] == [("ns", "c"), ("ns", "a"), ("ns", "b")]


def test_a_deletion_found_by_a_list_is_queued_first() -> None:
    m = manager()
    m._on_rollout_list([rollout("a"), rollout("gone", deletionTimestamp="2025-01-01T00:00:00Z")])
    assert m.queue.get() == ("ns", "gone")


def test_the_deleted_event_is_ordinary() -> None:
    # the object is gone: its last pass only forgets it
    m = manager()
    m._on_rollout_event("ADDED", rollout("a"))
    m._on_rollout_event("DELETED", rollout("b", deletionTimestamp="2025-01-01T00:00:00Z"))
    assert [m.queue.get() for _ in range(2)] == [("ns", "a"), ("ns", "b")]
