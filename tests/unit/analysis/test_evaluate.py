"""Every comparison and limit rule of the pure evaluation."""

from __future__ import annotations

import math

import pytest

from controller.analysis.comparison import Comparison, Direction
from controller.analysis.evaluate import (
    Judgement,
    MetricState,
    Reading,
    Result,
    Tally,
    combine,
    judge,
    metric_state,
)
from controller.analysis.spec import MetricSpec, MinSamples, PrometheusSource
from controller.checks import InconclusivePolicy, Verdict


def metric(comparison: Comparison, **limits: object) -> MetricSpec:
    return MetricSpec(name="m", source=PrometheusSource(query="q"), comparison=comparison, **limits)  # type: ignore[arg-type]


def readings(candidate: float | None, baseline: float | None = None, **extra: object) -> dict[str, Reading]:
    return {
        "candidate": Reading(version="v2", value=candidate, **extra),  # type: ignore[arg-type]
        "baseline": Reading(version="v1", value=baseline, **extra),  # type: ignore[arg-type]
    }


HIGHER = Direction.HIGHER_IS_WORSE
LOWER = Direction.LOWER_IS_WORSE


@pytest.mark.parametrize(
    ("comparison", "candidate", "baseline", "result", "detail"),
    [
        (Comparison(max=0.05), 0.05, None, Result.SUCCESSFUL, "within bounds"),
        (Comparison(max=0.05), 0.08, None, Result.FAILED, "above max 0.05 by 0.03"),
        (Comparison(min=0.9), 0.9, None, Result.SUCCESSFUL, "within bounds"),
        (Comparison(min=0.9), 0.85, None, Result.FAILED, "below min 0.9 by 0.05"),
        (Comparison(direction=HIGHER, max_difference=0.01), 0.015, 0.01, Result.SUCCESSFUL, "within bounds"),
        (Comparison(direction=HIGHER, max_difference=0.01), 0.2, 0.01, Result.FAILED, "0.19 higher than the baseline"),
        (Comparison(direction=HIGHER, max_difference=0.01), 0.0, 0.5, Result.SUCCESSFUL, "within bounds"),
        (Comparison(direction=LOWER, max_difference=0.02), 0.94, 0.95, Result.SUCCESSFUL, "within bounds"),
        (Comparison(direction=LOWER, max_difference=0.02), 0.75, 0.95, Result.FAILED, "0.2 lower than the baseline"),
        (Comparison(direction=LOWER, max_difference=0.02), 0.99, 0.5, Result.SUCCESSFUL, "within bounds"),
        (Comparison(direction=HIGHER, max_ratio=1.2), 0.24, 0.2, Result.SUCCESSFUL, "within bounds"),
        (Comparison(direction=HIGHER, max_ratio=1.2), 0.5, 0.2, Result.FAILED, "2.5x worse than the baseline"),
        (Comparison(direction=LOWER, max_ratio=1.25), 80.0, 100.0, Result.SUCCESSFUL, "within bounds"),
        (Comparison(direction=LOWER, max_ratio=1.25), 50.0, 100.0, Result.FAILED, "2x worse than the baseline"),
        (Comparison(direction=HIGHER, max_ratio=1.2), 0.0, 0.0, Result.SUCCESSFUL, "within bounds"),
        (Comparison(direction=HIGHER, max_ratio=1.2), 0.1, 0.0, Result.FAILED, "infx worse than the baseline"),
        (Comparison(max=1.0, max_ratio=1.2), 1.5, 1.4, Result.FAILED, "above max 1 by 0.5"),
    ],
)
def test_one_measurement_is_judged_by_every_bound(
    comparison: Comparison, candidate: float, baseline: float | None, result: Result, detail: str
) -> None:
    judgement = judge(metric=metric(comparison), **readings(candidate, baseline))
    assert judgement.result == result
    assert detail in judgement.reason


def test_a_failure_names_both_values_and_the_bound() -> None:
    judgement = judge(metric=metric(Comparison(max_difference=0.01)), **readings(0.2, 0.01))
    assert judgement.reason == (
        "candidate v2 0.2 vs baseline v1 0.01: 0.19 higher than the baseline, more than maxDifference 0.01"
    )


@pytest.mark.parametrize("missing", [None, math.nan, math.inf])
def test_a_candidate_without_a_usable_value_is_inconclusive(missing: float | None) -> None:
    judgement = judge(metric=metric(Comparison(max=1.0)), **readings(missing, 0.1))
    assert judgement.result == Result.INCONCLUSIVE
    assert judgement.reason.startswith("candidate v2: no")


def test_a_missing_baseline_matters_only_to_relative_bounds() -> None:
    absolute = judge(metric=metric(Comparison(max=1.0)), **readings(0.5, None))
    relative = judge(metric=metric(Comparison(max_ratio=2.0)), **readings(0.5, None))
    assert absolute.result == Result.SUCCESSFUL
    assert relative.result == Result.INCONCLUSIVE and "baseline v1: no data" in relative.reason


def test_a_provider_error_is_an_error_and_keeps_whether_it_is_permanent() -> None:
    candidate = Reading(version="v2", error="bad_data: parse error", permanent=True)
    judgement = judge(metric=metric(Comparison(max=1.0)), candidate=candidate, baseline=Reading(version="v1"))
    assert judgement == Judgement(result=Result.ERROR, reason="candidate v2: bad_data: parse error", permanent=True)


def test_an_error_outranks_missing_data() -> None:
    judgement = judge(
        metric=metric(Comparison(max_ratio=2.0)),
        candidate=Reading(version="v2", value=None),
        baseline=Reading(version="v1", error="refused"),
    )
    assert judgement.result == Result.ERROR and judgement.reason == "baseline v1: refused"


@pytest.mark.parametrize(
    ("samples", "result"), [(None, Result.INCONCLUSIVE), (49.0, Result.INCONCLUSIVE), (50.0, Result.SUCCESSFUL)]
)
def test_too_few_samples_is_inconclusive_not_passing_nor_failing(samples: float | None, result: Result) -> None:
    spec = MetricSpec(
        name="m",
        source=PrometheusSource(query="q"),
        comparison=Comparison(max_difference=0.01),
        min_samples=MinSamples(count=50, query="n"),
    )
    judgement = judge(metric=spec, **readings(0.01, 0.01, samples=samples))
    assert judgement.result == result
    if result == Result.INCONCLUSIVE:
        assert "fewer than minSamples 50" in judgement.reason


# ---------------------------------------------------------------------------------------------
# Limits over the history


def history(*results: Result, permanent: bool = False) -> Tally:
    tally = Tally()
    for result in results:
        tally = tally.after(Judgement(result=result, reason=f"{result.value} reason", permanent=permanent))
    return tally


# Successful, Failed, iNconclusive, Error
S, F, N, E = Result.SUCCESSFUL, Result.FAILED, Result.INCONCLUSIVE, Result.ERROR


def state(tally: Tally, *, window_over: bool = False, **limits: object) -> MetricState:
    return metric_state(metric=metric(Comparison(max=1.0), **limits), tally=tally, window_over=window_over)


def test_failures_beyond_the_failure_limit_fail() -> None:
    assert state(history(S, F)).verdict == Verdict.FAILED
    assert state(history(F, S, F), failure_limit=1).verdict == Verdict.FAILED
    failed = state(history(F, S, F), failure_limit=1)
    assert failed.message == "m failed 2 time(s), more than failureLimit 1: Failed reason"


def test_a_failure_within_the_limit_holds_and_measures_again() -> None:
    within = state(history(S, F), failure_limit=1)
    assert within.verdict == Verdict.INCONCLUSIVE and not within.escalated
    assert state(history(F, S), failure_limit=1).verdict == Verdict.RUNNING


def test_errors_hold_until_more_than_the_consecutive_error_limit_then_escalate() -> None:
    assert state(history(E, E), consecutive_error_limit=2) == MetricState(
        verdict=Verdict.INCONCLUSIVE,
        message="m: Error reason (2 error(s) in a row, consecutiveErrorLimit 2)",
        escalated=False,
    )
    assert state(history(E, E, E), consecutive_error_limit=2).escalated


def test_a_passing_measurement_resets_the_error_streak() -> None:
    assert state(history(E, E, S, E), consecutive_error_limit=2).escalated is False
    assert state(history(E, E, E, S), consecutive_error_limit=2).verdict == Verdict.RUNNING


def test_a_permanent_error_escalates_at_once() -> None:
    permanent = state(history(E, permanent=True), consecutive_error_limit=10)
    assert permanent.escalated and "a configuration error, fix it" in permanent.message


def test_inconclusive_results_escalate_beyond_the_inconclusive_limit() -> None:
    assert state(history(N)).escalated  # default limit 0
    assert not state(history(N, N), inconclusive_limit=2).escalated
    assert state(history(N, N, N), inconclusive_limit=2).escalated
    assert not state(history(N, N, S, N), inconclusive_limit=2).escalated


def test_inconclusive_never_succeeds_even_when_the_window_is_over() -> None:
    assert state(history(S, N), window_over=True, inconclusive_limit=5).verdict == Verdict.INCONCLUSIVE
    assert state(Tally(), window_over=True).verdict == Verdict.INCONCLUSIVE


def test_a_passing_metric_succeeds_once_complete() -> None:
    assert state(Tally()).verdict == Verdict.RUNNING
    assert state(history(S)).verdict == Verdict.RUNNING
    assert state(history(S), window_over=True).verdict == Verdict.SUCCESSFUL
    assert state(history(S, S), count=3).verdict == Verdict.RUNNING
    complete = state(history(S, S, S), count=3)
    assert complete.verdict == Verdict.SUCCESSFUL and complete.complete


def test_the_tally_round_trips_through_status_json() -> None:
    tally = history(S, F, E, permanent=True)
    assert Tally.from_json(tally.to_json()) == tally


# ---------------------------------------------------------------------------------------------
# All metrics together


def ms(verdict: Verdict, name: str, *, escalated: bool = False) -> MetricState:
    return MetricState(verdict=verdict, message=name, escalated=escalated)


def test_any_failure_fails_the_analysis() -> None:
    overall = combine(
        [ms(Verdict.SUCCESSFUL, "a"), ms(Verdict.FAILED, "b"), ms(Verdict.INCONCLUSIVE, "c", escalated=True)],
        on_inconclusive=InconclusivePolicy.ROLLBACK,
    )
    assert (overall.verdict, overall.message) == (Verdict.FAILED, "b")


@pytest.mark.parametrize("policy", list(InconclusivePolicy))
def test_inconclusive_holds_within_limits_and_applies_the_policy_beyond(policy: InconclusivePolicy) -> None:
    within = combine([ms(Verdict.INCONCLUSIVE, "a"), ms(Verdict.SUCCESSFUL, "b")], on_inconclusive=policy)
    beyond = combine([ms(Verdict.INCONCLUSIVE, "a", escalated=True)], on_inconclusive=policy)
    assert (within.verdict, within.on_inconclusive) == (Verdict.INCONCLUSIVE, InconclusivePolicy.HOLD)
    assert (beyond.verdict, beyond.on_inconclusive) == (Verdict.INCONCLUSIVE, policy)


def test_success_needs_every_metric_successful() -> None:
    policy = InconclusivePolicy.HOLD
    assert combine([ms(Verdict.SUCCESSFUL, "a"), ms(Verdict.RUNNING, "b")], on_inconclusive=policy).verdict == (
        Verdict.RUNNING
    )
    both = combine([ms(Verdict.SUCCESSFUL, "a"), ms(Verdict.SUCCESSFUL, "b")], on_inconclusive=policy)
    assert (both.verdict, both.message) == (Verdict.SUCCESSFUL, "a; b")
