"""The web provider over httpx.MockTransport, and the JSON path subset it reads values with."""

from __future__ import annotations

import json
from collections.abc import Mapping

import httpx
import pytest

from controller.analysis.jsonpath import MISSING, JsonPathError, lookup, parse_json_path
from controller.analysis.providers import InvalidQuery, ProviderUnavailable
from controller.analysis.providers.web import WebProvider
from controller.analysis.spec import WebSource

SOURCE = WebSource(url="http://127.0.0.1:1/score", json_path="$.data.results[0].value")


def provider_answering(status: int, body: object, seen: list[httpx.Request] | None = None) -> WebProvider:
    def handle(request: httpx.Request) -> httpx.Response:
        if seen is not None:
            seen.append(request)
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return httpx.Response(status, content=content)

    def secrets(*, namespace: str, name: str) -> Mapping[str, str]:
        return {"authorization": f"Bearer {namespace}/{name}"}

    return WebProvider(secret_reader=secrets, transport=httpx.MockTransport(handle))


def test_reads_the_number_at_the_json_path() -> None:
    provider = provider_answering(200, {"data": {"results": [{"value": 0.93}]}})
    assert provider.measure(source=SOURCE, namespace="ml") == 0.93


def test_a_numeric_string_is_a_number_and_a_missing_or_null_value_is_no_data() -> None:
    assert provider_answering(200, {"data": {"results": [{"value": "7"}]}}).measure(source=SOURCE, namespace="ml") == 7
    assert provider_answering(200, {"data": {"results": []}}).measure(source=SOURCE, namespace="ml") is None
    assert (
        provider_answering(200, {"data": {"results": [{"value": None}]}}).measure(source=SOURCE, namespace="ml") is None
    )


def test_posts_the_body_with_headers_from_the_secret() -> None:
    seen: list[httpx.Request] = []
    source = WebSource(
        url="http://127.0.0.1:1/q", method="POST", body='{"v": "v2"}', json_path="$.x", headers_secret="api"
    )
    assert provider_answering(200, {"x": 1}, seen).measure(source=source, namespace="ml") == 1
    assert seen[0].method == "POST" and seen[0].content == b'{"v": "v2"}'
    assert seen[0].headers["authorization"] == "Bearer ml/api"
    assert seen[0].headers["content-type"] == "application/json"


@pytest.mark.parametrize("status", [500, 503, 429])
def test_server_trouble_is_temporary(status: int) -> None:
    with pytest.raises(ProviderUnavailable, match=f"HTTP {status}"):
        provider_answering(status, {}).measure(source=SOURCE, namespace="ml")


@pytest.mark.parametrize("status", [400, 401, 404])
def test_a_rejected_request_is_permanent(status: int) -> None:
    with pytest.raises(InvalidQuery, match=f"HTTP {status}"):
        provider_answering(status, {}).measure(source=SOURCE, namespace="ml")


def test_a_value_that_is_not_a_number_is_permanent() -> None:
    with pytest.raises(InvalidQuery, match="not a number"):
        provider_answering(200, {"data": {"results": [{"value": {"a": 1}}]}}).measure(source=SOURCE, namespace="ml")


def test_an_answer_that_is_not_json_is_temporary() -> None:
    with pytest.raises(ProviderUnavailable, match="not JSON"):
        provider_answering(200, b"<html>").measure(source=SOURCE, namespace="ml")


def test_a_refused_connection_is_temporary() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    provider = WebProvider(secret_reader=None, transport=httpx.MockTransport(refuse))
    with pytest.raises(ProviderUnavailable, match="connection refused"):
        provider.measure(source=SOURCE, namespace="ml")


def test_headers_from_a_secret_need_a_secret_reader() -> None:
    provider = WebProvider(secret_reader=None, transport=httpx.MockTransport(lambda r: httpx.Response(200)))
    with pytest.raises(InvalidQuery, match="cannot read Secrets"):
        provider.measure(source=WebSource(url="u", json_path="$", headers_secret="s"), namespace="ml")


def test_json_path_subset() -> None:
    assert parse_json_path("$.a['b c'][2].d-e") == ("a", "b c", 2, "d-e")
    document = {"a": {"b c": [0, 1, {"d-e": 5}]}}
    assert lookup(document, "$.a['b c'][2].d-e") == 5
    assert lookup(document, "$.a.x") is MISSING
    assert lookup(document, "$.a['b c'][9]") is MISSING
    with pytest.raises(JsonPathError, match="not supported"):
        parse_json_path("$..a")
