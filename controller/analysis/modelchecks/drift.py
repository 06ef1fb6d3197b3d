"""Prediction drift (Monitor 7): the candidate's prediction histogram against the baseline's, by
the population stability index and the Jensen-Shannon distance, each with an anytime-valid
interval; drift fails once an interval lies beyond its tolerance (docs/checks/prediction-drift.md)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from controller.analysis import fields
from controller.analysis.evaluate import Judgement, Reading, Result
from controller.analysis.evidence import CountQuery, Evidence, Segment, by_label
from controller.analysis.judges import (
    JSON,
    Budget,
    JudgedOnCountsAlone,
    Look,
    Versions,
    below_floor,
    cumulative_buckets,
    mismatch,
    missing_roles,
    no_data,
    not_yet,
    rounded,
)
from controller.analysis.modelchecks.plugin import ModelCheckPlugin
from controller.analysis.presets import (
    PREDICTION_HISTOGRAM_QUERY,
)
from controller.analysis.rows import Row, with_rows
from controller.analysis.sequential import (
    divergence_lower_bound,
    divergence_upper_bound,
    proportion_interval,
)
from controller.figures import figure, interval
from controller.stats import (
    EMPTY_BUCKET_SHARE,
    HistogramMismatch,
    bucket_counts,
    jensen_shannon_distance,
    population_stability_index,
)

DEFAULT_MAX_PSI = 0.2
"""Prediction drift tolerance: PSI 0.2 is the usual line for a significant shift."""
DEFAULT_MAX_JS_DISTANCE = 0.2
"""About what a shift with PSI 0.2 gives (0.1 would reject a better model of the same task)."""


@dataclass(frozen=True, kw_only=True)
class PredictionDrift(JudgedOnCountsAlone):
    """The candidate's prediction histogram against the baseline's (Monitor 7)."""

    key: ClassVar[str] = "predictionDrift"
    rubric_items: ClassVar[tuple[str, ...]] = ("Monitor 7",)
    address_field: ClassVar[str] = "predictionDrift.address"
    compares_baseline: ClassVar[bool] = True
    tests: ClassVar[int] = 1
    max_psi: float = DEFAULT_MAX_PSI
    """Tolerance: the population stability index may be this large without counting as drift."""
    max_js_distance: float = DEFAULT_MAX_JS_DISTANCE
    """Tolerance on the Jensen-Shannon distance (base 2, 0 to 1)."""
    min_count: float = 0
    """Predictions each version needs before drift may pass (a floor the user asked for)."""
    histogram_query: str = PREDICTION_HISTOGRAM_QUERY
    """PromQL giving each bucket's count since the evidence began, one series per `le`."""
    address: str | None = None

    def judge(self, evidence: Evidence, *, budget: Budget, versions: Versions) -> Look:
        return _judge_drift(self, evidence, budget, versions)

    @property
    def queries(self) -> tuple[CountQuery, ...]:
        return (CountQuery(name="bucket", query=self.histogram_query, by="le"),)


def parse_config(raw: Mapping[str, Any], path: str) -> PredictionDrift:
    return PredictionDrift(
        **fields.given(
            max_psi=fields.number(raw, "maxPSI", path, minimum=0.0),
            max_js_distance=fields.fraction(raw, "maxJSDistance", path),
            min_count=fields.number(raw, "minCount", path, minimum=0.0),
        ),
        histogram_query=fields.query(raw, "query", path, default=PREDICTION_HISTOGRAM_QUERY),
        address=fields.prometheus_address(raw, path),
    )


def _pooled_buckets(segments: Sequence[Segment], role: str) -> dict[float, float]:
    """Per-bucket (not cumulative) counts of all segments together, by upper bound."""
    total: dict[float, float] = {}
    for segment in segments:
        cumulative = cumulative_buckets(segment.candidate if role == "candidate" else segment.baseline)
        for bound, count in zip(sorted(cumulative), bucket_counts(cumulative), strict=True):
            total[bound] = total.get(bound, 0.0) + count
    return total


def _judge_drift(test: PredictionDrift, evidence: Evidence, budget: Budget, versions: Versions) -> Look:
    latest = evidence.segments[-1] if evidence.segments else None
    missing = missing_roles(latest, versions, lambda numbers: bool(by_label(numbers, "bucket")))
    if missing:
        return no_data(versions, [f"{who} (prediction histogram)" for who in missing])
    try:
        baseline = _pooled_buckets(evidence.segments, "baseline")
        candidate = _pooled_buckets(evidence.segments, "candidate")
    except HistogramMismatch as error:
        return mismatch(versions, f"prediction histograms cannot be compared: {error}")
    if sorted(baseline) != sorted(candidate):
        return mismatch(
            versions,
            f"prediction histograms cannot be compared: bucket bounds differ: baseline {sorted(baseline)}, "
            f"candidate {sorted(candidate)}",
        )
    bounds = sorted(baseline)
    base_counts, cand_counts = [baseline[b] for b in bounds], [candidate[b] for b in bounds]
    base_total, cand_total = sum(base_counts), sum(cand_counts)
    readings = (
        Reading(version=versions.baseline, samples=base_total),
        Reading(version=versions.candidate, samples=cand_total),
    )
    if base_total <= 0 or cand_total <= 0:
        return not_yet(versions, "no predictions of a version since the step began")
    if cand_total < test.min_count:
        return below_floor(versions, have=cand_total, need=test.min_count, what="predictions (minCount)")
    # Every bucket's share, both versions, holds at once: split the budget over all intervals.
    count = 2 * len(bounds)
    alpha, beta = budget.false_rollback / count, budget.false_promotion / count
    base_intervals = [proportion_interval(c, base_total, alpha=alpha) for c in base_counts]
    cand_intervals = [proportion_interval(c, cand_total, alpha=alpha) for c in cand_counts]
    psi_low = divergence_lower_bound(base_intervals, cand_intervals, measure="psi")
    js_low = math.sqrt(divergence_lower_bound(base_intervals, cand_intervals, measure="js"))
    base_wide = [proportion_interval(c, base_total, alpha=beta) for c in base_counts]
    cand_wide = [proportion_interval(c, cand_total, alpha=beta) for c in cand_counts]
    psi_high = divergence_upper_bound(base_wide, cand_wide, measure="psi", floor=EMPTY_BUCKET_SHARE)
    js_high = math.sqrt(divergence_upper_bound(base_wide, cand_wide, measure="js", floor=0.0))
    psi = population_stability_index(baseline=base_counts, candidate=cand_counts)
    js = jensen_shannon_distance(baseline=base_counts, candidate=cand_counts)
    summary: JSON = {
        "test": "drift",
        "psi": rounded(psi, 4),
        "psiInterval": [rounded(psi_low, 4), rounded(psi_high, 4)],
        "maxPSI": test.max_psi,
        "jsDistance": rounded(js, 4),
        "jsDistanceInterval": [rounded(js_low, 4), rounded(js_high, 4)],
        "maxJSDistance": test.max_js_distance,
        "buckets": [
            {"le": "+Inf" if math.isinf(b) else f"{b:g}", "baseline": rounded(bc, 3), "candidate": rounded(cc, 3)}
            for b, bc, cc in zip(bounds, base_counts, cand_counts, strict=True)
        ],
    }
    summary = with_drift_rows(summary)
    figures = (
        f"PSI {psi:.4f} (at least {psi_low:.4f}, tolerance {test.max_psi:g}), Jensen-Shannon distance {js:.4f} "
        f"(at least {js_low:.4f}, tolerance {test.max_js_distance:g}), over {base_total:.0f} baseline and "
        f"{cand_total:.0f} candidate predictions"
    )
    who = f"candidate {versions.candidate} vs baseline {versions.baseline}"
    if psi_low > test.max_psi or js_low > test.max_js_distance:
        judgement = Judgement(result=Result.FAILED, reason=f"{who}: prediction drift beyond tolerance: {figures}")
    else:
        safe = psi_high <= test.max_psi and js_high <= test.max_js_distance
        shown = "within tolerance shown" if safe else "no evidence of drift beyond tolerance"
        judgement = Judgement(result=Result.SUCCESSFUL, reason=f"{who}: {shown}: {figures}", safe=safe)
    return Look(judgement=judgement, baseline=readings[0], candidate=readings[1], summary=summary)


def with_drift_rows(summary: JSON) -> JSON:
    """The summary with its rows for kubectl: predictions per version (from the histogram), then PSI
    and JS distance against their tolerances; a statistic whose interval lies above its tolerance
    is drift."""

    def predictions(role: str) -> str:
        return f"{sum(bucket[role] or 0.0 for bucket in summary['buckets']):.0f} predictions"

    rows = []
    for label, key, tolerance_key in (("PSI", "psi", "maxPSI"), ("JS distance", "jsDistance", "maxJSDistance")):
        bounds, tolerance = summary[f"{key}Interval"], summary[tolerance_key]
        beyond = bounds[0] is not None and bounds[0] > tolerance
        rows.append(
            Row(
                label=label,
                estimate=f"{figure(summary[key])} {interval(bounds)}",
                tolerance=figure(tolerance),
                tones={"estimate": "bad"} if beyond else {},
            )
        )
    return with_rows(
        summary, columns=Row(baseline=predictions("baseline"), candidate=predictions("candidate")), rows=rows
    )


PLUGIN = ModelCheckPlugin(key=PredictionDrift.key, parse_config=parse_config)
