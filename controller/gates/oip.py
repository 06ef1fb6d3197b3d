"""The I/O edge of the gates: one version's Open Inference Protocol server, over `httpx` (sync).

A server that cannot be reached, times out or answers 503 is *unavailable* (`OipUnavailable`, a
TemporaryError: try again later). Any other answer to an infer request is the model's answer,
refusals included, and is judged by the golden-set rules.

Requests pass the outbound fence (controller.outbound): an endpoint it refuses raises
`EndpointRefused` (a PermanentError), which is not retried. Messages carry the status code and
its reason phrase, never the body of an answer: an endpoint is whatever URL the spec names.
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx
from tenacity import (
    RetryError,
    Retrying,
    retry_if_exception_type,
    retry_if_result,
    stop_after_attempt,
    wait_fixed,
)

from controller.gates.errors import EndpointRefused, GateInputError, OipUnavailable
from controller.gates.golden import InferAnswer, parse_infer_response
from controller.outbound import DEFAULT_POLICY, OutboundPolicy, OutboundRefused, fenced_transport

__all__ = ["EndpointRefused", "OipClient", "OipUnavailable", "wait_until_ready"]


class OipClient:
    """One version's OIP server. Use as a context manager so its connections are closed."""

    def __init__(
        self,
        *,
        base_url: str,
        timeout_seconds: float,
        outbound: OutboundPolicy = DEFAULT_POLICY,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.base_url,
            timeout=timeout_seconds,
            transport=fenced_transport(outbound, transport=transport),
        )

    def __enter__(self) -> OipClient:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _get(self, path: str) -> httpx.Response:
        try:
            response = self._http.get(path)
        except OutboundRefused as error:
            raise EndpointRefused(error) from error
        except httpx.TransportError as error:
            raise OipUnavailable(f"{self.base_url}{path}: {error!r}") from error
        if response.status_code == httpx.codes.SERVICE_UNAVAILABLE:
            raise OipUnavailable(f"{self.base_url}{path}: HTTP 503")
        return response

    def is_ready(self, *, model: str) -> bool:
        """Server ready (`/v2/health/ready`) and the model ready (`/v2/models/{model}/ready`)."""
        return all(
            _says_ready(self._get(path)) for path in ("/v2/health/ready", f"/v2/models/{quote(model, safe='')}/ready")
        )

    def metadata(self, *, model: str) -> Any:
        """The model's metadata JSON; GateInputError when the server has no usable answer."""
        path = f"/v2/models/{quote(model, safe='')}"
        response = self._get(path)
        where = f"metadata at {self.base_url}{path}"
        if response.status_code != httpx.codes.OK:
            raise GateInputError(where, _status(response))
        try:
            return response.json()
        except ValueError as error:
            raise GateInputError(where, f"not JSON ({error})") from error

    def infer(self, *, model: str, body: dict[str, Any]) -> InferAnswer:
        path = f"/v2/models/{quote(model, safe='')}/infer"
        try:
            response = self._http.post(path, json=body)
        except OutboundRefused as error:
            raise EndpointRefused(error) from error
        except httpx.TransportError as error:
            raise OipUnavailable(f"{self.base_url}{path}: {error!r}") from error
        if response.status_code == httpx.codes.SERVICE_UNAVAILABLE:
            raise OipUnavailable(f"{self.base_url}{path}: HTTP 503")
        if response.status_code != httpx.codes.OK:
            return InferAnswer(outputs=None, error=_status(response))
        try:
            return InferAnswer(outputs=parse_infer_response(response.json()))
        except (ValueError, GateInputError) as error:
            return InferAnswer(outputs=None, error=f"unreadable answer: {error}")


def _status(response: httpx.Response) -> str:
    """`HTTP 400 Bad Request`: what a refusal is reported as, without its body."""
    return f"HTTP {response.status_code} {response.reason_phrase}".rstrip()


def _says_ready(response: httpx.Response) -> bool:
    """200, and `{"ready": false}` not in the body: some servers answer 200 with a ready flag."""
    if response.status_code != httpx.codes.OK:
        return False
    try:
        body = response.json()
    except ValueError:
        return True
    return not (isinstance(body, dict) and body.get("ready") is False)


def wait_until_ready(
    client: OipClient,
    *,
    model: str,
    attempts: int,
    interval_seconds: float,
    sleep: Callable[[float], None],
) -> bool:
    """Asks for readiness up to `attempts` times, `interval_seconds` apart; True once ready.

    Kept short on purpose: a reconcile worker must not block for long. Waiting longer happens
    across passes (the checker's readiness timeout).
    """
    retrying = Retrying(
        stop=stop_after_attempt(attempts),
        wait=wait_fixed(interval_seconds),
        retry=retry_if_result(lambda ready: not ready) | retry_if_exception_type(OipUnavailable),
        sleep=sleep,
    )
    try:
        return bool(retrying(client.is_ready, model=model))
    except RetryError:
        return False
