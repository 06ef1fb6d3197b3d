"""The notifier: deliveries retried with backoff until they land, given up at the deadline and
reported, refused by the fence or a 4xx at once, and never a wait for notify()'s caller.

Pure cases run over httpx.MockTransport with a fake clock (sleeping advances it); the retry and
deadline cases also run once over a real loopback HTTP server, with real time."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY

from controller.notify import (
    DeliveryDropped,
    DeliveryExhausted,
    DeliveryFailed,
    DeliveryRefused,
    DeliveryRejected,
    Kind,
    Notification,
    Notifier,
    NotifierSettings,
    Sink,
    SlackSink,
    WebhookSink,
)
from controller.notify.notifier import MIN_ATTEMPT_SECONDS
from controller.outbound import OutboundPolicy

PROMOTED = Notification(
    kind=Kind.PROMOTED,
    namespace="ml",
    rollout="iris",
    model="iris",
    baseline="v1",
    candidate="v2",
    candidate_weight=100,
    reason="Promoted",
    message="v2 serves all traffic",
    time=datetime(2026, 11, 30, 10, tzinfo=UTC),
)
SECRET = "T0KEN-do-not-log"


class Failures:
    """on_failure: records what it was handed, thread-safely."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.seen: list[tuple[Notification, Sink, DeliveryFailed]] = []
        self.thread_names: list[str] = []

    def __call__(self, notification: Notification, sink: Sink, error: DeliveryFailed) -> None:
        with self.lock:
            self.seen.append((notification, sink, error))
            self.thread_names.append(threading.current_thread().name)

    def errors(self) -> list[DeliveryFailed]:
        with self.lock:
            return [error for _, _, error in self.seen]


class FakeTime:
    """A clock that only sleeping moves; records the sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def failures_of(reason: str, sink_type: str = "webhook") -> float:
    labels = {"sink_type": sink_type, "reason": reason}
    return REGISTRY.get_sample_value("model_rollouts_notification_failures_total", labels) or 0.0


def sent(sink_type: str = "webhook") -> float:
    return REGISTRY.get_sample_value("model_rollouts_notifications_sent_total", {"sink_type": sink_type}) or 0.0


def answers(*codes: int, headers: dict[str, str] | None = None) -> tuple[httpx.MockTransport, list[httpx.Request]]:
    """A transport answering each request with the next code (the last one repeats)."""
    requests: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        code = codes[min(len(requests), len(codes)) - 1]
        return httpx.Response(code, headers=headers or {}, text="no_service" if code == 404 else "")

    return httpx.MockTransport(handle), requests


def webhook(url: str = f"https://hooks.example.com/{SECRET}") -> WebhookSink:
    return WebhookSink(name="ops", url=url, headers={"Authorization": f"Bearer {SECRET}"})


def fast(**changes: Any) -> NotifierSettings:
    options: dict[str, Any] = {
        "workers": 1,
        "max_attempts": 5,
        "deadline_seconds": 10.0,
        "backoff_initial_seconds": 0.5,
        "backoff_max_seconds": 2.0,
        **changes,
    }
    return NotifierSettings(**options)


# Over MockTransport, with fake time ---------------------------------------------------------------


def test_a_delivery_that_fails_for_a_while_is_retried_with_backoff_until_it_lands() -> None:
    # given a sink that answers 503 twice, then 200
    transport, requests = answers(503, 503, 200)
    clock, failures = FakeTime(), Failures()
    before = sent()

    # when one notification is sent
    with Notifier(settings=fast(), transport=transport, on_failure=failures, sleep=clock.sleep, clock=clock.clock) as n:
        assert n.notify(PROMOTED, sinks=[webhook()])
        assert n.flush(timeout_seconds=5)

    # then it took three requests, with growing waits between them, and no failure was reported
    assert len(requests) == 3
    assert failures.errors() == []
    assert sent() == before + 1
    first, second = clock.sleeps
    assert 0.25 <= first <= 0.5 and 0.5 <= second <= 1.0  # 0.5 s doubling, with jitter down to half
    # and every request was the notification as JSON, with the sink's headers
    assert json.loads(requests[0].content)["kind"] == "Promoted"
    assert requests[0].headers["Authorization"] == f"Bearer {SECRET}"
    assert requests[0].headers["Content-Type"] == "application/json"


def test_a_delivery_that_keeps_failing_is_given_up_at_the_deadline_and_reported() -> None:
    # given a sink that always answers 503, many attempts allowed but a 10 s deadline
    transport, requests = answers(503)
    clock, failures = FakeTime(), Failures()
    before = failures_of("exhausted")

    with Notifier(
        settings=fast(max_attempts=1000), transport=transport, on_failure=failures, sleep=clock.sleep, clock=clock.clock
    ) as n:
        n.notify(PROMOTED, sinks=[webhook()])
        assert n.flush(timeout_seconds=5)

    # then it gave up within the deadline, reported once, with the last error and no secret
    (error,) = failures.errors()
    assert isinstance(error, DeliveryExhausted)
    assert error.attempts == len(requests) > 5
    assert "answered 503" in error.last_error
    assert clock.now <= 10.0 - MIN_ATTEMPT_SECONDS + 1e-9
    assert SECRET not in str(error) and "hooks.example.com" in str(error)
    assert failures_of("exhausted") == before + 1


def test_attempts_are_bounded_too() -> None:
    transport, requests = answers(500)
    clock, failures = FakeTime(), Failures()
    with Notifier(
        settings=fast(max_attempts=3), transport=transport, on_failure=failures, sleep=clock.sleep, clock=clock.clock
    ) as n:
        n.notify(PROMOTED, sinks=[webhook()])
        assert n.flush(timeout_seconds=5)
    assert len(requests) == 3
    assert isinstance(failures.errors()[0], DeliveryExhausted)


def test_retry_after_is_honoured() -> None:
    transport, requests = answers(429, 200, headers={"Retry-After": "3"})
    clock = FakeTime()
    with Notifier(settings=fast(), transport=transport, sleep=clock.sleep, clock=clock.clock) as n:
        n.notify(PROMOTED, sinks=[webhook()])
        assert n.flush(timeout_seconds=5)
    assert len(requests) == 2
    assert clock.sleeps == [3.0]


def test_a_4xx_answer_is_final_and_reported_at_once() -> None:
    # given a Slack webhook that was deleted (404 no_service)
    transport, requests = answers(404)
    failures = Failures()
    before = failures_of("rejected", "slack")
    sink = SlackSink(name="oncall", url=f"https://hooks.slack.com/services/{SECRET}")

    with Notifier(settings=fast(), transport=transport, on_failure=failures) as n:
        n.notify(PROMOTED, sinks=[sink])
        assert n.flush(timeout_seconds=5)

    # then one request only, and the failure quotes the answer, not the URL
    assert len(requests) == 1
    (error,) = failures.errors()
    assert isinstance(error, DeliveryRejected) and error.status_code == 404
    assert "answered 404: no_service" in str(error)
    assert SECRET not in str(error)
    assert failures_of("rejected", "slack") == before + 1


def test_the_outbound_fence_refuses_a_metadata_url_before_any_request() -> None:
    transport, requests = answers(200)
    failures = Failures()
    with Notifier(settings=fast(), transport=transport, on_failure=failures) as n:
        n.notify(PROMOTED, sinks=[webhook("http://169.254.169.254/latest/meta-data")])
        assert n.flush(timeout_seconds=5)
    assert requests == []
    (error,) = failures.errors()
    assert isinstance(error, DeliveryRefused)
    assert "cloud metadata address" in str(error)


def test_an_allow_list_fences_sink_hosts_too() -> None:
    transport, requests = answers(200)
    failures = Failures()
    policy = OutboundPolicy(allowed_hosts=("hooks.slack.com",))
    with Notifier(settings=fast(), policy=policy, transport=transport, on_failure=failures) as n:
        n.notify(PROMOTED, sinks=[webhook(), SlackSink(name="s", url="https://hooks.slack.com/x")])
        assert n.flush(timeout_seconds=5)
    assert [r.url.host for r in requests] == ["hooks.slack.com"]
    assert [type(e) for e in failures.errors()] == [DeliveryRefused]


def test_notify_never_blocks_when_the_queue_is_full() -> None:
    # given one worker stuck on a sink that does not answer, and room for two more deliveries
    release = threading.Event()
    handled: list[httpx.Request] = []

    def stuck(request: httpx.Request) -> httpx.Response:
        handled.append(request)
        release.wait(10)
        return httpx.Response(200)

    failures = Failures()
    before = failures_of("dropped")
    notifier = Notifier(settings=fast(queue_size=2), transport=httpx.MockTransport(stuck), on_failure=failures)
    notifier.start()
    try:
        assert notifier.notify(PROMOTED, sinks=[webhook()])
        deadline = time.monotonic() + 5
        while not handled:  # the worker has taken the first one
            assert time.monotonic() < deadline
            time.sleep(0.01)

        # when ten more notifications come, fast
        started = time.monotonic()
        results = [notifier.notify(PROMOTED, sinks=[webhook()]) for _ in range(10)]
        took = time.monotonic() - started

        # then no call waited; two were queued, eight dropped, counted and reported on the caller's thread
        assert took < 0.1
        assert results == [True, True] + [False] * 8
        assert len(failures.errors()) == 8
        assert all(isinstance(error, DeliveryDropped) for error in failures.errors())
        assert set(failures.thread_names) == {threading.current_thread().name}
        assert failures_of("dropped") == before + 8
    finally:
        release.set()
        assert notifier.flush(timeout_seconds=5)
        notifier.close()
    assert len(handled) == 3


def test_close_drops_what_is_still_queued_and_reports_it() -> None:
    # given a notifier that was never started, holding two deliveries
    failures = Failures()
    transport, requests = answers(200)
    notifier = Notifier(settings=fast(), transport=transport, on_failure=failures)
    notifier.notify(PROMOTED, sinks=[webhook(), webhook()])

    # when it closes, then both are reported as dropped, none sent, and later notifications are dropped too
    notifier.close(timeout_seconds=0.1)
    assert [type(e) for e in failures.errors()] == [DeliveryDropped, DeliveryDropped]
    assert requests == []
    assert not notifier.notify(PROMOTED, sinks=[webhook()])


def test_a_failing_on_failure_callback_does_not_end_the_worker() -> None:
    transport, requests = answers(404, 200)

    def broken(notification: Notification, sink: Sink, error: DeliveryFailed) -> None:
        raise RuntimeError("event sender gone")

    with Notifier(settings=fast(), transport=transport, on_failure=broken) as n:
        n.notify(PROMOTED, sinks=[webhook()])
        n.notify(PROMOTED, sinks=[webhook()])
        assert n.flush(timeout_seconds=5)
    assert len(requests) == 2


def test_no_secret_reaches_the_logs(caplog: pytest.LogCaptureFixture) -> None:
    transport, _ = answers(500, 404)
    with (
        caplog.at_level(logging.DEBUG),
        Notifier(settings=fast(max_attempts=2), transport=transport, sleep=lambda s: None) as n,
    ):
        n.notify(PROMOTED, sinks=[webhook()])
        assert n.flush(timeout_seconds=5)
    assert caplog.records
    assert SECRET not in caplog.text


# Over a real loopback server, with real time --------------------------------------------------------


class LoopbackSink:
    """A real HTTP server on 127.0.0.1 that answers from a script of status codes (or stalls)."""

    def __init__(self, script: Callable[[int], int | None]) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.times: list[float] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.bodies.append(json.loads(body))
                outer.times.append(time.monotonic())
                code = script(len(outer.bodies))
                if code is None:  # stall: never answer (until the server stops)
                    outer.stop_stalling.wait(30)
                    return
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.stop_stalling = threading.Event()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def close(self) -> None:
        self.stop_stalling.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def loopback() -> Iterator[Callable[[Callable[[int], int | None]], LoopbackSink]]:
    made: list[LoopbackSink] = []

    def make(script: Callable[[int], int | None]) -> LoopbackSink:
        made.append(LoopbackSink(script))
        return made[-1]

    yield make
    for server in made:
        server.close()


def test_over_a_real_socket_a_sink_that_recovers_gets_the_notification(
    loopback: Callable[[Callable[[int], int | None]], LoopbackSink],
) -> None:
    # given a loopback receiver that fails its first two requests
    server = loopback(lambda n: 503 if n <= 2 else 204)
    failures = Failures()

    # when a notification is sent through the real network stack (fenced and pinned)
    settings = fast(backoff_initial_seconds=0.05, backoff_max_seconds=0.2)
    with Notifier(settings=settings, on_failure=failures) as notifier:
        notifier.notify(PROMOTED, sinks=[WebhookSink(name="loop", url=server.url)])
        assert notifier.flush(timeout_seconds=10)

    # then the third request delivered it
    assert failures.errors() == []
    assert len(server.bodies) == 3 and server.bodies[-1]["rollout"] == "iris"
    assert server.times[1] - server.times[0] >= 0.02


def test_over_a_real_socket_a_sink_that_never_answers_is_given_up_at_the_deadline(
    loopback: Callable[[Callable[[int], int | None]], LoopbackSink],
) -> None:
    # given a loopback receiver that accepts requests and never answers
    server = loopback(lambda n: None)
    failures = Failures()

    # when a notification with a 1.5 s deadline and 1 s request timeouts is sent
    settings = fast(deadline_seconds=1.5, request_timeout_seconds=1.0, backoff_initial_seconds=0.05, max_attempts=10)
    started = time.monotonic()
    with Notifier(settings=settings, on_failure=failures) as notifier:
        notifier.notify(PROMOTED, sinks=[WebhookSink(name="loop", url=server.url)])
        assert notifier.flush(timeout_seconds=10)
        took = time.monotonic() - started

    # then it was given up at about the deadline (the last attempt's timeout cut to the time left)
    (error,) = failures.errors()
    assert isinstance(error, DeliveryExhausted)
    assert "no answer within" in error.last_error
    assert 1.4 <= took < 2.5
    assert len(server.bodies) == error.attempts >= 2
