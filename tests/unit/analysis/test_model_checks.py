"""The model-aware checks: how spec.analysis declares them, how their evidence is judged with a
stated error rate, what the checker keeps in status, and the rubric items they report."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from controller.analysis.checker import AnalysisChecker
from controller.analysis.evidence import Evidence, Segment
from controller.analysis.judges import Budget, Look, SequentialTest, Versions, judge_evidence
from controller.analysis.modelchecks.drift import PredictionDrift
from controller.analysis.modelchecks.offline_online import OfflineVsOnline
from controller.analysis.modelchecks.slices import ImportantSlices
from controller.analysis.modelchecks.training_skew import TrainingSkew
from controller.analysis.presets import PRESETS, CountsPreset, GaugePreset
from controller.analysis.profile import ProfileError, parse_profile
from controller.analysis.providers import InvalidQuery
from controller.analysis.providers.prometheus import _numbers_by
from controller.analysis.spec import (
    MetricSource,
    PrometheusSource,
    SequentialSpec,
    parse_metric,
)
from controller.api import ModelRolloutStatus, SpecError, parse_spec
from controller.checks import CheckContext, RubricEntry, StepWindow, Verdict

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
BUDGET = Budget(false_rollback=0.05, false_promotion=0.05)
VERSIONS = Versions(baseline="v1", candidate="v2")


def check_of(raw: Mapping[str, Any]) -> Any:
    metric = parse_metric({"name": "m", **raw}, path="spec.analysis.metrics[0]")
    assert isinstance(metric, SequentialSpec)
    return metric.test


def spec_error(raw: Mapping[str, Any]) -> str:
    with pytest.raises(SpecError) as raised:
        parse_metric({"name": "m", **raw}, path="spec.analysis.metrics[0]")
    return str(raised.value)


def judged(test: SequentialTest, *segments: tuple[Mapping[str, float], Mapping[str, float]]) -> Look:
    """The verdict on segments given as (candidate numbers, baseline numbers), one step each."""
    evidence = Evidence(
        metric="m",
        segments=tuple(
            Segment(step=i, started_at=T0, seconds=300, candidate=candidate, baseline=baseline)
            for i, (candidate, baseline) in enumerate(segments)
        ),
    )
    return judge_evidence(test, evidence, budget=BUDGET, versions=VERSIONS)


# ---------------------------------------------------------------------------------------------
# Parsing


def test_prediction_drift_defaults_to_a_psi_tolerance_of_02_and_the_convention_histogram() -> None:
    check = check_of({"predictionDrift": {}})
    assert isinstance(check, PredictionDrift)
    assert (check.max_psi, check.max_js_distance, check.min_count) == (0.2, 0.2, 0)
    assert check.histogram_query.startswith("sum by (le) (increase(model_predictions_bucket{")


def test_prediction_drift_tolerances_floor_and_query_can_be_set() -> None:
    check = check_of(
        {"predictionDrift": {"maxPSI": 0.1, "maxJSDistance": 0.05, "minCount": 500, "query": "h{v='{{version}}'}"}}
    )
    assert (check.max_psi, check.max_js_distance, check.min_count) == (0.1, 0.05, 500)
    assert check.histogram_query == "h{v='{{version}}'}"


def test_important_slices_name_the_slices_and_default_to_a_two_point_tolerance() -> None:
    check = check_of({"importantSlices": {"slices": ["borderline", "large"], "minQuality": 0.8}})
    assert isinstance(check, ImportantSlices)
    assert check.slices == ("borderline", "large")
    assert (check.max_drop, check.min_samples, check.min_quality) == (0.02, 0, 0.8)
    assert check.tests == 4  # a tolerance and a guardrail per slice share the metric's budget
    assert "by (slice)" in check.correct_query and "model_feedback_correct_total" in check.correct_query


def test_offline_vs_online_needs_the_declared_offline_value() -> None:
    check = check_of({"offlineVsOnline": {"offline": 0.93}})
    assert isinstance(check, OfflineVsOnline)
    assert (check.offline, check.max_gap, check.min_samples) == (0.93, 0.05, 0)
    assert "offlineVsOnline.offline: is required" in spec_error({"offlineVsOnline": {"maxGap": 0.1}})


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"importantSlices": {}}, "importantSlices.slices: is required"),
        ({"importantSlices": {"slices": ["a", "a"]}}, "names a slice twice"),
        ({"offlineVsOnline": {"offline": 93}}, "offline: 93 is above 1"),
        ({"predictionDrift": {}, "importantSlices": {"slices": ["a"]}}, "give one check per metric"),
        ({"predictionDrift": {}, "comparison": {"max": 1}}, "comparison: does not apply to predictionDrift"),
        ({"predictionDrift": {}, "tolerance": "10%"}, "tolerance: does not apply to predictionDrift"),
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


def test_numerical_stability_presets_count_rows_and_tolerate_no_or_little_increase() -> None:
    nonfinite, invariants = PRESETS["nonfinite-outputs"], PRESETS["input-invariant-violations"]
    assert isinstance(nonfinite, CountsPreset) and isinstance(invariants, CountsPreset)
    assert (nonfinite.tolerance.relative, nonfinite.tolerance.absolute) == (0, 0)
    assert invariants.tolerance.absolute == 0.01
    assert "model_nonfinite_outputs_total" in nonfinite.events_query
    memory = PRESETS["container-memory"]
    assert isinstance(memory, GaugePreset)
    assert 'namespace="{{namespace}}"' in memory.query and memory.min_samples == 1


# ---------------------------------------------------------------------------------------------
# Judging: prediction drift


def cumulative(per_bucket: Mapping[str, float]) -> dict[str, float]:
    """`bucket:<le>` numbers as Prometheus gives them (cumulative) from per-bucket counts."""
    running, numbers = 0.0, {}
    for le, count in per_bucket.items():
        running += count
        numbers[f"bucket:{le}"] = running
    return numbers


def halves(scale: float, low_share: float = 0.5) -> dict[str, float]:
    return cumulative({"0.5": scale * low_share, "1": scale * (1 - low_share), "+Inf": 0})


def test_a_shift_to_a_quarter_below_one_half_with_ample_data_is_drift_beyond_tolerance() -> None:
    # Given half/half moving to a quarter/three quarters (PSI 0.2747 against a tolerance of 0.2)
    look = judged(PredictionDrift(), (halves(20_000, 0.25), halves(20_000)))
    # Then the lower confidence bound of PSI is above the tolerance: drift
    assert look.judgement.result == "Failed"
    assert "PSI 0.2747 (at least 0.2" in look.judgement.reason
    assert look.summary["psi"] == 0.2747 and look.summary["psiInterval"][0] > 0.2
    assert (look.baseline.samples, look.candidate.samples) == (20_000, 20_000)


def test_the_same_shift_on_a_hundred_predictions_is_not_yet_evidence_of_drift() -> None:
    # Raw PSI on a small sample is noisy and biased upward: it decides nothing on its own
    look = judged(PredictionDrift(), (halves(100, 0.25), halves(100)))
    assert look.judgement.result == "Successful" and not look.judgement.safe
    assert look.summary["psiInterval"][0] == 0.0


def test_identical_histograms_with_ample_data_show_drift_within_tolerance() -> None:
    look = judged(PredictionDrift(), (halves(50_000), halves(50_000)))
    assert look.judgement.result == "Successful" and look.judgement.safe


def test_histograms_with_different_buckets_are_a_permanent_error() -> None:
    other = cumulative({"0.3": 50, "1": 50, "+Inf": 0})
    look = judged(PredictionDrift(), (other, halves(100)))
    assert look.judgement.result == "Error" and look.judgement.permanent
    assert "bucket bounds differ" in look.judgement.reason


def test_a_version_without_a_histogram_is_no_data() -> None:
    look = judged(PredictionDrift(), ({}, halves(100)))
    assert look.judgement.result == "Inconclusive"
    assert "no data for candidate v2 (prediction histogram)" in look.judgement.reason


def test_a_minimum_count_asked_for_holds_until_reached() -> None:
    look = judged(PredictionDrift(min_count=500), (halves(100), halves(100)))
    assert look.judgement.result == "Inconclusive" and "fewer than the 500 asked for" in look.judgement.reason


# ---------------------------------------------------------------------------------------------
# Judging: important slices


def labels(slice_name: str, total: float, accuracy: float) -> dict[str, float]:
    return {f"total:{slice_name}": total, f"correct:{slice_name}": total * accuracy}


def test_a_ten_point_drop_on_one_slice_fails_naming_that_slice() -> None:
    check = ImportantSlices(slices=("borderline", "large"))
    candidate = {**labels("borderline", 1000, 0.75), **labels("large", 1000, 0.95)}
    baseline = {**labels("borderline", 9000, 0.85), **labels("large", 9000, 0.95)}
    look = judged(check, (candidate, baseline))
    assert look.judgement.result == "Failed"
    assert look.judgement.reason.startswith("slice borderline: candidate v2 75% of 1000 vs baseline v1 85% of 9000")
    assert look.summary["worstSlice"] == "borderline"
    assert [(s["slice"], s["verdict"]) for s in look.summary["slices"]] == [
        ("borderline", "Failed"),
        ("large", "Successful"),
    ]
    assert (look.baseline.value, look.candidate.value) == (0.85, 0.75)


def test_a_drop_within_the_two_point_tolerance_passes() -> None:
    look = judged(
        ImportantSlices(slices=("borderline",)), (labels("borderline", 5000, 0.84), labels("borderline", 50_000, 0.85))
    )
    assert look.judgement.result == "Successful"


def test_a_slice_without_feedback_yet_is_no_evidence_of_harm_unless_a_floor_is_asked_for() -> None:
    candidate, baseline = labels("large", 100, 0.9), {**labels("large", 100, 0.9), **labels("borderline", 50, 0.8)}
    assert judged(ImportantSlices(slices=("borderline",)), (candidate, baseline)).judgement.result == "Successful"
    floored = judged(ImportantSlices(slices=("borderline",), min_samples=50), (candidate, baseline))
    assert floored.judgement.result == "Inconclusive" and "on slices: borderline" in floored.judgement.reason


def test_the_quality_guardrail_fails_a_slice_shown_below_it() -> None:
    look = judged(
        ImportantSlices(slices=("borderline",), min_quality=0.8),
        (labels("borderline", 2000, 0.7), labels("borderline", 2000, 0.7)),
    )
    assert look.judgement.result == "Failed" and "beyond min 0.8" in look.judgement.reason


# ---------------------------------------------------------------------------------------------
# Judging: offline vs online


def online(correct: float, total: float) -> Look:
    return judged(OfflineVsOnline(offline=0.93, max_gap=0.03), ({"correct": correct, "total": total}, {}))


def test_an_online_quality_far_from_the_declared_offline_one_fails() -> None:
    look = online(850, 1000)
    assert look.judgement.result == "Failed"
    assert "gap beyond tolerance: online 0.8500 (interval 0.8" in look.judgement.reason
    assert {k: look.summary[k] for k in ("declared", "online", "gap", "maxGap")} == {
        "declared": 0.93,
        "online": 0.85,
        "gap": 0.08,
        "maxGap": 0.03,
    }
    assert (look.candidate.value, look.candidate.samples) == (0.85, 1000)


def test_an_online_quality_close_to_the_offline_one_is_shown_within_tolerance_with_enough_labels() -> None:
    close = online(9300, 10_000)
    assert close.judgement.result == "Successful" and close.judgement.safe
    few = online(9, 10)
    assert few.judgement.result == "Successful" and not few.judgement.safe


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

    def __init__(self, by_version: Mapping[str, Mapping[str, float]]) -> None:
        self.by_version = by_version

    def measure(self, *, source: MetricSource, namespace: str) -> float | None:
        raise AssertionError("drift reads vectors only")

    def measure_by(self, *, source: PrometheusSource, label: str) -> dict[str, float]:
        assert label == "le"
        version = source.query.split('version="')[1].split('"')[0]
        return {key.split(":")[1]: value for key, value in self.by_version[version].items()}


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


def test_the_checker_rolls_back_a_drifted_candidate_keeping_the_evidence_in_status() -> None:
    checker = AnalysisChecker(
        providers={"prometheus": Histograms({"v1": halves(20_000), "v2": halves(20_000, 0.25)})},
        template_lookup=lambda *, namespace, name: None,
    )
    outcome = checker(context=drift_context(T0 + timedelta(seconds=10)))
    assert outcome is not None
    assert outcome.verdict is Verdict.FAILED
    assert "drift failed 1 time(s)" in outcome.message and "look 1: " in outcome.message
    assert "PSI 0.2747" in outcome.message
    analysis = outcome.status_fields["analysis"]
    measurement = analysis["measurements"][-1]
    assert measurement["evidence"]["psi"] == 0.2747
    assert (measurement["baselineSamples"], measurement["candidateSamples"]) == (20_000, 20_000)
    assert (measurement["baselineValue"], measurement["candidateValue"]) == (None, None)
    [evidence] = analysis["evidence"]
    assert evidence["metric"] == "drift" and evidence["looks"] == 1
    assert evidence["latest"]["verdict"] == "Failed" and len(evidence["latest"]["buckets"]) == 3
    assert evidence["segments"][0]["candidate"]["bucket:0.5"] == 5000
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


# ---------------------------------------------------------------------------------------------
# Training skew


PROFILE = parse_profile(
    '{"features": [{"name": "radius", "edges": [0.0], "frequencies": [0.5, 0.5]},'
    ' {"name": "texture", "edges": [0.0], "frequencies": [0.5, 0.5]}]}',
    where="ConfigMap ml/profile key profile.json",
)


def live_inputs(radius_low_share: float, rows: float) -> dict[str, float]:
    """`bucket:<feature>|<le>` counts as Prometheus gives them: texture always as in training."""
    return {
        "bucket:radius|0.0": rows * radius_low_share,
        "bucket:radius|+Inf": rows,
        "bucket:texture|0.0": rows / 2,
        "bucket:texture|+Inf": rows,
    }


def skew(numbers: Mapping[str, float], check: TrainingSkew | None = None) -> Look:
    test = check or TrainingSkew(profile_config_map="profile")
    evidence = Evidence(
        metric="skew",
        segments=(Segment(step=1, started_at=T0, seconds=60, candidate=numbers, baseline={}),),
        reference=PROFILE,
    )
    return judge_evidence(test, evidence, budget=BUDGET, versions=VERSIONS)


def test_a_feature_far_from_its_training_distribution_fails_by_name() -> None:
    # Given live radius values nearly all below the training median (PSI 1.325), texture as trained
    look = skew(live_inputs(0.95, 5000))
    assert look.judgement.result == "Failed"
    assert "skew beyond tolerance 0.2: feature 'radius' PSI 1.3250 (at least 1.1" in look.judgement.reason
    assert "texture" not in look.judgement.reason.split("skew beyond")[1]
    assert look.summary["worstFeature"] == "radius"
    assert [(f["feature"], f["verdict"]) for f in look.summary["features"]] == [
        ("radius", "Failed"),
        ("texture", "Successful"),
    ]


def test_inputs_as_in_training_show_skew_within_tolerance_and_few_rows_decide_nothing() -> None:
    assert skew(live_inputs(0.5, 20_000)).judgement.safe
    few = skew(live_inputs(0.95, 20))
    assert few.judgement.result == "Successful" and not few.judgement.safe


def test_buckets_other_than_the_profiles_edges_are_a_permanent_error() -> None:
    look = skew({**live_inputs(0.5, 20), "bucket:radius|0.5": 10})
    assert look.judgement.result == "Error" and look.judgement.permanent
    assert "bucket the feature at the profile's edges" in look.judgement.reason


def test_a_feature_named_but_not_in_the_profile_is_a_permanent_error() -> None:
    look = skew(live_inputs(0.5, 100), TrainingSkew(profile_config_map="profile", features=("depth",)))
    assert look.judgement.permanent and "features depth are not in the training profile" in look.judgement.reason


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "not JSON"),
        ('{"features": []}', "give features: [{name, edges, frequencies}, ...]"),
        (
            '{"features": [{"name": "a", "edges": [1, 0], "frequencies": [0.2, 0.3, 0.5]}]}',
            "features[0].edges: must increase",
        ),
        (
            '{"features": [{"name": "a", "edges": [0], "frequencies": [1]}]}',
            "1 shares for 1 edges; give one per bin, 2",
        ),
        ('{"features": [{"name": "a", "edges": [0], "frequencies": [0.2, 0.2]}]}', "adding up to 1"),
        ('{"features": [{"edges": [0], "frequencies": [0.5, 0.5]}]}', "features[0].name: is required"),
    ],
)
def test_a_malformed_profile_is_refused_naming_where(text: str, message: str) -> None:
    with pytest.raises(ProfileError) as raised:
        parse_profile(text, where="ConfigMap ml/p key profile.json")
    assert str(raised.value).startswith("ConfigMap ml/p key profile.json")
    assert message in str(raised.value)


def test_training_skew_names_its_configmap_and_defaults() -> None:
    check = check_of({"trainingSkew": {"profile": {"configMap": "cancer-profile"}, "features": ["mean radius"]}})
    assert isinstance(check, TrainingSkew)
    assert (check.profile_config_map, check.profile_key, check.max_psi) == ("cancer-profile", "profile.json", 0.2)
    assert check.features == ("mean radius",) and check.rubric_items == ("Monitor 3",)
    assert "sum by (feature, le) (increase(model_input_feature_bucket{" in check.histogram_query
    assert "trainingSkew.profile.configMap: is required" in spec_error({"trainingSkew": {}})


def test_series_keyed_by_two_labels_are_keyed_by_both_values() -> None:
    result = [{"metric": {"feature": "radius", "le": "0.5"}, "value": [1, "3"]}]
    assert _numbers_by(result, "feature,le", "q") == {"radius|0.5": 3.0}
    with pytest.raises(InvalidQuery, match=re.escape("without label le; use sum by (feature, le)")):
        _numbers_by([{"metric": {"feature": "radius"}, "value": [1, "3"]}], "feature,le", "q")
