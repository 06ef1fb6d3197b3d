"""Alerts roll back, freeze and are refused through the real parts: a real Prometheus evaluates an
alerting rule over the model metrics, sends to a real Alertmanager, which posts to the receiver of
the real controller process, which moves the real HTTPRoute on the local API server. Everything on
127.0.0.1.

* a canary whose candidate starts failing is rolled back by the alert: weight 0 on the route, the
  alert named in status.incident, a condition, the history and an IncidentRollback Event;
* an alert about the model (its stable version failing) freezes a new rollout before any traffic,
  the message naming it, until it resolves; then the rollout starts;
* calls to the running controller's receiver without the token, too large or malformed are
  refused, and an alert about a namespace the controller does not watch is ignored: none changes
  the canary, which the same call with the token then rolls back (the refusals were not luck);
* with `spec.incidents.action: pause` the alert holds the canary at its weight until it resolves;
* a freeze survives a controller killed and replaced (whose registry is empty) and ends when the
  new controller hears the alert resolved.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from localenv.alertmanager import LocalAlertmanager
from localenv.controller import RunningController, start_controller
from localenv.controlplane import ControlPlane
from localenv.prometheus import Behaviour, MetricsPlayer, ModelMetricsExporter
from tests.integration.incident_world import (
    ALERT_NAME,
    AlertingPrometheus,
    ReceiverEnd,
    controller_with_receiver,
    receiver_end,
)
from tests.integration.rollout_world import WeightRecorder, World, rollout_manifest, wait_for

pytestmark = pytest.mark.integration

FAILING = Behaviour(error_rate=0.5)
HOLD: list[dict[str, Any]] = [{"setWeight": 20}, {"pause": {"duration": "1h"}}, {"setWeight": 60}]
ALERT_TIMEOUT = 30.0


@pytest.fixture(scope="module")
def receiver(tmp_path_factory: pytest.TempPathFactory) -> ReceiverEnd:
    """Where each test's controller serves the receiver (the same port, one controller at a time)."""
    return receiver_end(tmp_path_factory.mktemp("receiver"))


@pytest.fixture(scope="module")
def alertmanager(receiver: ReceiverEnd) -> Iterator[LocalAlertmanager]:
    with LocalAlertmanager(receiver_url=receiver.url, bearer_token=receiver.token) as running:
        yield running


@pytest.fixture(scope="module")
def alerting_prometheus(
    exporter: ModelMetricsExporter, alertmanager: LocalAlertmanager
) -> Iterator[AlertingPrometheus]:
    server = AlertingPrometheus(scrape_targets=[exporter.target], alertmanager=f"127.0.0.1:{alertmanager.port}")
    server.start()
    yield server
    server.close()


@pytest.fixture
def incident_controller(
    control_plane: ControlPlane, namespace: str, tmp_path: Path, receiver: ReceiverEnd
) -> Iterator[RunningController]:
    """The real controller, watching the test's namespace, with its Alertmanager receiver on."""
    log_file = tmp_path / "controller.log"
    with controller_with_receiver(
        control_plane=control_plane, namespace=namespace, log_file=log_file, receiver=receiver
    ) as running:
        yield running


@pytest.fixture
def player(exporter: ModelMetricsExporter, namespace: str) -> Iterator[MetricsPlayer]:
    """The model's metrics, both versions healthy; the model is named after the namespace, which the
    rule copies into the alert's namespace label."""
    playing = MetricsPlayer(exporter, model=namespace)
    playing.start()
    yield playing
    playing.stop()


def raw_exchange(receiver: ReceiverEnd, data: bytes) -> bytes:
    """Sends `data` as is (a client announcing a body it need not send) and reads the whole answer."""
    with socket.create_connection(("127.0.0.1", receiver.port), timeout=10) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def events_named(world: World, reason: str) -> list[dict[str, Any]]:
    return [event for event in world.events() if event["reason"] == reason]


def condition(status: dict[str, Any], kind: str) -> dict[str, Any] | None:
    return next((c for c in status.get("conditions", []) if c["type"] == kind), None)


def start_canary(world: World, namespace: str, **spec: Any) -> WeightRecorder:
    """The rollout of v2 against v1 (model: the namespace), held at 20 % for an hour."""
    recorder = WeightRecorder(world)
    world.apply(rollout_manifest(model=namespace, steps=HOLD, **spec))
    wait_for(lambda: world.route_weights().get("v2") == 20 and world.status().get("currentStepIndex") == 1,
             what="the canary at 20 %", timeout=30, last=world.status)  # fmt: skip
    return recorder


def test_an_alert_from_prometheus_rolls_the_canary_back_and_names_the_alert(
    world: World,
    namespace: str,
    incident_controller: RunningController,
    alerting_prometheus: AlertingPrometheus,
    player: MetricsPlayer,
) -> None:
    # given a canary at 20 %, healthy, and no alert firing
    recorder = start_canary(world, namespace)
    assert not [a for a in alerting_prometheus.firing() if a["labels"].get("model") == namespace]

    # when the candidate starts failing half of its requests
    player.play("v2", FAILING)

    # then the rule fires, Alertmanager tells the controller, and v2 is back at weight 0 on the route
    wait_for(lambda: recorder.latest().get("v2") == 0, what="v2 at weight 0", timeout=ALERT_TIMEOUT,
             last=world.status)  # fmt: skip
    status = world.wait_for_phase("RolledBack", timeout=10)
    assert recorder.latest() == {"v1": 100, "v2": 0}
    # never a flap, never a split summing to zero
    assert recorder.candidate_weights() == [0, 20, 0]
    assert all(sum(split.values()) == 100 for split in recorder.seen)

    # and the status names the alert: its name, labels and start
    incident = status["incident"]
    assert incident["alertname"] == ALERT_NAME
    assert incident["labels"]["namespace"] == namespace and incident["labels"]["model"] == namespace
    assert incident["labels"]["version"] == "v2" and incident["labels"]["severity"] == "page"
    assert incident["response"] == "RolledBack" and incident["holding"] is False
    assert datetime.fromisoformat(incident["startsAt"]) <= datetime.now(UTC)
    fired = [a for a in alerting_prometheus.firing() if a["labels"].get("model") == namespace]
    assert fired and fired[0]["labels"]["alertname"] == ALERT_NAME
    assert ALERT_NAME in status["message"]

    # and so do a condition, the history and a Warning Event
    alert_condition = condition(status, "IncidentAlert")
    assert alert_condition is not None and alert_condition["status"] == "True"
    assert alert_condition["reason"] == "IncidentRollback"
    assert status["history"][-1]["reason"] == "IncidentRollback"
    assert status["history"][-1]["phase"] == "RolledBack"
    events = wait_for(lambda: events_named(world, "IncidentRollback"), what="an IncidentRollback Event")
    assert events[0]["type"] == "Warning"
    assert f"alert {ALERT_NAME} " in events[0]["message"]
    assert f'namespace="{namespace}"' in events[0]["message"]
    assert events[0]["message"].endswith("all traffic returned to v1")

    # when Alertmanager and Prometheus go on (the alert keeps firing), nothing moves again
    player.play("v2", Behaviour())
    recorder.stop()
    assert recorder.candidate_weights() == [0, 20, 0]


def test_an_alert_about_the_model_freezes_a_new_rollout_until_it_resolves(
    world: World,
    namespace: str,
    incident_controller: RunningController,
    alerting_prometheus: AlertingPrometheus,
    player: MetricsPlayer,
) -> None:
    # given the model's stable version failing, and the alert firing for it
    player.play("v1", FAILING)
    wait_for(
        lambda: [a for a in alerting_prometheus.firing() if a["labels"].get("model") == namespace],
        what="the alert firing in Prometheus",
        timeout=ALERT_TIMEOUT,
    )

    # and heard by the controller (else the rollout could start before the alert arrives)
    wait_for(lambda: "model_rollouts_alerts_firing 1.0" in incident_controller.metrics(),
             what="the controller holding the alert", timeout=ALERT_TIMEOUT)  # fmt: skip

    # when a new rollout of the model is applied
    recorder = WeightRecorder(world)
    world.apply(rollout_manifest(model=namespace, steps=HOLD))

    # then it is frozen before any traffic: Pending, its message naming the alert
    frozen = wait_for(
        lambda: (s := world.status()).get("message", "").startswith("frozen: ") and s,
        what="the rollout frozen",
        timeout=ALERT_TIMEOUT,
        last=world.status,
    )
    assert frozen["phase"] == "Pending"
    assert f"alert {ALERT_NAME} " in frozen["message"] and 'version="v1"' in frozen["message"]
    assert frozen["incident"]["response"] == "Frozen" and frozen["incident"]["holding"] is True
    freeze_events = wait_for(lambda: events_named(world, "IncidentFreeze"), what="an IncidentFreeze Event")
    assert ALERT_NAME in freeze_events[0]["message"]
    # and stays so: v2 gets no traffic
    wait_for(lambda: world.status().get("phase") == "Pending" and events_named(world, "IncidentFreeze"),
             what="still frozen", timeout=5)  # fmt: skip
    assert recorder.candidate_weights() == [0]

    # when the stable version recovers and the alert resolves
    player.play("v1", Behaviour())

    # then the freeze is lifted and the rollout shifts traffic
    wait_for(lambda: recorder.latest().get("v2") == 20, what="v2 at 20 %", timeout=ALERT_TIMEOUT, last=world.status)
    status = world.status()
    assert status["incident"]["holding"] is False
    assert events_named(world, "IncidentResolved")
    resolved = condition(status, "IncidentAlert")
    assert resolved is not None and resolved["status"] == "False" and resolved["reason"] == "AlertResolved"
    recorder.stop()
    assert recorder.candidate_weights() == [0, 20]


def test_refused_calls_to_the_running_receiver_change_nothing(
    world: World, namespace: str, incident_controller: RunningController, receiver: ReceiverEnd
) -> None:
    # given a canary at 20 % that opts in to GPU alerts (its selector alone decides which alerts name it)
    recorder = start_canary(world, namespace, incidents={"alertSelector": "alertname=GPUNodeDown"})
    gpu_alert = {"alertname": "GPUNodeDown", "namespace": namespace, "node": "gpu-1"}
    alert = {
        "status": "firing",
        "labels": gpu_alert,
        "startsAt": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
    }
    body = {"version": "4", "status": "firing", "alerts": [alert]}
    token = {"Authorization": f"Bearer {receiver.token}"}

    # when a valid notification naming it comes without the token, or with another one
    unauthenticated = httpx.post(receiver.url, json=body, timeout=5)
    wrong = httpx.post(receiver.url, json=body, headers={"Authorization": "Bearer not-it"}, timeout=5)
    # and a body over the 1 MiB limit, a body that is not JSON, and one with a field of the wrong shape
    oversized = raw_exchange(
        receiver,
        b"POST /alertmanager/webhook HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + receiver.token.encode()
        + b"\r\nContent-Type: application/json\r\nContent-Length: 2000000\r\n\r\n" + json.dumps(body).encode(),
    )  # fmt: skip
    not_json = httpx.post(receiver.url, content=b"{not json", headers={**token, "Content-Type": "application/json"},
                          timeout=5)  # fmt: skip
    misshapen = httpx.post(
        receiver.url, json={**body, "alerts": [{**alert, "labels": {"namespace": 7}}]}, headers=token, timeout=5
    )
    # and an alert the rollout opted in to, but about a namespace this controller does not watch
    fenced = httpx.post(
        receiver.url,
        json={**body, "alerts": [{**alert, "labels": {**gpu_alert, "namespace": "kube-system"}}]},
        headers=token,
        timeout=5,
    )

    # then each is refused as it deserves
    assert unauthenticated.status_code == 401 and wrong.status_code == 401
    assert unauthenticated.headers["WWW-Authenticate"].startswith("Bearer")
    assert oversized.startswith(b"HTTP/1.0 413") and b"over the limit of 1048576 bytes" in oversized
    assert not_json.status_code == 400 and "not JSON" in not_json.json()["error"]
    assert misshapen.status_code == 400 and "alerts[0].labels.namespace" in misshapen.json()["error"]
    assert fenced.status_code == 200 and fenced.json()["ignored"] == {"namespace_not_watched": 1}

    # and nothing changed: the canary holds 20 %, no alert is held, no incident recorded
    wait_for(lambda: world.status().get("phase") == "Progressing", what="the canary", timeout=5)
    status = world.status()
    assert status["currentWeight"] == 20 and "incident" not in status
    assert not events_named(world, "IncidentRollback")
    metrics = incident_controller.metrics()
    assert "model_rollouts_alerts_firing 0.0" in metrics
    assert 'model_rollouts_alert_receiver_requests_total{code="401"} 2.0' in metrics
    assert 'model_rollouts_alert_receiver_requests_total{code="413"} 1.0' in metrics
    assert 'model_rollouts_alert_receiver_requests_total{code="400"} 2.0' in metrics

    # when the same notification comes with the token
    accepted = httpx.post(receiver.url, json=body, headers=token, timeout=5)

    # then it is taken, and the canary is rolled back at once
    assert accepted.status_code == 200 and json.loads(accepted.text)["accepted"] == 1
    wait_for(lambda: recorder.latest().get("v2") == 0, what="v2 at weight 0", timeout=10, last=world.status)
    assert world.status()["incident"]["alertname"] == "GPUNodeDown"
    recorder.stop()
    assert recorder.candidate_weights() == [0, 20, 0]


def test_with_action_pause_the_alert_holds_the_canary_at_its_weight_until_it_resolves(
    world: World,
    namespace: str,
    incident_controller: RunningController,
    alerting_prometheus: AlertingPrometheus,
    player: MetricsPlayer,
) -> None:
    # given a canary at 20 % whose rollout asks to be paused, not rolled back, by alerts
    recorder = start_canary(world, namespace, incidents={"action": "pause"})

    # when the candidate fails and the alert fires
    player.play("v2", FAILING)

    # then the canary holds 20 %, Paused, its message naming the alert
    held = wait_for(lambda: (s := world.status()).get("message", "").startswith("paused: ") and s,
                    what="the canary paused by the alert", timeout=ALERT_TIMEOUT, last=world.status)  # fmt: skip
    assert held["phase"] == "Paused" and f"alert {ALERT_NAME} " in held["message"]
    assert held["incident"]["response"] == "Paused" and held["incident"]["holding"] is True
    assert world.route_weights() == {"v1": 80, "v2": 20}
    assert events_named(world, "IncidentPause")

    # when the candidate recovers and the alert resolves
    player.play("v2", Behaviour())

    # then the hold ends: the pause step starts over, the weight never moved
    wait_for(lambda: world.status()["incident"]["holding"] is False, what="the hold lifted", timeout=ALERT_TIMEOUT,
             last=world.status)  # fmt: skip
    status = world.status()
    assert status["phase"] == "Progressing" and status["currentStepIndex"] == 1
    assert events_named(world, "IncidentResolved")
    recorder.stop()
    assert recorder.candidate_weights() == [0, 20]


def test_a_freeze_survives_a_controller_crash_and_ends_when_the_new_one_hears_the_alert_resolved(
    world: World,
    namespace: str,
    control_plane: ControlPlane,
    tmp_path: Path,
    receiver: ReceiverEnd,
    alerting_prometheus: AlertingPrometheus,
    player: MetricsPlayer,
) -> None:
    # given a rollout frozen by an alert about the model
    first = start_controller(kubeconfig=control_plane.kubeconfig, namespace=namespace,
                             log_file=tmp_path / "first.log", extra_args=receiver.controller_args())  # fmt: skip
    try:
        player.play("v1", FAILING)
        wait_for(lambda: "model_rollouts_alerts_firing 1.0" in first.metrics(),
                 what="the controller holding the alert", timeout=ALERT_TIMEOUT)  # fmt: skip
        recorder = WeightRecorder(world)
        world.apply(rollout_manifest(model=namespace, steps=HOLD))
        wait_for(lambda: world.status().get("message", "").startswith("frozen: "), what="the rollout frozen",
                 timeout=ALERT_TIMEOUT, last=world.status)  # fmt: skip
    finally:
        # when the controller is killed, and another starts, whose registry is empty
        first.kill()
    second = start_controller(kubeconfig=control_plane.kubeconfig, namespace=namespace,
                              log_file=tmp_path / "second.log", extra_args=receiver.controller_args())  # fmt: skip
    try:
        world.action("resume")  # any event: the new controller's pass runs now
        wait_for(lambda: "rollouts.mlops.dev/action" not in (world.rollout()["metadata"].get("annotations") or {}),
                 what="the new controller's pass", timeout=15)  # fmt: skip

        # then the rollout is still frozen, though the new controller never heard the alert fire
        status = world.status()
        assert status["phase"] == "Pending" and status["message"].startswith("frozen: ")
        assert status["incident"]["holding"] is True
        assert "model_rollouts_alerts_firing 0.0" in second.metrics()

        # when the model recovers and Alertmanager sends the alert resolved to the new controller
        player.play("v1", Behaviour())

        # then the freeze ends and the rollout shifts traffic
        wait_for(lambda: recorder.latest().get("v2") == 20, what="v2 at 20 %", timeout=ALERT_TIMEOUT,
                 last=world.status)  # fmt: skip
        assert world.status()["incident"]["holding"] is False
        recorder.stop()
        assert recorder.candidate_weights() == [0, 20]
    finally:
        second.stop()
        print(second.log()[-3000:])
