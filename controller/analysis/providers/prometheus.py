"""Values from Prometheus through `prometheus-api-client`: an instant query giving one number, or
one number per value of a label (histogram buckets by `le`, feedback by `slice`).

A metric's own `address` is the spec's, so requests to it pass the outbound fence
(controller.outbound); the controller's default address is the operator's and does not. Messages
never quote an answer's body, only Prometheus' own error (`errorType: error`) when the answer is one.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import requests
from prometheus_api_client.exceptions import PrometheusApiClientException
from prometheus_api_client.prometheus_connect import PrometheusConnect
from urllib3.util.retry import Retry

from controller.analysis import fields
from controller.analysis.providers.base import (
    LABEL_VALUE_SEPARATOR,
    InvalidQuery,
    MetricSource,
    ObjectReference,
    OutboundUrl,
    ProviderPlugin,
    ProviderUnavailable,
)
from controller.outbound import DEFAULT_POLICY, OutboundPolicy, OutboundRefused, fenced_session

# prometheus-api-client reports a non-200 answer only as text: "HTTP Status Code 400 (b'{...}')".
_HTTP_ERROR = re.compile(r"HTTP Status Code (\d+) \((.*)\)\Z", re.DOTALL)
_API_ERROR_LIMIT = 300
"""Characters of Prometheus' own error text kept in a message."""


@dataclass(frozen=True, kw_only=True)
class PrometheusSource:
    provider: ClassVar[str] = "prometheus"
    query: str
    """PromQL returning one number (a scalar or a one-series vector), with template variables."""
    address: str | None = None
    """Base URL of Prometheus; None uses the controller's default."""
    at: float | None = None
    """Evaluation time (Unix seconds) of the instant query: the look's moment, so that a query
    that waited for the measurement pool reads what it would have read then; None: Prometheus' now."""

    def rendered(self, variables: Mapping[str, str], *, at: float | None = None) -> PrometheusSource:
        return replace(self, query=fields.render_template(self.query, variables), at=at)

    @property
    def lane_address(self) -> str:
        return self.address or ""

    @property
    def samples_address(self) -> str | None:
        return self.address

    def outbound_urls(self, *, variables_by_version: Mapping[str, Mapping[str, str]]) -> tuple[OutboundUrl, ...]:
        """The metric's own address (never templated); the operator's default is not the spec's to check."""
        if self.address is None:
            return ()
        return (OutboundUrl(field="provider.prometheus.address", url=self.address, parsed_by_httpx=False),)

    def references(self) -> tuple[ObjectReference, ...]:
        return ()


def parse_source(raw: Mapping[str, Any], path: str) -> PrometheusSource:
    """provider.prometheus: a query (required) and the address of another Prometheus."""
    return PrometheusSource(
        query=fields.check_template(fields.text(raw, "query", path), f"{path}.query"),
        address=fields.prometheus_address(raw, path),
    )


def _api_error(error: PrometheusApiClientException) -> tuple[int | None, str]:
    """Status code and Prometheus' own error text (`errorType: error`) from the client's exception
    message; an answer that is not Prometheus' error JSON gives "no Prometheus error", not its body."""
    match = _HTTP_ERROR.match(str(error))
    if match is None:
        return None, "no Prometheus error"
    status, body_repr = int(match.group(1)), match.group(2)
    try:
        body = json.loads(ast.literal_eval(body_repr))
    except (ValueError, SyntaxError, TypeError):
        return status, "no Prometheus error"
    if not isinstance(body, dict) or not isinstance(body.get("error"), str):
        return status, "no Prometheus error"
    return status, f"{body.get('errorType', 'error')}: {body['error']}"[:_API_ERROR_LIMIT]


def _one_number(result: Any, query: str) -> float | None:
    """The single value of an instant query's result; None when it has no series."""
    if not result:
        return None
    # A scalar (or string) result is [timestamp, "value"]; a vector is a list of series.
    if isinstance(result[0], int | float):
        return float(result[1])
    if len(result) > 1:
        labels = ", ".join(str(series.get("metric", {})) for series in result[:3])
        raise InvalidQuery(
            f"query returns {len(result)} series ({labels}...), not one number; aggregate it, e.g. sum(...): {query}"
        )
    series = result[0]
    if "value" not in series:
        raise InvalidQuery(f"query returns a range vector; wrap it in a function such as rate(...): {query}")
    return float(series["value"][1])


def _numbers_by(result: Any, label: str, query: str) -> dict[str, float]:
    """{value of `label`: number} from an instant vector with one series per value of `label`.

    `label` may name several labels, comma-separated (`feature,le`): the key is then their values
    joined by LABEL_VALUE_SEPARATOR, in that order."""
    labels = [name.strip() for name in label.split(",")]
    grouping = ", ".join(labels)
    if result and isinstance(result[0], int | float):
        raise InvalidQuery(
            f"query returns one number, not one series per {grouping}; use sum by ({grouping}) (...): {query}"
        )
    numbers: dict[str, float] = {}
    for series in result or []:
        values = [series.get("metric", {}).get(name) for name in labels]
        missing = [name for name, value in zip(labels, values, strict=True) if value is None]
        if missing:
            raise InvalidQuery(
                f"query returns a series without label {missing[0]}; use sum by ({grouping}) (...): {query}"
            )
        key = LABEL_VALUE_SEPARATOR.join(str(value) for value in values)
        if key in numbers:
            raise InvalidQuery(
                f"query returns several series with {grouping}={key}; use sum by ({grouping}) (...): {query}"
            )
        if "value" not in series:
            raise InvalidQuery(f"query returns a range vector; wrap it in a function such as increase(...): {query}")
        numbers[key] = float(series["value"][1])
    return numbers


def _series_by(result: Any, labels: tuple[str, ...], query: str) -> dict[tuple[str, ...], float]:
    """{values of `labels`: number} from an instant vector (a batched query's answer); a label a
    series lacks reads as "", as Prometheus drops empty labels."""
    if result and isinstance(result[0], int | float):
        raise InvalidQuery(f"query returns one number, not one series per {', '.join(labels)}: {query}")
    numbers: dict[tuple[str, ...], float] = {}
    for series in result or []:
        if "value" not in series:
            raise InvalidQuery(f"query returns a range vector; wrap it in a function such as increase(...): {query}")
        metric = series.get("metric", {})
        key = tuple(str(metric.get(name, "")) for name in labels)
        numbers[key] = numbers.get(key, 0.0) + float(series["value"][1])
    return numbers


class PrometheusProvider:
    def __init__(
        self, *, default_address: str, timeout_seconds: int, outbound: OutboundPolicy = DEFAULT_POLICY
    ) -> None:
        self._default_address = default_address
        self._timeout_seconds = timeout_seconds
        self._outbound = outbound

    def measure(self, *, source: MetricSource, namespace: str) -> float | None:
        if not isinstance(source, PrometheusSource):
            raise TypeError(f"the Prometheus provider cannot read a {source.provider} source")
        return _one_number(self._query(source), source.query)

    def measure_by(self, *, source: PrometheusSource, label: str) -> dict[str, float]:
        return _numbers_by(self._query(source), label, source.query)

    def measure_series(self, *, source: PrometheusSource, labels: tuple[str, ...]) -> dict[tuple[str, ...], float]:
        return _series_by(self._query(source), labels, source.query)

    def _query(self, source: PrometheusSource) -> Any:
        """The `result` of an instant query."""
        address = source.address or self._default_address
        # One client per query: requests sessions are not meant to be shared between the
        # measurement pool's threads. No retries inside: the next analysis interval is the retry.
        session = requests.Session() if source.address is None else fenced_session(self._outbound)
        with PrometheusConnect(
            url=address, retry=Retry(total=0), timeout=self._timeout_seconds, session=session
        ) as client:
            try:
                params = {} if source.at is None else {"time": f"{source.at:.3f}"}
                result = client.custom_query(query=source.query, params=params)
            except OutboundRefused as error:
                raise InvalidQuery(f"Prometheus at {address}: {error}") from error
            except requests.RequestException as error:  # refused, timed out, or an answer that is not JSON
                raise ProviderUnavailable(f"Prometheus at {address} did not answer: {error}") from error
            except PrometheusApiClientException as error:
                status, detail = _api_error(error)
                if status is not None and 400 <= status < 500:
                    raise InvalidQuery(
                        f"Prometheus at {address} rejected the query ({detail}): {source.query}"
                    ) from error
                raise ProviderUnavailable(f"Prometheus at {address} failed (HTTP {status}, {detail})") from error
            except ValueError as error:
                raise ProviderUnavailable(f"Prometheus at {address} answered something that is not JSON") from error
        return result


PLUGIN = ProviderPlugin(
    key=PrometheusSource.provider,
    parse_source=parse_source,
    build=lambda settings: PrometheusProvider(
        default_address=settings.prometheus_address,
        timeout_seconds=settings.timeout_seconds,
        outbound=settings.outbound,
    ),
)
