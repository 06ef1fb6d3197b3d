"""The pure judgement of the model-aware checks: prediction drift, important slices, offline vs online.

No I/O and no clock. Each check names the queries it needs (`queries`), the checker reads them for
the versions the check compares (`compares_baseline`) and hands the numbers to `judge_check`, which
turns them into a `Judgement` like any metric's, plus the readings shown in status and a `details`
object with the per-bucket, per-slice or offline/online values. The statistics themselves are in
`controller.stats`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from controller.analysis.evaluate import Judgement, Reading, Result
from controller.analysis.spec import ImportantSlices, ModelCheck, OfflineVsOnline, PredictionDrift
from controller.checks import Verdict
from controller.stats import (
    HistogramMismatch,
    QualityCounts,
    SliceResult,
    bucket_counts,
    judge_drift,
    judge_offline_online_gap,
    judge_slices,
)

RESULTS = {
    Verdict.SUCCESSFUL: Result.SUCCESSFUL,
    Verdict.FAILED: Result.FAILED,
    Verdict.INCONCLUSIVE: Result.INCONCLUSIVE,
}
"""A statistic's verdict as the result of one measurement (statistics never say Running)."""

Numbers = Mapping[str, float]
"""One number per value of the query's label (`le`, `slice`); {"": n} for a one-number query."""
ONE_NUMBER = ""
"""The key of a one-number query's value in `Numbers`."""


@dataclass(frozen=True, kw_only=True)
class CheckQuery:
    name: str
    """How `judge_check` finds the query's numbers."""
    query: str
    """PromQL, templated like any metric's query."""
    by: str | None
    """The label keying the series (`le`, `slice`); None: the query gives one number."""


def queries(check: ModelCheck) -> tuple[CheckQuery, ...]:
    """What to read, per version compared."""
    if isinstance(check, PredictionDrift):
        return (CheckQuery(name="histogram", query=check.histogram_query, by="le"),)
    by = "slice" if isinstance(check, ImportantSlices) else None
    return (
        CheckQuery(name="correct", query=check.correct_query, by=by),
        CheckQuery(name="total", query=check.total_query, by=by),
    )


def compares_baseline(check: ModelCheck) -> bool:
    """Whether the baseline's numbers are read too (offline vs online judges the candidate alone)."""
    return not isinstance(check, OfflineVsOnline)


@dataclass(frozen=True, kw_only=True)
class CheckResult:
    judgement: Judgement
    baseline: Reading
    """The baseline's value and samples as status shows them (the deciding slice for slices)."""
    candidate: Reading
    details: Mapping[str, Any] = field(default_factory=dict)
    """Extra fields of the measurement in status: `drift`, `slices` or `offline`."""


def judge_check(
    check: ModelCheck,
    *,
    baseline_version: str,
    candidate_version: str,
    baseline: Mapping[str, Numbers],
    candidate: Mapping[str, Numbers],
) -> CheckResult:
    """The verdict of one measurement; `baseline`/`candidate` map each query's name to its numbers
    (the baseline's are empty for a check that does not compare it)."""
    if isinstance(check, PredictionDrift):
        return _judge_drift(
            check,
            baseline_version=baseline_version,
            candidate_version=candidate_version,
            baseline=baseline["histogram"],
            candidate=candidate["histogram"],
        )
    if isinstance(check, ImportantSlices):
        return _judge_slices(
            check,
            baseline_version=baseline_version,
            candidate_version=candidate_version,
            baseline=_quality_by_slice(baseline),
            candidate=_quality_by_slice(candidate),
        )
    return _judge_offline_online(
        check,
        baseline_version=baseline_version,
        candidate_version=candidate_version,
        online=QualityCounts(
            correct=_usable(candidate["correct"]).get(ONE_NUMBER, 0.0),
            total=_usable(candidate["total"]).get(ONE_NUMBER, 0.0),
        ),
    )


def _round(value: float | None) -> float | None:
    """Status keeps 4 decimals (and JSON has no NaN)."""
    return None if value is None or not math.isfinite(value) else round(value, 4)


def _usable(numbers: Numbers) -> dict[str, float]:
    # increase() over a series without samples in the window is NaN: that is no data, not a count.
    return {key: value for key, value in numbers.items() if math.isfinite(value)}


# ---------------------------------------------------------------------------------------------
# Prediction drift


def _upper_bound(le: str) -> float:
    try:
        return float(le)  # Prometheus writes the last bucket as "+Inf", which float() reads
    except ValueError as error:
        raise HistogramMismatch(f"bucket bound le={le!r} is not a number") from error


def _judge_drift(
    check: PredictionDrift, *, baseline_version: str, candidate_version: str, baseline: Numbers, candidate: Numbers
) -> CheckResult:
    who = f"candidate {candidate_version} vs baseline {baseline_version}"
    base, cand = _usable(baseline), _usable(candidate)
    missing = [f"{role} {version}" for role, version, h in (
        ("baseline", baseline_version, base), ("candidate", candidate_version, cand)) if not h]  # fmt: skip
    if missing:
        reason = f"{who}: no prediction histogram for {', '.join(missing)}"
        return CheckResult(
            judgement=Judgement(result=Result.INCONCLUSIVE, reason=reason),
            baseline=Reading(version=baseline_version),
            candidate=Reading(version=candidate_version),
        )
    try:
        base_by_bound = {_upper_bound(le): count for le, count in base.items()}
        cand_by_bound = {_upper_bound(le): count for le, count in cand.items()}
        drift = judge_drift(baseline=base_by_bound, candidate=cand_by_bound, thresholds=check.thresholds)
    except HistogramMismatch as error:
        # Different buckets cannot be compared however long we wait: the candidate must export the
        # baseline's buckets.
        return CheckResult(
            judgement=Judgement(
                result=Result.ERROR,
                reason=f"{who}: prediction histograms cannot be compared: {error}",
                permanent=True,
            ),
            baseline=Reading(version=baseline_version),
            candidate=Reading(version=candidate_version),
        )
    bounds = sorted(base_by_bound)
    per_bucket = zip(bounds, bucket_counts(base_by_bound), bucket_counts(cand_by_bound), strict=True)
    return CheckResult(
        judgement=Judgement(result=RESULTS[drift.verdict], reason=f"{who}: {drift.message}"),
        baseline=Reading(version=baseline_version, samples=drift.baseline_count),
        candidate=Reading(version=candidate_version, samples=drift.candidate_count),
        details={
            "drift": {
                "psi": _round(drift.psi),
                "jsDistance": _round(drift.js_distance),
                "maxPSI": check.thresholds.max_psi,
                "maxJSDistance": check.thresholds.max_js_distance,
                "minCount": check.thresholds.min_count,
                "buckets": [
                    {"le": "+Inf" if math.isinf(le) else f"{le:g}", "baseline": _round(b), "candidate": _round(c)}
                    for le, b, c in per_bucket
                ],
            }
        },
    )


# ---------------------------------------------------------------------------------------------
# Important slices


def _quality_by_slice(numbers: Mapping[str, Numbers]) -> dict[str, QualityCounts]:
    if not numbers:
        return {}
    correct, total = _usable(numbers["correct"]), _usable(numbers["total"])
    # The convention creates the correct series with the total one; a missing one counts 0 correct.
    return {name: QualityCounts(correct=correct.get(name, 0.0), total=count) for name, count in total.items()}


def _slice_json(result: SliceResult) -> dict[str, Any]:
    return {
        "slice": result.name,
        "baselineValue": _round(result.baseline.quality),
        "candidateValue": _round(result.candidate.quality),
        "baselineSamples": _round(result.baseline.total),
        "candidateSamples": _round(result.candidate.total),
        "verdict": RESULTS[result.verdict].value,
    }


def _worst(results: tuple[SliceResult, ...]) -> SliceResult | None:
    """The slice on which the candidate does worst against the baseline (failed slices first)."""
    judged = [r for r in results if r.baseline.quality is not None and r.candidate.quality is not None]
    if not judged:
        return None
    return min(
        judged,
        key=lambda r: (
            r.verdict is not Verdict.FAILED,
            (r.candidate.quality or 0.0) - (r.baseline.quality or 0.0),
        ),
    )


def _judge_slices(
    check: ImportantSlices,
    *,
    baseline_version: str,
    candidate_version: str,
    baseline: Mapping[str, QualityCounts],
    candidate: Mapping[str, QualityCounts],
) -> CheckResult:
    judged = judge_slices(important=check.slices, baseline=baseline, candidate=candidate, thresholds=check.thresholds)
    worst = _worst(judged.slices)
    return CheckResult(
        judgement=Judgement(
            result=RESULTS[judged.verdict],
            reason=f"candidate {candidate_version} vs baseline {baseline_version}: {judged.message}",
        ),
        baseline=Reading(
            version=baseline_version,
            value=None if worst is None else worst.baseline.quality,
            samples=None if worst is None else worst.baseline.total,
        ),
        candidate=Reading(
            version=candidate_version,
            value=None if worst is None else worst.candidate.quality,
            samples=None if worst is None else worst.candidate.total,
        ),
        details={
            "worstSlice": None if worst is None else worst.name,
            "slices": [_slice_json(result) for result in judged.slices],
        },
    )


# ---------------------------------------------------------------------------------------------
# Offline vs online


def _judge_offline_online(
    check: OfflineVsOnline, *, baseline_version: str, candidate_version: str, online: QualityCounts
) -> CheckResult:
    gap = judge_offline_online_gap(
        offline=check.offline, online=online, max_gap=check.max_gap, min_samples=check.min_samples
    )
    return CheckResult(
        judgement=Judgement(result=RESULTS[gap.verdict], reason=f"candidate {candidate_version}: {gap.message}"),
        baseline=Reading(version=baseline_version),
        candidate=Reading(version=candidate_version, value=gap.online, samples=online.total),
        details={
            "offline": {
                "declared": check.offline,
                "online": _round(gap.online),
                "gap": _round(gap.gap),
                "maxGap": check.max_gap,
            }
        },
    )
