"""Parsing spec.analysis: defaults, presets and their overrides, and errors naming field and fix."""

from __future__ import annotations

from typing import Any

import pytest

from controller.analysis.comparison import Comparison, Direction
from controller.analysis.presets import PRESETS
from controller.analysis.spec import (
    AnalysisSpec,
    MetricSpec,
    PrometheusSource,
    WebSource,
    format_window,
    parse_analysis,
    render_template,
)
from controller.api import SpecError
from controller.checks import InconclusivePolicy


def only_metric(raw: dict[str, Any]) -> Any:
    parsed = parse_analysis({"metrics": [raw]})
    assert parsed is not None
    return parsed.metrics[0]


def test_no_analysis_section_means_no_analysis() -> None:
    assert parse_analysis({}) is None
    assert parse_analysis(None) is None


def test_defaults() -> None:
    parsed = parse_analysis({"metrics": [{"name": "e", "preset": "error-rate"}]})
    assert parsed == AnalysisSpec(metrics=parsed.metrics if parsed else ())
    assert parsed is not None
    assert parsed.interval_seconds == 30
    assert parsed.on_inconclusive == InconclusivePolicy.HOLD
    assert parsed.starting_step is None
    metric = parsed.metrics[0]
    assert (metric.failure_limit, metric.consecutive_error_limit, metric.inconclusive_limit, metric.count) == (
        0,
        4,
        0,
        None,
    )


def test_every_field() -> None:
    parsed = parse_analysis(
        {
            "interval": "10s",
            "onInconclusive": "rollback",
            "startingStep": 2,
            "measurementHistoryLimit": 5,
            "templates": [{"name": "shared"}],
            "metrics": [
                {
                    "name": "p95",
                    "provider": {"prometheus": {"query": "q{version='{{version}}'}", "address": "http://127.0.0.1:1"}},
                    "comparison": {"direction": "lower-is-worse", "min": 0.5, "maxRatio": 1.1},
                    "minSamples": {"count": 10, "query": "n"},
                    "window": "1m",
                    "count": 3,
                    "failureLimit": 1,
                    "consecutiveErrorLimit": 2,
                    "inconclusiveLimit": 3,
                }
            ],
        }
    )
    assert parsed is not None
    assert (parsed.interval_seconds, parsed.on_inconclusive, parsed.starting_step) == (
        10,
        InconclusivePolicy.ROLLBACK,
        2,
    )
    assert (parsed.measurement_history_limit, parsed.templates) == (5, ("shared",))
    metric = parsed.metrics[0]
    assert isinstance(metric, MetricSpec)
    assert metric.source == PrometheusSource(query="q{version='{{version}}'}", address="http://127.0.0.1:1")
    assert metric.comparison == Comparison(direction=Direction.LOWER_IS_WORSE, min=0.5, max_ratio=1.1)
    assert metric.min_samples is not None and (metric.min_samples.count, metric.min_samples.query) == (10, "n")
    assert (metric.window_seconds, metric.count, metric.failure_limit) == (60, 3, 1)
    assert (metric.consecutive_error_limit, metric.inconclusive_limit) == (2, 3)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_a_preset_brings_query_samples_and_comparison(name: str) -> None:
    metric = only_metric({"name": "x", "preset": name})
    assert metric.source == PrometheusSource(query=PRESETS[name].query)
    assert metric.comparison == PRESETS[name].comparison
    assert metric.min_samples is not None and metric.min_samples.query == PRESETS[name].samples_query


def test_a_preset_query_address_and_bounds_can_be_overridden() -> None:
    metric = only_metric(
        {
            "name": "acc",
            "preset": "feedback-accuracy",
            "provider": {"prometheus": {"query": "my_accuracy{version='{{version}}'}", "address": "http://p:9090"}},
            "comparison": {"maxRatio": 1.05},
            "minSamples": {"count": 500},
        }
    )
    assert metric.source == PrometheusSource(query="my_accuracy{version='{{version}}'}", address="http://p:9090")
    # Bounds given replace the preset's; the direction stays the preset's.
    assert metric.comparison == Comparison(direction=Direction.LOWER_IS_WORSE, max_ratio=1.05)
    assert metric.min_samples is not None
    assert (metric.min_samples.count, metric.min_samples.query) == (500, PRESETS["feedback-accuracy"].samples_query)


def test_a_web_metric() -> None:
    metric = only_metric(
        {
            "name": "score",
            "provider": {
                "web": {
                    "url": "http://127.0.0.1:1/score?v={{version}}",
                    "method": "post",
                    "body": '{"model": "{{model}}"}',
                    "jsonPath": "$.data.value",
                    "headersFrom": {"secretName": "score-api"},
                    "timeout": "3s",
                }
            },
            "comparison": {"min": 0.8},
        }
    )
    assert metric.source == WebSource(
        url="http://127.0.0.1:1/score?v={{version}}",
        method="POST",
        body='{"model": "{{model}}"}',
        json_path="$.data.value",
        headers_secret="score-api",
        timeout_seconds=3,
    )
    assert metric.source.rendered({"version": "v2", "model": "iris"}).url == "http://127.0.0.1:1/score?v=v2"


def test_templates_render_every_variable() -> None:
    text = "{{model}} {{ version }} {{namespace}} {{window}}"
    variables = {"model": "iris", "version": "v2", "namespace": "ml", "window": "30s"}
    assert render_template(text, variables) == "iris v2 ml 30s"
    assert (format_window(30), format_window(1.5)) == ("30s", "1500ms")


@pytest.mark.parametrize(
    ("raw", "field", "fix"),
    [
        ({"metrics": [{"preset": "error-rate"}]}, "spec.analysis.metrics[0].name", "is required"),
        ({"metrics": [{"name": "a"}]}, "spec.analysis.metrics[0]", "give a provider"),
        ({"metrics": [{"name": "a", "preset": "nope"}]}, "spec.analysis.metrics[0].preset", "is not one of"),
        (
            {"metrics": [{"name": "a", "provider": {"prometheus": {"query": "q"}}}]},
            "spec.analysis.metrics[0].comparison",
            "give at least one of max, min, maxRatio or maxDifference",
        ),
        (
            {
                "metrics": [
                    {"name": "a", "provider": {"prometheus": {"query": "q"}, "web": {}}, "comparison": {"max": 1}}
                ]
            },
            "spec.analysis.metrics[0].provider",
            "name exactly one provider",
        ),
        (
            {
                "metrics": [
                    {"name": "a", "provider": {"prometheus": {"query": "q{{vresion}}"}}, "comparison": {"max": 1}}
                ]
            },
            "spec.analysis.metrics[0].provider.prometheus.query",
            "unknown template variable(s) vresion",
        ),
        (
            {"metrics": [{"name": "a", "preset": "error-rate", "comparison": {"direction": "up"}}]},
            "spec.analysis.metrics[0].comparison.direction",
            "higher-is-worse, lower-is-worse",
        ),
        (
            {"metrics": [{"name": "a", "preset": "error-rate", "comparison": {"maxRatio": 0}}]},
            "spec.analysis.metrics[0].comparison.maxRatio",
            "must be above 0",
        ),
        (
            {"metrics": [{"name": "a", "preset": "error-rate", "failureLimit": -1}]},
            "spec.analysis.metrics[0].failureLimit",
            "whole number of at least 0",
        ),
        (
            {"metrics": [{"name": "a", "preset": "error-rate"}, {"name": "a", "preset": "latency-p99"}]},
            "spec.analysis.metrics",
            "appears twice",
        ),
        (
            {"metrics": [{"name": "a", "preset": "error-rate", "provider": {"web": {}}}]},
            "spec.analysis.metrics[0].provider",
            "a preset reads Prometheus",
        ),
        (
            {
                "metrics": [
                    {
                        "name": "a",
                        "provider": {"prometheus": {"query": "q"}},
                        "comparison": {"max": 1},
                        "minSamples": {"count": 5},
                    }
                ]
            },
            "spec.analysis.metrics[0].minSamples.query",
            "is required without a preset",
        ),
        (
            {
                "metrics": [
                    {"name": "a", "provider": {"web": {"url": "u", "jsonPath": "data.x"}}, "comparison": {"max": 1}}
                ]
            },
            "spec.analysis.metrics[0].provider.web.jsonPath",
            "must start with $",
        ),
        (
            {
                "metrics": [
                    {
                        "name": "a",
                        "provider": {"web": {"url": "u", "jsonPath": "$.x", "body": "{}"}},
                        "comparison": {"max": 1},
                    }
                ]
            },
            "spec.analysis.metrics[0].provider.web.body",
            "only a POST sends a body",
        ),
        ({"interval": "soon", "metrics": []}, "spec.analysis.interval", "is not a duration"),
        ({"interval": "0s", "metrics": []}, "spec.analysis.interval", "longer than 0s"),
        ({"onInconclusive": "panic"}, "spec.analysis.onInconclusive", "hold, pause, rollback"),
        ({"templates": [{}]}, "spec.analysis.templates[0].name", "is required"),
    ],
)
def test_errors_name_the_field_and_the_fix(raw: dict[str, Any], field: str, fix: str) -> None:
    with pytest.raises(SpecError) as raised:
        parse_analysis(raw)
    assert raised.value.field_path == field
    assert fix in str(raised.value)
