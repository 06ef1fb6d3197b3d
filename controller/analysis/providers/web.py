"""Values from any HTTP API through `httpx`: GET or POST a URL, take a number at a JSON path."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, ClassVar
from urllib.parse import urlsplit

import httpx

from controller.analysis import fields
from controller.analysis.jsonpath import MISSING, JsonPathError, lookup, parse_json_path
from controller.analysis.providers.base import (
    InvalidQuery,
    MetricSource,
    ObjectReference,
    OutboundUrl,
    ProviderPlugin,
    ProviderUnavailable,
    SecretReader,
)
from controller.api import SpecError, check_http_url
from controller.outbound import DEFAULT_POLICY, OutboundPolicy, OutboundRefused, fenced_transport

DEFAULT_WEB_TIMEOUT_SECONDS = 10.0
WEB_URL_EXAMPLE = "http://scorer.ml.svc:8080/score?version={{version}}"

_RETRYABLE_STATUS = frozenset({408, 425, 429})
"""Client-error codes that mean "not now" rather than "wrong request"."""


@dataclass(frozen=True, kw_only=True)
class WebSource:
    provider: ClassVar[str] = "web"
    url: str
    """URL to call, with template variables."""
    json_path: str
    """Where the number is in the JSON answer, like `$.data.value` or `$.results[0].score`."""
    method: str = "GET"
    """GET or POST."""
    body: str | None = None
    """POST body (JSON text), with template variables."""
    headers_secret: str | None = None
    """Secret in the rollout's namespace whose keys and values are sent as request headers."""
    timeout_seconds: float = DEFAULT_WEB_TIMEOUT_SECONDS

    def rendered(self, variables: Mapping[str, str], *, at: float | None = None) -> WebSource:
        """An API answers for now: `at` does not apply."""
        body = None if self.body is None else fields.render_template(self.body, variables)
        return replace(self, url=fields.render_template(self.url, variables), body=body)

    @property
    def lane_address(self) -> str:
        return urlsplit(self.url).netloc

    @property
    def samples_address(self) -> str | None:
        return None

    def outbound_urls(self, *, variables_by_version: Mapping[str, Mapping[str, str]]) -> tuple[OutboundUrl, ...]:
        """The URL as rendered for each version measured: a template may put the version in the host."""
        urls = []
        for version, variables in variables_by_version.items():
            url = fields.render_template(self.url, variables)
            rendered_for = None if url == self.url else version
            urls.append(OutboundUrl(field="provider.web.url", url=url, parsed_by_httpx=True, rendered_for=rendered_for))
        return tuple(urls)

    def references(self) -> tuple[ObjectReference, ...]:
        if self.headers_secret is None:
            return ()
        return (ObjectReference(kind="Secret", name=self.headers_secret, field="provider.web.headersFrom.secretName"),)


def parse_source(raw: Mapping[str, Any], path: str) -> WebSource:
    """provider.web: a URL and where the number is in its JSON answer, GET or POST with a body,
    headers from a Secret, a timeout."""
    method = str(raw.get("method", "GET")).upper()
    if method not in ("GET", "POST"):
        raise SpecError(f"{path}.method", f"{method!r} is not GET or POST")
    request_body = raw.get("body")
    if request_body is not None and method != "POST":
        raise SpecError(f"{path}.body", "only a POST sends a body; set method: POST or drop the body")
    headers_from = raw.get("headersFrom") or {}
    json_path = fields.text(raw, "jsonPath", path)
    try:
        parse_json_path(json_path)
    except JsonPathError as error:
        raise SpecError(f"{path}.jsonPath", f"{error}, like $.data.value") from error
    url = check_http_url(fields.text(raw, "url", path), field_path=f"{path}.url", example=WEB_URL_EXAMPLE)
    return WebSource(
        url=fields.check_template(url, f"{path}.url"),
        method=method,
        body=None if request_body is None else fields.check_template(str(request_body), f"{path}.body"),
        json_path=json_path,
        headers_secret=headers_from.get("secretName"),
        timeout_seconds=fields.duration(raw, "timeout", path) or DEFAULT_WEB_TIMEOUT_SECONDS,
    )


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


PLUGIN = ProviderPlugin(
    key=WebSource.provider,
    parse_source=parse_source,
    build=lambda settings: WebProvider(secret_reader=settings.secret_reader, outbound=settings.outbound),
)
