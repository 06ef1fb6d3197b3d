"""The Alertmanager webhook receiver: an HTTP(S) server of its own that turns notifications into
`FiringAlerts` entries and hands the accepted alerts to a callback.

It listens on its own host and port (never the metrics port: that one is scraped without
credentials, this one can roll models back), on threads like the rest of the controller: one
thread accepts connections, one short-lived thread serves each, at most `max_connections` at
once (a connection beyond that is closed at once and counted, so a flood costs sockets, not
threads). Every connection has one deadline, `request_timeout_seconds`, for the TLS handshake,
the request line, the headers and the body together; a client that sends a byte now and then
cannot hold a thread past it.

A request is checked in this order, and the first check that fails answers it; a refused
request changes nothing and reads no more of the body than its headers:

    path is `path`, else 404; method is POST, else 405
    `Authorization: Bearer <token>` equal to the configured token, else 401
        (compared in constant time, over SHA-256 digests so that even the length stays hidden)
    `Content-Type: application/json`, else 415
    `Content-Length` present (no chunked bodies), else 411; at most `max_body_bytes`, else 413
        (decided from the header, before a byte of the body is read; then exactly that many
        bytes are read, never more)
    the body arrives before the deadline, else 408
    JSON, payload version 4, every field of the right shape, else 400 naming the field
    (`alerts[0].labels.namespace: must be a string, not a number`)

A valid notification goes through the namespace fence (an alert whose `namespace` label names a
namespace the controller does not watch is ignored and counted: it must never act there), then
into the registry, then to `on_alerts`, which runs on the request thread and must be quick (it
should only enqueue work). If it raises, the answer is 500 and Alertmanager sends the
notification again, which the registry takes in idempotently.

Exceptions (each is turned into the answer's status and a JSON body `{"error": message}`):

    Exception
     └── WebhookRefused        a request answered with an error status; `status`, `message`
          ├── Unauthorized     401: no bearer token, or not the configured one
          ├── PayloadTooLarge  413: Content-Length above max_body_bytes
          └── BadPayload       400: not JSON, or not a version 4 payload; `field` names where
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import logging
import socket
import socketserver
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from email.message import Message
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from prometheus_client import Counter, Gauge, Histogram

from controller.incidents.alerts import Alert, AlertStatus, InvalidPayload, parse_webhook
from controller.incidents.firing import NAMESPACE_LABEL, FiringAlerts, labels_text

log = logging.getLogger(__name__)

DEFAULT_HOST = "0.0.0.0"
DEFAULT_PORT = 8443
"""Its own port, apart from the metrics server's 8080 (scraped without credentials); the
conventional HTTPS port of a controller's webhook, as TLS is what a cluster should use."""
DEFAULT_PATH = "/alertmanager/webhook"
DEFAULT_MAX_BODY_BYTES = 1024 * 1024
"""1 MiB: a notification of a few hundred alerts with long annotations is well under 100 KiB."""
DEFAULT_REQUEST_TIMEOUT_SECONDS = 10.0
"""Alertmanager's own webhook timeout is its group_interval or less; loopback calls take ms."""
DEFAULT_MAX_CONNECTIONS = 32
"""Alertmanager sends one notification per group at a time, per replica."""
DEFAULT_STOP_TIMEOUT_SECONDS = DEFAULT_REQUEST_TIMEOUT_SECONDS + 1.0
"""stop() waits this long for requests in flight, which end by their own deadline anyway."""
_POLL_SECONDS = 0.2
"""How often the accept loop notices stop(): stop() returns within about this time."""
_READ_BUFFER_BYTES = 8192

# Metrics ---------------------------------------------------------------------------------------
REQUESTS = Counter(
    "model_rollouts_alert_receiver_requests_total", "Webhook requests answered, by HTTP status code.", ["code"]
)
REQUEST_SECONDS = Histogram(
    "model_rollouts_alert_receiver_request_duration_seconds",
    "From a webhook connection's first byte to its answer.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
)
ALERTS_RECEIVED = Counter(
    "model_rollouts_alert_receiver_alerts_total", "Alerts taken in from valid notifications, by status.", ["status"]
)
ALERTS_IGNORED = Counter(
    "model_rollouts_alert_receiver_alerts_ignored_total",
    "Alerts of valid notifications that changed nothing, by why: namespace_not_watched, stale "
    "(a late firing notification of a resolved alert), expired (its endsAt had passed), registry_full.",
    ["reason"],
)
CONNECTIONS_DROPPED = Counter(
    "model_rollouts_alert_receiver_connections_dropped_total",
    "Connections closed unanswered because max_connections were being served.",
)
ALERTS_FIRING = Gauge("model_rollouts_alerts_firing", "Firing alerts the receiver holds.")

IGNORED_REASONS = ("namespace_not_watched", "stale", "expired", "registry_full")
for _code in (200, 400, 401, 404, 405, 408, 411, 413, 415, 500):
    REQUESTS.labels(code=str(_code))
for _status in AlertStatus:
    ALERTS_RECEIVED.labels(status=_status.value)
for _reason in IGNORED_REASONS:
    ALERTS_IGNORED.labels(reason=_reason)


# Errors ----------------------------------------------------------------------------------------
class WebhookRefused(Exception):
    """A request the receiver answers with an error status; nothing was changed."""

    def __init__(self, status: HTTPStatus, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}
        """Extra response headers (`WWW-Authenticate`, `Allow`)."""


class Unauthorized(WebhookRefused):
    def __init__(self, message: str) -> None:
        super().__init__(
            HTTPStatus.UNAUTHORIZED, message, headers={"WWW-Authenticate": 'Bearer realm="model-rollouts"'}
        )


class PayloadTooLarge(WebhookRefused):
    def __init__(self, length: int, limit: int) -> None:
        super().__init__(
            HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"body of {length} bytes is over the limit of {limit} bytes"
        )


class BadPayload(WebhookRefused):
    def __init__(self, message: str, *, field: str = "") -> None:
        super().__init__(HTTPStatus.BAD_REQUEST, message)
        self.field = field
        """The JSON path of the offending field; empty when the body as a whole is wrong."""


# Settings --------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class TLSFiles:
    """A certificate and its key, PEM files (a Secret of type kubernetes.io/tls mounted as files)."""

    cert_file: Path
    """The server certificate, followed by any intermediates."""
    key_file: Path
    """Its private key."""


@dataclass(frozen=True, kw_only=True)
class ReceiverSettings:
    """Where the receiver listens and what it accepts."""

    bearer_token: str = field(repr=False)
    """The token Alertmanager sends (`http_config.authorization.credentials`). Required: a
    receiver that can roll models back never runs open. Never logged or shown in repr."""
    host: str = DEFAULT_HOST
    """Address to listen on; an IPv6 address (with `:`) listens on IPv6."""
    port: int = DEFAULT_PORT
    """Port to listen on; 0 picks a free one (see `AlertReceiver.port`)."""
    path: str = DEFAULT_PATH
    """The one path that takes notifications (Alertmanager's `webhook_configs[].url` path)."""
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    """Larger bodies are refused with 413 from their Content-Length, unread."""
    request_timeout_seconds: float = DEFAULT_REQUEST_TIMEOUT_SECONDS
    """Deadline of one connection, TLS handshake to last body byte; past it the connection is
    closed (408 when the headers were in)."""
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    """Connections served at once; more are closed unanswered (Alertmanager retries)."""
    tls: TLSFiles | None = None
    """Serve HTTPS with these files (TLS 1.2 or later); None serves plain HTTP, for loopback or a
    mesh that encrypts."""
    allowed_namespaces: frozenset[str] | None = None
    """The namespaces the controller watches; an alert whose `namespace` label names another is
    ignored. None: every namespace is watched. Alerts without the label pass (they can match a
    rollout only through that rollout's own selector)."""

    def __post_init__(self) -> None:
        if not self.bearer_token or self.bearer_token != self.bearer_token.strip():
            raise ValueError("bearer_token must be non-empty, without surrounding spaces")
        if not self.path.startswith("/"):
            raise ValueError(f"path must start with '/', not {self.path!r}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be 0..65535, not {self.port}")
        if self.max_body_bytes < 1 or self.max_connections < 1 or self.request_timeout_seconds <= 0:
            raise ValueError("max_body_bytes, max_connections and request_timeout_seconds must be positive")


OnAlerts = Callable[[tuple[Alert, ...]], None]
"""Called with the accepted alerts of each valid notification (firing and resolved, in payload
order, after the registry took them in), on the request thread: must be quick and thread-safe."""


def _no_callback(alerts: tuple[Alert, ...]) -> None:
    """The default: the registry alone is enough for a reader that polls it."""


def fence(
    alerts: Iterable[Alert], *, allowed_namespaces: frozenset[str] | None
) -> tuple[tuple[Alert, ...], tuple[Alert, ...]]:
    """(accepted, ignored): the alerts whose `namespace` label, if any, is allowed, and the rest."""
    accepted: list[Alert] = []
    ignored: list[Alert] = []
    for alert in alerts:
        namespace = alert.labels.get(NAMESPACE_LABEL)
        allowed = allowed_namespaces is None or namespace is None or namespace in allowed_namespaces
        (accepted if allowed else ignored).append(alert)
    return tuple(accepted), tuple(ignored)


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def authorized(header: str | None, *, expected_digest: bytes) -> bool:
    """Whether an Authorization header carries the bearer token whose SHA-256 is `expected_digest`.

    Constant time in the token: both sides are hashed, then compared with hmac.compare_digest."""
    if header is None:
        return False
    scheme, _, credentials = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(token_digest(credentials.strip()), expected_digest)


# The server ------------------------------------------------------------------------------------
class AlertReceiver:
    """The webhook receiver. start() binds and serves on a thread; stop() ends it; both explicit.

    Usable as a context manager. Not restartable: make a new one (the registry can be shared)."""

    def __init__(
        self,
        *,
        settings: ReceiverSettings,
        on_alerts: OnAlerts = _no_callback,
        alerts: FiringAlerts | None = None,
    ) -> None:
        self.settings = settings
        self.alerts = alerts if alerts is not None else FiringAlerts()
        """The registry the receiver writes; read it with `matching(...)`."""
        self._on_alerts = on_alerts
        self._token_digest = token_digest(settings.bearer_token)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        ALERTS_FIRING.set_function(lambda: len(self.alerts))

    @property
    def port(self) -> int:
        """The port it listens on (the one picked, when settings.port is 0). Only after start()."""
        if self._server is None:
            raise RuntimeError("the receiver is not started")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """The notification URL, for Alertmanager's webhook_configs (a loopback host for 0.0.0.0)."""
        scheme = "https" if self.settings.tls is not None else "http"
        host = {"0.0.0.0": "127.0.0.1", "::": "[::1]"}.get(self.settings.host, self.settings.host)
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"{scheme}://{host}:{self.port}{self.settings.path}"

    def start(self) -> None:
        """Binds (OSError when the port is taken), loads the TLS files (OSError, ssl.SSLError) and
        serves on a daemon thread."""
        if self._server is not None:
            raise RuntimeError("the receiver is already started")
        server = _Server(receiver=self, max_connections=self.settings.max_connections, host=self.settings.host)
        try:
            server.server_bind_and_listen(self.settings.host, self.settings.port)
            if self.settings.tls is not None:
                context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
                context.minimum_version = ssl.TLSVersion.TLSv1_2
                context.load_cert_chain(certfile=self.settings.tls.cert_file, keyfile=self.settings.tls.key_file)
                # The handshake happens on the connection's own thread, under its deadline, never
                # on the accepting thread (a client that stalls it would stop every other).
                server.socket = context.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
        except BaseException:
            server.server_close()
            raise
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": _POLL_SECONDS}, name="alert-receiver", daemon=True
        )
        self._thread.start()
        log.info("alert receiver listening on %s", self.url)

    def stop(self, *, timeout_seconds: float = DEFAULT_STOP_TIMEOUT_SECONDS) -> None:
        """Stops accepting, then waits up to `timeout_seconds` for the requests in flight."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        deadline = time.monotonic() + timeout_seconds
        server.shutdown()  # returns once serve_forever has seen it: within _POLL_SECONDS
        server.server_close()
        thread.join(max(0.0, deadline - time.monotonic()))
        if not server.wait_idle(deadline=deadline):
            log.warning("alert receiver stopped with requests still in flight; they end by their deadline")
        self._server = None
        self._thread = None

    def __enter__(self) -> AlertReceiver:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # What a request does, once the HTTP layer has read it ---------------------------------------
    def check_headers(self, *, path: str, method: str, headers: Message) -> int:
        """Everything that can be decided before the body; returns the body length to read."""
        settings = self.settings
        if urlsplit(path).path != settings.path:
            raise WebhookRefused(HTTPStatus.NOT_FOUND, f"not found; notifications go to {settings.path}")
        if method != "POST":
            raise WebhookRefused(
                HTTPStatus.METHOD_NOT_ALLOWED, f"{method} is not allowed; use POST", headers={"Allow": "POST"}
            )
        auth = headers.get_all("Authorization") or []
        if len(auth) != 1 or not authorized(auth[0], expected_digest=self._token_digest):
            raise Unauthorized("missing or wrong bearer token" if auth else "missing bearer token")
        content_type = (headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if content_type != "application/json":
            raise WebhookRefused(
                HTTPStatus.UNSUPPORTED_MEDIA_TYPE, f"Content-Type must be application/json, not {content_type!r}"
            )
        lengths = headers.get_all("Content-Length") or []
        if headers.get("Transfer-Encoding") is not None or not lengths:
            raise WebhookRefused(HTTPStatus.LENGTH_REQUIRED, "a Content-Length is required (no chunked bodies)")
        if len(set(lengths)) != 1 or not lengths[0].strip().isdigit():
            raise BadPayload(f"Content-Length must be one whole number, not {', '.join(lengths)!r}")
        length = int(lengths[0])
        if length > settings.max_body_bytes:
            raise PayloadTooLarge(length, settings.max_body_bytes)
        return length

    def take(self, body: bytes) -> dict[str, Any]:
        """Parses a notification and applies it; the JSON answer. Raises BadPayload."""
        try:
            decoded = json.loads(body)
        except ValueError as error:  # JSONDecodeError, UnicodeDecodeError, an integer of 5000 digits
            raise BadPayload(f"body is not JSON: {error}") from None
        except RecursionError:
            raise BadPayload("body is not JSON this receiver reads: nested too deeply") from None
        try:
            group = parse_webhook(decoded)
        except InvalidPayload as error:
            raise BadPayload(str(error), field=error.field) from None
        accepted, outside = fence(group.alerts, allowed_namespaces=self.settings.allowed_namespaces)
        applied = self.alerts.apply(accepted)
        for alert in accepted:
            ALERTS_RECEIVED.labels(status=alert.status.value).inc()
            log.debug("alert %s %s %s", alert.name or alert.fingerprint, alert.status.value, labels_text(alert.labels))
        if outside:
            log.warning(
                "%d alert(s) ignored: namespaces %s are not watched by this controller",
                len(outside),
                sorted({alert.labels.get(NAMESPACE_LABEL, "") for alert in outside}),
            )
        ignored = {
            "namespace_not_watched": len(outside),
            "stale": applied.stale,
            "expired": applied.expired,
            "registry_full": applied.full,
        }
        for reason, count in ignored.items():
            if count:
                ALERTS_IGNORED.labels(reason=reason).inc(count)
        log.info(
            "notification %s from %s: %d firing, %d resolved, ignored %s",
            group.group_key or "(no group key)",
            group.receiver or "(unnamed receiver)",
            applied.firing,
            applied.resolved,
            {reason: n for reason, n in ignored.items() if n} or "none",
        )
        if accepted:
            self._on_alerts(accepted)
        return {"accepted": len(accepted), "ignored": {reason: n for reason, n in ignored.items() if n}}


class _Server(ThreadingHTTPServer):
    """ThreadingHTTPServer with a cap on connections served at once, and quiet errors."""

    daemon_threads = True
    block_on_close = False  # stop() waits for requests itself, with a deadline

    def __init__(self, *, receiver: AlertReceiver, max_connections: int, host: str) -> None:
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        super().__init__((host, 0), _Handler, bind_and_activate=False)
        self.receiver = receiver
        self._max_connections = max_connections
        self._active = 0
        self._idle = threading.Condition()

    def server_bind_and_listen(self, host: str, port: int) -> None:
        self.server_address = (host, port)
        self.server_bind()
        self.server_activate()

    def server_bind(self) -> None:
        """HTTPServer's own looks the host's name up in DNS (getfqdn), a wait with no deadline;
        the name is only used in CGI variables, which this server has none of."""
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._idle:
            full = self._active >= self._max_connections
            if not full:
                self._active += 1
        if full:
            CONNECTIONS_DROPPED.inc()
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._release()

    def _release(self) -> None:
        with self._idle:
            self._active -= 1
            self._idle.notify_all()

    def wait_idle(self, *, deadline: float) -> bool:
        """Until no connection is being served, or the monotonic `deadline`; whether it is idle."""
        with self._idle:
            while self._active:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._idle.wait(remaining)
        return True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hung up, timed out or failed the TLS handshake: not the receiver's fault."""
        log.debug("alert receiver connection from %s failed", client_address, exc_info=True)


class _DeadlineReader(io.RawIOBase):
    """Socket reads that share one deadline: each read may wait only for the time left."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self._sock = sock
        self._deadline = deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("the request's deadline passed")
        self._sock.settimeout(remaining)
        return self._sock.recv_into(buffer)


class _Handler(BaseHTTPRequestHandler):
    """One connection, one request (HTTP/1.0: the connection closes after the answer)."""

    server: _Server
    server_version = "model-rollouts-alert-receiver"
    sys_version = ""

    def setup(self) -> None:
        self._started = time.monotonic()
        settings = self.server.receiver.settings
        self._deadline = self._started + settings.request_timeout_seconds
        self.connection = self.request
        self.connection.settimeout(settings.request_timeout_seconds)
        if isinstance(self.connection, ssl.SSLSocket):
            self.connection.do_handshake()  # under the socket timeout; failures go to handle_error
        self.rfile = io.BufferedReader(_DeadlineReader(self.connection, self._deadline), _READ_BUFFER_BYTES)
        self.wfile = self.connection.makefile("wb")

    def do_POST(self) -> None:
        self._serve()

    def do_GET(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def do_PATCH(self) -> None:
        self._serve()

    def do_HEAD(self) -> None:
        self._serve()

    def do_OPTIONS(self) -> None:
        self._serve()

    def _serve(self) -> None:
        receiver = self.server.receiver
        try:
            length = receiver.check_headers(path=self.path, method=self.command, headers=self.headers)
            try:
                body = self.rfile.read(length)
            except TimeoutError:
                raise WebhookRefused(HTTPStatus.REQUEST_TIMEOUT, "the body did not arrive in time") from None
            if len(body) != length:
                raise BadPayload(f"the body ended after {len(body)} of its {length} bytes")
            answer = receiver.take(body)
        except WebhookRefused as refused:
            self._reply(refused.status, {"error": refused.message}, refused.headers)
        except Exception:
            log.exception("alert receiver: handling a notification failed")
            self._reply(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "the receiver failed; send again"})
        else:
            self._reply(HTTPStatus.OK, answer)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The HTTP layer's own refusals (bad request line, headers too long, unknown method)."""
        status = HTTPStatus(code)
        self._reply(status, {"error": message or status.phrase})

    def _reply(self, status: HTTPStatus, answer: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        body = json.dumps(answer).encode() + b"\n"
        self.close_connection = True
        # Writing may wait too (a client that does not read); a short grace past the deadline.
        self.connection.settimeout(max(1.0, self._deadline - time.monotonic()))
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        REQUESTS.labels(code=str(int(status))).inc()
        REQUEST_SECONDS.observe(time.monotonic() - self._started)

    def log_message(self, format: str, *args: Any) -> None:
        """Requests are counted in metrics; the access log goes to debug."""
        log.debug("alert receiver %s: %s", self.address_string(), format % args)
