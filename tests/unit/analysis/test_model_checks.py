"""The model-aware checks: how spec.analysis declares them, how they are judged from the numbers
Prometheus gives, what the checker keeps in status, and the rubric items they report."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from controller.analysis.checker import AnalysisChecker
from controller.analysis.model_checks import Numbers, judge_check
from controller.analysis.presets import PRESETS
from controller.analysis.providers import InvalidQuery
from controller.analysis.providers.prometheus import _numbers_by
from controller.analysis.spec import (
    ImportantSlices,
    MetricSource,
    ModelCheckSpec,
    OfflineVsOnline,
    PredictionDrift,
    PrometheusSource,
    parse_metric,
)
from controller.api import ModelRolloutStatus, SpecError, parse_spec
from controller.checks import CheckContext, RubricEntry, StepWindow, Verdict

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


def check_of(raw: Mapping[str, Any]) -> Any:
    metric = parse_metric({"name": "m", **raw}, path="spec.analysis.metrics[0]")
    assert isinstance(metric, ModelCheckSpec)
    return metric.check


def spec_error(raw: Mapping[str, Any]) -> str:
    with pytest.raises(SpecError) as raised:
        parse_metric({"name": "m", **raw}, path="spec.analysis.metrics[0]")
    return str(raised.value)


# ---------------------------------------------------------------------------------------------
# Parsing


def test_prediction_drift_defaults_to_psi_02_and_the_convention_histogram() -> None:
    check = check_of({"predictionDrift": {}})
    assert isinstance(check, PredictionDrift)
    assert (check.thresholds.max_psi, check.thresholds.max_js_distance, check.thresholds.min_count) == (0.2, 0.2, 100)
    assert check.histogram_query.startswith("sum by (le) (increase(model_predictions_bucket{")


def test_prediction_drift_thresholds_and_query_can_be_set() -> None:
    check = check_of(
        {"predictionDrift": {"maxPSI": 0.1, "maxJSDistance": 0.05, "minCount": 500, "query": "h{v='{{version}}'}"}}
    )
    assert (check.thresholds.max_psi, check.thresholds.max_js_distance, check.thresholds.min_count) == (0.1, 0.05, 500)
    assert check.histogram_query == "h{v='{{version}}'}"


def test_important_slices_name_the_slices_and_default_to_a_two_point_drop() -> None:
    check = check_of({"importantSlices": {"slices": ["borderline", "large"], "minQuality": 0.8}})
    assert isinstance(check, ImportantSlices)
    assert check.slices == ("borderline", "large")
    assert (check.thresholds.max_drop, check.thresholds.min_samples, check.thresholds.min_quality) == (0.02, 50, 0.8)
    assert "by (slice)" in check.correct_query and "model_feedback_correct_total" in check.correct_query


def test_offline_vs_online_needs_the_declared_offline_value() -> None:
    check = check_of({"offlineVsOnline": {"offline": 0.93}})
    assert isinstance(check, OfflineVsOnline)
    assert (check.offline, check.max_gap, check.min_samples) == (0.93, 0.05, 100)
    assert "offlineVsOnline.offline: is required" in spec_error({"offlineVsOnline": {"maxGap": 0.1}})


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"importantSlices": {}}, "importantSlices.slices: is required"),
        ({"importantSlices": {"slices": ["a", "a"]}}, "names a slice twice"),
        ({"offlineVsOnline": {"offline": 93}}, "offline: 93 is above 1"),
        ({"predictionDrift": {}, "importantSlices": {"slices": ["a"]}}, "give one check per metric"),
        ({"predictionDrift": {}, "comparison": {"max": 1}}, "comparison: does not apply to predictionDrift"),
        ({"importantSlices": {"slices": ["a"]}, "preset": "error-rate"}, "preset: does not apply"),
        ({"predictionDrift": {"query": "x{v='{{team}}'}"}}, "unknown template variable(s) team"),
    ],
)
def test_a_malformed_check_is_refused_naming_the_field(raw: Mapping[str, Any], message: str) -> None:
    assert message in spec_error(raw)


@pytest.mark.parametrize(
    ("raw", "items"),
    [
        ({"predictionDrift": {}}, ("Monitor 7",)),
        ({"importantSlices": {"slices": ["a"]}}, ("Model 6",)),
        ({"offlineVsOnline": {"offline": 0.9}}, ("Model 2",)),
        ({"preset": "nonfinite-outputs"}, ("Monitor 5",)),
        ({"preset": "input-invariant-violations"}, ("Monitor 2",)),
        ({"preset": "container-memory"}, ("Monitor 6",)),
        ({"provider": {"prometheus": {"query": "q"}}, "comparison": {"max": 1}}, ()),
    ],
)
def test_each_check_names_the_rubric_items_it_verifies(raw: Mapping[str, Any], items: tuple[str, ...]) -> None:
    metric = parse_metric({"name": "m", **raw}, path="p")
    assert metric.rubric_items == items


def test_numerical_stability_presets_fail_on_any_increase_beyond_their_limit() -> None:
    assert PRESETS["nonfinite-outputs"].comparison.max_difference == 0.0
    assert PRESETS["input-invariant-violations"].comparison.max_difference == 0.01
    assert "model_nonfinite_outputs_total" in PRESETS["nonfinite-outputs"].query
    memory = PRESETS["container-memory"]
    assert 'namespace="{{namespace}}"' in memory.query and memory.min_samples == 1


# ---------------------------------------------------------------------------------------------
# Judging: prediction drift

EVEN = {"0.5": 50.0, "1": 100.0, "+Inf": 100.0}
"""Cumulative buckets: half the predictions at or below 0.5."""
SHIFTED = {"0.5": 25.0, "1": 100.0, "+Inf": 100.0}
"""A quarter at or below 0.5: PSI 0.2747, JS distance 0.2209 against EVEN."""


def drift(baseline: Numbers, candidate: Numbers, **settings: Any) -> Any:
    return judge_check(
        check_of({"predictionDrift": settings}),
        baseline_version="v1",
        candidate_version="v2",
        baseline={"histogram": baseline},
        candidate={"histogram": candidate},
    )


def test_a_shifted_prediction_histogram_fails_with_both_statistics() -> None:
    result = drift(EVEN, SHIFTED)
    assert result.judgement.result == "Failed"
    assert "candidate v2 vs baseline v1: prediction drift too large: PSI 0.2747" in result.judgement.reason
    details = result.details["drift"]
    assert (details["psi"], details["jsDistance"]) == (0.2747, 0.2209)
    assert details["buckets"] == [
        {"le": "0.5", "baseline": 50.0, "candidate": 25.0},
        {"le": "1", "baseline": 50.0, "candidate": 75.0},
        {"le": "+Inf", "baseline": 0.0, "candidate": 0.0},
    ]
    assert (result.baseline.samples, result.candidate.samples) == (100, 100)


def test_the_same_histogram_passes_and_looser_limits_let_a_shift_pass() -> None:
    assert drift(EVEN, EVEN).judgement.result == "Successful"
    assert drift(EVEN, SHIFTED, maxPSI=0.3, maxJSDistance=0.3).judgement.result == "Successful"


def test_too_few_predictions_or_no_histogram_is_inconclusive() -> None:
    assert drift(EVEN, SHIFTED, minCount=101).judgement.result == "Inconclusive"
    missing = drift({}, SHIFTED).judgement
    assert missing.result == "Inconclusive" and "no prediction histogram for baseline v1" in missing.reason
    assert drift({"0.5": math.nan, "+Inf": math.nan}, SHIFTED).judgement.result == "Inconclusive"


def test_different_buckets_are_a_permanent_error() -> None:
    judgement = drift(EVEN, {"0.25": 10.0, "+Inf": 100.0}).judgement
    assert judgement.result == "Error" and judgement.permanent
    assert "bucket bounds differ" in judgement.reason


# ---------------------------------------------------------------------------------------------
# Judging: important slices


def slices(baseline: Mapping[str, tuple[float, float]], candidate: Mapping[str, tuple[float, float]]) -> Any:
    """Counts as {slice: (correct, total)}."""

    def numbers(counts: Mapping[str, tuple[float, float]]) -> dict[str, Numbers]:
        return {"correct": {k: c for k, (c, _) in counts.items()}, "total": {k: t for k, (_, t) in counts.items()}}

    return judge_check(
        check_of({"importantSlices": {"slices": ["borderline", "small"], "minSamples": 40}}),
        baseline_version="v1",
        candidate_version="v3",
        baseline=numbers(baseline),
        candidate=numbers(candidate),
    )


def test_a_candidate_better_on_average_but_worse_on_one_slice_fails_naming_it() -> None:
    # given: v3 gains on the big slice (0.97 vs 0.90) but loses on borderline (0.68 vs 0.86)
    result = slices(
        baseline={"borderline": (38, 44), "small": (450, 500), "large": (95, 100)},
        candidate={"borderline": (30, 44), "small": (485, 500), "large": (97, 100)},
    )
    assert result.judgement.result == "Failed"
    assert "slice borderline: candidate 0.6818 vs baseline 0.8636, drop 0.1818 > 0.02" in result.judgement.reason
    assert "small" not in result.judgement.reason
    assert result.details["worstSlice"] == "borderline"
    assert (round(result.baseline.value, 4), round(result.candidate.value, 4)) == (0.8636, 0.6818)
    assert result.details["slices"] == [
        {"slice": "borderline", "baselineValue": 0.8636, "candidateValue": 0.6818, "baselineSamples": 44,
         "candidateSamples": 44, "verdict": "Failed"},
        {"slice": "small", "baselineValue": 0.9, "candidateValue": 0.97, "baselineSamples": 500,
         "candidateSamples": 500, "verdict": "Successful"},
    ]  # fmt: skip


def test_a_named_slice_without_enough_labels_keeps_the_check_inconclusive() -> None:
    result = slices(baseline={"borderline": (38, 44), "small": (9, 10)}, candidate={"borderline": (38, 44)})
    assert result.judgement.result == "Inconclusive"
    assert "waiting for labelled predictions on slices: small" in result.judgement.reason


# ---------------------------------------------------------------------------------------------
# Judging: offline vs online


def online(correct: float, total: float, *, offline: float = 0.93) -> Any:
    return judge_check(
        check_of({"offlineVsOnline": {"offline": offline, "maxGap": 0.03}}),
        baseline_version="v1",
        candidate_version="v2",
        baseline={},
        candidate={"correct": {"": correct}, "total": {"": total}},
    )


def test_an_online_quality_far_from_the_declared_offline_one_fails() -> None:
    result = online(850, 1000)
    assert result.judgement.result == "Failed"
    assert "candidate v2: online 0.8500 vs declared offline 0.9300: gap 0.0800 exceeds" in result.judgement.reason
    assert result.details["offline"] == {"declared": 0.93, "online": 0.85, "gap": 0.08, "maxGap": 0.03}
    assert (result.candidate.value, result.candidate.samples) == (0.85, 1000)


def test_an_online_quality_close_to_the_offline_one_passes_and_few_labels_wait() -> None:
    assert online(920, 1000).judgement.result == "Successful"
    assert online(9, 10).judgement.result == "Inconclusive"


# ---------------------------------------------------------------------------------------------
# Prometheus answers keyed by a label


def test_series_keyed_by_a_label_become_one_number_each() -> None:
    result = [{"metric": {"le": "0.5"}, "value": [1, "3"]}, {"metric": {"le": "+Inf"}, "value": [1, "4"]}]
    assert _numbers_by(result, "le", "q") == {"0.5": 3.0, "+Inf": 4.0}
    assert _numbers_by([], "le", "q") == {}


@pytest.mark.parametrize(
    ("result", "message"),
    [
        ([{"metric": {}, "value": [1, "3"]}], "without label le; use sum by (le)"),
        ([{"metric": {"le": "1"}, "value": [1, "3"]}, {"metric": {"le": "1"}, "value": [1, "2"]}], "several series"),
        ([1, "3"], "one number, not one series per le"),
    ],
)
def test_answers_not_keyed_by_the_label_are_refused(result: Any, message: str) -> None:
    with pytest.raises(InvalidQuery, match=re.escape(message)):
        _numbers_by(result, "le", "q")


# ---------------------------------------------------------------------------------------------
# The checker


class Histograms:
    """Answers the histogram query per version, like Prometheus would."""

    def __init__(self, by_version: Mapping[str, Numbers]) -> None:
        self.by_version = by_version

    def measure(self, *, source: MetricSource, namespace: str) -> float | None:
        raise AssertionError("drift reads vectors only")

    def measure_by(self, *, source: PrometheusSource, label: str) -> dict[str, float]:
        assert label == "le"
        version = source.query.split('version="')[1].split('"')[0]
        return dict(self.by_version[version])


def drift_context(now: datetime) -> CheckContext:
    spec = parse_spec(
        {
            "model": "cancer",
            "versions": [{"version": v, "backend": {"service": f"c-{v}", "port": 80}} for v in ("v1", "v2")],
            "baseline": "v1",
            "candidate": "v2",
            "trafficRouting": {"gatewayAPI": {"httpRoute": "c"}},
            "steps": [{"setWeight": 50}, {"analyze": {"duration": "30s"}}],
            "analysis": {"interval": "10s", "metrics": [{"name": "drift", "predictionDrift": {}}]},
        }
    )
    return CheckContext(
        namespace="ml",
        name="cancer",
        spec=spec,
        status=ModelRolloutStatus(),
        stable_version="v1",
        now=now,
        current_weight=50,
        step=StepWindow(index=1, started_at=T0, seconds=30),
    )


def test_the_checker_rolls_back_a_drifted_candidate_keeping_the_statistics_in_status() -> None:
    checker = AnalysisChecker(
        providers={"prometheus": Histograms({"v1": EVEN, "v2": SHIFTED})},
        template_lookup=lambda *, namespace, name: None,
    )
    outcome = checker(context=drift_context(T0 + timedelta(seconds=10)))
    assert outcome is not None
    assert outcome.verdict is Verdict.FAILED
    assert "drift failed 1 time(s)" in outcome.message and "PSI 0.2747" in outcome.message
    measurement = outcome.status_fields["analysis"]["measurements"][-1]
    assert measurement["drift"]["psi"] == 0.2747
    assert (measurement["baselineSamples"], measurement["candidateSamples"]) == (100, 100)
    assert (measurement["baselineValue"], measurement["candidateValue"]) == (None, None)
    assert outcome.rubric == (RubricEntry(item="Monitor 7", check="drift", verdict=Verdict.FAILED),)


def test_a_provider_without_vectors_is_a_permanent_error() -> None:
    class ScalarOnly:
        def measure(self, *, source: MetricSource, namespace: str) -> float | None:
            return 1.0

    checker = AnalysisChecker(providers={"prometheus": ScalarOnly()}, template_lookup=lambda *, namespace, name: None)
    outcome = checker(context=drift_context(T0 + timedelta(seconds=10)))
    assert outcome is not None
    measurement = outcome.status_fields["analysis"]["measurements"][-1]
    assert measurement["verdict"] == "Error"
    assert "cannot read one number per le" in measurement["reason"]
