"""PSI and Jensen-Shannon point estimates against values worked out by hand."""

from __future__ import annotations

import math

import pytest

from controller.stats import (
    bucket_counts,
    jensen_shannon_distance,
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
