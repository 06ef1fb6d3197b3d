"""The sequential judges: all of a metric's evidence so far -> the verdict of one look.

No I/O and no clock. Every judge tests "the candidate is worse than the baseline by more than the
tolerance" with an anytime-valid test (controller.analysis.sequential) at the metric's share of
the rollout's error budget, so looking every interval does not raise the chance of a false
rollback. A look is

* **Inconclusive** when a version has no data at all (a metrics outage, a query matching nothing)
  or the candidate is below a floor the user set (`minSamples`, `minCount`);
* **Failed** when the evidence of harm reaches its threshold (1 / the test's alpha), or a
  guardrail's confidence sequence lies beyond its bound;
* **Successful** otherwise: no evidence of harm. `safe` says whether the evidence also shows the
  candidate within tolerance (the safety e-value reached its threshold), which
  `promoteWhen: evidenceOfSafety` waits for.

Each look also returns a summary for status: samples per version, the estimate and confidence
interval of the ratio, the e-values and thresholds, and what the evidence could detect so far.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from controller.analysis.comparison import Tolerance
from controller.analysis.evaluate import Judgement, Reading, Result
from controller.analysis.evidence import Evidence, Numbers, Segment, by_label
from controller.analysis.providers.base import LABEL_VALUE_SEPARATOR
from controller.analysis.sequential import (
    RatioSegment,
    divergence_lower_bound,
    divergence_upper_bound,
    pooled,
    proportion_interval,
    ratio_evidence,
    seconds_to_resolve,
    smallest_detectable_ratio,
    upper_rate_bound,
)
from controller.analysis.spec import (
    ImportantSlices,
    OfflineVsOnline,
    PredictionDrift,
    RateTest,
    SequentialTest,
    SlowRequestsTest,
    TrainingSkew,
)
from controller.stats import (
    EMPTY_BUCKET_SHARE,
    HistogramMismatch,
    bucket_counts,
    jensen_shannon_distance,
    population_stability_index,
)

JSON = dict[str, Any]


@dataclass(frozen=True, kw_only=True)
class Budget:
    """One metric's share of the rollout's error rates."""

    false_rollback: float
    """Chance of a false rollback this metric may spend, across all its tests and looks."""
    false_promotion: float
    """Chance of calling a candidate beyond tolerance safe, with evidenceOfSafety."""

    def split(self, tests: int) -> Budget:
        return Budget(false_rollback=self.false_rollback / tests, false_promotion=self.false_promotion / tests)


@dataclass(frozen=True, kw_only=True)
class Versions:
    baseline: str
    candidate: str


@dataclass(frozen=True, kw_only=True)
class Look:
    judgement: Judgement
    baseline: Reading
    """The baseline's value and samples as status shows them (the deciding slice for slices)."""
    candidate: Reading
    summary: JSON = field(default_factory=dict)
    """The evidence in numbers, for status and kubectl."""


def judge_evidence(test: SequentialTest, evidence: Evidence, *, budget: Budget, versions: Versions) -> Look:
    """The verdict of one look at all the evidence of a metric."""
    judge: Callable[[Any, Evidence, Budget, Versions], Look] = _JUDGES[type(test)]
    return judge(test, evidence, budget, versions)


def _percent(value: float) -> str:
    return f"{value * 100:.3g}%"


def _figure(value: float) -> str:
    return "inf" if math.isinf(value) else f"{value:.3g}"


def _rounded(value: float | None, digits: int = 6) -> float | None:
    return None if value is None or not math.isfinite(value) else round(value, digits)


def _no_data(versions: Versions, missing: Sequence[str]) -> Look:
    return Look(
        judgement=Judgement(result=Result.INCONCLUSIVE, reason=f"no data for {', '.join(missing)}"),
        baseline=Reading(version=versions.baseline),
        candidate=Reading(version=versions.candidate),
    )


def _missing_roles(latest: Segment | None, versions: Versions, present: Callable[[Numbers], bool]) -> list[str]:
    if latest is None:
        return [f"candidate {versions.candidate}", f"baseline {versions.baseline}"]
    return [
        f"{role} {version}"
        for role, version, numbers in (
            ("candidate", versions.candidate, latest.candidate),
            ("baseline", versions.baseline, latest.baseline),
        )
        if not present(numbers)
    ]


# ---------------------------------------------------------------------------------------------
# Rates of bad events: the core that errors, slow requests and slices share


@dataclass(frozen=True, kw_only=True)
class _RateOutcome:
    harm: list[str]
    """Why the candidate is worse beyond tolerance (or a guardrail); empty when not shown."""
    safe: bool
    summary: JSON
    text: str
    """Both versions' values and the evidence, for people."""


def _judge_rates(
    segments: Sequence[RatioSegment],
    *,
    tolerance: Tolerance,
    budget: Budget,
    seconds: float,
    bad_events: bool = True,
    maximum: float | None = None,
    minimum: float | None = None,
    versions: Versions,
    noun: str,
) -> _RateOutcome:
    """Candidate against baseline on rates of bad events, plus guardrails on the candidate's value
    (bad events per trial, or good ones when `bad_events` is False)."""
    budget = budget.split(1 + (maximum is not None) + (minimum is not None))
    alpha, beta = budget.false_rollback, budget.false_promotion
    total = pooled(segments)
    baseline_rate = total.baseline_events / total.baseline_trials if total.baseline_trials else 0.0
    candidate_rate = total.candidate_events / total.candidate_trials if total.candidate_trials else 0.0
    null = tolerance.null_ratio(
        baseline_rate=upper_rate_bound(total.baseline_events, total.baseline_trials, alpha=alpha)
    )
    evidence = ratio_evidence(segments, null=null, alpha=alpha)

    def value(rate: float) -> float:
        return rate if bad_events else 1 - rate

    def shown(rate: float, trials: float) -> float | None:
        return _rounded(value(rate)) if trials > 0 else None

    harm: list[str] = []
    if evidence.harm >= 1 / alpha:
        harm.append(
            f"{noun} ratio {_ratio_estimate(candidate_rate, baseline_rate)} (interval {_figure(evidence.low)}-"
            f"{_figure(evidence.high)}) beyond tolerance {tolerance} (at most {null:.3g}x): "
            f"evidence {_figure(evidence.harm)} >= {_figure(1 / alpha)}"
        )
    safe = evidence.safety >= 1 / beta
    summary: JSON = {
        "candidate": {
            "samples": _rounded(total.candidate_trials, 3),
            "events": _rounded(total.candidate_events, 3),
            "value": shown(candidate_rate, total.candidate_trials),
        },
        "baseline": {
            "samples": _rounded(total.baseline_trials, 3),
            "events": _rounded(total.baseline_events, 3),
            "value": shown(baseline_rate, total.baseline_trials),
        },
        "ratio": _rounded(candidate_rate / baseline_rate if baseline_rate > 0 else None, 4),
        "interval": [_rounded(evidence.low, 4), _rounded(evidence.high, 4)],
        "tolerance": str(tolerance),
        "nullRatio": _rounded(null, 4),
        "eValue": _rounded(evidence.harm, 4),
        "threshold": _rounded(1 / alpha, 2),
        "safetyEValue": _rounded(evidence.safety, 4),
        "safetyThreshold": _rounded(1 / beta, 2),
    }
    summary.update(_power(segments, total=total, null=null, alpha=alpha, seconds=seconds))
    for bound, name in ((maximum, "max"), (minimum, "min")):
        if bound is None:
            continue
        low, high = _value_interval(total, alpha=alpha, bad_events=bad_events)
        summary[f"{name}Interval"] = [_rounded(low), _rounded(high)]
        if (low > bound) if name == "max" else (high < bound):
            harm.append(
                f"candidate {noun} {_percent(value(candidate_rate))} is beyond {name} {bound:g} "
                f"(interval {_percent(low)}-{_percent(high)})"
            )
        low, high = _value_interval(total, alpha=beta, bad_events=bad_events)
        safe = safe and ((high <= bound) if name == "max" else (low >= bound))
    text = (
        f"candidate {versions.candidate} {_percent(value(candidate_rate))} of {total.candidate_trials:.0f} vs "
        f"baseline {versions.baseline} {_percent(value(baseline_rate))} of {total.baseline_trials:.0f}"
    )
    return _RateOutcome(harm=harm, safe=safe, summary=summary, text=text)


def _value_interval(total: RatioSegment, *, alpha: float, bad_events: bool) -> tuple[float, float]:
    """Confidence sequence of the candidate's value: bad events per trial, or good ones."""
    low, high = proportion_interval(total.candidate_events, total.candidate_trials, alpha=alpha)
    return (low, high) if bad_events else (1 - high, 1 - low)


def _ratio_estimate(candidate_rate: float, baseline_rate: float) -> str:
    if baseline_rate <= 0:
        return "inf" if candidate_rate > 0 else "1"
    return f"{candidate_rate / baseline_rate:.3g}"


def _power(segments: Sequence[RatioSegment], *, total: RatioSegment, null: float, alpha: float, seconds: float) -> JSON:
    """What the evidence can see: the smallest ratio detectable with 80 % power so far, and how
    long a step at the latest segment's traffic would need to resolve the tolerance (null) and to
    catch a candidate twice as bad as tolerated."""
    if total.baseline_events + total.candidate_events <= 0:
        # Without a single event there is no rate to reckon power from.
        return {
            "smallestDetectableRatio": None,
            "secondsToResolveTolerance": None,
            "secondsToDetectTwiceTolerated": None,
        }
    baseline_rate = (total.baseline_events + 0.5) / (total.baseline_trials + 1)
    current = segments[-1] if segments else None
    per_second = (
        (current.candidate_trials / seconds, current.baseline_trials / seconds)
        if current is not None and seconds > 0
        else (0.0, 0.0)
    )

    def needed(apart: float) -> float | None:
        return _rounded(
            seconds_to_resolve(
                candidate_rate=per_second[0],
                baseline_rate=per_second[1],
                event_rate=baseline_rate,
                tolerance_ratio=apart,
                alpha=alpha,
            ),
            0,
        )

    return {
        "smallestDetectableRatio": _rounded(
            smallest_detectable_ratio(
                candidate_trials=total.candidate_trials,
                baseline_trials=total.baseline_trials,
                baseline_rate=baseline_rate,
                null=null,
                alpha=alpha,
            ),
            3,
        ),
        "secondsToResolveTolerance": needed(null),
        "secondsToDetectTwiceTolerated": needed(2.0),
    }


def _rate_look(outcome: _RateOutcome, *, versions: Versions, readings: tuple[Reading, Reading]) -> Look:
    if outcome.harm:
        judgement = Judgement(result=Result.FAILED, reason=f"{outcome.text}: {'; '.join(outcome.harm)}")
    else:
        summary = outcome.summary
        shown = "within tolerance shown" if outcome.safe else "no evidence of harm"
        reason = (
            f"{outcome.text}: {shown} (evidence {_figure(summary['eValue'] or 0.0)} of {_figure(summary['threshold'])}"
            f" needed; detectable so far: {_figure(summary['smallestDetectableRatio'] or math.inf)}x)"
        )
        judgement = Judgement(result=Result.SUCCESSFUL, reason=reason, safe=outcome.safe)
    baseline, candidate = readings
    return Look(judgement=judgement, baseline=baseline, candidate=candidate, summary=outcome.summary)


def _readings(summary: JSON, versions: Versions) -> tuple[Reading, Reading]:
    return (
        Reading(version=versions.baseline, value=summary["baseline"]["value"], samples=summary["baseline"]["samples"]),
        Reading(
            version=versions.candidate, value=summary["candidate"]["value"], samples=summary["candidate"]["samples"]
        ),
    )


def _not_yet(versions: Versions, why: str) -> Look:
    """Series exist but hold nothing to judge yet: hold, as with no data."""
    return Look(
        judgement=Judgement(result=Result.INCONCLUSIVE, reason=f"candidate {versions.candidate} vs baseline "
                            f"{versions.baseline}: {why}"),
        baseline=Reading(version=versions.baseline),
        candidate=Reading(version=versions.candidate, samples=0),
    )  # fmt: skip


def _floor(versions: Versions, *, have: float, need: float, what: str) -> Look:
    return Look(
        judgement=Judgement(
            result=Result.INCONCLUSIVE,
            reason=f"candidate {versions.candidate}: {have:.0f} {what} so far, fewer than the {need:g} asked for",
        ),
        baseline=Reading(version=versions.baseline),
        candidate=Reading(version=versions.candidate, samples=have),
    )


# ---------------------------------------------------------------------------------------------
# Events out of trials


def _judge_rate_test(test: RateTest, evidence: Evidence, budget: Budget, versions: Versions) -> Look:
    latest = evidence.segments[-1] if evidence.segments else None
    missing = _missing_roles(latest, versions, lambda numbers: "trials" in numbers)
    if missing:
        return _no_data(versions, missing)
    assert latest is not None

    def bad(numbers: Numbers) -> float:
        trials = max(numbers.get("trials", 0.0), 0.0)
        events = min(max(numbers.get("events", 0.0), 0.0), trials)
        return events if test.events_are_bad else trials - events

    segments = [
        RatioSegment(
            candidate_events=bad(s.candidate),
            candidate_trials=max(s.candidate.get("trials", 0.0), 0.0),
            baseline_events=bad(s.baseline),
            baseline_trials=max(s.baseline.get("trials", 0.0), 0.0),
        )
        for s in evidence.segments
    ]
    outcome = _judge_rates(
        segments,
        tolerance=test.tolerance,
        budget=budget,
        seconds=latest.seconds,
        bad_events=test.events_are_bad,
        maximum=test.max,
        minimum=test.min,
        versions=versions,
        noun="rate" if test.events_are_bad else "miss rate",
    )
    summary = {"test": "rate", **outcome.summary}
    candidate_trials = pooled(segments).candidate_trials
    if candidate_trials <= 0:
        return _not_yet(versions, "no samples of the candidate since the step began")
    if test.min_trials is not None and candidate_trials < test.min_trials and not outcome.harm:
        return _floor(versions, have=candidate_trials, need=test.min_trials, what="samples (minSamples.count)")
    return _rate_look(
        _RateOutcome(harm=outcome.harm, safe=outcome.safe, summary=summary, text=outcome.text),
        versions=versions,
        readings=_readings(outcome.summary, versions),
    )


# ---------------------------------------------------------------------------------------------
# Slow requests


def _buckets(numbers: Numbers, query: str = "bucket") -> dict[float, float]:
    """Cumulative counts by upper bound from `query:le` numbers."""
    try:
        return {float(le): count for le, count in by_label(numbers, query).items()}
    except ValueError as error:
        raise HistogramMismatch(f"a bucket bound is not a number: {error}") from error


def slow_threshold(buckets: Mapping[float, float], *, quantile: float) -> float | None:
    """The smallest finite bucket bound holding at least `quantile` of the observations: requests
    above it are slower than the version's quantile. None without observations."""
    if not buckets:
        return None
    total = max(buckets.values())
    finite = sorted(b for b in buckets if math.isfinite(b))
    if total <= 0 or not finite:
        return None
    return next((bound for bound in finite if buckets[bound] >= quantile * total), finite[-1])


def _slow_and_total(numbers: Numbers, threshold: float) -> tuple[float, float]:
    buckets = _buckets(numbers)
    total = max(buckets.values(), default=0.0)
    within = buckets.get(threshold)
    if within is None:
        raise HistogramMismatch(f"no bucket at the slow-request bound le={threshold:g}")
    return max(total - within, 0.0), max(total, 0.0)


def _judge_slow_requests(test: SlowRequestsTest, evidence: Evidence, budget: Budget, versions: Versions) -> Look:
    latest = evidence.segments[-1] if evidence.segments else None
    missing = _missing_roles(latest, versions, lambda numbers: bool(by_label(numbers, "bucket")))
    if missing:
        return _no_data(versions, missing)
    if evidence.threshold is None:
        return _not_yet(
            versions,
            f"no baseline request in the last {test.lookback_seconds / 3600:g}h to set the slow-request bound from",
        )
    assert latest is not None
    threshold = evidence.threshold
    try:
        segments = []
        for s in evidence.segments:
            candidate_slow, candidate_total = _slow_and_total(s.candidate, threshold)
            baseline_slow, baseline_total = _slow_and_total(s.baseline, threshold)
            segments.append(
                RatioSegment(
                    candidate_events=candidate_slow,
                    candidate_trials=candidate_total,
                    baseline_events=baseline_slow,
                    baseline_trials=baseline_total,
                )
            )
    except HistogramMismatch as error:
        return _mismatch(versions, f"latency histograms cannot be compared: {error}")
    outcome = _judge_rates(
        segments,
        tolerance=test.tolerance,
        budget=budget,
        seconds=latest.seconds,
        versions=versions,
        noun=f"share slower than {threshold:g}s (the baseline's p{test.quantile * 100:g})",
    )
    summary = {"test": "slow-requests", "thresholdSeconds": threshold, **outcome.summary}
    return _rate_look(
        _RateOutcome(harm=outcome.harm, safe=outcome.safe, summary=summary, text=outcome.text),
        versions=versions,
        readings=_readings(outcome.summary, versions),
    )


def _mismatch(versions: Versions, reason: str) -> Look:
    """Counts that cannot be compared however long we wait: a configuration error."""
    return Look(
        judgement=Judgement(result=Result.ERROR, reason=reason, permanent=True),
        baseline=Reading(version=versions.baseline),
        candidate=Reading(version=versions.candidate),
    )


# ---------------------------------------------------------------------------------------------
# Important slices


def _judge_slices(test: ImportantSlices, evidence: Evidence, budget: Budget, versions: Versions) -> Look:
    latest = evidence.segments[-1] if evidence.segments else None
    missing = _missing_roles(latest, versions, lambda numbers: bool(by_label(numbers, "total")))
    if missing:
        return _no_data(versions, missing)
    assert latest is not None
    per_slice = budget.split(len(test.slices))
    results: list[tuple[str, _RateOutcome, RatioSegment]] = []
    for name in test.slices:
        segments = [_slice_segment(s, name) for s in evidence.segments]
        outcome = _judge_rates(
            segments,
            tolerance=Tolerance(absolute=test.max_drop),
            budget=per_slice,
            seconds=latest.seconds,
            bad_events=False,
            minimum=test.min_quality,
            versions=versions,
            noun=f"slice {name} wrong-answer rate",
        )
        results.append((name, outcome, pooled(segments)))
    failed = [(name, outcome) for name, outcome, _ in results if outcome.harm]
    slices_json = [
        {"slice": name, **outcome.summary, "verdict": (Result.FAILED if outcome.harm else Result.SUCCESSFUL).value}
        for name, outcome, _ in results
    ]
    worst_name, worst, _ = min(
        results,
        key=lambda item: (not item[1].harm, -(item[1].summary["eValue"] or 0.0)),
    )
    summary: JSON = {"test": "slices", "worstSlice": worst_name, "slices": slices_json}
    readings = _readings(worst.summary, versions)
    if failed:
        reason = "; ".join(f"slice {name}: {outcome.text}: {'; '.join(outcome.harm)}" for name, outcome in failed)
        return Look(judgement=Judgement(result=Result.FAILED, reason=reason), baseline=readings[0],
                    candidate=readings[1], summary=summary)  # fmt: skip
    short = [name for name, _, counts in results if counts.candidate_trials < test.min_samples]
    if short:
        reason = (
            f"waiting for {test.min_samples:g} labelled predictions of candidate {versions.candidate} "
            f"(minSamples) on slices: {', '.join(short)}"
        )
        return Look(judgement=Judgement(result=Result.INCONCLUSIVE, reason=reason), baseline=readings[0],
                    candidate=readings[1], summary=summary)  # fmt: skip
    safe = all(outcome.safe for _, outcome, _ in results)
    detail = ", ".join(
        f"{name} {_figure(o.summary['candidate']['value'] or 0.0)} vs {_figure(o.summary['baseline']['value'] or 0.0)}"
        f" (evidence {_figure(o.summary['eValue'] or 0.0)} of {_figure(o.summary['threshold'])})"
        for name, o, _ in results
    )
    shown = "within tolerance shown" if safe else "no evidence of harm"
    reason = f"candidate {versions.candidate} vs baseline {versions.baseline}: {shown} on slices {detail}"
    return Look(
        judgement=Judgement(result=Result.SUCCESSFUL, reason=reason, safe=safe),
        baseline=readings[0],
        candidate=readings[1],
        summary=summary,
    )


def _slice_segment(segment: Segment, name: str) -> RatioSegment:
    def counts(numbers: Numbers) -> tuple[float, float]:
        total = max(by_label(numbers, "total").get(name, 0.0), 0.0)
        # The convention creates the correct series with the total one; a missing one counts 0.
        correct = min(max(by_label(numbers, "correct").get(name, 0.0), 0.0), total)
        return total - correct, total

    candidate_wrong, candidate_total = counts(segment.candidate)
    baseline_wrong, baseline_total = counts(segment.baseline)
    return RatioSegment(
        candidate_events=candidate_wrong,
        candidate_trials=candidate_total,
        baseline_events=baseline_wrong,
        baseline_trials=baseline_total,
    )


# ---------------------------------------------------------------------------------------------
# Prediction drift


def _pooled_buckets(segments: Sequence[Segment], role: str) -> dict[float, float]:
    """Per-bucket (not cumulative) counts of all segments together, by upper bound."""
    total: dict[float, float] = {}
    for segment in segments:
        cumulative = _buckets(segment.candidate if role == "candidate" else segment.baseline)
        for bound, count in zip(sorted(cumulative), bucket_counts(cumulative), strict=True):
            total[bound] = total.get(bound, 0.0) + count
    return total


def _judge_drift(test: PredictionDrift, evidence: Evidence, budget: Budget, versions: Versions) -> Look:
    latest = evidence.segments[-1] if evidence.segments else None
    missing = _missing_roles(latest, versions, lambda numbers: bool(by_label(numbers, "bucket")))
    if missing:
        return _no_data(versions, [f"{who} (prediction histogram)" for who in missing])
    try:
        baseline = _pooled_buckets(evidence.segments, "baseline")
        candidate = _pooled_buckets(evidence.segments, "candidate")
    except HistogramMismatch as error:
        return _mismatch(versions, f"prediction histograms cannot be compared: {error}")
    if sorted(baseline) != sorted(candidate):
        return _mismatch(
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
        return _not_yet(versions, "no predictions of a version since the step began")
    if cand_total < test.min_count:
        return _floor(versions, have=cand_total, need=test.min_count, what="predictions (minCount)")
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
        "psi": _rounded(psi, 4),
        "psiInterval": [_rounded(psi_low, 4), _rounded(psi_high, 4)],
        "maxPSI": test.max_psi,
        "jsDistance": _rounded(js, 4),
        "jsDistanceInterval": [_rounded(js_low, 4), _rounded(js_high, 4)],
        "maxJSDistance": test.max_js_distance,
        "buckets": [
            {"le": "+Inf" if math.isinf(b) else f"{b:g}", "baseline": _rounded(bc, 3), "candidate": _rounded(cc, 3)}
            for b, bc, cc in zip(bounds, base_counts, cand_counts, strict=True)
        ],
    }
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


# ---------------------------------------------------------------------------------------------
# Offline vs online


def _judge_offline_online(test: OfflineVsOnline, evidence: Evidence, budget: Budget, versions: Versions) -> Look:
    latest = evidence.segments[-1] if evidence.segments else None
    if latest is None or "total" not in latest.candidate:
        return _no_data(versions, [f"candidate {versions.candidate}"])
    total = sum(max(s.candidate.get("total", 0.0), 0.0) for s in evidence.segments)
    correct = sum(max(s.candidate.get("correct", 0.0), 0.0) for s in evidence.segments)
    correct = min(correct, total)
    if total < max(test.min_samples, 1):
        return _floor(versions, have=total, need=max(test.min_samples, 1), what="labelled predictions (minSamples)")
    low, high = proportion_interval(correct, total, alpha=budget.false_rollback)
    safe_low, safe_high = proportion_interval(correct, total, alpha=budget.false_promotion)
    online = correct / total
    band = (test.offline - test.max_gap, test.offline + test.max_gap)
    summary: JSON = {
        "test": "offline-online",
        "declared": test.offline,
        "online": _rounded(online, 4),
        "interval": [_rounded(low, 4), _rounded(high, 4)],
        "gap": _rounded(abs(test.offline - online), 4),
        "maxGap": test.max_gap,
        "samples": _rounded(total, 3),
    }
    figures = (
        f"online {online:.4f} (interval {low:.4f}-{high:.4f}) over {total:.0f} labels vs declared offline "
        f"{test.offline:.4f}, tolerance {test.max_gap:g}"
    )
    candidate = Reading(version=versions.candidate, value=online, samples=total)
    if low > band[1] or high < band[0]:
        judgement = Judgement(
            result=Result.FAILED, reason=f"candidate {versions.candidate}: gap beyond tolerance: {figures}"
        )
    else:
        safe = band[0] <= safe_low and safe_high <= band[1]
        shown = "within tolerance shown" if safe else "no evidence of a gap beyond tolerance"
        judgement = Judgement(result=Result.SUCCESSFUL, reason=f"candidate {versions.candidate}: {shown}: {figures}",
                              safe=safe)  # fmt: skip
    return Look(judgement=judgement, baseline=Reading(version=versions.baseline), candidate=candidate, summary=summary)


# ---------------------------------------------------------------------------------------------
# Training skew


def _feature_counts(segments: Sequence[Segment], feature: str) -> dict[float, float]:
    """The candidate's per-bucket (not cumulative) counts of one feature, all segments together."""
    total: dict[float, float] = {}
    prefix = f"{feature}{LABEL_VALUE_SEPARATOR}"
    for segment in segments:
        cumulative = {
            float(key[len(prefix) :]): value
            for key, value in by_label(segment.candidate, "bucket").items()
            if key.startswith(prefix)
        }
        for bound, count in zip(sorted(cumulative), bucket_counts(cumulative), strict=True):
            total[bound] = total.get(bound, 0.0) + count
    return total


def _judge_skew(test: TrainingSkew, evidence: Evidence, budget: Budget, versions: Versions) -> Look:
    latest = evidence.segments[-1] if evidence.segments else None
    profile = evidence.reference
    if latest is None or not by_label(latest.candidate, "bucket"):
        return _no_data(versions, [f"candidate {versions.candidate} (input feature histograms)"])
    assert profile is not None, "the checker reads the profile before judging"
    unknown = [name for name in test.features if name not in profile]
    if unknown:
        return _mismatch(versions, f"features {', '.join(unknown)} are not in the training profile; fix features")
    names = test.features or tuple(profile)
    try:
        counts = {name: _feature_counts(evidence.segments, name) for name in names}
    except ValueError as error:
        return _mismatch(versions, f"a feature bucket bound is not a number: {error}")
    missing = [name for name in names if not counts[name]]
    if missing:
        return _no_data(versions, [f"candidate {versions.candidate} features {', '.join(missing)}"])
    intervals_total = sum(len(profile[name].frequencies) for name in names)
    alpha = budget.false_rollback / intervals_total
    beta = budget.false_promotion / intervals_total
    features: list[JSON] = []
    failing: list[tuple[float, str]] = []
    safe = True
    for name in names:
        reference = profile[name]
        bounds = [*reference.edges, math.inf]
        if sorted(counts[name]) != bounds:
            return _mismatch(
                versions,
                f"feature {name}: the server's buckets {sorted(counts[name])} are not the profile's edges "
                f"{reference.edges} (+Inf); bucket the feature at the profile's edges",
            )
        per_bucket = [counts[name][b] for b in bounds]
        total = sum(per_bucket)
        exact = [(f, f) for f in reference.frequencies]
        if total <= 0:
            features.append({"feature": name, "samples": 0, "psi": None, "psiInterval": [0.0, None]})
            safe = False
            continue
        low = divergence_lower_bound(exact, [proportion_interval(c, total, alpha=alpha) for c in per_bucket],
                                     measure="psi")  # fmt: skip
        high = divergence_upper_bound(
            exact, [proportion_interval(c, total, alpha=beta) for c in per_bucket], measure="psi",
            floor=EMPTY_BUCKET_SHARE,
        )  # fmt: skip
        psi = population_stability_index(baseline=reference.frequencies, candidate=per_bucket)
        verdict = Result.FAILED if low > test.max_psi else Result.SUCCESSFUL
        safe = safe and high <= test.max_psi
        if verdict is Result.FAILED:
            failing.append((low, name))
        features.append(
            {
                "feature": name,
                "samples": _rounded(total, 3),
                "psi": _rounded(psi, 4),
                "psiInterval": [_rounded(low, 4), _rounded(high, 4)],
                "verdict": verdict.value,
            }
        )
    worst = max(features, key=lambda f: f["psiInterval"][0] or 0.0)
    summary: JSON = {"test": "training-skew", "maxPSI": test.max_psi, "worstFeature": worst["feature"],
                     "features": features}  # fmt: skip
    samples = max((f["samples"] or 0.0) for f in features)
    candidate = Reading(version=versions.candidate, samples=samples)
    who = f"candidate {versions.candidate} inputs vs the training profile"
    if failing:
        detail = "; ".join(
            f"feature {name!r} PSI {next(f['psi'] for f in features if f['feature'] == name):.4f} (at least {low:.4f})"
            for low, name in sorted(failing, reverse=True)
        )
        reason = f"{who}: skew beyond tolerance {test.max_psi:g}: {detail}"
        judgement = Judgement(result=Result.FAILED, reason=reason)
    else:
        shown = "within tolerance shown" if safe else "no evidence of skew beyond tolerance"
        reason = (
            f"{who}: {shown} on {len(features)} features (largest PSI {worst['psi']}, feature {worst['feature']!r}; "
            f"tolerance {test.max_psi:g})"
        )
        judgement = Judgement(result=Result.SUCCESSFUL, reason=reason, safe=safe)
    return Look(judgement=judgement, baseline=Reading(version=versions.baseline), candidate=candidate, summary=summary)


_JUDGES: dict[type, Callable[[Any, Evidence, Budget, Versions], Look]] = {
    RateTest: _judge_rate_test,
    SlowRequestsTest: _judge_slow_requests,
    ImportantSlices: _judge_slices,
    PredictionDrift: _judge_drift,
    OfflineVsOnline: _judge_offline_online,
    TrainingSkew: _judge_skew,
}
"""Test type -> its judge."""
