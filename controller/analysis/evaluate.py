"""The pure judgement: one measurement, a metric's measurement history, all metrics together.

No I/O and no clock. Readings come in as values; verdicts and messages for people come out.

The rules (docs/analysis.md explains them for users):

* a measurement is Error when a provider failed, Inconclusive when a value is missing (no data,
  NaN) or rests on fewer samples than `minSamples`, else Failed or Successful by the comparison;
* a metric Fails once its failed measurements exceed `failureLimit`;
* while its latest measurement is not Successful it is Inconclusive: within its limit
  (`consecutiveErrorLimit` errors or `inconclusiveLimit` inconclusive results in a row, or a
  failure within `failureLimit`) the rollout holds and measures again; beyond it (or at once for a
  permanent error such as a PromQL syntax error) `onInconclusive` applies;
* a metric whose latest measurement passed is Successful once complete (`count` measurements, or
  the analyze step's window is over), else Running. Inconclusive never becomes Successful.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from controller.analysis.comparison import Comparison, Direction
from controller.checks import InconclusivePolicy, Verdict

if TYPE_CHECKING:
    from controller.analysis.spec import MeasuredSpec, MetricSpec


class Result(StrEnum):
    """The verdict of one measurement."""

    SUCCESSFUL = "Successful"
    FAILED = "Failed"
    INCONCLUSIVE = "Inconclusive"
    """A value is missing or rests on too few samples."""
    ERROR = "Error"
    """A provider could not answer."""


@dataclass(frozen=True, kw_only=True)
class Reading:
    """What the queries for one version gave."""

    version: str
    value: float | None = None
    """None: the query returned no data."""
    samples: float | None = None
    """Result of the minSamples query; None when not configured or no data."""
    error: str | None = None
    """Why the provider could not answer; set instead of a value."""
    permanent: bool = False
    """The error is in the configuration (e.g. a PromQL syntax error): retrying cannot help."""


@dataclass(frozen=True, kw_only=True)
class Judgement:
    result: Result
    reason: str
    """For people: the values compared and by how much a bound was missed or kept."""
    permanent: bool = False
    safe: bool = False
    """A sequential test showed the candidate within tolerance (what evidenceOfSafety waits for)."""


def _number(value: float) -> str:
    return f"{value:.4g}"


def _missing(reading: Reading, role: str, metric: MetricSpec) -> Judgement | None:
    """Why this reading cannot be judged (Error or Inconclusive), or None when it can."""
    who = f"{role} {reading.version}"
    if reading.error is not None:
        return Judgement(result=Result.ERROR, reason=f"{who}: {reading.error}", permanent=reading.permanent)
    if reading.value is None or not math.isfinite(reading.value):
        shown = "no data" if reading.value is None else f"no usable value ({reading.value})"
        return Judgement(result=Result.INCONCLUSIVE, reason=f"{who}: {shown}")
    if metric.min_samples is not None:
        needed = metric.min_samples.count
        if reading.samples is None or not math.isfinite(reading.samples) or reading.samples < needed:
            have = "no" if reading.samples is None else _number(reading.samples)
            return Judgement(
                result=Result.INCONCLUSIVE,
                reason=f"{who}: {have} samples in the window, fewer than minSamples {_number(needed)}",
            )
    return None


def _ratio_worse(candidate: float, baseline: float, direction: Direction) -> float:
    """How many times worse the candidate is (1.0 = the same); values are taken as non-negative."""
    numerator, denominator = (candidate, baseline) if direction == Direction.HIGHER_IS_WORSE else (baseline, candidate)
    if denominator == 0:
        return 1.0 if numerator == 0 else math.inf
    return numerator / denominator


def bound_violations(*, comparison: Comparison, candidate: float, baseline: float | None) -> list[str]:
    """Each bound the candidate value misses, with by how much; empty when all hold."""
    missed = []
    if comparison.max is not None and candidate > comparison.max:
        missed.append(f"above max {_number(comparison.max)} by {_number(candidate - comparison.max)}")
    if comparison.min is not None and candidate < comparison.min:
        missed.append(f"below min {_number(comparison.min)} by {_number(comparison.min - candidate)}")
    if baseline is not None:
        higher_is_worse = comparison.direction == Direction.HIGHER_IS_WORSE
        worse_by = candidate - baseline if higher_is_worse else baseline - candidate
        if comparison.max_difference is not None and worse_by > comparison.max_difference:
            side = "higher" if higher_is_worse else "lower"
            missed.append(
                f"{_number(worse_by)} {side} than the baseline, more than maxDifference "
                f"{_number(comparison.max_difference)}"
            )
        ratio = _ratio_worse(candidate, baseline, comparison.direction)
        if comparison.max_ratio is not None and ratio > comparison.max_ratio:
            missed.append(
                f"{_number(ratio)}x worse than the baseline, more than maxRatio {_number(comparison.max_ratio)}"
            )
    return missed


def judge(*, metric: MetricSpec, baseline: Reading, candidate: Reading) -> Judgement:
    """The verdict of one measurement of `metric`."""
    relative = metric.comparison.is_relative
    readings = [(candidate, "candidate"), *([(baseline, "baseline")] if relative else [])]
    problems = [p for p in (_missing(reading, role, metric) for reading, role in readings) if p is not None]
    # An error outranks missing data: it is the one that may need a person.
    for result in (Result.ERROR, Result.INCONCLUSIVE):
        same = [p for p in problems if p.result == result]
        if same:
            return Judgement(
                result=result,
                reason="; ".join(p.reason for p in same),
                permanent=any(p.permanent for p in same),
            )
    assert candidate.value is not None
    compared = f"candidate {candidate.version} {_number(candidate.value)}"
    if baseline.value is not None and math.isfinite(baseline.value):
        compared += f" vs baseline {baseline.version} {_number(baseline.value)}"
    missed = bound_violations(
        comparison=metric.comparison, candidate=candidate.value, baseline=baseline.value if relative else None
    )
    if missed:
        return Judgement(result=Result.FAILED, reason=f"{compared}: {'; '.join(missed)}")
    return Judgement(result=Result.SUCCESSFUL, reason=f"{compared}: within bounds")


# ---------------------------------------------------------------------------------------------
# A metric's history


@dataclass(frozen=True, kw_only=True)
class Tally:
    """What a metric's measurements in one analysis run add up to; kept in status."""

    measurements: int = 0
    failed: int = 0
    consecutive_errors: int = 0
    consecutive_inconclusive: int = 0
    last_result: Result | None = None
    last_reason: str = ""
    last_permanent: bool = False
    """The latest measurement hit an error retrying cannot fix."""
    last_safe: bool = False
    """The latest measurement showed the candidate within tolerance."""

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "measurements": self.measurements,
            "failed": self.failed,
            "consecutiveErrors": self.consecutive_errors,
            "consecutiveInconclusive": self.consecutive_inconclusive,
            "lastReason": self.last_reason,
            "lastPermanent": self.last_permanent,
            "lastSafe": self.last_safe,
        }
        if self.last_result is not None:
            body["lastResult"] = self.last_result.value
        return body

    @staticmethod
    def from_json(raw: Mapping[str, Any]) -> Tally:
        result = raw.get("lastResult")
        return Tally(
            measurements=int(raw.get("measurements", 0)),
            failed=int(raw.get("failed", 0)),
            consecutive_errors=int(raw.get("consecutiveErrors", 0)),
            consecutive_inconclusive=int(raw.get("consecutiveInconclusive", 0)),
            last_result=Result(result) if isinstance(result, str) and result in Result._value2member_map_ else None,
            last_reason=str(raw.get("lastReason", "")),
            last_permanent=bool(raw.get("lastPermanent", False)),
            last_safe=bool(raw.get("lastSafe", False)),
        )

    def after(self, judgement: Judgement) -> Tally:
        """The tally once `judgement` is added."""
        result = judgement.result
        return replace(
            self,
            measurements=self.measurements + 1,
            failed=self.failed + (result == Result.FAILED),
            consecutive_errors=self.consecutive_errors + 1 if result == Result.ERROR else 0,
            consecutive_inconclusive=self.consecutive_inconclusive + 1 if result == Result.INCONCLUSIVE else 0,
            last_result=result,
            last_reason=judgement.reason,
            last_permanent=judgement.permanent,
            last_safe=judgement.safe,
        )


@dataclass(frozen=True, kw_only=True)
class MetricState:
    verdict: Verdict
    message: str
    escalated: bool = False
    """An Inconclusive beyond its limit: onInconclusive applies (otherwise the rollout holds)."""
    complete: bool = False
    """Passed and needs no further measurement."""


def metric_state(
    *, metric: MeasuredSpec, tally: Tally, window_over: bool, needs_safety: bool = False, extension_over: bool = False
) -> MetricState:
    """Where one metric stands after its measurements so far.

    `needs_safety` (promoteWhen: evidenceOfSafety): a passing metric is complete only once its
    latest look showed the candidate within tolerance; past the window it keeps measuring until
    `extension_over` (maxDuration), then it is Inconclusive beyond its limit."""
    name = metric.name
    if tally.failed > metric.failure_limit:
        return MetricState(
            verdict=Verdict.FAILED,
            message=f"{name} failed {tally.failed} time(s), more than failureLimit {metric.failure_limit}: "
            f"{tally.last_reason}",
        )
    last = tally.last_result
    if last is None:
        if window_over:
            return MetricState(verdict=Verdict.INCONCLUSIVE, message=f"{name}: no measurement yet")
        return MetricState(verdict=Verdict.RUNNING, message=f"{name}: first measurement pending")
    if last == Result.ERROR:
        escalated = tally.last_permanent or tally.consecutive_errors > metric.consecutive_error_limit
        detail = (
            "a configuration error, fix it"
            if tally.last_permanent
            else f"{tally.consecutive_errors} error(s) in a row, consecutiveErrorLimit {metric.consecutive_error_limit}"
        )
        return MetricState(
            verdict=Verdict.INCONCLUSIVE,
            message=f"{name}: {tally.last_reason} ({detail})",
            escalated=escalated,
        )
    if last == Result.INCONCLUSIVE:
        return MetricState(
            verdict=Verdict.INCONCLUSIVE,
            message=f"{name}: {tally.last_reason} ({tally.consecutive_inconclusive} in a row, "
            f"inconclusiveLimit {metric.inconclusive_limit})",
            escalated=tally.consecutive_inconclusive > metric.inconclusive_limit,
        )
    if last == Result.FAILED:
        return MetricState(
            verdict=Verdict.INCONCLUSIVE,
            message=f"{name}: {tally.last_reason} (failure {tally.failed} of failureLimit "
            f"{metric.failure_limit} tolerated; measuring again)",
        )
    complete = window_over or (metric.count is not None and tally.measurements >= metric.count)
    if complete and needs_safety and not tally.last_safe:
        if extension_over:
            return MetricState(
                verdict=Verdict.INCONCLUSIVE,
                message=f"{name}: not shown within tolerance by maxDuration: {tally.last_reason}",
                escalated=True,
            )
        return MetricState(
            verdict=Verdict.RUNNING, message=f"{name}: waiting for evidence of safety: {tally.last_reason}"
        )
    return MetricState(
        verdict=Verdict.SUCCESSFUL if complete else Verdict.RUNNING,
        message=f"{name}: {tally.last_reason}",
        complete=complete,
    )


@dataclass(frozen=True, kw_only=True)
class Overall:
    verdict: Verdict
    message: str
    on_inconclusive: InconclusivePolicy


def combine(states: Sequence[MetricState], *, on_inconclusive: InconclusivePolicy) -> Overall:
    """All metrics together: any failure fails, any Inconclusive holds (or applies the policy once
    beyond its limit), any Running keeps going, and only all Successful succeeds."""
    for verdict in (Verdict.FAILED, Verdict.INCONCLUSIVE, Verdict.RUNNING):
        same = [s for s in states if s.verdict == verdict]
        if same:
            escalated = any(s.escalated for s in same)
            return Overall(
                verdict=verdict,
                message="; ".join(s.message for s in same),
                on_inconclusive=on_inconclusive if escalated else InconclusivePolicy.HOLD,
            )
    return Overall(
        verdict=Verdict.SUCCESSFUL,
        message="; ".join(s.message for s in states),
        on_inconclusive=InconclusivePolicy.HOLD,
    )
