"""The analysis checker: when it measures, what it keeps in status, how it resumes after a restart.

Providers here are in-memory stand-ins answering by rendered query; the real ones are tested
against real Prometheus in tests/integration/test_prometheus_provider.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client import REGISTRY

from controller.analysis.checker import AnalysisChecker
from controller.analysis.providers import ProviderUnavailable
from controller.analysis.spec import MetricSource, PrometheusSource
from controller.api import ModelRolloutStatus, SpecError, parse_spec
from controller.checks import CheckContext, CheckOutcome, InconclusivePolicy, StepWindow, Verdict
from controller.errors import ReferenceProblem

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
ERRORS = {
    "name": "errors",
    "provider": {"prometheus": {"query": "err{{version}}"}},
    "comparison": {"maxDifference": 0.01},
}


class Answers:
    """Answers queries from a table: a number, None (no data) or an exception to raise."""

    def __init__(self, table: Mapping[str, float | Exception | None]) -> None:
        self.table = dict(table)
        self.asked: list[str] = []

    def measure(self, *, source: MetricSource, namespace: str) -> float | None:
        assert isinstance(source, PrometheusSource)
        self.asked.append(source.query)
        answer = self.table[source.query]
        if isinstance(answer, Exception):
            raise answer
        return answer


def checker(answers: Answers, templates: Mapping[str, Any] | None = None) -> AnalysisChecker:
    def lookup(*, namespace: str, name: str) -> Mapping[str, Any] | None:
        return (templates or {}).get(name)

    return AnalysisChecker(providers={"prometheus": answers}, template_lookup=lookup)


def context(
    analysis: Mapping[str, Any],
    *,
    now: datetime,
    status: ModelRolloutStatus | None = None,
    step: StepWindow | None = None,
    step_index: int = 0,
    candidate: str = "v2",
) -> CheckContext:
    spec = parse_spec(
        {
            "model": "iris",
            "versions": [{"version": v, "backend": {"service": f"iris-{v}", "port": 8080}} for v in ("v1", "v2", "v3")],
            "baseline": "v1",
            "candidate": candidate,
            "trafficRouting": {"gatewayAPI": {"httpRoute": "iris"}},
            # The checker reads the analyze step from `step`; a pause keeps parse_spec accepting
            # analysis sections that have nothing to measure.
            "steps": [{"setWeight": 20}, {"pause": {"duration": "1m"}}, {"setWeight": 50}],
            "analysis": dict(analysis),
        }
    )
    base = status or ModelRolloutStatus()
    return CheckContext(
        namespace="ml",
        name="iris",
        spec=spec,
        status=ModelRolloutStatus(current_step_index=step_index, extra=base.extra),
        stable_version="v1",
        now=now,
        current_weight=20,
        step=step,
    )


def analyze_step(seconds: float = 60) -> StepWindow:
    return StepWindow(index=1, started_at=T0, seconds=seconds)


def then(outcome: CheckOutcome | None) -> ModelRolloutStatus:
    """The status the planner would store after `outcome`."""
    assert outcome is not None
    return ModelRolloutStatus(extra=outcome.status_fields)


GOOD = {"errv1": 0.01, "errv2": 0.012}
BAD = {"errv1": 0.01, "errv2": 0.2}


def test_no_outcome_without_an_analyze_step_or_background_analysis() -> None:
    answers = Answers(GOOD)
    assert checker(answers)(context=context({}, now=T0)) is None
    assert checker(answers)(context=context({"metrics": [ERRORS]}, now=T0)) is None
    assert checker(answers)(context=context({"metrics": [ERRORS], "startingStep": 2}, now=T0, step_index=1)) is None
    assert answers.asked == []


def test_the_first_measurement_waits_one_interval_so_the_window_holds_only_this_step() -> None:
    answers = Answers(GOOD)
    outcome = checker(answers)(
        context=context({"interval": "30s", "metrics": [ERRORS]}, now=T0 + timedelta(seconds=10), step=analyze_step())
    )
    assert outcome is not None
    assert (outcome.verdict, outcome.requeue_after) == (Verdict.RUNNING, 20)
    assert answers.asked == []


def test_an_analyze_step_measures_each_interval_and_succeeds_when_its_window_is_over() -> None:
    answers = Answers(GOOD)
    run = checker(answers)
    analysis = {"interval": "30s", "metrics": [ERRORS]}
    first = run(context=context(analysis, now=T0 + timedelta(seconds=30), step=analyze_step()))
    assert first is not None and first.verdict == Verdict.RUNNING and first.requeue_after == 30
    assert answers.asked == ["errv2", "errv1"]
    second = run(context=context(analysis, now=T0 + timedelta(seconds=60), status=then(first), step=analyze_step()))
    assert second is not None
    assert second.verdict == Verdict.SUCCESSFUL
    assert second.message == "errors: candidate v2 0.012 vs baseline v1 0.01: within bounds"
    assert second.requeue_after is None


def test_the_last_look_of_an_analyze_step_is_at_its_end_so_its_last_interval_counts() -> None:
    # Given a 45 s analyze step measured every 30 s
    answers = Answers(GOOD)
    run = checker(answers)
    analysis = {"interval": "30s", "metrics": [ERRORS]}
    first = run(context=context(analysis, now=T0 + timedelta(seconds=30), step=analyze_step(45)))
    # Then after the first look the next one is due at the window's end, not 30 s later
    assert first is not None and first.verdict == Verdict.RUNNING and first.requeue_after == 15
    # and at the window's end the step is measured once more before it succeeds
    last = run(context=context(analysis, now=T0 + timedelta(seconds=45), status=then(first), step=analyze_step(45)))
    assert last is not None and last.verdict == Verdict.SUCCESSFUL
    assert answers.asked == ["errv2", "errv1"] * 2


def test_status_records_each_measurement_and_the_run() -> None:
    outcome = checker(Answers(BAD))(
        context=context({"interval": "30s", "metrics": [ERRORS]}, now=T0 + timedelta(seconds=30), step=analyze_step())
    )
    assert outcome is not None and outcome.verdict == Verdict.FAILED
    status = outcome.status_fields["analysis"]
    assert status["verdict"] == "Failed"
    assert status["measurements"] == [
        {
            "run": "step-1",
            "metric": "errors",
            "baselineVersion": "v1",
            "baselineValue": 0.01,
            "candidateVersion": "v2",
            "candidateValue": 0.2,
            "verdict": "Failed",
            "time": "2024-05-01T12:00:30.000Z",
            "reason": "candidate v2 0.2 vs baseline v1 0.01: "
            "0.19 higher than the baseline, more than maxDifference 0.01",
        }
    ]
    assert status["runs"] == [
        {
            "name": "step-1",
            "startedAt": "2024-05-01T12:00:00.000Z",
            "lastMeasuredAt": "2024-05-01T12:00:30.000Z",
            "metrics": [
                {
                    "metric": "errors",
                    "measurements": 1,
                    "failed": 1,
                    "consecutiveErrors": 0,
                    "consecutiveInconclusive": 0,
                    "lastResult": "Failed",
                    "lastReason": status["measurements"][0]["reason"],
                    "lastPermanent": False,
                    "lastSafe": False,
                }
            ],
        }
    ]
    assert outcome.message.startswith("errors failed 1 time(s), more than failureLimit 0: candidate v2 0.2")


def test_a_restarted_controller_resumes_from_status_without_measuring_early() -> None:
    analysis = {"interval": "30s", "metrics": [ERRORS]}
    before_restart = checker(Answers(GOOD))(
        context=context(analysis, now=T0 + timedelta(seconds=30), step=analyze_step())
    )
    fresh_answers = Answers(GOOD)
    after_restart = checker(fresh_answers)(
        context=context(analysis, now=T0 + timedelta(seconds=45), status=then(before_restart), step=analyze_step())
    )
    assert after_restart is not None
    assert fresh_answers.asked == []
    assert after_restart.requeue_after == 15
    assert after_restart.status_fields == {**then(before_restart).extra}


def test_measurements_are_bounded_to_the_history_limit() -> None:
    analysis = {"interval": "1s", "measurementHistoryLimit": 3, "startingStep": 0, "metrics": [ERRORS]}
    run = checker(Answers(GOOD))
    status = None
    for second in range(1, 6):
        outcome = run(context=context(analysis, now=T0 + timedelta(seconds=second), status=status))
        status = then(outcome)
    assert status is not None
    times = [m["time"] for m in status.extra["analysis"]["measurements"]]
    assert times == ["2024-05-01T12:00:03.000Z", "2024-05-01T12:00:04.000Z", "2024-05-01T12:00:05.000Z"]
    assert status.extra["analysis"]["runs"][0]["metrics"][0]["measurements"] == 4


def test_background_analysis_keeps_running_until_count_is_reached() -> None:
    analysis = {"interval": "10s", "startingStep": 0, "metrics": [{**ERRORS, "count": 2}]}
    run = checker(Answers(GOOD))
    started = run(context=context(analysis, now=T0))
    assert started is not None and started.verdict == Verdict.RUNNING and started.requeue_after == 10
    first = run(context=context(analysis, now=T0 + timedelta(seconds=10), status=then(started)))
    assert first is not None and first.verdict == Verdict.RUNNING
    second = run(context=context(analysis, now=T0 + timedelta(seconds=20), status=then(first), step_index=2))
    assert second is not None
    assert second.verdict == Verdict.SUCCESSFUL and second.requeue_after is None


def test_provider_errors_hold_then_apply_the_policy_beyond_the_limit() -> None:
    analysis = {
        "interval": "10s",
        "onInconclusive": "rollback",
        "startingStep": 0,
        "metrics": [{**ERRORS, "consecutiveErrorLimit": 1}],
    }
    down = Answers({"errv1": ProviderUnavailable("refused"), "errv2": ProviderUnavailable("refused")})
    run = checker(down)
    status = then(run(context=context(analysis, now=T0)))
    first = run(context=context(analysis, now=T0 + timedelta(seconds=10), status=status))
    assert first is not None
    assert (first.verdict, first.on_inconclusive) == (Verdict.INCONCLUSIVE, InconclusivePolicy.HOLD)
    second = run(context=context(analysis, now=T0 + timedelta(seconds=20), status=then(first)))
    assert second is not None
    assert (second.verdict, second.on_inconclusive) == (Verdict.INCONCLUSIVE, InconclusivePolicy.ROLLBACK)
    assert second.message == (
        "errors: candidate v2: refused; baseline v1: refused (2 error(s) in a row, consecutiveErrorLimit 1)"
    )
    assert second.status_fields["analysis"]["measurements"][-1]["verdict"] == "Error"


def test_the_analyze_step_run_starts_fresh_and_background_runs_resume_after_it() -> None:
    analysis = {"interval": "10s", "startingStep": 0, "metrics": [ERRORS]}
    answers = Answers(GOOD)
    run = checker(answers)
    background = run(context=context(analysis, now=T0 - timedelta(seconds=30)))
    background = run(context=context(analysis, now=T0 - timedelta(seconds=20), status=then(background)))
    in_step = run(
        context=context(analysis, now=T0 + timedelta(seconds=5), status=then(background), step=analyze_step())
    )
    assert in_step is not None
    runs = {r["name"]: r for r in in_step.status_fields["analysis"]["runs"]}
    assert set(runs) == {"background", "step-1"}
    assert runs["step-1"]["metrics"] == []
    assert runs["background"]["metrics"][0]["measurements"] == 1


def test_templates_add_their_metrics() -> None:
    templates = {
        "latency": {
            "metrics": [
                {
                    "name": "p99",
                    "provider": {"prometheus": {"query": "lat{{version}}"}},
                    "comparison": {"maxRatio": 1.2},
                }
            ]
        }
    }
    answers = Answers({**GOOD, "latv1": 0.2, "latv2": 0.5})
    outcome = checker(answers, templates)(
        context=context(
            {"metrics": [ERRORS], "interval": "10s"},
            now=T0 + timedelta(seconds=10),
            step=StepWindow(index=1, started_at=T0, seconds=60, templates=("latency",)),
        )
    )
    assert outcome is not None and outcome.verdict == Verdict.FAILED
    assert outcome.message.startswith("p99 failed 1 time(s)") and "2.5x worse than the baseline" in outcome.message


def test_a_missing_template_is_a_reference_problem_and_an_analyze_step_without_metrics_a_spec_error() -> None:
    with pytest.raises(ReferenceProblem, match="AnalysisTemplate 'nope' does not exist in namespace ml"):
        checker(Answers({}))(context=context({"templates": [{"name": "nope"}]}, now=T0, step=analyze_step()))
    empty = checker(Answers({}), templates={"empty": {"metrics": []}})
    with pytest.raises(SpecError, match="has no metrics to measure"):
        empty(context=context({"templates": [{"name": "empty"}]}, now=T0, step=analyze_step()))


def test_a_new_candidate_starts_with_empty_analysis_status() -> None:
    analysis = {"interval": "10s", "metrics": [ERRORS]}
    answers = Answers({**BAD, "errv3": 0.01})
    failed = checker(answers)(context=context(analysis, now=T0 + timedelta(seconds=10), step=analyze_step()))
    again = checker(answers)(
        context=context(
            analysis, now=T0 + timedelta(seconds=10), status=then(failed), step=analyze_step(), candidate="v3"
        )
    )
    assert again is not None and again.verdict == Verdict.RUNNING
    assert [m["candidateVersion"] for m in again.status_fields["analysis"]["measurements"]] == ["v3"]


def test_measured_values_are_exported_per_version() -> None:
    checker(Answers(BAD))(
        context=context({"interval": "10s", "metrics": [ERRORS]}, now=T0 + timedelta(seconds=10), step=analyze_step())
    )
    labels = {"namespace": "ml", "rollout": "iris", "metric": "errors"}
    assert REGISTRY.get_sample_value("model_rollouts_measurement_value", {**labels, "version": "v2"}) == 0.2
    assert REGISTRY.get_sample_value("model_rollouts_measurement_value", {**labels, "version": "v1"}) == 0.01


class LatencyBuckets:
    """Answers the latency histogram per version; the baseline's hour holds `baseline_hour` requests."""

    def __init__(self) -> None:
        self.baseline_hour = 100.0
        self.lookbacks = 0

    def measure(self, *, source: MetricSource, namespace: str) -> float | None:
        raise AssertionError("latency reads buckets only")

    def measure_by(self, *, source: PrometheusSource, label: str) -> dict[str, float]:
        if "[3600s]" in source.query:
            self.lookbacks += 1
            # Few requests put the p99 in a low bucket; many show the real one.
            low = 0.99 if self.baseline_hour < 1000 else 0.9
            return {"0.01": self.baseline_hour * low, "0.1": self.baseline_hour, "+Inf": self.baseline_hour}
        return {"0.01": 90.0, "0.1": 100.0, "+Inf": 100.0}


def test_the_slow_request_bound_is_read_again_until_it_rests_on_enough_baseline_requests_then_kept() -> None:
    latency = LatencyBuckets()
    run = AnalysisChecker(providers={"prometheus": latency}, template_lookup=lambda *, namespace, name: None)
    analysis = {"interval": "30s", "metrics": [{"name": "p99", "preset": "latency-p99"}]}
    status: ModelRolloutStatus | None = None
    bounds = []
    for look, hour in enumerate((100.0, 5000.0, 9000.0), start=1):
        latency.baseline_hour = hour
        outcome = run(context=context(analysis, now=T0 + timedelta(seconds=30 * look), status=status,
                                      step=analyze_step(600)))  # fmt: skip
        status = then(outcome)
        [evidence] = status.extra["analysis"]["evidence"]
        bounds.append((evidence["thresholdSeconds"], evidence["thresholdBasis"]))
    # From 100 requests the bound is a guess (0.01 s); from 5000 it is the real p99 bucket, and kept.
    assert bounds == [(0.01, 100.0), (0.1, 5000.0), (0.1, 5000.0)]
    assert latency.lookbacks == 2
