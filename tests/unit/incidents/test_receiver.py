"""The webhook receiver over real loopback sockets: every refusal (401, 404, 405, 408, 411, 413,
415, 400) answers at once and changes nothing; a valid notification registers its alerts and
reaches the callback; the namespace fence; deadlines, the connection cap, TLS."""

from __future__ import annotations

import json
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY

from controller.incidents import AlertReceiver, ReceiverSettings, TLSFiles
from controller.incidents.alerts import Alert, AlertStatus
from localenv.alertmanager import loopback_certificate

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def notification(*alerts: dict[str, Any]) -> dict[str, Any]:
    return {"version": "4", "status": "firing", "receiver": "controller", "alerts": list(alerts)}


def firing(fingerprint: str = "f1", *, namespace: str = "ml", model: str = "iris", **extra: str) -> dict[str, Any]:
    return {
        "status": "firing",
        "labels": {"alertname": "ModelErrors", "namespace": namespace, "model": model, **extra},
        "startsAt": "2026-11-30T10:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "fingerprint": fingerprint,
    }


def resolved(fingerprint: str = "f1") -> dict[str, Any]:
    return {**firing(fingerprint), "status": "resolved", "endsAt": "2026-11-30T10:05:00Z"}


class Received:
    """What the callback was handed."""

    def __init__(self) -> None:
        self.calls: list[tuple[Alert, ...]] = []
        self.fail = False

    def __call__(self, alerts: tuple[Alert, ...]) -> None:
        self.calls.append(alerts)
        if self.fail:
            raise RuntimeError("the work queue is gone")


MakeReceiver = Callable[..., AlertReceiver]


@pytest.fixture
def make_receiver() -> Iterator[MakeReceiver]:
    started: list[AlertReceiver] = []

    def make(*, on_alerts: Callable[[tuple[Alert, ...]], None] | None = None, **settings: Any) -> AlertReceiver:
        options: dict[str, Any] = {"bearer_token": TOKEN, "host": "127.0.0.1", "port": 0, **settings}
        receiver = AlertReceiver(settings=ReceiverSettings(**options), on_alerts=on_alerts or Received())
        receiver.start()
        started.append(receiver)
        return receiver

    yield make
    for receiver in started:
        receiver.stop(timeout_seconds=5)


@pytest.fixture
def received() -> Received:
    return Received()


@pytest.fixture
def receiver(make_receiver: MakeReceiver, received: Received) -> AlertReceiver:
    return make_receiver(on_alerts=received, allowed_namespaces=frozenset({"ml", "ops"}))


def post(receiver: AlertReceiver, body: Any, *, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(receiver.url, json=body, headers=AUTH if headers is None else headers, timeout=5)


def requests_answered(code: int) -> float:
    return REGISTRY.get_sample_value("model_rollouts_alert_receiver_requests_total", {"code": str(code)}) or 0.0


def raw_exchange(receiver: AlertReceiver, data: bytes, *, wait_seconds: float = 5.0) -> bytes:
    """Sends `data` as is and reads until the server closes the connection."""
    with socket.create_connection(("127.0.0.1", receiver.port), timeout=wait_seconds) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


# Refusals ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": "Bearer"},
    ],
    ids=["none", "wrong", "not-bearer", "longer", "empty"],
)
def test_a_request_without_the_token_is_refused_with_401_and_changes_nothing(
    receiver: AlertReceiver, received: Received, headers: dict[str, str]
) -> None:
    # given a receiver that holds no alert
    before = requests_answered(401)

    # when a valid notification arrives without the right bearer token
    response = post(receiver, notification(firing()), headers=headers)

    # then it is refused, says why and how to authenticate, and nothing changed
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert "bearer token" in response.json()["error"]
    assert receiver.alerts.firing() == ()
    assert received.calls == []
    assert requests_answered(401) == before + 1


def test_a_body_over_the_limit_is_refused_with_413_from_its_length_alone(
    make_receiver: MakeReceiver, received: Received
) -> None:
    # given a receiver that takes at most 1 KiB
    receiver = make_receiver(on_alerts=received, max_body_bytes=1024)

    # when a client announces 100 MB and sends none of it
    started = time.monotonic()
    answer = raw_exchange(
        receiver,
        b"POST /alertmanager/webhook HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN.encode() + b"\r\n"
        b"Content-Type: application/json\r\nContent-Length: 100000000\r\n\r\n",
    )

    # then the answer is 413 at once, without waiting for (or reading) the body, and nothing changed
    assert answer.startswith(b"HTTP/1.0 413")
    assert b"over the limit of 1024 bytes" in answer
    assert time.monotonic() - started < 2
    assert receiver.alerts.firing() == () and received.calls == []

    # and a body just over the limit is refused the same way
    big = notification(firing()) | {"padding": "x" * 1024}
    assert post(receiver, big).status_code == 413


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"{", "body is not JSON"),
        (b"\xff\xfe\x00", "body is not JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b"1" * 5000, "body is not JSON"),
        (b'{"alerts": []}', "version: missing"),
        (b'{"version": "3", "alerts": []}', "version: must be '4'"),
        (json.dumps(notification(firing() | {"labels": {"namespace": 3}})).encode(), "alerts[0].labels.namespace"),
        (json.dumps(notification(firing() | {"startsAt": "soon"})).encode(), "alerts[0].startsAt"),
    ],
    ids=["truncated", "not-utf8", "deep", "huge-int", "no-version", "version-3", "label-type", "time"],
)
def test_a_malformed_body_is_refused_with_400_naming_the_field(
    make_receiver: MakeReceiver, received: Received, body: bytes, error: str
) -> None:
    receiver = make_receiver(on_alerts=received, max_body_bytes=256 * 1024)
    response = httpx.post(receiver.url, content=body, headers={**AUTH, "Content-Type": "application/json"}, timeout=5)
    assert response.status_code == 400
    assert error in response.json()["error"]
    assert receiver.alerts.firing() == () and received.calls == []


def test_other_paths_methods_media_types_and_chunked_bodies_are_refused(
    receiver: AlertReceiver, received: Received
) -> None:
    body = json.dumps(notification(firing())).encode()
    base = receiver.url

    # another path: 404, even with the token
    assert httpx.post(base + "x", content=body, headers=AUTH, timeout=5).status_code == 404
    # another method: 405 with Allow
    response = httpx.get(base, headers=AUTH, timeout=5)
    assert (response.status_code, response.headers["Allow"]) == (405, "POST")
    assert httpx.put(base, content=body, headers=AUTH, timeout=5).status_code == 405
    # not JSON: 415
    plain = {**AUTH, "Content-Type": "text/plain"}
    assert httpx.post(base, content=body, headers=plain, timeout=5).status_code == 415
    # a chunked body (no Content-Length): 411
    chunked = httpx.post(base, content=iter([body]), headers={**AUTH, "Content-Type": "application/json"}, timeout=5)
    assert chunked.status_code == 411
    # a broken request line: 400 from the HTTP layer, still answered in JSON
    assert raw_exchange(receiver, b"POST /a b HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.0 400")
    # and none of these changed anything
    assert receiver.alerts.firing() == () and received.calls == []


# Valid notifications ---------------------------------------------------------------------------------


def test_a_valid_notification_registers_its_firing_alerts_and_reaches_the_callback(
    receiver: AlertReceiver, received: Received
) -> None:
    # given a receiver with no alert
    # when Alertmanager notifies of two firing alerts
    response = post(receiver, notification(firing("f1"), firing("f2", model="wine")))

    # then they are held as firing, matched by their labels, and handed to the callback once
    assert response.status_code == 200
    assert response.json() == {"accepted": 2, "ignored": {}}
    (iris,) = receiver.alerts.matching(namespace="ml", model="iris", rollout="iris")
    assert iris.fingerprint == "f1" and iris.name == "ModelErrors"
    assert [a.fingerprint for a in receiver.alerts.firing()] == ["f1", "f2"]
    assert [[a.fingerprint for a in call] for call in received.calls] == [["f1", "f2"]]


def test_a_resolved_notification_removes_the_alert(receiver: AlertReceiver, received: Received) -> None:
    # given a firing alert
    post(receiver, notification(firing("f1")))

    # when it is resolved
    response = post(receiver, notification(resolved("f1")) | {"status": "resolved"})

    # then it no longer fires, and the callback heard of it
    assert response.status_code == 200
    assert receiver.alerts.matching(namespace="ml", model="iris", rollout="iris") == ()
    assert received.calls[-1][0].status == AlertStatus.RESOLVED


def test_alerts_naming_a_namespace_that_is_not_watched_are_ignored_and_counted(
    receiver: AlertReceiver, received: Received
) -> None:
    # given a receiver of a controller watching ml and ops
    metric = "model_rollouts_alert_receiver_alerts_ignored_total"
    before = REGISTRY.get_sample_value(metric, {"reason": "namespace_not_watched"}) or 0.0

    # when one notification names ml, kube-system, and no namespace at all
    no_namespace = firing("f3")
    del no_namespace["labels"]["namespace"]
    response = post(receiver, notification(firing("f1"), firing("f2", namespace="kube-system"), no_namespace))

    # then kube-system's alert is ignored (answered, counted) and never reaches the registry or callback
    assert response.status_code == 200
    assert response.json() == {"accepted": 2, "ignored": {"namespace_not_watched": 1}}
    assert {a.fingerprint for a in receiver.alerts.firing()} == {"f1", "f3"}
    assert {a.fingerprint for a in received.calls[0]} == {"f1", "f3"}
    assert REGISTRY.get_sample_value(metric, {"reason": "namespace_not_watched"}) == before + 1


def test_a_callback_that_fails_answers_500_so_that_alertmanager_sends_again(
    receiver: AlertReceiver, received: Received
) -> None:
    # given a callback that fails once
    received.fail = True
    assert post(receiver, notification(firing("f1"))).status_code == 500

    # when Alertmanager sends the notification again, then it is taken in once
    received.fail = False
    assert post(receiver, notification(firing("f1"))).status_code == 200
    assert len(receiver.alerts.firing()) == 1


# Deadlines, capacity, TLS, lifecycle ---------------------------------------------------------------


def test_a_client_that_stalls_is_cut_off_at_the_request_deadline(make_receiver: MakeReceiver) -> None:
    # given a receiver with a 0.5 s deadline per connection
    receiver = make_receiver(request_timeout_seconds=0.5)

    # when a client sends its headers a byte every 0.2 s (each read is within a plain socket timeout)
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", receiver.port), timeout=5) as sock:
        closed = False
        for byte in b"POST /alertmanager/webhook HTTP/1.1\r\nHost: x\r\n":
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                closed = True
                break
            time.sleep(0.2)
            if time.monotonic() - started > 3:
                break
        if not closed:
            sock.settimeout(3)
            closed = sock.recv(1024) == b""

    # then the receiver closed the connection at about the deadline
    assert closed
    assert time.monotonic() - started < 3


def test_a_body_that_does_not_arrive_in_time_is_answered_408(make_receiver: MakeReceiver, received: Received) -> None:
    receiver = make_receiver(on_alerts=received, request_timeout_seconds=0.5)
    answer = raw_exchange(
        receiver,
        b"POST /alertmanager/webhook HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN.encode() + b"\r\n"
        b"Content-Type: application/json\r\nContent-Length: 50\r\n\r\n{",
    )
    assert answer.startswith(b"HTTP/1.0 408")
    assert received.calls == []


def test_connections_beyond_the_cap_are_closed_unanswered_and_counted(make_receiver: MakeReceiver) -> None:
    # given a receiver serving one connection at a time, held by a client that sends nothing
    receiver = make_receiver(max_connections=1, request_timeout_seconds=2)
    dropped = "model_rollouts_alert_receiver_connections_dropped_total"
    before = REGISTRY.get_sample_value(dropped) or 0.0
    with socket.create_connection(("127.0.0.1", receiver.port), timeout=5) as holder:
        holder.sendall(b"POST")
        time.sleep(0.2)  # the accepting thread has handed it to its own thread

        # when a second client connects, then it is closed at once, unanswered, and counted
        with pytest.raises(httpx.TransportError):
            post(receiver, notification(firing()))
        assert REGISTRY.get_sample_value(dropped) == before + 1

    # and once the slot is free, requests are served again
    deadline = time.monotonic() + 5
    while True:
        try:
            assert post(receiver, notification(firing())).status_code == 200
            break
        except httpx.TransportError:
            assert time.monotonic() < deadline
            time.sleep(0.1)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    """A self-signed certificate for 127.0.0.1 (openssl, installed by `make setup`)."""
    cert, key = loopback_certificate(tmp_path_factory.mktemp("tls"))
    return TLSFiles(cert_file=cert, key_file=key)


def test_with_tls_the_receiver_serves_https_only(
    make_receiver: MakeReceiver, received: Received, certificate: TLSFiles
) -> None:
    # given a receiver with a certificate
    receiver = make_receiver(on_alerts=received, tls=certificate)
    assert receiver.url.startswith("https://127.0.0.1:")

    # when a client that trusts the certificate notifies, then it is taken in
    trust = ssl.create_default_context(cafile=str(certificate.cert_file))
    response = httpx.post(receiver.url, json=notification(firing()), headers=AUTH, verify=trust, timeout=5)
    assert response.status_code == 200
    assert len(receiver.alerts.firing()) == 1

    # and the token is still required over TLS
    assert httpx.post(receiver.url, json={}, verify=trust, timeout=5).status_code == 401

    # and plain HTTP to the TLS port gets no answer
    with pytest.raises(httpx.TransportError):
        httpx.post(receiver.url.replace("https", "http"), json={}, headers=AUTH, timeout=5)


def test_a_tls_client_that_never_shakes_hands_does_not_hold_up_others(
    make_receiver: MakeReceiver, certificate: TLSFiles
) -> None:
    receiver = make_receiver(tls=certificate, request_timeout_seconds=1)
    trust = ssl.create_default_context(cafile=str(certificate.cert_file))
    with socket.create_connection(("127.0.0.1", receiver.port), timeout=5):
        # a connection open, silent: the handshake waits on its own thread, not the accepting one
        started = time.monotonic()
        response = httpx.post(receiver.url, json=notification(firing()), headers=AUTH, verify=trust, timeout=5)
        assert response.status_code == 200
        assert time.monotonic() - started < 0.5


def test_stop_returns_promptly_and_frees_the_port(make_receiver: MakeReceiver) -> None:
    receiver = make_receiver()
    port = receiver.port
    started = time.monotonic()
    receiver.stop(timeout_seconds=5)
    assert time.monotonic() - started < 1
    with pytest.raises(httpx.ConnectError):
        httpx.post(f"http://127.0.0.1:{port}/alertmanager/webhook", json={}, timeout=1)


@pytest.mark.parametrize(
    "settings",
    [
        {"bearer_token": ""},
        {"bearer_token": " padded "},
        {"bearer_token": "t", "path": "no-slash"},
        {"bearer_token": "t", "max_body_bytes": 0},
        {"bearer_token": "t", "port": 70000},
    ],
)
def test_settings_that_would_open_the_receiver_or_break_it_are_refused(settings: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        ReceiverSettings(**settings)


def test_the_token_never_shows_in_the_settings_repr() -> None:
    assert TOKEN not in repr(ReceiverSettings(bearer_token=TOKEN))


def test_a_missing_certificate_fails_start_and_leaves_no_socket(tmp_path: Path) -> None:
    missing = TLSFiles(cert_file=tmp_path / "nope.pem", key_file=tmp_path / "nope.key")
    receiver = AlertReceiver(settings=ReceiverSettings(bearer_token=TOKEN, host="127.0.0.1", port=0, tls=missing))
    with pytest.raises(OSError):
        receiver.start()
    with pytest.raises(RuntimeError, match="not started"):
        _ = receiver.port
