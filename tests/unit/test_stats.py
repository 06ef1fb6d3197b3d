"""PSI, Jensen-Shannon, slice and offline-vs-online rules against values worked out by hand."""

from __future__ import annotations

import math

import pytest

from controller.checks import Verdict
from controller.stats import (
    DriftThresholds,
    HistogramMismatch,
    QualityCounts,
    SliceThresholds,
    bucket_counts,
    jensen_shannon_distance,
    judge_drift,
    judge_offline_online_gap,
    judge_slices,
    population_stability_index,
)


def test_cumulative_le_buckets_become_per_bucket_counts_in_bound_order() -> None:
    # given cumulative Prometheus buckets, out of order, with +Inf
    cumulative = {math.inf: 10.0, 0.1: 4.0, 0.5: 9.0}
    # then each bucket holds only its own observations
    assert bucket_counts(cumulative) == (4.0, 5.0, 1.0)


def test_extrapolation_noise_never_makes_a_negative_bucket() -> None:
    # given rate() output where a bucket came out a hair below the previous one
    assert bucket_counts({0.1: 4.0, 0.5: 3.9, math.inf: 6.0}) == (4.0, 0.0, 2.0)


def test_psi_of_a_half_half_split_moving_to_a_quarter_three_quarters() -> None:
    # by hand: (0.25-0.5)*ln(0.25/0.5) + (0.75-0.5)*ln(0.75/0.5)
    #        = 0.25*0.693147 + 0.25*0.405465 = 0.274653
    assert population_stability_index(baseline=[50, 50], candidate=[25, 75]) == pytest.approx(0.274653, abs=1e-6)


def test_psi_replaces_an_empty_bucket_with_the_documented_share() -> None:
    # by hand, the empty baseline bucket counts as 1e-4:
    # (0.5-1)*ln(0.5/1) + (0.5-0.0001)*ln(0.5/0.0001) = 0.346574 + 0.4999*8.517193 = 4.604318
    assert population_stability_index(baseline=[100, 0], candidate=[50, 50]) == pytest.approx(4.604318, abs=1e-5)


def test_identical_distributions_have_no_drift_whatever_the_volume() -> None:
    assert population_stability_index(baseline=[10, 30, 60], candidate=[100, 300, 600]) == pytest.approx(0.0)
    assert jensen_shannon_distance(baseline=[10, 30, 60], candidate=[100, 300, 600]) == pytest.approx(0.0)


def test_jensen_shannon_distance_by_hand() -> None:
    # p=(.5,.5), q=(.25,.75), m=(.375,.625)
    # KL(p|m) = .5*log2(.5/.375) + .5*log2(.5/.625)   = 0.0465545
    # KL(q|m) = .25*log2(.25/.375) + .75*log2(.75/.625) = 0.0510350
    # distance = sqrt((0.0465545 + 0.0510350) / 2) = 0.220896
    assert jensen_shannon_distance(baseline=[50, 50], candidate=[25, 75]) == pytest.approx(0.220896, abs=1e-6)


def test_jensen_shannon_distance_handles_empty_buckets_exactly() -> None:
    # p=(1,0), q=(.5,.5), m=(.75,.25): KL(p|m)=log2(4/3)=0.415037, KL(q|m)=.5*log2(2/3)+.5*log2(2)=0.207519
    # distance = sqrt(0.311278) = 0.557923
    assert jensen_shannon_distance(baseline=[100, 0], candidate=[50, 50]) == pytest.approx(0.557923, abs=1e-6)
    # disjoint distributions are as far apart as base-2 JS allows
    assert jensen_shannon_distance(baseline=[10, 0], candidate=[0, 10]) == pytest.approx(1.0)


def test_histograms_with_different_bucket_bounds_are_refused() -> None:
    with pytest.raises(HistogramMismatch, match="bucket bounds differ"):
        judge_drift(
            baseline={0.5: 100.0, math.inf: 200.0},
            candidate={0.6: 100.0, math.inf: 200.0},
            thresholds=DriftThresholds(),
        )


def test_drift_is_not_judged_below_the_minimum_count() -> None:
    # given a wildly different candidate but only 40 predictions
    result = judge_drift(
        baseline={0.5: 500.0, math.inf: 1000.0},
        candidate={0.5: 0.0, math.inf: 40.0},
        thresholds=DriftThresholds(min_count=100),
    )
    assert result.verdict is Verdict.INCONCLUSIVE
    assert result.psi is None
    assert "candidate 40" in result.message


def test_a_shifted_prediction_distribution_fails_on_psi() -> None:
    # given half/half moving to quarter/three-quarters (PSI 0.2747 > 0.2, JS 0.2209 > 0.1)
    result = judge_drift(
        baseline={0.5: 500.0, math.inf: 1000.0},
        candidate={0.5: 250.0, math.inf: 1000.0},
        thresholds=DriftThresholds(),
    )
    assert result.verdict is Verdict.FAILED
    assert result.psi == pytest.approx(0.274653, abs=1e-6)
    assert "PSI 0.2747 (limit 0.2)" in result.message


def test_a_similar_prediction_distribution_passes() -> None:
    # given 50/50 vs 48/52: PSI = 0.02*ln(.5/.48) + 0.02*ln(.52/.5) = 0.0016 (small), JS small too
    result = judge_drift(
        baseline={0.5: 500.0, math.inf: 1000.0},
        candidate={0.5: 480.0, math.inf: 1000.0},
        thresholds=DriftThresholds(),
    )
    assert result.verdict is Verdict.SUCCESSFUL
    assert result.psi == pytest.approx(0.02 * math.log(0.5 / 0.48) + 0.02 * math.log(0.52 / 0.5))


def test_better_on_average_but_worse_on_one_important_slice_fails_naming_it() -> None:
    # given a candidate better on "mobile" (0.95 vs 0.90) but worse on "tablet" (0.80 vs 0.90)
    result = judge_slices(
        important=["mobile", "tablet"],
        baseline={
            "mobile": QualityCounts(correct=900, total=1000),
            "tablet": QualityCounts(correct=90, total=100),
        },
        candidate={
            "mobile": QualityCounts(correct=950, total=1000),
            "tablet": QualityCounts(correct=80, total=100),
        },
        thresholds=SliceThresholds(max_drop=0.02, min_samples=50),
    )
    assert result.verdict is Verdict.FAILED
    assert [s.verdict for s in result.slices] == [Verdict.SUCCESSFUL, Verdict.FAILED]
    assert result.message.startswith("slice tablet: candidate 0.8000 vs baseline 0.9000")


def test_failing_slices_are_named_worst_first() -> None:
    result = judge_slices(
        important=["a", "b"],
        baseline={"a": QualityCounts(correct=90, total=100), "b": QualityCounts(correct=90, total=100)},
        candidate={"a": QualityCounts(correct=85, total=100), "b": QualityCounts(correct=70, total=100)},
        thresholds=SliceThresholds(),
    )
    assert result.verdict is Verdict.FAILED
    assert result.message.index("slice b") < result.message.index("slice a")


def test_a_slice_short_of_samples_is_inconclusive_not_passed() -> None:
    # given one slice with 30 candidate samples (min 50) and one missing entirely
    result = judge_slices(
        important=["eu", "apac"],
        baseline={"eu": QualityCounts(correct=90, total=100)},
        candidate={"eu": QualityCounts(correct=28, total=30)},
        thresholds=SliceThresholds(min_samples=50),
    )
    assert result.verdict is Verdict.INCONCLUSIVE
    assert result.message == "waiting for labelled predictions on slices: eu, apac"


def test_the_quality_floor_fails_a_slice_even_when_the_baseline_is_as_bad() -> None:
    result = judge_slices(
        important=["rare"],
        baseline={"rare": QualityCounts(correct=60, total=100)},
        candidate={"rare": QualityCounts(correct=60, total=100)},
        thresholds=SliceThresholds(min_quality=0.7),
    )
    assert result.verdict is Verdict.FAILED
    assert "below the floor 0.7" in result.message


def test_all_slices_within_limits_pass() -> None:
    result = judge_slices(
        important=["a"],
        baseline={"a": QualityCounts(correct=90, total=100)},
        candidate={"a": QualityCounts(correct=89, total=100)},
        thresholds=SliceThresholds(max_drop=0.02),
    )
    assert result.verdict is Verdict.SUCCESSFUL


@pytest.mark.parametrize(
    ("correct", "verdict"),
    [(890, Verdict.SUCCESSFUL), (870, Verdict.FAILED), (990, Verdict.FAILED)],
)
def test_offline_online_gap_counts_in_both_directions(correct: int, verdict: Verdict) -> None:
    # given a declared offline accuracy of 0.93 and a 0.05 allowed gap:
    # 0.89 -> gap 0.04 passes, 0.87 -> 0.06 fails, 0.99 -> 0.06 fails too
    result = judge_offline_online_gap(
        offline=0.93, online=QualityCounts(correct=correct, total=1000), max_gap=0.05, min_samples=100
    )
    assert result.verdict is verdict


def test_offline_online_gap_waits_for_enough_labelled_predictions() -> None:
    result = judge_offline_online_gap(
        offline=0.93, online=QualityCounts(correct=10, total=10), max_gap=0.05, min_samples=100
    )
    assert result.verdict is Verdict.INCONCLUSIVE
    assert result.online is None
