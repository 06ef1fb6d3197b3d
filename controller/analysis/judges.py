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
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from controller.analysis.comparison import Tolerance
from controller.analysis.evaluate import Judgement, Reading, Result
from controller.analysis.evidence import CountQuery, Evidence, Numbers, Segment, by_label
from controller.analysis.rows import Row, guardrail_rows, ratio_row, with_rows
from controller.analysis.sequential import (
    RatioSegment,
    pooled,
    proportion_interval,
    ratio_evidence,
    seconds_to_resolve,
    smallest_detectable_ratio,
    upper_rate_bound,
)
from controller.checks import ReadConfigMap
from controller.figures import figure, share
from controller.stats import HistogramMismatch

if TYPE_CHECKING:
    from controller.analysis.spec import GuardrailTest, RateTest, SlowRequestsTest

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


ReferenceLoader = Callable[[], object]
"""Parses what a check judges against, read from the cluster; raises a PermanentError when it is malformed."""


class SequentialTest(Protocol):
    """What a sequential metric is judged by, whatever it judges: the counts it reads per version
    and how all of them so far give the verdict of one look. The presets' and `counts` tests are
    in `spec`; each model-aware check is a plug-in of its own (controller.analysis.modelchecks)."""

    compares_baseline: ClassVar[bool]
    """Whether the baseline's counts are read too (a check against a declared value reads none)."""
    address_field: ClassVar[str]
    """The field of `address` under the metric, for errors: `provider.prometheus.address`."""

    @property
    def address(self) -> str | None:
        """The Prometheus its counts are read from; None for the controller's."""
        ...

    @property
    def tests(self) -> int:
        """How many tests share the metric's error budget."""
        ...

    @property
    def queries(self) -> tuple[CountQuery, ...]:
        """The counts read per version at each look."""
        ...

    def judge(self, evidence: Evidence, *, budget: Budget, versions: Versions) -> Look:
        """The verdict of one look at all the evidence so far; no I/O."""
        ...

    def read_reference(
        self, *, namespace: str, metric_field: str, read_configmap: ReadConfigMap | None
    ) -> ReferenceLoader | None:
        """What the test judges against besides the versions' counts (a training profile), read
        from the cluster: raises ReferenceProblem naming the field when the object is missing (the
        rollout waits for it), returns how to parse it (a malformed one fails the metric's look);
        None when it judges the counts alone."""
        ...


class JudgedOnCountsAlone:
    """A test that reads nothing from the cluster besides its counts."""

    def read_reference(
        self, *, namespace: str, metric_field: str, read_configmap: ReadConfigMap | None
    ) -> ReferenceLoader | None:
        return None


def judge_evidence(test: SequentialTest, evidence: Evidence, *, budget: Budget, versions: Versions) -> Look:
    """The verdict of one look at all the evidence of a metric."""
    return test.judge(evidence, budget=budget, versions=versions)


def rounded(value: float | None, digits: int = 6) -> float | None:
    return None if value is None or not math.isfinite(value) else round(value, digits)


def no_data(versions: Versions, missing: Sequence[str]) -> Look:
    return Look(
        judgement=Judgement(result=Result.INCONCLUSIVE, reason=f"no data for {', '.join(missing)}"),
        baseline=Reading(version=versions.baseline),
        candidate=Reading(version=versions.candidate),
    )


def missing_roles(latest: Segment | None, versions: Versions, present: Callable[[Numbers], bool]) -> list[str]:
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
class RateOutcome:
    harm: list[str]
    """Why the candidate is worse beyond tolerance (or a guardrail); empty when not shown."""
    safe: bool
    summary: JSON
    text: str
    """Both versions' values and the evidence, for people."""


def judge_rates(
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
) -> RateOutcome:
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
        return rounded(value(rate)) if trials > 0 else None

    harm: list[str] = []
    if evidence.harm >= 1 / alpha:
        harm.append(
            f"{noun} ratio {_ratio_estimate(candidate_rate, baseline_rate)} (interval {figure(evidence.low)}-"
            f"{figure(evidence.high)}) beyond tolerance {tolerance} (at most {null:.3g}x): "
            f"evidence {figure(evidence.harm)} >= {figure(1 / alpha)}"
        )
    safe = evidence.safety >= 1 / beta
    summary: JSON = {
        "candidate": {
            "samples": rounded(total.candidate_trials, 3),
            "events": rounded(total.candidate_events, 3),
            "value": shown(candidate_rate, total.candidate_trials),
        },
        "baseline": {
            "samples": rounded(total.baseline_trials, 3),
            "events": rounded(total.baseline_events, 3),
            "value": shown(baseline_rate, total.baseline_trials),
        },
        "ratio": rounded(candidate_rate / baseline_rate if baseline_rate > 0 else None, 4),
        "interval": [rounded(evidence.low, 4), rounded(evidence.high, 4)],
        "tolerance": str(tolerance),
        "nullRatio": rounded(null, 4),
        "eValue": rounded(evidence.harm, 4),
        "threshold": rounded(1 / alpha, 2),
        "safetyEValue": rounded(evidence.safety, 4),
        "safetyThreshold": rounded(1 / beta, 2),
    }
    summary.update(_power(segments, total=total, null=null, alpha=alpha, seconds=seconds))
    for bound, name in ((maximum, "max"), (minimum, "min")):
        if bound is None:
            continue
        low, high = _value_interval(total, alpha=alpha, bad_events=bad_events)
        summary[f"{name}Interval"] = [rounded(low), rounded(high)]
        if (low > bound) if name == "max" else (high < bound):
            harm.append(
                f"candidate {noun} {share(value(candidate_rate))} is beyond {name} {bound:g} "
                f"(interval {share(low)}-{share(high)})"
            )
        low, high = _value_interval(total, alpha=beta, bad_events=bad_events)
        safe = safe and ((high <= bound) if name == "max" else (low >= bound))
    text = (
        f"candidate {versions.candidate} {share(value(candidate_rate))} of {total.candidate_trials:.0f} vs "
        f"baseline {versions.baseline} {share(value(baseline_rate))} of {total.baseline_trials:.0f}"
    )
    return RateOutcome(harm=harm, safe=safe, summary=summary, text=text)


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
        return rounded(
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
        "smallestDetectableRatio": rounded(
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


def with_rate_rows(summary: JSON) -> JSON:
    """A rate's summary with its row for kubectl: both versions' rates, the ratio and its interval,
    the evidence; slow requests name their bound; then a row per guardrail."""
    threshold = summary.get("thresholdSeconds")
    about = f">{threshold:g}s" if isinstance(threshold, int | float) else ""
    return with_rows(summary, columns=ratio_row(summary, about=about), rows=guardrail_rows(summary))


def _rate_look(outcome: RateOutcome, *, versions: Versions, readings: tuple[Reading, Reading]) -> Look:
    if outcome.harm:
        judgement = Judgement(result=Result.FAILED, reason=f"{outcome.text}: {'; '.join(outcome.harm)}")
    else:
        summary = outcome.summary
        shown = "within tolerance shown" if outcome.safe else "no evidence of harm"
        reason = (
            f"{outcome.text}: {shown} (evidence {figure(summary['eValue'] or 0.0)} of {figure(summary['threshold'])}"
            f" needed; detectable so far: {figure(summary['smallestDetectableRatio'] or math.inf)}x)"
        )
        judgement = Judgement(result=Result.SUCCESSFUL, reason=reason, safe=outcome.safe)
    baseline, candidate = readings
    return Look(judgement=judgement, baseline=baseline, candidate=candidate, summary=outcome.summary)


def readings_of(summary: JSON, versions: Versions) -> tuple[Reading, Reading]:
    return (
        Reading(version=versions.baseline, value=summary["baseline"]["value"], samples=summary["baseline"]["samples"]),
        Reading(
            version=versions.candidate, value=summary["candidate"]["value"], samples=summary["candidate"]["samples"]
        ),
    )


def not_yet(versions: Versions, why: str) -> Look:
    """Series exist but hold nothing to judge yet: hold, as with no data."""
    return Look(
        judgement=Judgement(result=Result.INCONCLUSIVE, reason=f"candidate {versions.candidate} vs baseline "
                            f"{versions.baseline}: {why}"),
        baseline=Reading(version=versions.baseline),
        candidate=Reading(version=versions.candidate, samples=0),
    )  # fmt: skip


def below_floor(versions: Versions, *, have: float, need: float, what: str) -> Look:
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


def judge_rate_test(test: RateTest, evidence: Evidence, budget: Budget, versions: Versions) -> Look:
    latest = evidence.segments[-1] if evidence.segments else None
    missing = missing_roles(latest, versions, lambda numbers: "trials" in numbers)
    if missing:
        return no_data(versions, missing)
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
    outcome = judge_rates(
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
    summary = with_rate_rows({"test": "rate", **outcome.summary})
    candidate_trials = pooled(segments).candidate_trials
    if candidate_trials <= 0:
        return not_yet(versions, "no samples of the candidate since the step began")
    if test.min_trials is not None and candidate_trials < test.min_trials and not outcome.harm:
        return below_floor(versions, have=candidate_trials, need=test.min_trials, what="samples (minSamples.count)")
    return _rate_look(
        RateOutcome(harm=outcome.harm, safe=outcome.safe, summary=summary, text=outcome.text),
        versions=versions,
        readings=readings_of(outcome.summary, versions),
    )


def judge_guardrails(test: GuardrailTest, evidence: Evidence, budget: Budget, versions: Versions) -> Look:
    """The promoted version alone, after its promotion (no baseline serves): fails once the
    confidence sequence of its events per trial lies beyond a guardrail (max or min). The budget
    is split between the guardrails; each sequence holds the true value at every look with
    probability 1 - its share, so a version within its guardrails is failed with at most the
    budget's chance, however often it is looked at."""
    rate = test.rate
    latest = evidence.segments[-1] if evidence.segments else None
    if latest is None or "trials" not in latest.candidate:
        return no_data(versions, [f"version {versions.candidate}"])
    counted = [
        (min(max(s.candidate.get("events", 0.0), 0.0), trials), trials)
        for s in evidence.segments
        for trials in (max(s.candidate.get("trials", 0.0), 0.0),)
    ]
    events, trials = sum(e for e, _ in counted), sum(t for _, t in counted)
    if trials <= 0:
        return not_yet(versions, "no samples of it since the promotion")
    bad = events if rate.events_are_bad else trials - events
    total = RatioSegment(candidate_events=bad, candidate_trials=trials, baseline_events=0.0, baseline_trials=0.0)
    alpha = budget.false_rollback / test.tests
    value = events / trials
    shown = f"{versions.candidate} {share(value)} of {trials:.0f}"
    summary: JSON = {
        "test": "guardrail",
        "candidate": {"samples": rounded(trials, 3), "events": rounded(events, 3), "value": rounded(value)},
        "threshold": rounded(1 / alpha, 2),
    }
    broken: list[str] = []
    low, high = _value_interval(total, alpha=alpha, bad_events=rate.events_are_bad)
    for bound, name in ((rate.max, "max"), (rate.min, "min")):
        if bound is None:
            continue
        summary[f"{name}Interval"] = [rounded(low), rounded(high)]
        if (low > bound) if name == "max" else (high < bound):
            broken.append(f"{share(value)} is beyond {name} {bound:g} (interval {share(low)}-{share(high)})")
    summary = with_rows(summary, columns=Row(candidate=shown), rows=guardrail_rows(summary))
    if rate.min_trials is not None and trials < rate.min_trials and not broken:
        return below_floor(versions, have=trials, need=rate.min_trials, what="samples (minSamples.count)")
    if broken:
        judgement = Judgement(result=Result.FAILED, reason=f"{shown}: {'; '.join(broken)}")
    else:
        judgement = Judgement(result=Result.SUCCESSFUL, reason=f"{shown}: within its guardrails")
    candidate = Reading(version=versions.candidate, value=rounded(value), samples=rounded(trials, 3))
    return Look(judgement=judgement, baseline=Reading(version=versions.baseline), candidate=candidate, summary=summary)


# ---------------------------------------------------------------------------------------------
# Slow requests


def cumulative_buckets(numbers: Numbers, query: str = "bucket") -> dict[float, float]:
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


def _slow_and_total(buckets: Mapping[float, float], threshold: float) -> tuple[float, float]:
    total = max(buckets.values(), default=0.0)
    within = buckets.get(threshold)
    if within is None:
        raise HistogramMismatch(f"no bucket at the slow-request bound le={threshold:g}")
    return max(total - within, 0.0), max(total, 0.0)


def judge_slow_requests(test: SlowRequestsTest, evidence: Evidence, budget: Budget, versions: Versions) -> Look:
    latest = evidence.segments[-1] if evidence.segments else None
    missing = missing_roles(latest, versions, lambda numbers: bool(by_label(numbers, "bucket")))
    if missing:
        return no_data(versions, missing)
    if evidence.threshold is None:
        return not_yet(
            versions,
            f"no baseline request in the last {test.lookback_seconds / 3600:g}h to set the slow-request bound from",
        )
    assert latest is not None
    threshold = evidence.threshold
    try:
        segments = []
        for s in evidence.segments:
            candidate_slow, candidate_total = _slow_and_total(test.buckets(s.candidate), threshold)
            baseline_slow, baseline_total = _slow_and_total(test.buckets(s.baseline), threshold)
            segments.append(
                RatioSegment(
                    candidate_events=candidate_slow,
                    candidate_trials=candidate_total,
                    baseline_events=baseline_slow,
                    baseline_trials=baseline_total,
                )
            )
    except HistogramMismatch as error:
        return mismatch(versions, f"latency histograms cannot be compared: {error}")
    outcome = judge_rates(
        segments,
        tolerance=test.tolerance,
        budget=budget,
        seconds=latest.seconds,
        versions=versions,
        noun=f"share slower than {threshold:g}s (the baseline's p{test.quantile * 100:g})",
    )
    summary = with_rate_rows({"test": "slow-requests", "thresholdSeconds": threshold, **outcome.summary})
    return _rate_look(
        RateOutcome(harm=outcome.harm, safe=outcome.safe, summary=summary, text=outcome.text),
        versions=versions,
        readings=readings_of(outcome.summary, versions),
    )


def mismatch(versions: Versions, reason: str) -> Look:
    """Counts that cannot be compared however long we wait: a configuration error."""
    return Look(
        judgement=Judgement(result=Result.ERROR, reason=reason, permanent=True),
        baseline=Reading(version=versions.baseline),
        candidate=Reading(version=versions.candidate),
    )
