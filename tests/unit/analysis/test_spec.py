"""Parsing spec.analysis: defaults, presets and their overrides, and errors naming field and fix."""

from __future__ import annotations

from typing import Any

import pytest

from controller.analysis.comparison import Comparison, Direction, Tolerance
from controller.analysis.presets import PRESETS, CountsPreset, GaugePreset
from controller.analysis.providers.web import WebSource
from controller.analysis.spec import (
    AnalysisSpec,
    GuardrailTest,
    MetricSpec,
    PrometheusSource,
    PromoteWhen,
    RateTest,
    SequentialSpec,
    SlowRequestsTest,
    format_window,
    parse_analysis,
    parse_post_promotion,
    render_template,
)
from controller.api import SpecError, parse_spec
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


@pytest.mark.parametrize("name", sorted(n for n, p in PRESETS.items() if isinstance(p, CountsPreset)))
def test_a_counts_preset_brings_its_queries_and_tolerance(name: str) -> None:
    preset = PRESETS[name]
    assert isinstance(preset, CountsPreset)
    metric = only_metric({"name": "x", "preset": name})
    assert isinstance(metric, SequentialSpec) and isinstance(metric.test, RateTest)
    assert (metric.test.events_query, metric.test.trials_query) == (preset.events_query, preset.trials_query)
    assert metric.test.tolerance == preset.tolerance and metric.rubric_items == preset.rubric_items
    assert "{{window}}" in metric.test.trials_query and "increase(" in metric.test.trials_query


def test_latency_counts_requests_slower_than_the_baselines_p99() -> None:
    metric = only_metric({"name": "x", "preset": "latency-p99", "tolerance": "50%"})
    assert isinstance(metric, SequentialSpec) and isinstance(metric.test, SlowRequestsTest)
    assert metric.test.quantile == 0.99 and metric.test.tolerance == Tolerance(relative=0.5)
    assert "model_request_duration_seconds_bucket" in metric.test.buckets_query


def test_container_memory_is_a_gauge_bounded_as_read() -> None:
    metric = only_metric({"name": "x", "preset": "container-memory"})
    preset = PRESETS["container-memory"]
    assert isinstance(metric, MetricSpec) and isinstance(preset, GaugePreset)
    assert metric.source == PrometheusSource(query=preset.query)
    assert metric.comparison == preset.comparison
    assert metric.min_samples is not None and metric.min_samples.query == preset.samples_query


@pytest.mark.parametrize(
    ("given", "tolerance"),
    [
        ({"tolerance": "10%"}, Tolerance(relative=0.1)),
        ({"tolerance": 0.002}, Tolerance(absolute=0.002)),
        ({"tolerance": "0.002"}, Tolerance(absolute=0.002)),
        ({"tolerance": 0}, Tolerance()),
        # The older spellings keep working: a ratio is a relative tolerance, a difference an absolute one.
        ({"comparison": {"maxRatio": 1.2}}, Tolerance(relative=0.2)),
        ({"comparison": {"maxDifference": 0.01}}, Tolerance(absolute=0.01)),
        ({}, Tolerance(absolute=0.02)),
    ],
)
def test_a_tolerance_is_relative_or_absolute(given: dict[str, Any], tolerance: Tolerance) -> None:
    metric = only_metric({"name": "acc", "preset": "feedback-accuracy", **given})
    assert isinstance(metric, SequentialSpec) and isinstance(metric.test, RateTest)
    assert metric.test.tolerance == tolerance
    assert not metric.test.events_are_bad


def test_a_counts_preset_takes_an_address_guardrails_and_a_floor() -> None:
    metric = only_metric(
        {
            "name": "acc",
            "preset": "feedback-accuracy",
            "provider": {"prometheus": {"address": "http://p:9090"}},
            "comparison": {"min": 0.8},
            "minSamples": {"count": 500},
        }
    )
    assert isinstance(metric, SequentialSpec) and isinstance(metric.test, RateTest)
    assert (metric.test.address, metric.test.min, metric.test.max, metric.test.min_trials) == (
        "http://p:9090",
        0.8,
        None,
        500,
    )
    assert metric.test.tests == 2


def test_own_counts_are_judged_like_a_preset() -> None:
    metric = only_metric(
        {
            "name": "timeouts",
            "counts": {"events": "sum(increase(t[{{window}}]))", "trials": "sum(increase(r[{{window}}]))"},
            "tolerance": "5%",
        }
    )
    assert isinstance(metric, SequentialSpec) and isinstance(metric.test, RateTest)
    assert metric.test.events_are_bad and metric.test.tolerance == Tolerance(relative=0.05)


def test_the_error_budget_and_promotion_rule() -> None:
    parsed = parse_analysis(
        {"falseRollbackRate": 0.01, "promoteWhen": "evidenceOfSafety", "maxDuration": "20m", "metrics": []}
    )
    assert parsed is not None
    assert (parsed.false_rollback_rate, parsed.promote_when, parsed.max_duration_seconds) == (
        0.01,
        PromoteWhen.EVIDENCE_OF_SAFETY,
        1200,
    )
    defaults = parse_analysis({"metrics": []})
    assert defaults is not None
    assert (defaults.false_rollback_rate, defaults.promote_when) == (0.05, PromoteWhen.NO_EVIDENCE_OF_HARM)


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
            {"metrics": [{"name": "a", "preset": "container-memory", "comparison": {"direction": "up"}}]},
            "spec.analysis.metrics[0].comparison.direction",
            "higher-is-worse, lower-is-worse",
        ),
        (
            {"metrics": [{"name": "a", "preset": "error-rate", "comparison": {"direction": "lower-is-worse"}}]},
            "spec.analysis.metrics[0].comparison.direction",
            "these counts are higher-is-worse",
        ),
        (
            {"metrics": [{"name": "a", "preset": "container-memory", "comparison": {"maxRatio": 0}}]},
            "spec.analysis.metrics[0].comparison.maxRatio",
            "must be above 0",
        ),
        (
            {"metrics": [{"name": "a", "preset": "error-rate", "comparison": {"maxRatio": 0.5}}]},
            "spec.analysis.metrics[0].comparison.maxRatio",
            "is below 1",
        ),
        (
            {"metrics": [{"name": "a", "preset": "error-rate", "tolerance": "ten percent"}]},
            "spec.analysis.metrics[0].tolerance",
            "give a share like 10% or an amount like 0.002",
        ),
        (
            {"metrics": [{"name": "a", "preset": "error-rate", "tolerance": 2}]},
            "spec.analysis.metrics[0].tolerance",
            "write it as a percent",
        ),
        (
            {"metrics": [{"name": "a", "preset": "error-rate", "tolerance": "5%", "comparison": {"maxRatio": 1.2}}]},
            "spec.analysis.metrics[0].comparison.maxRatio",
            "keep only tolerance",
        ),
        (
            {"metrics": [{"name": "a", "provider": {"prometheus": {"query": "q"}}, "tolerance": "5%"}]},
            "spec.analysis.metrics[0].tolerance",
            "bound this metric with comparison.maxRatio",
        ),
        (
            {"metrics": [{"name": "a", "preset": "error-rate", "provider": {"prometheus": {"query": "q"}}}]},
            "spec.analysis.metrics[0].provider.prometheus.query",
            "give your own queries as counts",
        ),
        (
            {"metrics": [{"name": "a", "preset": "error-rate", "minSamples": {"count": 5, "query": "q"}}]},
            "spec.analysis.metrics[0].minSamples.query",
            "give only minSamples.count",
        ),
        (
            {"metrics": [{"name": "a", "preset": "latency-p99", "comparison": {"max": 0.5}}]},
            "spec.analysis.metrics[0].comparison",
            "bound it with tolerance only",
        ),
        (
            {"metrics": [{"name": "a", "counts": {"events": "e"}}]},
            "spec.analysis.metrics[0].counts.trials",
            "is required",
        ),
        (
            {"metrics": [{"name": "a", "counts": {"events": "e", "trials": "t"}, "preset": "error-rate"}]},
            "spec.analysis.metrics[0].counts",
            "a preset brings its own counts",
        ),
        (
            {"metrics": [{"name": "a", "counts": {"events": "e", "trials": "t"}, "comparison": {"max": 2}}]},
            "spec.analysis.metrics[0].comparison.max",
            "not a share of trials",
        ),
        ({"falseRollbackRate": 0.5}, "spec.analysis.falseRollbackRate", "between 0 and 0.5"),
        ({"promoteWhen": "always"}, "spec.analysis.promoteWhen", "noEvidenceOfHarm, evidenceOfSafety"),
        ({"maxDuration": "10m"}, "spec.analysis.maxDuration", "only extends steps with promoteWhen: evidenceOfSafety"),
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
            "counts are read from Prometheus",
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


# spec.postPromotion: the promoted version alone against absolute guardrails -----------------------

POST_PROMOTION_SPEC: dict[str, Any] = {
    "model": "iris",
    "versions": [{"version": v, "backend": {"service": f"iris-{v}", "port": 80}} for v in ("v1", "v2")],
    "candidate": "v2",
    "baseline": "v1",
    "trafficRouting": {"gatewayAPI": {"httpRoute": "iris"}},
    "steps": [{"setWeight": 20}],
    "rollbackWindow": "1h",
}
ERRORS_AT_MOST_1_PERCENT = {"name": "errors", "preset": "error-rate", "comparison": {"max": 0.01}}


def test_post_promotion_takes_a_duration_within_the_rollback_window_and_guardrailed_metrics() -> None:
    spec = parse_spec(
        {**POST_PROMOTION_SPEC, "postPromotion": {"duration": "30m", "metrics": [ERRORS_AT_MOST_1_PERCENT]}}
    )
    assert spec.post_promotion is not None and spec.post_promotion.duration_seconds == 1800
    parsed = parse_post_promotion(spec.post_promotion.section, analysis=None)
    assert parsed.interval_seconds == 30 and parsed.false_rollback_rate == 0.05
    metric = parsed.metrics[0]
    assert isinstance(metric, SequentialSpec) and isinstance(metric.test, GuardrailTest)
    assert metric.test.rate.max == 0.01 and metric.test.tests == 1 and not metric.test.compares_baseline


def test_post_promotion_looks_as_often_as_the_analysis_unless_told() -> None:
    analysis = parse_analysis({"interval": "10s", "metrics": [{"name": "e", "preset": "error-rate"}]})
    section = {"duration": "30m", "falseRollbackRate": 0.01, "metrics": [ERRORS_AT_MOST_1_PERCENT]}
    assert parse_post_promotion(section, analysis=analysis).interval_seconds == 10
    assert parse_post_promotion({**section, "interval": "1m"}, analysis=analysis).interval_seconds == 60
    assert parse_post_promotion(section, analysis=analysis).false_rollback_rate == 0.01


def test_post_promotion_keeps_a_query_bounded_by_max_or_min() -> None:
    query = {
        "name": "p99",
        "provider": {"prometheus": {"query": "q{version='{{version}}'}"}},
        "comparison": {"max": 0.5},
    }
    metric = parse_post_promotion({"duration": "5m", "metrics": [query]}, analysis=None).metrics[0]
    assert isinstance(metric, MetricSpec) and metric.comparison.max == 0.5


@pytest.mark.parametrize(
    ("metric", "field"),
    [
        ({"name": "errors", "preset": "error-rate"}, "spec.postPromotion.metrics[0]"),
        ({"name": "slow", "preset": "latency-p99"}, "spec.postPromotion.metrics[0]"),
        (
            {"name": "q", "provider": {"prometheus": {"query": "q"}}, "comparison": {"max": 1, "maxRatio": 1.2}},
            "spec.postPromotion.metrics[0].comparison.maxRatio",
        ),
        (
            {"name": "q", "provider": {"prometheus": {"query": "q"}}, "comparison": {"maxRatio": 1.2}},
            "spec.postPromotion.metrics[0]",
        ),
        ({**ERRORS_AT_MOST_1_PERCENT, "tolerance": "10%"}, "spec.postPromotion.metrics[0].tolerance"),
        ({"name": "drift", "predictionDrift": {}}, "spec.postPromotion.metrics[0]"),
    ],
)
def test_a_post_promotion_metric_that_can_only_compare_with_a_baseline_is_refused(
    metric: dict[str, Any], field: str
) -> None:
    with pytest.raises(SpecError) as raised:
        parse_post_promotion({"duration": "5m", "metrics": [metric]}, analysis=None)
    assert raised.value.field_path == field
    assert "after promotion no baseline serves; give max or min" in str(raised.value)


@pytest.mark.parametrize(
    ("changes", "field", "fix"),
    [
        ({"postPromotion": {"metrics": [ERRORS_AT_MOST_1_PERCENT]}}, "spec.postPromotion.duration", "is required"),
        (
            {"postPromotion": {"duration": "2h", "metrics": [ERRORS_AT_MOST_1_PERCENT]}},
            "spec.postPromotion.duration",
            "longer than spec.rollbackWindow",
        ),
        (
            {"rollbackWindow": None, "postPromotion": {"duration": "5m", "metrics": [ERRORS_AT_MOST_1_PERCENT]}},
            "spec.rollbackWindow",
            "is required with spec.postPromotion",
        ),
        ({"postPromotion": {"duration": "5m"}}, "spec.postPromotion.metrics", "is required"),
        (
            {"postPromotion": {"duration": "0s", "metrics": [ERRORS_AT_MOST_1_PERCENT]}},
            "spec.postPromotion.duration",
            "measures nothing",
        ),
    ],
)
def test_post_promotion_errors_name_the_field_and_the_fix(changes: dict[str, Any], field: str, fix: str) -> None:
    raw = {**POST_PROMOTION_SPEC, **changes}
    with pytest.raises(SpecError) as raised:
        parse_spec({k: v for k, v in raw.items() if v is not None})
    assert raised.value.field_path == field and fix in str(raised.value)


def test_post_promotion_is_refused_on_a_router_that_reads_the_versions_from_the_routed_object() -> None:
    raw = {
        "model": "iris",
        "trafficRouting": {"kserve": {"inferenceService": "iris"}},
        "steps": [{"setWeight": 20}],
        "rollbackWindow": "1h",
        "postPromotion": {"duration": "5m", "metrics": [ERRORS_AT_MOST_1_PERCENT]},
    }
    with pytest.raises(SpecError) as raised:
        parse_spec(raw)
    assert raised.value.field_path == "spec.postPromotion" and "trafficRouting.kserve" in str(raised.value)
