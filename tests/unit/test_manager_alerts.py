"""Alerts from the receiver queue the rollouts they name, and only those, ahead of ordinary work."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

from kubernetes import client

from controller.incidents.alerts import Alert, AlertStatus
from controller.manager import Manager, ManagerSettings
from controller.reconcile import Reconciler
from controller.workqueue import Key

JSON = dict[str, Any]


def rollout(namespace: str, name: str, *, model: str = "iris", **spec: Any) -> JSON:
    return {
        "metadata": {"namespace": namespace, "name": name, "resourceVersion": "1"},
        "spec": {"model": model, **spec},
    }


def alert(status: AlertStatus = AlertStatus.FIRING, **labels: str) -> Alert:
    return Alert(
        status=status,
        labels={"alertname": "ModelErrorRate", **labels},
        starts_at=datetime(2026, 11, 30, 10, tzinfo=UTC),
        fingerprint="f",
    )


def manager_knowing(*rollouts: JSON) -> Manager:
    # No thread is started and no request is made: only the handlers and the queue are used.
    m = Manager(api_client=client.ApiClient(), reconciler=cast(Reconciler, object()), settings=ManagerSettings())
    m._on_rollout_list(rollouts)
    while len(m.queue):  # the list queued them all: take them out, as workers would
        m.queue.done(m.queue.get())
    return m


def queued(m: Manager) -> list[Key]:
    keys = []
    while m.queue.ready(urgent=True) or m.queue.ready(urgent=False):
        keys.append(m.queue.get())
    return keys


def test_an_alert_queues_the_rollouts_of_its_namespace_and_model_urgently() -> None:
    # given rollouts of iris in ml and ops, and of another model in ml
    m = manager_knowing(rollout("ml", "iris"), rollout("ops", "iris"), rollout("ml", "mnist", model="mnist"))
    m.queue.add(("ml", "waiting"))  # an ordinary key already queued

    # when an alert about iris in ml arrives, then only ml/iris is queued, ahead of the ordinary key
    m.on_alerts((alert(namespace="ml", model="iris"),))
    assert queued(m) == [("ml", "iris"), ("ml", "waiting")]


def test_a_resolved_alert_queues_its_rollouts_too() -> None:
    m = manager_knowing(rollout("ml", "iris"))
    m.on_alerts((alert(AlertStatus.RESOLVED, namespace="ml", model="iris"),))
    assert queued(m) == [("ml", "iris")]


def test_a_rollout_label_narrows_the_alert_to_that_rollout() -> None:
    m = manager_knowing(rollout("ml", "iris"), rollout("ml", "iris-shadow"))
    m.on_alerts((alert(namespace="ml", model="iris", rollout="iris-shadow"),))
    assert queued(m) == [("ml", "iris-shadow")]


def test_a_rollouts_alert_selector_alone_decides() -> None:
    # given a rollout that opted in to GPU alerts, which carry no model label
    m = manager_knowing(rollout("ml", "iris", incidents={"alertSelector": "alertname=GPUNodeDown"}), rollout("ml", "b"))
    m.on_alerts((alert(alertname="GPUNodeDown", node="n1"),))
    assert queued(m) == [("ml", "iris")]


def test_an_alert_naming_no_rollout_queues_nothing() -> None:
    m = manager_knowing(rollout("ml", "iris"))
    m.on_alerts((alert(namespace="kube-system", model="iris"), alert(namespace="ml", model="other")))
    assert queued(m) == []


def test_a_deleted_rollout_is_no_longer_named() -> None:
    m = manager_knowing(rollout("ml", "iris"))
    m._on_rollout_event("DELETED", rollout("ml", "iris"))
    m.queue.done(m.queue.get())
    m.on_alerts((alert(namespace="ml", model="iris"),))
    assert queued(m) == []
