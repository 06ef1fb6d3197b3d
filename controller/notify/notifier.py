"""Delivering notifications without ever holding up a reconcile pass.

`Notifier.notify(notification, sinks=...)` only puts one delivery per sink on a bounded queue and
returns: it never waits, not for the network and not for room in the queue (a full queue drops
the delivery, counts it and reports it). A few daemon threads take deliveries off the queue and
POST them with httpx, through the outbound fence (`controller.outbound`: sink URLs come from
Secrets that namespace users may write, so they must not reach the node's metadata service).

A delivery is retried with tenacity: exponential backoff with jitter (at least the sink's
`Retry-After`), at most `max_attempts` attempts, and all of them within `deadline_seconds` from
the first (each attempt's timeout is cut to the time left). Only what may pass is retried:
connection errors, timeouts, 408, 429 and 5xx answers. A 3xx or other 4xx answer (a revoked
webhook, a malformed URL path) and a fenced URL will not get better, so they fail at once.

Every failure is counted in `model_rollouts_notification_failures_total` and handed to
`on_failure(notification, sink, error)`, which turns it into an Event on the rollout
(`controller.notify.dispatch`): a failing sink shows up there and in metrics, never as a stuck
rollout. A delivery that lands is handed to `on_sent(notification, sink)`. Both must be quick
and must not raise; they run on a notifier thread, or on the caller's thread for a delivery the
full queue dropped.

Exceptions (handed to on_failure, never raised to notify's caller):

    Exception
     └── DeliveryFailed          a notification did not reach a sink; `sink`, `attempts`
          ├── DeliveryDropped    never tried: the queue was full, or the notifier closed first
          ├── DeliveryRefused    the outbound fence refused the sink's URL; not retried
          ├── DeliveryRejected   the sink answered 3xx or 4xx (not 408/429); `status_code`; not retried
          └── DeliveryExhausted  retryable failures until max_attempts or the deadline; `last_error`
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from types import TracebackType

import httpx
import tenacity
from prometheus_client import Counter, Gauge

from controller.notify.notification import Notification
from controller.notify.sinks import Sink, url_host
from controller.outbound import DEFAULT_POLICY, OutboundPolicy, OutboundRefused, fenced_transport

log = logging.getLogger(__name__)

DEFAULT_WORKERS = 2
"""Deliveries in flight at once; notifications are rare (a few per rollout)."""
DEFAULT_QUEUE_SIZE = 256
"""Deliveries waiting at most; beyond it they are dropped, so a dead sink costs bounded memory."""
DEFAULT_MAX_ATTEMPTS = 5
DEFAULT_DEADLINE_SECONDS = 60.0
"""From the first attempt to the last: a notification later than a minute is news no more."""
DEFAULT_REQUEST_TIMEOUT_SECONDS = 5.0
DEFAULT_BACKOFF_INITIAL_SECONDS = 0.5
DEFAULT_BACKOFF_MAX_SECONDS = 10.0
DEFAULT_CLOSE_TIMEOUT_SECONDS = 5.0
"""close() waits this long for queued deliveries before dropping the rest."""
MIN_ATTEMPT_SECONDS = 0.2
"""An attempt is not started with less time than this before the deadline."""
USER_AGENT = "model-rollouts-notifier"
_POLL_SECONDS = 0.2
_ERROR_BODY_BYTES = 512
"""Of a refusing answer's body, quoted in the error (a sink's body could be anything, any size)."""
RETRYABLE_STATUS = frozenset({408, 429}) | frozenset(range(500, 600))

# Metrics ---------------------------------------------------------------------------------------
SENT = Counter("model_rollouts_notifications_sent_total", "Notifications delivered, by sink type.", ["sink_type"])
FAILURES = Counter(
    "model_rollouts_notification_failures_total",
    "Notifications not delivered, by sink type and why: dropped, refused, rejected, exhausted, error.",
    ["sink_type", "reason"],
)
RETRIES = Counter(
    "model_rollouts_notification_retries_total", "Delivery attempts after a first one failed.", ["sink_type"]
)
QUEUED = Gauge("model_rollouts_notifications_queued", "Deliveries waiting for a notifier thread.")
FAILURE_REASONS = ("dropped", "refused", "rejected", "exhausted", "error")
for _type in ("webhook", "slack"):
    SENT.labels(sink_type=_type)
    RETRIES.labels(sink_type=_type)
    for _reason in FAILURE_REASONS:
        FAILURES.labels(sink_type=_type, reason=_reason)


# Errors ----------------------------------------------------------------------------------------
class DeliveryFailed(Exception):
    """A notification did not reach a sink. The message names the sink and its host, never its URL."""

    reason = "error"
    """The `reason` label of the failures metric."""

    def __init__(self, message: str, *, sink: str, attempts: int = 0) -> None:
        super().__init__(message)
        self.sink = sink
        """The sink's name."""
        self.attempts = attempts
        """Requests sent (0: never tried)."""


class DeliveryDropped(DeliveryFailed):
    reason = "dropped"


class DeliveryRefused(DeliveryFailed):
    reason = "refused"


class DeliveryRejected(DeliveryFailed):
    reason = "rejected"

    def __init__(self, message: str, *, sink: str, attempts: int, status_code: int) -> None:
        super().__init__(message, sink=sink, attempts=attempts)
        self.status_code = status_code


class DeliveryExhausted(DeliveryFailed):
    reason = "exhausted"

    def __init__(self, message: str, *, sink: str, attempts: int, last_error: str) -> None:
        super().__init__(message, sink=sink, attempts=attempts)
        self.last_error = last_error
        """What the last attempt ran into."""


class _Retryable(Exception):
    """An attempt failed in a way that may pass; `retry_after` is the sink's own wish, if any."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


# Settings --------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class NotifierSettings:
    """How deliveries are queued and retried."""

    workers: int = DEFAULT_WORKERS
    """Threads sending deliveries."""
    queue_size: int = DEFAULT_QUEUE_SIZE
    """Deliveries waiting at most; notify() drops (and reports) what does not fit."""
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    """Requests per delivery at most, the first included."""
    deadline_seconds: float = DEFAULT_DEADLINE_SECONDS
    """Time from a delivery's first attempt after which no attempt starts, and none runs past."""
    request_timeout_seconds: float = DEFAULT_REQUEST_TIMEOUT_SECONDS
    """Timeout of one request (connect, write, each read), cut to the time left to the deadline."""
    backoff_initial_seconds: float = DEFAULT_BACKOFF_INITIAL_SECONDS
    """Wait before the second attempt; it doubles each time, with jitter."""
    backoff_max_seconds: float = DEFAULT_BACKOFF_MAX_SECONDS
    """Longest wait between attempts (a longer Retry-After is honoured, up to the deadline)."""

    def __post_init__(self) -> None:
        if self.workers < 1 or self.queue_size < 1 or self.max_attempts < 1:
            raise ValueError("workers, queue_size and max_attempts must be at least 1")
        if min(self.deadline_seconds, self.request_timeout_seconds) <= 0 or self.backoff_initial_seconds < 0:
            raise ValueError("deadline_seconds and request_timeout_seconds must be positive")


OnFailure = Callable[[Notification, Sink, DeliveryFailed], None]
OnSent = Callable[[Notification, Sink], None]


def _no_callback(notification: Notification, sink: Sink, error: DeliveryFailed) -> None:
    """The default on_failure: the failure is logged and counted anyway."""


def _nothing_on_sent(notification: Notification, sink: Sink) -> None:
    """The default on_sent: the delivery is logged and counted anyway."""


@dataclass(frozen=True)
class _Delivery:
    notification: Notification
    sink: Sink


class Notifier:
    """Delivers notifications on its own threads. start() and close() are explicit; a context manager."""

    def __init__(
        self,
        *,
        settings: NotifierSettings | None = None,
        policy: OutboundPolicy = DEFAULT_POLICY,
        on_failure: OnFailure = _no_callback,
        on_sent: OnSent = _nothing_on_sent,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`transport`: None is the real network (fenced and pinned); tests pass an
        httpx.MockTransport, still behind the fence's checks by name. `sleep` and `clock`: the
        waits between attempts and the deadline's time, for tests; the default sleep returns early
        when the notifier closes."""
        self.settings = settings or NotifierSettings()
        self._on_failure = on_failure
        self._on_sent = on_sent
        self._sleep = sleep or self._interruptible_sleep
        self._clock = clock
        self._queue: queue.Queue[_Delivery] = queue.Queue(maxsize=self.settings.queue_size)
        # The transport alone, not an httpx.Client: the client logs every request's URL at INFO,
        # and a sink's URL is a secret. No redirects are followed (a redirect is the sink's
        # mistake, and its target would escape the URL the caller gave); no proxy variables are
        # read (the fence checks the destination, not a proxy).
        self._transport = fenced_transport(policy, transport=transport)
        self._closing = threading.Event()
        self._threads: list[threading.Thread] = []
        self._pending = 0
        """Deliveries queued or being sent."""
        self._idle = threading.Condition()
        QUEUED.set_function(self._queue.qsize)

    def start(self) -> None:
        if self._threads:
            raise RuntimeError("the notifier is already started")
        for index in range(self.settings.workers):
            thread = threading.Thread(target=self._work, name=f"notifier-{index}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def notify(self, notification: Notification, *, sinks: Sequence[Sink]) -> bool:
        """Queues one delivery per sink and returns at once; False when any was dropped (queue full
        or notifier closed), which is then counted and reported to on_failure on this thread."""
        queued_all = True
        for sink in sinks:
            delivery = _Delivery(notification, sink)
            with self._idle:
                self._pending += 1
            try:
                if self._closing.is_set():
                    raise queue.Full
                self._queue.put_nowait(delivery)
            except queue.Full:
                self._done()
                queued_all = False
                why = "the notifier is closed" if self._closing.is_set() else "its queue is full"
                self._report(delivery, DeliveryDropped(f"{_where(sink)}: dropped, {why}", sink=sink.name))
        return queued_all

    def flush(self, *, timeout_seconds: float) -> bool:
        """Waits until every queued delivery has been sent or has failed; whether that happened in time."""
        deadline = time.monotonic() + timeout_seconds
        with self._idle:
            while self._pending:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._idle.wait(remaining)
        return True

    def close(self, *, timeout_seconds: float = DEFAULT_CLOSE_TIMEOUT_SECONDS) -> None:
        """Gives queued deliveries `timeout_seconds`, then stops: waits between attempts end, each
        thread ends after its current request, and what is still queued is dropped (reported)."""
        deadline = time.monotonic() + timeout_seconds
        if self._threads:
            self.flush(timeout_seconds=timeout_seconds)
        self._closing.set()
        # A request under way ends within its timeout; its thread then sees _closing.
        join_deadline = max(deadline, time.monotonic()) + self.settings.request_timeout_seconds
        for thread in self._threads:
            thread.join(max(0.0, join_deadline - time.monotonic()))
        while True:
            try:
                delivery = self._queue.get_nowait()
            except queue.Empty:
                break
            self._done()
            self._report(
                delivery,
                DeliveryDropped(f"{_where(delivery.sink)}: dropped, the notifier closed", sink=delivery.sink.name),
            )
        self._transport.close()

    def __enter__(self) -> Notifier:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # The notifier's threads ---------------------------------------------------------------------
    def _work(self) -> None:
        while not self._closing.is_set():
            try:
                delivery = self._queue.get(timeout=_POLL_SECONDS)
            except queue.Empty:
                continue
            try:
                self._deliver(delivery)
            except Exception as error:  # a bug here must not end the thread
                log.exception("notifier: delivering to %s failed unexpectedly", delivery.sink.name)
                self._report(delivery, DeliveryFailed(f"{_where(delivery.sink)}: {error!r}", sink=delivery.sink.name))
            finally:
                self._done()

    def _deliver(self, delivery: _Delivery) -> None:
        sink = delivery.sink
        deadline = self._clock() + self.settings.deadline_seconds
        attempts = 0

        def attempt() -> None:
            nonlocal attempts
            if attempts and self._closing.is_set():
                raise _Retryable("the notifier closed before the next attempt")
            attempts += 1
            if attempts > 1:
                RETRIES.labels(sink_type=sink.kind).inc()
            timeout = min(self.settings.request_timeout_seconds, max(MIN_ATTEMPT_SECONDS, deadline - self._clock()))
            self._send(delivery, timeout=timeout, attempts=attempts)

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(_Retryable),
            stop=self._stop(deadline),
            wait=self._wait(deadline),
            sleep=self._sleep,
            reraise=True,
        )
        try:
            retrying(attempt)
        except _Retryable as error:
            why = "the notifier closed" if self._closing.is_set() else f"gave up after {attempts} attempt(s)"
            self._report(
                delivery,
                DeliveryExhausted(
                    f"{_where(sink)}: {why}: {error}", sink=sink.name, attempts=attempts, last_error=str(error)
                ),
            )
        except DeliveryFailed as error:
            self._report(delivery, error)
        else:
            SENT.labels(sink_type=sink.kind).inc()
            log.info(
                "notification %s of %s sent to %s",
                delivery.notification.kind.value,
                delivery.notification.subject,
                sink.name,
            )
            try:
                self._on_sent(delivery.notification, sink)
            except Exception:
                log.exception("notifier: on_sent raised")

    def _send(self, delivery: _Delivery, *, timeout: float, attempts: int) -> None:
        """One request. Returns on 2xx; raises _Retryable or a DeliveryFailed that is final."""
        sink = delivery.sink
        request = httpx.Request(
            "POST",
            sink.url,
            headers={"User-Agent": USER_AGENT, **sink.headers},
            json=sink.body(delivery.notification),
            extensions={"timeout": httpx.Timeout(timeout).as_dict()},
        )
        try:
            response = self._transport.handle_request(request)
        except OutboundRefused as refused:
            raise DeliveryRefused(f"{_where(sink)}: {refused.reason}", sink=sink.name, attempts=attempts) from None
        except httpx.TimeoutException:
            raise _Retryable(f"no answer within {timeout:.3g}s") from None
        except httpx.TransportError as error:
            raise _Retryable(f"{type(error).__name__}: {_safe(error)}") from None
        try:
            status = response.status_code
            if 200 <= status < 300:
                return
            excerpt = _excerpt(response)
            if status in RETRYABLE_STATUS:
                raise _Retryable(f"answered {status}{excerpt}", retry_after=_retry_after(response))
            raise DeliveryRejected(
                f"{_where(sink)}: answered {status}{excerpt}", sink=sink.name, attempts=attempts, status_code=status
            )
        finally:
            response.close()

    def _stop(self, deadline: float) -> Callable[[tenacity.RetryCallState], bool]:
        def stop(state: tenacity.RetryCallState) -> bool:
            return (
                self._closing.is_set()
                or state.attempt_number >= self.settings.max_attempts
                or deadline - self._clock() < MIN_ATTEMPT_SECONDS
            )

        return stop

    def _wait(self, deadline: float) -> Callable[[tenacity.RetryCallState], float]:
        settings = self.settings

        def wait(state: tenacity.RetryCallState) -> float:
            exponent = max(0, state.attempt_number - 1)
            backoff = min(settings.backoff_max_seconds, settings.backoff_initial_seconds * 2.0**exponent)
            backoff *= 0.5 + random.random() / 2  # jitter: HA controllers and sinks do not beat in step
            error = state.outcome.exception() if state.outcome is not None else None
            if isinstance(error, _Retryable) and error.retry_after is not None:
                backoff = max(backoff, error.retry_after)
            # Never sleep past the point where one more attempt still fits before the deadline.
            return max(0.0, min(backoff, deadline - self._clock() - MIN_ATTEMPT_SECONDS))

        return wait

    def _interruptible_sleep(self, seconds: float) -> None:
        self._closing.wait(seconds)

    def _done(self) -> None:
        with self._idle:
            self._pending -= 1
            self._idle.notify_all()

    def _report(self, delivery: _Delivery, error: DeliveryFailed) -> None:
        sink = delivery.sink
        FAILURES.labels(sink_type=sink.kind, reason=error.reason).inc()
        log.warning(
            "notification %s of %s not delivered: %s",
            delivery.notification.kind.value,
            delivery.notification.subject,
            error,
        )
        try:
            self._on_failure(delivery.notification, sink, error)
        except Exception:
            log.exception("notifier: on_failure raised")


def _where(sink: Sink) -> str:
    """`sink slack-oncall (hooks.slack.com)`: enough to find the sink, nothing secret."""
    return f"sink {sink.name} ({url_host(sink.url)})"


def _safe(error: httpx.HTTPError) -> str:
    """An httpx error's message without the URL (httpx quotes it in some messages; it is a secret)."""
    text = str(error)
    try:
        url = str(error.request.url)
    except RuntimeError:  # no request attached
        return text
    return text.replace(url, "<url>")


def _excerpt(response: httpx.Response) -> str:
    """`: invalid_token`: the start of a refusing answer's body, read up to _ERROR_BODY_BYTES only."""
    data = b""
    try:
        for chunk in response.iter_bytes():
            data += chunk
            if len(data) >= _ERROR_BODY_BYTES:
                break
    except httpx.HTTPError:
        return ""
    text = " ".join(data[:_ERROR_BODY_BYTES].decode("utf-8", errors="replace").split())
    return f": {text[:200]}" if text else ""


def _retry_after(response: httpx.Response) -> float | None:
    """Seconds from a Retry-After header (seconds, or an HTTP date), None when absent or unreadable."""
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    if value.strip().isdigit():
        return float(value.strip())
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
