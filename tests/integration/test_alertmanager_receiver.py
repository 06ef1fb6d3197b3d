"""A real Alertmanager (Debian's prometheus-alertmanager, a process on 127.0.0.1) posting to the
real receiver: an alert fired through Alertmanager's API v2 arrives firing with its labels, then
resolved; a sender without the token, or with a wrong one, is refused and changes nothing; the
namespace fence holds; and the same over TLS."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from prometheus_client import REGISTRY

from controller.incidents import AlertReceiver, AlertStatus, ReceiverSettings, TLSFiles
from controller.incidents.alerts import Alert
from localenv.alertmanager import LocalAlertmanager, loopback_certificate

pytestmark = pytest.mark.integration

TOKEN = "integration-token"
WAIT_SECONDS = 15.0
LABELS = {"alertname": "ModelErrorRate", "namespace": "ml", "model": "iris", "rollout": "iris", "severity": "page"}


class Heard:
    """The receiver's callback: every alert handed over, with when it arrived."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.alerts: list[tuple[float, Alert]] = []

    def __call__(self, alerts: tuple[Alert, ...]) -> None:
        now = time.monotonic()
        with self.lock:
            self.alerts.extend((now, alert) for alert in alerts)

    def first(self, status: AlertStatus, *, since: float) -> tuple[float, Alert] | None:
        with self.lock:
            return next(((t, a) for t, a in self.alerts if a.status == status and t >= since), None)


def wait_for(what: str, condition: Callable[[], object], *, log: Callable[[], str]) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {WAIT_SECONDS:g}s; alertmanager's log:\n{log()[-3000:]}")
        time.sleep(0.02)


def answered(code: int) -> float:
    return REGISTRY.get_sample_value("model_rollouts_alert_receiver_requests_total", {"code": str(code)}) or 0.0


@pytest.fixture
def heard() -> Heard:
    return Heard()


@pytest.fixture
def receiver(heard: Heard) -> Iterator[AlertReceiver]:
    settings = ReceiverSettings(
        bearer_token=TOKEN, host="127.0.0.1", port=0, allowed_namespaces=frozenset({"ml", "ops"})
    )
    with AlertReceiver(settings=settings, on_alerts=heard) as running:
        yield running


def test_an_alert_fired_through_alertmanager_arrives_firing_then_resolved(
    receiver: AlertReceiver, heard: Heard
) -> None:
    with LocalAlertmanager(receiver_url=receiver.url, bearer_token=TOKEN) as alertmanager:
        # given Alertmanager routing every alert to the receiver, and no alert firing
        assert receiver.alerts.firing() == ()

        # when an alert naming ml/iris is fired through Alertmanager's API, as Prometheus would
        fired = time.monotonic()
        starts_at = alertmanager.fire(
            LABELS,
            annotations={"summary": "iris v2 answers 5xx"},
            generator_url="http://127.0.0.1:9090/graph?g0.expr=up",
        )

        # then the receiver holds it as firing, with its labels, annotations and start
        wait_for(
            "the alert firing",
            lambda: receiver.alerts.matching(namespace="ml", model="iris", rollout="iris"),
            log=alertmanager.log,
        )
        (alert,) = receiver.alerts.matching(namespace="ml", model="iris", rollout="iris")
        assert alert.status == AlertStatus.FIRING
        assert dict(alert.labels) == LABELS
        assert alert.annotations["summary"] == "iris v2 answers 5xx"
        assert abs((alert.starts_at - starts_at).total_seconds()) < 0.001
        assert alert.ends_at is None  # Alertmanager zeroes endsAt for an alert that fires
        assert alert.generator_url == "http://127.0.0.1:9090/graph?g0.expr=up"
        assert len(alert.fingerprint) == 16  # Alertmanager's own fingerprint
        arrival = heard.first(AlertStatus.FIRING, since=fired)
        assert arrival is not None
        print(f"\nfired through Alertmanager -> on_alerts: {arrival[0] - fired:.3f}s (group_wait 0.2s)")
        # and another rollout of the model is not named by it (its rollout label says iris)
        assert receiver.alerts.matching(namespace="ml", model="iris", rollout="iris-shadow") == ()

        # when the alert is resolved in Alertmanager
        resolved_at = time.monotonic()
        alertmanager.resolve(LABELS, starts_at=starts_at, ends_at=datetime.now(UTC))

        # then it no longer fires, and the callback heard the resolved alert
        wait_for("the alert resolved", lambda: receiver.alerts.firing() == (), log=alertmanager.log)
        resolved = heard.first(AlertStatus.RESOLVED, since=resolved_at)
        assert resolved is not None and resolved[1].fingerprint == alert.fingerprint
        print(f"resolved in Alertmanager -> on_alerts: {resolved[0] - resolved_at:.3f}s (group_interval 1s)")


def test_a_request_without_the_token_is_refused_and_changes_nothing(receiver: AlertReceiver, heard: Heard) -> None:
    # given the receiver, holding no alert
    body = {
        "version": "4",
        "status": "firing",
        "alerts": [{"status": "firing", "labels": LABELS, "startsAt": "2026-11-30T10:00:00Z"}],
    }

    # when a client posts a valid notification without the token, then it is refused
    assert httpx.post(receiver.url, json=body, timeout=5).status_code == 401
    assert receiver.alerts.firing() == () and heard.alerts == []


def test_alertmanager_with_a_wrong_token_is_refused_and_registers_nothing(
    receiver: AlertReceiver, heard: Heard
) -> None:
    # given an Alertmanager configured with the wrong token
    refused_before = answered(401)
    with LocalAlertmanager(receiver_url=receiver.url, bearer_token="not-the-token") as alertmanager:
        # when an alert is fired through it
        alertmanager.fire(LABELS)

        # then its notifications are refused with 401 (Alertmanager says so in its log), and nothing fires
        wait_for("a 401 answered", lambda: answered(401) > refused_before, log=alertmanager.log)
        wait_for("Alertmanager logging the 401", lambda: "401" in alertmanager.log(), log=alertmanager.log)
        assert receiver.alerts.firing() == () and heard.alerts == []


def test_an_alert_about_a_namespace_that_is_not_watched_is_ignored(receiver: AlertReceiver, heard: Heard) -> None:
    ignored = "model_rollouts_alert_receiver_alerts_ignored_total"
    before = REGISTRY.get_sample_value(ignored, {"reason": "namespace_not_watched"}) or 0.0
    with LocalAlertmanager(receiver_url=receiver.url, bearer_token=TOKEN) as alertmanager:
        # given an alert about kube-system, which this controller does not watch, then one about ml
        alertmanager.fire({**LABELS, "namespace": "kube-system"})
        wait_for(
            "the kube-system alert counted as ignored",
            lambda: (REGISTRY.get_sample_value(ignored, {"reason": "namespace_not_watched"}) or 0.0) > before,
            log=alertmanager.log,
        )
        alertmanager.fire(LABELS)
        wait_for("the ml alert firing", lambda: receiver.alerts.firing(), log=alertmanager.log)

        # then only the ml alert is held, and only it reached the callback
        assert [a.labels["namespace"] for a in receiver.alerts.firing()] == ["ml"]
        assert [a.labels["namespace"] for _, a in heard.alerts] == ["ml"]


def test_over_tls_alertmanager_verifies_the_receivers_certificate(heard: Heard, tmp_path: Path) -> None:
    # given a receiver serving HTTPS with a certificate Alertmanager trusts
    cert, key = loopback_certificate(tmp_path)
    settings = ReceiverSettings(
        bearer_token=TOKEN, host="127.0.0.1", port=0, tls=TLSFiles(cert_file=cert, key_file=key)
    )
    with (
        AlertReceiver(settings=settings, on_alerts=heard) as receiver,
        LocalAlertmanager(receiver_url=receiver.url, bearer_token=TOKEN, receiver_ca_file=cert) as alertmanager,
    ):
        # when an alert is fired, then it arrives over TLS
        alertmanager.fire(LABELS)
        wait_for("the alert firing over TLS", lambda: receiver.alerts.firing(), log=alertmanager.log)
        assert receiver.url.startswith("https://")
        assert heard.alerts[0][1].labels["model"] == "iris"
