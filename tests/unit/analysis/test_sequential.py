"""The anytime-valid tests keep their error rate however often they look, and still find regressions.

Simulated streams, no server: a canary of three steps (5 %, 20 %, 50 % of the traffic, ten looks
each) looked at after every interval, many times over.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

import numpy as np
import pytest

from controller.analysis.evidence import Evidence, Segment
from controller.analysis.judges import Budget, Versions, judge_evidence
from controller.analysis.modelchecks.drift import PredictionDrift
from controller.analysis.sequential import (
    RatioSegment,
    divergence_lower_bound,
    divergence_upper_bound,
    proportion_interval,
    ratio_evidence,
    seconds_to_resolve,
    smallest_detectable_ratio,
)

ALPHA = 0.05
STEPS = (0.05, 0.2, 0.5)
LOOKS_PER_STEP = 10
SECONDS_PER_LOOK = 30


def canary(
    rng: np.random.Generator, *, rps: float, base_rate: float, ratio: float, null: float = 1.0, alpha: float = ALPHA
) -> int | None:
    """The look (1-based) at which the harm e-value first reached 1/alpha, or None."""
    done: list[RatioSegment] = []
    look = 0
    for weight in STEPS:
        counts = np.zeros(4)
        for _ in range(LOOKS_PER_STEP):
            look += 1
            requests = rng.poisson(rps * SECONDS_PER_LOOK)
            to_candidate = rng.binomial(requests, weight)
            counts += (
                rng.binomial(to_candidate, min(base_rate * ratio, 1.0)),
                to_candidate,
                rng.binomial(requests - to_candidate, base_rate),
                requests - to_candidate,
            )
            current = RatioSegment(
                candidate_events=counts[0],
                candidate_trials=counts[1],
                baseline_events=counts[2],
                baseline_trials=counts[3],
            )
            if ratio_evidence([*done, current], null=null, alpha=alpha).harm >= 1 / alpha:
                return look
        done.append(current)
    return None


@pytest.mark.parametrize(("rps", "base_rate"), [(10, 0.02), (50, 0.005), (500, 0.005)])
def test_an_identical_candidate_is_rarely_called_worse_despite_thirty_looks(rps: float, base_rate: float) -> None:
    # Given 400 canaries whose candidate has exactly the baseline's error rate
    rng = np.random.default_rng(7)
    # When the test looks after every interval of every step
    rejected = sum(canary(rng, rps=rps, base_rate=base_rate, ratio=1.0) is not None for _ in range(400))
    # Then it calls fewer than alpha of them worse (a repeated z-test would call about 30 %)
    assert rejected / 400 <= ALPHA


def test_a_candidate_within_tolerance_is_not_called_worse() -> None:
    rng = np.random.default_rng(11)
    rejected = sum(canary(rng, rps=500, base_rate=0.01, ratio=1.1, null=1.2) is not None for _ in range(300))
    assert rejected / 300 <= ALPHA


def test_a_doubled_error_rate_at_fifty_requests_per_second_is_caught_within_the_canary() -> None:
    rng = np.random.default_rng(3)
    caught = [canary(rng, rps=50, base_rate=0.005, ratio=2.0) for _ in range(200)]
    found = [look for look in caught if look is not None]
    assert len(found) / 200 >= 0.9
    assert np.median(found) * SECONDS_PER_LOOK / 60 < 10


def test_a_tripled_error_rate_at_ten_requests_per_second_is_caught() -> None:
    rng = np.random.default_rng(5)
    caught = [canary(rng, rps=10, base_rate=0.02, ratio=3.0) for _ in range(200)]
    assert sum(look is not None for look in caught) / 200 >= 0.95


def test_the_ratio_interval_holds_the_true_ratio_and_safety_shows_a_good_candidate() -> None:
    segment = RatioSegment(candidate_events=100, candidate_trials=10_000, baseline_events=1000, baseline_trials=100_000)
    evidence = ratio_evidence([segment], null=1.5, alpha=ALPHA)
    assert evidence.low < 1.0 < evidence.high < 1.5
    assert evidence.safety >= 1 / ALPHA and evidence.harm < 1


def test_no_events_is_no_evidence_either_way() -> None:
    segment = RatioSegment(candidate_events=0, candidate_trials=100, baseline_events=0, baseline_trials=1900)
    evidence = ratio_evidence([segment], null=1.0, alpha=ALPHA)
    assert evidence.harm == pytest.approx(1.0) and evidence.safety == pytest.approx(1.0)
    assert (evidence.low, evidence.high) == (0.0, math.inf)


def test_a_proportion_interval_covers_the_truth_at_every_look() -> None:
    # Given 300 streams of labels with accuracy 0.9, looked at every 40 labels up to 2000
    rng = np.random.default_rng(13)
    missed = 0
    for _ in range(300):
        correct = np.cumsum(rng.random(2000) < 0.9)
        looks = range(39, 2000, 40)
        if any(
            not (lo <= 0.9 <= hi) for lo, hi in (proportion_interval(correct[i], i + 1, alpha=ALPHA) for i in looks)
        ):
            missed += 1
    # Then the interval missed the truth at any look in fewer than alpha of them
    assert missed / 300 <= ALPHA


def test_a_proportion_interval_narrows_with_data() -> None:
    small = proportion_interval(9, 10, alpha=ALPHA)
    large = proportion_interval(900, 1000, alpha=ALPHA)
    assert small[0] < large[0] < 0.9 < large[1] < small[1]
    assert proportion_interval(0, 100, alpha=ALPHA)[0] == 0.0
    assert proportion_interval(5, 0, alpha=ALPHA) == (0.0, 1.0)


def test_divergence_bounds_are_zero_when_intervals_overlap_and_bracket_the_truth_otherwise() -> None:
    overlapping = [(0.4, 0.6), (0.4, 0.6)]
    assert divergence_lower_bound(overlapping, overlapping, measure="psi") == 0.0
    baseline = [(0.49, 0.51), (0.49, 0.51)]
    candidate = [(0.24, 0.26), (0.74, 0.76)]
    true_psi = (0.25 - 0.5) * math.log(0.25 / 0.5) + (0.75 - 0.5) * math.log(0.75 / 0.5)
    low = divergence_lower_bound(baseline, candidate, measure="psi")
    high = divergence_upper_bound(baseline, candidate, measure="psi", floor=1e-4)
    assert 0 < low < true_psi < high


def test_power_figures_shrink_with_traffic_and_grow_with_the_tolerance() -> None:
    few = smallest_detectable_ratio(
        candidate_trials=500, baseline_trials=9500, baseline_rate=0.01, null=1.0, alpha=0.05
    )
    many = smallest_detectable_ratio(
        candidate_trials=50_000, baseline_trials=950_000, baseline_rate=0.01, null=1.0, alpha=0.05
    )
    assert many < few
    wide = seconds_to_resolve(candidate_rate=5, baseline_rate=45, event_rate=0.01, tolerance_ratio=2.0, alpha=0.05)
    narrow = seconds_to_resolve(candidate_rate=5, baseline_rate=45, event_rate=0.01, tolerance_ratio=1.2, alpha=0.05)
    assert 0 < wide < narrow < math.inf
    assert seconds_to_resolve(candidate_rate=5, baseline_rate=45, event_rate=0.01, tolerance_ratio=1.0, alpha=0.05) == (
        math.inf
    )


def drift_looks(rng: np.random.Generator, shares: list[float], *, shift: float, looks: int = 30) -> bool:
    """Whether the drift judge, with no tolerance at all, ever called identical predictions drift
    over `looks` looks at 50 more predictions per version each (`shift` moves candidate mass)."""
    candidate_shares = [shares[0] + shift, shares[1] - shift, *shares[2:]]
    counts = {"baseline": np.zeros(len(shares)), "candidate": np.zeros(len(shares))}
    for _ in range(looks):
        counts["baseline"] += rng.multinomial(50, shares)
        counts["candidate"] += rng.multinomial(50, candidate_shares)
        cumulative = {role: np.cumsum(c) for role, c in counts.items()}
        bounds = [*(f"{(i + 1) / len(shares):g}" for i in range(len(shares) - 1)), "+Inf"]
        segment = Segment(
            step=1,
            started_at=datetime(2024, 5, 1, tzinfo=UTC),
            seconds=60,
            candidate={f"bucket:{le}": float(v) for le, v in zip(bounds, cumulative["candidate"], strict=True)},
            baseline={f"bucket:{le}": float(v) for le, v in zip(bounds, cumulative["baseline"], strict=True)},
        )
        look = judge_evidence(
            PredictionDrift(max_psi=0.0, max_js_distance=0.0),
            Evidence(metric="drift", segments=(segment,)),
            budget=Budget(false_rollback=ALPHA, false_promotion=ALPHA),
            versions=Versions(baseline="v1", candidate="v2"),
        )
        if look.judgement.result == "Failed":
            return True
    return False


def test_identical_prediction_histograms_are_rarely_called_drift_even_with_no_tolerance_and_many_looks() -> None:
    rng = np.random.default_rng(17)
    shares = [0.3, 0.25, 0.2, 0.15, 0.1]
    called = sum(drift_looks(rng, shares, shift=0.0, looks=20) for _ in range(120))
    assert called / 120 <= ALPHA


def test_a_real_shift_in_predictions_is_called_drift() -> None:
    rng = np.random.default_rng(19)
    shares = [0.3, 0.25, 0.2, 0.15, 0.1]
    assert sum(drift_looks(rng, shares, shift=0.15) for _ in range(50)) / 50 >= 0.9
