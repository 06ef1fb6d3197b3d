"""Values from any HTTP API through `httpx`: GET or POST a URL, take a number at a JSON path."""

from __future__ import annotations

import json
from typing import Any

import httpx

from controller.analysis.jsonpath import MISSING, lookup
from controller.analysis.providers.base import InvalidQuery, ProviderUnavailable, SecretReader
from controller.analysis.spec import MetricSource, WebSource
from controller.outbound import DEFAULT_POLICY, OutboundPolicy, OutboundRefused, fenced_transport

_RETRYABLE_STATUS = frozenset({408, 425, 429})
"""Client-error codes that mean "not now" rather than "wrong request"."""


def _number_at(document: Any, source: WebSource) -> float | None:
    value = lookup(document, source.json_path)
    if value is MISSING or value is None:
        return None
    # The value itself is never quoted: the answer is whatever the URL returned (see controller.outbound).
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise InvalidQuery(f"{source.url}: the value at {source.json_path} is {type(value).__name__}, not a number")
    try:
        return float(value)
    except ValueError as error:
        raise InvalidQuery(f"{source.url}: the value at {source.json_path} is a string that is not a number") from error


class WebProvider:
    """Messages name the URL, the status code and what is wrong; never the answer's body or the
    request's headers (they may come from a Secret)."""

    def __init__(
        self,
        *,
        secret_reader: SecretReader | None,
        outbound: OutboundPolicy = DEFAULT_POLICY,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._secret_reader = secret_reader
        self._outbound = outbound
        self._transport = transport
        """None: real network; unit tests pass an httpx.MockTransport. Fenced either way."""

    def _headers(self, source: WebSource, namespace: str) -> dict[str, str]:
        if source.headers_secret is None:
            return {}
        if self._secret_reader is None:
            raise InvalidQuery(f"{source.url}: this controller cannot read Secrets for headersFrom")
        return dict(self._secret_reader(namespace=namespace, name=source.headers_secret))

    def measure(self, *, source: MetricSource, namespace: str) -> float | None:
        if not isinstance(source, WebSource):
            raise TypeError(f"the web provider cannot read a {source.provider} source")
        headers = self._headers(source, namespace)
        if source.body is not None:
            headers.setdefault("content-type", "application/json")
        transport = fenced_transport(self._outbound, transport=self._transport)
        with httpx.Client(transport=transport, timeout=source.timeout_seconds) as client:
            try:
                response = client.request(source.method, source.url, content=source.body, headers=headers)
            except OutboundRefused as error:
                raise InvalidQuery(f"{source.method} {source.url}: {error}") from error
            except httpx.HTTPError as error:
                raise ProviderUnavailable(f"{source.method} {source.url} failed: {error!r}") from error
        status = response.status_code
        if status >= 500 or status in _RETRYABLE_STATUS:
            raise ProviderUnavailable(f"{source.method} {source.url} answered HTTP {status}")
        if status >= 400:
            raise InvalidQuery(
                f"{source.method} {source.url} answered HTTP {status}; check the URL, method, body and headers"
            )
        try:
            document = response.json()
        except json.JSONDecodeError as error:
            raise ProviderUnavailable(f"{source.method} {source.url} answered something that is not JSON") from error
        return _number_at(document, source)
