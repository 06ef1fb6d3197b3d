"""Pure statistics for model-aware checks: prediction drift, per-slice quality, offline vs online.

Everything here takes numbers and returns values; no I/O, no clock. The analysis machinery reads
the counts from Prometheus and hands them in.

Histograms arrive the way Prometheus exposes them: cumulative buckets keyed by their upper bound
(`le`, with `+Inf` as `math.inf`), e.g. `{0.1: 4, 0.5: 9, inf: 10}`. They are turned into
per-bucket counts before any comparison.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from controller.checks import Verdict

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


@dataclass(frozen=True, kw_only=True)
class DriftThresholds:
    max_psi: float = 0.2
    """Largest population stability index that still passes (0.2 = a significant shift)."""
    max_js_distance: float = 0.2
    """Largest Jensen-Shannon distance (base 2, 0 to 1) that still passes; 0.2 is about what a
    shift with PSI 0.2 gives (0.1 would already reject a better model of the same task)."""
    min_count: float = 100
    """Observations each version needs in the window before drift is judged at all."""


@dataclass(frozen=True, kw_only=True)
class DriftResult:
    verdict: Verdict
    """Failed when either measure exceeds its limit; Inconclusive with too few observations."""
    psi: float | None
    """Population stability index; None when there were too few observations to compute it."""
    js_distance: float | None
    """Jensen-Shannon distance; None when there were too few observations to compute it."""
    baseline_count: float
    """Observations of the baseline in the window."""
    candidate_count: float
    """Observations of the candidate in the window."""
    message: str
    """For people: both measures against their limits, or why nothing was judged."""


def judge_drift(
    *, baseline: Mapping[float, float], candidate: Mapping[float, float], thresholds: DriftThresholds
) -> DriftResult:
    """Compares the candidate's prediction histogram with the baseline's (cumulative `le` buckets)."""
    if sorted(baseline) != sorted(candidate):
        raise HistogramMismatch(f"bucket bounds differ: baseline {sorted(baseline)}, candidate {sorted(candidate)}")
    base_counts, cand_counts = bucket_counts(baseline), bucket_counts(candidate)
    base_total, cand_total = sum(base_counts), sum(cand_counts)
    if min(base_total, cand_total) < thresholds.min_count:
        return DriftResult(
            verdict=Verdict.INCONCLUSIVE,
            psi=None,
            js_distance=None,
            baseline_count=base_total,
            candidate_count=cand_total,
            message=(
                f"too few predictions to judge drift: baseline {base_total:g}, candidate {cand_total:g}, "
                f"need {thresholds.min_count:g} each"
            ),
        )
    psi = population_stability_index(baseline=base_counts, candidate=cand_counts)
    js_distance = jensen_shannon_distance(baseline=base_counts, candidate=cand_counts)
    failed = psi > thresholds.max_psi or js_distance > thresholds.max_js_distance
    return DriftResult(
        verdict=Verdict.FAILED if failed else Verdict.SUCCESSFUL,
        psi=psi,
        js_distance=js_distance,
        baseline_count=base_total,
        candidate_count=cand_total,
        message=(
            f"prediction drift {'too large' if failed else 'within limits'}: "
            f"PSI {psi:.4f} (limit {thresholds.max_psi:g}), "
            f"Jensen-Shannon distance {js_distance:.4f} (limit {thresholds.max_js_distance:g}), "
            f"over {base_total:g} baseline and {cand_total:g} candidate predictions"
        ),
    )


# ---------------------------------------------------------------------------------------------
# Quality on important slices


@dataclass(frozen=True, kw_only=True)
class QualityCounts:
    correct: float
    """Labelled predictions that were right (floats: Prometheus increase() extrapolates)."""
    total: float
    """Labelled predictions."""

    @property
    def quality(self) -> float | None:
        return self.correct / self.total if self.total > 0 else None


@dataclass(frozen=True, kw_only=True)
class SliceThresholds:
    max_drop: float = 0.02
    """Largest drop in quality (absolute, e.g. 0.02 = two accuracy points) a slice may show."""
    min_samples: float = 50
    """Labelled predictions each version needs on a slice before that slice is judged."""
    min_quality: float | None = None
    """Optional floor for the candidate's quality on every slice, whatever the baseline does."""


@dataclass(frozen=True, kw_only=True)
class SliceResult:
    name: str
    """The slice, as named in the spec."""
    verdict: Verdict
    baseline: QualityCounts
    candidate: QualityCounts
    message: str
    """For people: both qualities and the rule that decided."""


@dataclass(frozen=True, kw_only=True)
class SlicesResult:
    verdict: Verdict
    """Failed if any slice failed; else Inconclusive if any lacked samples; else Successful."""
    slices: tuple[SliceResult, ...]
    """One result per important slice, in the order the spec names them."""
    message: str
    """Names the failing slices (worst first) or the slices still short of samples."""


def judge_slice(
    *, name: str, baseline: QualityCounts, candidate: QualityCounts, thresholds: SliceThresholds
) -> SliceResult:
    """One slice on its own: enough samples, then candidate quality vs baseline and the floor."""
    base_quality, cand_quality = baseline.quality, candidate.quality
    if base_quality is None or cand_quality is None or min(baseline.total, candidate.total) < thresholds.min_samples:
        return SliceResult(
            name=name,
            verdict=Verdict.INCONCLUSIVE,
            baseline=baseline,
            candidate=candidate,
            message=(
                f"slice {name}: too few labelled predictions (baseline {baseline.total:g}, "
                f"candidate {candidate.total:g}, need {thresholds.min_samples:g} each)"
            ),
        )
    values = f"candidate {cand_quality:.4f} vs baseline {base_quality:.4f}"
    if base_quality - cand_quality > thresholds.max_drop:
        verdict, rule = Verdict.FAILED, f"drop {base_quality - cand_quality:.4f} > {thresholds.max_drop:g}"
    elif thresholds.min_quality is not None and cand_quality < thresholds.min_quality:
        verdict, rule = Verdict.FAILED, f"below the floor {thresholds.min_quality:g}"
    else:
        verdict, rule = Verdict.SUCCESSFUL, "within limits"
    return SliceResult(
        name=name,
        verdict=verdict,
        baseline=baseline,
        candidate=candidate,
        message=f"slice {name}: {values}, {rule}",
    )


def judge_slices(
    *,
    important: Sequence[str],
    baseline: Mapping[str, QualityCounts],
    candidate: Mapping[str, QualityCounts],
    thresholds: SliceThresholds,
) -> SlicesResult:
    """Judges every important slice on its own; the average over slices plays no part.

    A slice missing from the counts has no samples (Inconclusive until it has some).
    """
    nothing = QualityCounts(correct=0, total=0)
    results = tuple(
        judge_slice(
            name=name,
            baseline=baseline.get(name, nothing),
            candidate=candidate.get(name, nothing),
            thresholds=thresholds,
        )
        for name in important
    )
    failed = sorted(
        (r for r in results if r.verdict is Verdict.FAILED),
        key=lambda r: (r.candidate.quality or 0.0) - (r.baseline.quality or 0.0),
    )
    if failed:
        return SlicesResult(verdict=Verdict.FAILED, slices=results, message="; ".join(r.message for r in failed))
    short = [r.name for r in results if r.verdict is Verdict.INCONCLUSIVE]
    if short:
        return SlicesResult(
            verdict=Verdict.INCONCLUSIVE,
            slices=results,
            message=f"waiting for labelled predictions on slices: {', '.join(short)}",
        )
    return SlicesResult(
        verdict=Verdict.SUCCESSFUL,
        slices=results,
        message=f"all {len(results)} important slices within limits",
    )


# ---------------------------------------------------------------------------------------------
# Offline vs online


@dataclass(frozen=True, kw_only=True)
class GapResult:
    verdict: Verdict
    offline: float
    """The candidate's metric as declared from offline evaluation (e.g. test-set accuracy)."""
    online: float | None
    """The same metric measured on live labelled traffic; None with too few samples."""
    gap: float | None
    """|offline - online|; None with too few samples."""
    message: str


def judge_offline_online_gap(*, offline: float, online: QualityCounts, max_gap: float, min_samples: float) -> GapResult:
    """Fails when the online metric differs from the declared offline one by more than `max_gap`.

    Both directions count: an online value far above the offline one means the offline
    evaluation does not predict production either (e.g. a leaked or stale test set).
    """
    online_value = online.quality
    if online_value is None or online.total < min_samples:
        return GapResult(
            verdict=Verdict.INCONCLUSIVE,
            offline=offline,
            online=None,
            gap=None,
            message=f"too few labelled predictions for the online value: {online.total:g} of {min_samples:g}",
        )
    gap = abs(offline - online_value)
    failed = gap > max_gap
    return GapResult(
        verdict=Verdict.FAILED if failed else Verdict.SUCCESSFUL,
        offline=offline,
        online=online_value,
        gap=gap,
        message=(
            f"online {online_value:.4f} vs declared offline {offline:.4f}: gap {gap:.4f} "
            f"{'exceeds' if failed else 'within'} the declared {max_gap:g}"
        ),
    )
