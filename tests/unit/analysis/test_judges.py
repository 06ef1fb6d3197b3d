"""The judges of counts: errors, right answers and slow requests, candidate against baseline, on
all the evidence so far; what each look says and the figures it leaves in status."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime

import pytest

from controller.analysis.comparison import Tolerance
from controller.analysis.evidence import Evidence, Segment
from controller.analysis.judges import Budget, Look, SequentialTest, Versions, judge_evidence, slow_threshold
from controller.analysis.spec import RateTest, SlowRequestsTest

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
BUDGET = Budget(false_rollback=0.05, false_promotion=0.05)
VERSIONS = Versions(baseline="v1", candidate="v2")
ERRORS = RateTest(events_query="e", trials_query="t")
ACCURACY = RateTest(events_query="c", trials_query="t", events_are_bad=False, tolerance=Tolerance(absolute=0.02))


def looked(
    test: SequentialTest, *steps: tuple[Mapping[str, float], Mapping[str, float]], threshold: float | None = None
) -> Look:
    """The verdict on one segment per step, each given as (candidate numbers, baseline numbers)."""
    segments = tuple(
        Segment(step=i, started_at=T0, seconds=300, candidate=candidate, baseline=baseline)
        for i, (candidate, baseline) in enumerate(steps)
    )
    return judge_evidence(
        test, Evidence(metric="m", segments=segments, threshold=threshold), budget=BUDGET, versions=VERSIONS
    )


def counts(events: float, trials: float) -> dict[str, float]:
    return {"events": events, "trials": trials}


# ---------------------------------------------------------------------------------------------
# Events out of trials


def test_twice_the_baseline_error_rate_on_ample_traffic_is_harm_named_with_its_evidence() -> None:
    look = looked(ERRORS, (counts(100, 10_000), counts(500, 100_000)))
    assert look.judgement.result == "Failed"
    reason = look.judgement.reason
    assert reason.startswith("candidate v2 1% of 10000 vs baseline v1 0.5% of 100000: rate ratio 2 (interval ")
    assert "beyond tolerance 0% (at most 1x): evidence " in reason and ">= 20" in reason
    summary = look.summary
    assert (summary["candidate"]["samples"], summary["baseline"]["events"], summary["ratio"]) == (10_000, 500, 2.0)
    assert summary["interval"][0] > 1 and summary["eValue"] >= summary["threshold"] == 20
    assert (look.candidate.value, look.baseline.value) == (0.01, 0.005)


def test_a_candidate_as_good_as_the_baseline_shows_no_harm_and_says_what_it_could_detect() -> None:
    look = looked(ERRORS, (counts(10, 2000), counts(100, 20_000)))
    assert look.judgement.result == "Successful" and not look.judgement.safe
    assert "no evidence of harm (evidence " in look.judgement.reason
    assert 1 < look.summary["smallestDetectableRatio"] < math.inf
    assert look.summary["secondsToResolveTolerance"] is None, "a zero tolerance is never resolved"
    assert look.summary["secondsToDetectTwiceTolerated"] > 0


def test_evidence_from_earlier_steps_carries_over() -> None:
    # Each step alone is too little to tell; together they show the candidate worse.
    step = (counts(12, 1000), counts(60, 10_000))
    assert looked(ERRORS, step).judgement.result == "Successful"
    assert looked(ERRORS, step, step, step, step).judgement.result == "Failed"


def test_no_candidate_samples_yet_holds_rather_than_passes() -> None:
    look = looked(ERRORS, (counts(0, 0), counts(5, 1000)))
    assert look.judgement.result == "Inconclusive"
    assert "no samples of the candidate since the step began" in look.judgement.reason


def test_a_version_without_any_series_is_no_data() -> None:
    look = looked(ERRORS, ({"events": 0.0}, counts(5, 1000)))
    assert look.judgement.result == "Inconclusive" and look.judgement.reason == "no data for candidate v2"


def test_a_floor_asked_for_holds_until_the_candidate_reaches_it() -> None:
    floored = RateTest(events_query="e", trials_query="t", min_trials=500)
    look = looked(floored, (counts(1, 100), counts(10, 1000)))
    assert look.judgement.result == "Inconclusive" and "fewer than the 500 asked for" in look.judgement.reason


def test_right_answers_are_judged_on_the_miss_rate_with_an_absolute_tolerance() -> None:
    # 80 % right against 90 %: twice the misses, far beyond two points
    look = looked(ACCURACY, (counts(800, 1000), counts(9000, 10_000)))
    assert look.judgement.result == "Failed"
    assert "candidate v2 80% of 1000 vs baseline v1 90% of 10000: miss rate ratio 2 " in look.judgement.reason
    # 89.5 % against 90 % with much data: within two points, shown so
    close = looked(ACCURACY, (counts(89_500, 100_000), counts(900_000, 1_000_000)))
    assert close.judgement.result == "Successful" and close.judgement.safe


def test_a_guardrail_fails_once_the_candidates_own_interval_is_beyond_it() -> None:
    guarded = RateTest(events_query="e", trials_query="t", max=0.01, tolerance=Tolerance(relative=1.0))
    look = looked(guarded, (counts(40, 2000), counts(400, 20_000)))
    assert look.judgement.result == "Failed" and "is beyond max 0.01" in look.judgement.reason
    assert look.summary["maxInterval"][0] > 0.01


def test_counts_that_extrapolation_made_odd_are_clamped() -> None:
    # increase() can give a hair more events than trials, or a negative blip after a reset
    look = looked(ERRORS, (counts(5.2, 5.0), counts(-0.3, 1000)))
    assert look.summary["candidate"]["events"] == 5 and look.summary["baseline"]["events"] == 0


# ---------------------------------------------------------------------------------------------
# Slow requests


def latency(buckets: Mapping[str, float]) -> dict[str, float]:
    return {f"bucket:{le}": count for le, count in buckets.items()}


def test_the_slow_request_bound_is_the_bucket_holding_the_baselines_p99() -> None:
    buckets = {0.01: 900.0, 0.025: 985.0, 0.05: 995.0, 0.1: 1000.0, math.inf: 1000.0}
    assert slow_threshold(buckets, quantile=0.99) == 0.05
    assert slow_threshold({0.01: 0.0, math.inf: 0.0}, quantile=0.99) is None
    assert slow_threshold({}, quantile=0.99) is None


def test_a_candidate_slower_across_the_board_has_far_more_slow_requests() -> None:
    test = SlowRequestsTest(buckets_query="b", quantile=0.99, tolerance=Tolerance(relative=0.2))
    baseline = latency({"0.025": 9900, "0.05": 9990, "+Inf": 10_000})
    candidate = latency({"0.025": 800, "0.05": 960, "+Inf": 1000})
    look = looked(test, (candidate, baseline), threshold=0.025)
    assert look.judgement.result == "Failed"
    assert "share slower than 0.025s (the baseline's p99) ratio 20 " in look.judgement.reason
    assert look.summary["thresholdSeconds"] == 0.025 and look.summary["test"] == "slow-requests"


def test_without_a_bound_yet_the_latency_look_holds_and_says_why() -> None:
    test = SlowRequestsTest(buckets_query="b", quantile=0.99, tolerance=Tolerance(relative=0.2))
    look = looked(test, (latency({"0.025": 10, "+Inf": 10}), latency({"0.025": 10, "+Inf": 10})))
    assert look.judgement.result == "Inconclusive"
    assert "no baseline request in the last 1h to set the slow-request bound from" in look.judgement.reason


@pytest.mark.parametrize("bound", ["0.03", "fast"])
def test_a_candidate_without_the_bound_among_its_buckets_is_a_permanent_error(bound: str) -> None:
    test = SlowRequestsTest(buckets_query="b", quantile=0.99, tolerance=Tolerance())
    look = looked(test, (latency({bound: 10, "+Inf": 10}), latency({"0.025": 10, "+Inf": 10})), threshold=0.025)
    assert look.judgement.result == "Error" and look.judgement.permanent
