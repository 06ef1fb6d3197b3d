"""What the CRD's CEL rules refuse in spec.analysis, refused again by the parser for objects stored
before a rule existed (issue 13, item 1): min above max, an interval under 1 s or over a week, a
URL without http:// or https://. Each error names the field and the fix."""

from __future__ import annotations

from typing import Any

import pytest

from controller.analysis.providers.web import WebSource
from controller.analysis.spec import (
    MetricSpec,
    PrometheusSource,
    RateTest,
    SequentialSpec,
    parse_analysis,
    parse_metrics,
)
from controller.api import SpecError

ERRORS = {"name": "errors", "preset": "error-rate"}
SCORE = {"name": "score", "provider": {"prometheus": {"query": "score{{version}}"}}, "comparison": {"max": 1}}
COUNTS = {"name": "refusals", "counts": {"events": "refused{{version}}", "trials": "requests{{version}}"}}
WEB = {
    "name": "web",
    "provider": {"web": {"url": "http://scorer/{{version}}", "jsonPath": "$.v"}},
    "comparison": {"max": 1},
}


def refusal(analysis: dict[str, Any]) -> SpecError:
    with pytest.raises(SpecError) as raised:
        parse_analysis(analysis)
    return raised.value


# ---------------------------------------------------------------------------------------------
# min <= max


def test_a_comparison_with_min_above_max_is_refused_naming_min() -> None:
    # given a metric whose candidate value must be at least 2 and at most 1
    analysis = {"metrics": [{**SCORE, "comparison": {"min": 2, "max": 1}}]}

    # when it is parsed
    error = refusal(analysis)

    # then the error names comparison.min and says to swap the bounds
    assert error.field_path == "spec.analysis.metrics[0].comparison.min"
    assert "2 is above max 1, so nothing can pass; swap them" in str(error)


def test_a_preset_comparison_with_min_above_max_is_refused() -> None:
    # given container-memory with bounds of its own, the wrong way round
    analysis = {"metrics": [{"name": "memory", "preset": "container-memory", "comparison": {"min": 3e9, "max": 1e9}}]}

    # when it is parsed, then comparison.min is named
    assert refusal(analysis).field_path == "spec.analysis.metrics[0].comparison.min"


def test_guardrails_on_counts_with_min_above_max_are_refused() -> None:
    # given counts whose candidate must have at least half and at most a tenth of events per trial
    analysis = {"metrics": [{**COUNTS, "comparison": {"min": 0.5, "max": 0.1}}]}

    # when it is parsed
    error = refusal(analysis)

    # then comparison.min is named with both values
    assert error.field_path == "spec.analysis.metrics[0].comparison.min"
    assert "0.5 is above max 0.1" in str(error)


def test_min_equal_to_max_is_accepted() -> None:
    # given bounds that admit exactly one value, on one number and on counts
    metrics = [{**SCORE, "comparison": {"min": 1, "max": 1}}, {**COUNTS, "comparison": {"min": 0.2, "max": 0.2}}]

    # when they are parsed
    parsed = parse_metrics(metrics, path="spec.analysis.metrics")

    # then both bounds are kept
    score, refusals = parsed
    assert isinstance(score, MetricSpec) and (score.comparison.min, score.comparison.max) == (1, 1)
    assert isinstance(refusals, SequentialSpec) and isinstance(refusals.test, RateTest)
    assert (refusals.test.min, refusals.test.max) == (0.2, 0.2)


def test_a_template_metric_with_min_above_max_is_refused_naming_the_template_field() -> None:
    # given an AnalysisTemplate's metrics, parsed under the template's path
    metrics = [{**SCORE, "comparison": {"min": 0.9, "max": 0.5}}]

    # when they are parsed, then the template's field is named
    with pytest.raises(SpecError) as raised:
        parse_metrics(metrics, path="AnalysisTemplate latency: spec.metrics")
    assert raised.value.field_path == "AnalysisTemplate latency: spec.metrics[0].comparison.min"


# ---------------------------------------------------------------------------------------------
# interval from 1 s to 168 h


@pytest.mark.parametrize("interval", ["1ms", "999ms", "0.5s"])
def test_an_interval_under_a_second_is_refused(interval: str) -> None:
    # given an interval that would measure (and write status) more than once a second
    analysis = {"interval": interval, "metrics": [ERRORS]}

    # when it is parsed
    error = refusal(analysis)

    # then the interval is named with the fix
    assert error.field_path == "spec.analysis.interval"
    assert f"{interval!r} is shorter than 1s; measure at most once a second, e.g. 30s" in str(error)


def test_an_interval_over_a_week_is_refused() -> None:
    # given an interval of more than a week, a typo
    analysis = {"interval": "168h1s", "metrics": [ERRORS]}

    # when it is parsed, then the interval is named with the limit
    error = refusal(analysis)
    assert error.field_path == "spec.analysis.interval"
    assert "is longer than 168h (one week)" in str(error)


@pytest.mark.parametrize(("interval", "seconds"), [("1s", 1.0), ("1000ms", 1.0), ("168h", 604800.0)])
def test_an_interval_at_either_limit_is_accepted(interval: str, seconds: float) -> None:
    # given an interval of exactly 1 s or exactly a week
    analysis = {"interval": interval, "metrics": [ERRORS]}

    # when it is parsed, then it is kept
    parsed = parse_analysis(analysis)
    assert parsed is not None and parsed.interval_seconds == seconds


# ---------------------------------------------------------------------------------------------
# URLs start with http:// or https://

ADDRESS_FIELDS = {
    "provider.prometheus.address": (
        {**SCORE, "provider": {"prometheus": {"query": "q", "address": "prometheus:9090"}}},
        "spec.analysis.metrics[0].provider.prometheus.address",
    ),
    "a preset's provider.prometheus.address": (
        {**ERRORS, "provider": {"prometheus": {"address": "prometheus:9090"}}},
        "spec.analysis.metrics[0].provider.prometheus.address",
    ),
    "container-memory's provider.prometheus.address": (
        {"name": "memory", "preset": "container-memory", "provider": {"prometheus": {"address": "prometheus:9090"}}},
        "spec.analysis.metrics[0].provider.prometheus.address",
    ),
    "predictionDrift.address": (
        {"name": "drift", "predictionDrift": {"address": "prometheus:9090"}},
        "spec.analysis.metrics[0].predictionDrift.address",
    ),
    "importantSlices.address": (
        {"name": "slices", "importantSlices": {"slices": ["borderline"], "address": "prometheus:9090"}},
        "spec.analysis.metrics[0].importantSlices.address",
    ),
    "offlineVsOnline.address": (
        {"name": "online", "offlineVsOnline": {"offline": 0.93, "address": "prometheus:9090"}},
        "spec.analysis.metrics[0].offlineVsOnline.address",
    ),
    "trainingSkew.address": (
        {"name": "skew", "trainingSkew": {"profile": {"configMap": "profile"}, "address": "prometheus:9090"}},
        "spec.analysis.metrics[0].trainingSkew.address",
    ),
}


@pytest.mark.parametrize(("metric", "field"), ADDRESS_FIELDS.values(), ids=ADDRESS_FIELDS.keys())
def test_a_prometheus_address_without_a_scheme_is_refused_naming_the_field(metric: dict[str, Any], field: str) -> None:
    # given a metric reading another Prometheus at a host and port with no scheme
    analysis = {"metrics": [metric]}

    # when it is parsed
    error = refusal(analysis)

    # then the address field is named, with an example of a whole URL
    assert error.field_path == field
    assert "'prometheus:9090' is not an http:// or https:// URL with a host; write the whole URL, e.g. http://" in str(
        error
    )


@pytest.mark.parametrize("url", ["scorer.ml.svc/score?v={{version}}", "ftp://scorer/x", "http://", "http:///x"])
def test_a_web_url_without_http_or_https_and_a_host_is_refused(url: str) -> None:
    # given a web provider URL with no scheme, another scheme, or no host
    analysis = {"metrics": [{**WEB, "provider": {"web": {"url": url, "jsonPath": "$.v"}}}]}

    # when it is parsed, then web.url is named with an example
    error = refusal(analysis)
    assert error.field_path == "spec.analysis.metrics[0].provider.web.url"
    assert "e.g. http://scorer.ml.svc:8080/score?version={{version}}" in str(error)


def test_urls_with_either_scheme_and_template_variables_are_accepted() -> None:
    # given a web URL whose host is templated and an https address in any letter case
    metrics = [
        {**WEB, "provider": {"web": {"url": "http://{{model}}-scorer.ml.svc:8080/s?v={{version}}", "jsonPath": "$.v"}}},
        {**SCORE, "provider": {"prometheus": {"query": "q", "address": "HTTPS://prometheus.example.com/prefix"}}},
    ]

    # when they are parsed, then both are kept as written
    web, score = parse_metrics(metrics, path="spec.analysis.metrics")
    assert isinstance(web, MetricSpec) and isinstance(web.source, WebSource)
    assert web.source.url == "http://{{model}}-scorer.ml.svc:8080/s?v={{version}}"
    assert isinstance(score, MetricSpec) and isinstance(score.source, PrometheusSource)
    assert score.source.address == "HTTPS://prometheus.example.com/prefix"
