"""The web provider over httpx.MockTransport, behind the outbound fence, and the JSON path subset it
reads values with."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from controller.analysis.checker import AnalysisChecker
from controller.analysis.jsonpath import MISSING, JsonPathError, lookup, parse_json_path
from controller.analysis.providers import InvalidQuery, ProviderUnavailable
from controller.analysis.providers.web import WebProvider, WebSource
from controller.api import ModelRolloutStatus, parse_spec
from controller.checks import CheckContext, StepWindow, Verdict
from controller.outbound import OutboundPolicy

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


# ---------------------------------------------------------------------------------------------
# The outbound fence and what messages may quote (issue 13, item 9)


def recording(seen: list[httpx.Request]) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"x": 1})

    return httpx.MockTransport(handle)


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://169.254.169.254/latest/meta-data/iam/security-credentials/", "a cloud metadata address"),
        ("http://[fd00:ec2::254]/latest/meta-data/", "a cloud metadata address"),
        ("http://169.254.10.1:8080/score", "a link-local address"),
    ],
)
def test_a_metadata_or_link_local_url_is_refused_before_any_request(url: str, why: str) -> None:
    seen: list[httpx.Request] = []
    provider = WebProvider(secret_reader=None, transport=recording(seen))
    with pytest.raises(InvalidQuery, match=why) as refused:
        provider.measure(source=WebSource(url=url, json_path="$.x"), namespace="ml")
    assert str(refused.value).startswith(f"GET {url}: requests to ")
    assert seen == []


def test_only_allowed_hosts_are_called_when_the_operator_lists_them() -> None:
    seen: list[httpx.Request] = []
    provider = WebProvider(
        secret_reader=None, outbound=OutboundPolicy(allowed_hosts=("*.ml.svc",)), transport=recording(seen)
    )
    assert provider.measure(source=WebSource(url="http://drift.ml.svc/score", json_path="$.x"), namespace="ml") == 1
    with pytest.raises(InvalidQuery, match=r"requests to drift\.example\.com are refused: it is not among"):
        provider.measure(source=WebSource(url="https://drift.example.com/score", json_path="$.x"), namespace="ml")
    assert [r.url.host for r in seen] == ["drift.ml.svc"]


def test_messages_never_quote_the_answer_or_the_secret_headers() -> None:
    echo = "Bearer ml/api: AKIAIOSFODNN7EXAMPLE"
    source = WebSource(url="http://127.0.0.1:1/q", json_path="$.key", headers_secret="api")
    for status, body in ((401, {"error": echo}), (500, {"error": echo}), (200, {"key": echo}), (200, echo.encode())):
        with pytest.raises((InvalidQuery, ProviderUnavailable)) as failed:
            provider_answering(status, body).measure(source=source, namespace="ml")
        assert "AKIA" not in str(failed.value) and "Bearer" not in str(failed.value), str(failed.value)


def test_a_web_metric_at_the_metadata_service_makes_the_analysis_inconclusive_naming_why() -> None:
    seen: list[httpx.Request] = []
    spec = parse_spec(
        {
            "model": "iris",
            "versions": [{"version": v, "backend": {"service": f"iris-{v}", "port": 8080}} for v in ("v1", "v2")],
            "baseline": "v1",
            "candidate": "v2",
            "trafficRouting": {"gatewayAPI": {"httpRoute": "iris"}},
            "steps": [{"setWeight": 20}, {"analyze": {"duration": "1m"}}],
            "analysis": {
                "interval": "30s",
                "metrics": [
                    {
                        "name": "credentials",
                        "provider": {
                            "web": {"url": "http://169.254.169.254/latest/meta-data/?v={{version}}", "jsonPath": "$.x"}
                        },
                        "comparison": {"max": 1},
                    }
                ],
            },
        }
    )
    start = datetime(2025, 1, 1, tzinfo=UTC)
    checker = AnalysisChecker(
        providers={"web": WebProvider(secret_reader=None, transport=recording(seen))},
        template_lookup=lambda *, namespace, name: None,
    )
    outcome = checker(
        context=CheckContext(
            namespace="ml",
            name="iris",
            spec=spec,
            status=ModelRolloutStatus(current_step_index=1),
            stable_version="v1",
            now=start + timedelta(seconds=30),
            current_weight=20,
            step=StepWindow(index=1, started_at=start, seconds=60),
        )
    )
    assert outcome is not None and outcome.verdict is Verdict.INCONCLUSIVE
    why = "requests to 169.254.169.254 are refused: it is a cloud metadata address (169.254.169.254/32)"
    assert why in outcome.message
    assert "a configuration error, fix it" in outcome.message
    assert seen == []
