"""Point estimates of how far two histograms are apart: population stability index and
Jensen-Shannon distance, shown in status next to the drift test's confidence bounds
(controller.analysis.judges).

Everything here takes numbers and returns values; no I/O, no clock.

Histograms arrive the way Prometheus exposes them: cumulative buckets keyed by their upper bound
(`le`, with `+Inf` as `math.inf`), e.g. `{0.1: 4, 0.5: 9, inf: 10}`. They are turned into
per-bucket counts before any comparison.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

EMPTY_BUCKET_SHARE = 1e-4
"""Share used in place of 0 for an empty bucket in the population stability index.

PSI takes `ln(candidate share / baseline share)`, which is infinite when either share is 0. An
empty bucket counts as this share instead (the shares are not renormalised: the error is at most
this value per empty bucket). Jensen-Shannon needs no such substitute (its mixture is never 0
where a share is not), so it uses the exact shares.
"""


class HistogramMismatch(ValueError):
    """The two histograms cannot be compared (different buckets, decreasing cumulative counts)."""


def bucket_counts(cumulative: Mapping[float, float]) -> tuple[float, ...]:
    """Per-bucket counts, lowest bucket first, from cumulative counts keyed by upper bound `le`."""
    counts: list[float] = []
    below = 0.0
    for upper_bound in sorted(cumulative):
        running_total = cumulative[upper_bound]
        # rate()/increase() extrapolate each bucket series on its own, so a bucket can come out a
        # hair below the one before it; that is noise, not a negative count.
        counts.append(max(running_total - below, 0.0))
        below = max(running_total, below)
    return tuple(counts)


def _shares(counts: Sequence[float]) -> tuple[float, ...]:
    total = sum(counts)
    return tuple(count / total for count in counts)


def population_stability_index(
    *, baseline: Sequence[float], candidate: Sequence[float], empty_share: float = EMPTY_BUCKET_SHARE
) -> float:
    """PSI = sum over buckets of (c - b) * ln(c / b), with b, c the bucket shares.

    Takes per-bucket counts (not shares) of the same buckets; both must have observations.
    Rule of thumb: below 0.1 no shift, 0.1-0.2 a moderate shift, above 0.2 a significant one.
    """
    _require_comparable(baseline, candidate)
    total = 0.0
    for base_share, cand_share in zip(_shares(baseline), _shares(candidate), strict=True):
        base_share, cand_share = max(base_share, empty_share), max(cand_share, empty_share)
        total += (cand_share - base_share) * math.log(cand_share / base_share)
    return total


def jensen_shannon_distance(*, baseline: Sequence[float], candidate: Sequence[float]) -> float:
    """Square root of the Jensen-Shannon divergence with base-2 logarithms: 0 equal, 1 disjoint.

    Takes per-bucket counts (not shares) of the same buckets; both must have observations.
    """
    _require_comparable(baseline, candidate)
    divergence = 0.0
    for base_share, cand_share in zip(_shares(baseline), _shares(candidate), strict=True):
        mixture = (base_share + cand_share) / 2
        for share in (base_share, cand_share):
            if share > 0:
                divergence += share * math.log2(share / mixture) / 2
    # Rounding can leave a tiny negative divergence for identical inputs.
    return math.sqrt(max(divergence, 0.0))


def _require_comparable(baseline: Sequence[float], candidate: Sequence[float]) -> None:
    if len(baseline) != len(candidate):
        raise HistogramMismatch(f"baseline has {len(baseline)} buckets, candidate {len(candidate)}")
    if sum(baseline) <= 0 or sum(candidate) <= 0:
        raise HistogramMismatch("a histogram without observations has no distribution to compare")
