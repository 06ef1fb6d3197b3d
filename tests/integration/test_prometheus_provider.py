"""The Prometheus provider and the analysis checker against a real Prometheus on 127.0.0.1.

Prometheus (the Debian package's binary) scrapes a loopback exporter every second; the tests move
the exporter's counters to make a version look good or bad, wait until Prometheus has seen it,
then measure.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from controller.analysis.batch import IDENTITY_LABELS, batch_query
from controller.analysis.checker import AnalysisChecker
from controller.analysis.presets import Counter
from controller.analysis.providers import InvalidQuery, ProviderSettings, ProviderUnavailable, build_providers
from controller.analysis.providers.prometheus import PrometheusProvider
from controller.analysis.spec import PrometheusSource
from controller.api import ModelRolloutStatus, parse_spec
from controller.checks import CheckContext, CheckOutcome, InconclusivePolicy, StepWindow, Verdict
from localenv.prometheus import LocalPrometheus, ModelMetricsExporter

pytestmark = pytest.mark.integration

MODEL = "iris"
WINDOW = "15s"


def seen_requests(prometheus: LocalPrometheus, version: str, at_least: int) -> None:
    """Wait until Prometheus' window holds at least this many requests of `version`."""
    prometheus.wait_for_value(
        f'sum(increase(model_requests_total{{model="{MODEL}",version="{version}"}}[{WINDOW}]))', at_least=at_least
    )


def send_traffic(
    exporter: ModelMetricsExporter, prometheus: LocalPrometheus, *, version: str, errors: int, latency: float
) -> None:
    """200 requests of `version` that Prometheus has scraped as an increase (so rate() sees them)."""
    # A series must be scraped once before it grows, or its first increase is invisible to rate().
    exporter.serve(model=MODEL, version=version, requests=0)
    prometheus.wait_for_value(f'count(model_requests_total{{version="{version}"}})', at_least=1)
    exporter.serve(model=MODEL, version=version, requests=200, errors=errors, latency_seconds=latency)
    seen_requests(prometheus, version, at_least=100)


def context_for(
    analysis: dict[str, Any],
    *,
    prefix: str,
    now: datetime | None = None,
    status: ModelRolloutStatus | None = None,
) -> CheckContext:
    """Rollout `prefix-v1` -> `prefix-v2` in its analyze step (index 1), which began 20 s before
    `now` and lasts 10 s: the window is over and a measurement is due."""
    now = now or datetime.now(UTC)
    spec = parse_spec(
        {
            "model": MODEL,
            "versions": [
                {"version": f"{prefix}-v1", "backend": {"service": "iris-v1", "port": 8080}},
                {"version": f"{prefix}-v2", "backend": {"service": "iris-v2", "port": 8080}},
            ],
            "baseline": f"{prefix}-v1",
            "candidate": f"{prefix}-v2",
            "trafficRouting": {"gatewayAPI": {"httpRoute": "iris"}},
            "steps": [{"setWeight": 50}, {"analyze": {"duration": "10s"}}],
            "analysis": analysis,
        }
    )
    return CheckContext(
        namespace="ml",
        name="iris",
        spec=spec,
        status=status or ModelRolloutStatus(),
        stable_version=spec.baseline,
        now=now,
        current_weight=50,
        step=StepWindow(index=1, started_at=STEP_STARTED, seconds=10),
    )


def checker_for(prometheus: LocalPrometheus) -> AnalysisChecker:
    providers = build_providers(ProviderSettings(prometheus_address=prometheus.url, timeout_seconds=2))
    return AnalysisChecker(providers=providers, template_lookup=lambda *, namespace, name: None)


def preset(name: str, metric: str) -> dict[str, Any]:
    """spec.analysis with one preset metric, measured every second over WINDOW."""
    return {"interval": "1s", "metrics": [{"name": metric, "preset": name, "window": WINDOW}]}


STEP_STARTED = datetime.now(UTC) - timedelta(seconds=20)


def harm_shown(outcome: CheckOutcome, metric: str, *, threshold: float) -> dict[str, Any]:
    """The metric's latest look in status.analysis.evidence, which must show harm: the evidence
    at or past its threshold, and the ratio's whole interval above the tolerated ratio."""
    entry = next(e for e in outcome.status_fields["analysis"]["evidence"] if e["metric"] == metric)
    latest: dict[str, Any] = entry["latest"]
    assert (latest["look"], latest["verdict"], latest["threshold"]) == (1, "Failed", threshold), latest
    assert latest["eValue"] >= latest["threshold"]
    assert latest["interval"][0] > latest["nullRatio"]
    assert latest["candidate"]["samples"] >= 100 and latest["baseline"]["samples"] >= 100
    return latest


# ---------------------------------------------------------------------------------------------
# The provider alone


def test_reads_the_error_rate_of_each_version(exporter: ModelMetricsExporter, prometheus: LocalPrometheus) -> None:
    # given: v1 answered 200 requests with 10 errors, and Prometheus has scraped them
    send_traffic(exporter, prometheus, version="read-v1", errors=10, latency=0.02)
    provider = PrometheusProvider(default_address=prometheus.url, timeout_seconds=2)
    query = (
        f'sum(increase(model_request_errors_total{{version="read-v1"}}[{WINDOW}]))'
        f' / sum(increase(model_requests_total{{version="read-v1"}}[{WINDOW}]))'
    )
    # when
    value = provider.measure(source=PrometheusSource(query=query), namespace="ml")
    # then: 10 of 200 failed
    assert value == pytest.approx(0.05, rel=1e-6)


def test_a_query_matching_nothing_gives_no_data(prometheus: LocalPrometheus) -> None:
    provider = PrometheusProvider(default_address=prometheus.url, timeout_seconds=2)
    value = provider.measure(
        source=PrometheusSource(query='sum(rate(model_requests_total{version="never-deployed"}[1m]))'),
        namespace="ml",
    )
    assert value is None


def test_a_promql_syntax_error_is_a_permanent_error_naming_the_problem(prometheus: LocalPrometheus) -> None:
    provider = PrometheusProvider(default_address=prometheus.url, timeout_seconds=2)
    with pytest.raises(InvalidQuery) as raised:
        provider.measure(source=PrometheusSource(query="sum(rate(model_requests_total[1m])"), namespace="ml")
    message = str(raised.value)
    assert "bad_data" in message and "parse error" in message
    assert "sum(rate(model_requests_total[1m])" in message


def test_a_query_returning_several_series_is_a_permanent_error(
    exporter: ModelMetricsExporter, prometheus: LocalPrometheus
) -> None:
    send_traffic(exporter, prometheus, version="many-v1", errors=0, latency=0.02)
    send_traffic(exporter, prometheus, version="many-v2", errors=0, latency=0.02)
    provider = PrometheusProvider(default_address=prometheus.url, timeout_seconds=2)
    with pytest.raises(InvalidQuery, match="series"):
        provider.measure(source=PrometheusSource(query='model_requests_total{version=~"many-.*"}'), namespace="ml")


def test_an_unreachable_prometheus_is_a_temporary_error(exporter: ModelMetricsExporter) -> None:
    server = LocalPrometheus(scrape_targets=[exporter.target])
    try:
        server.start()
        server.stop()
        provider = PrometheusProvider(default_address=server.url, timeout_seconds=2)
        with pytest.raises(ProviderUnavailable, match="did not answer"):
            provider.measure(source=PrometheusSource(query="vector(1)"), namespace="ml")
    finally:
        server.close()


# ---------------------------------------------------------------------------------------------
# The checker with presets, end to end against Prometheus


def test_a_candidate_as_good_as_the_baseline_passes_the_analyze_step(
    exporter: ModelMetricsExporter, prometheus: LocalPrometheus
) -> None:
    for version in ("good-v1", "good-v2"):
        send_traffic(exporter, prometheus, version=version, errors=0, latency=0.02)
    outcome = checker_for(prometheus)(context=context_for(preset("error-rate", "error-rate"), prefix="good"))
    assert outcome is not None
    assert outcome.verdict == Verdict.SUCCESSFUL, outcome.message
    measurement = outcome.status_fields["analysis"]["measurements"][-1]
    assert measurement["verdict"] == "Successful"
    assert measurement["baselineValue"] == 0 and measurement["candidateValue"] == 0


def test_a_candidate_with_a_higher_error_rate_fails_naming_both_values(
    exporter: ModelMetricsExporter, prometheus: LocalPrometheus
) -> None:
    send_traffic(exporter, prometheus, version="bad-v1", errors=0, latency=0.02)
    send_traffic(exporter, prometheus, version="bad-v2", errors=40, latency=0.02)
    outcome = checker_for(prometheus)(context=context_for(preset("error-rate", "error-rate"), prefix="bad"))
    assert outcome is not None
    assert outcome.verdict == Verdict.FAILED
    assert outcome.message.startswith("error-rate failed 1 time(s), more than failureLimit 0: look 1: ")
    # increase() extrapolates to the window's edges: about a fifth, not exactly
    assert re.search(r"candidate bad-v2 (19\.\d|20(\.\d)?)% of \d+ vs baseline bad-v1 0% of ", outcome.message)
    assert "rate ratio inf" in outcome.message and "beyond tolerance 0%" in outcome.message
    # one metric: the whole 5 % budget, a threshold of 1 / 0.05
    latest = harm_shown(outcome, "error-rate", threshold=20)
    assert latest["candidate"]["value"] == pytest.approx(0.2, abs=0.005) and latest["baseline"]["value"] == 0


def test_a_candidate_with_worse_latency_fails(exporter: ModelMetricsExporter, prometheus: LocalPrometheus) -> None:
    send_traffic(exporter, prometheus, version="slow-v1", errors=0, latency=0.02)
    send_traffic(exporter, prometheus, version="slow-v2", errors=0, latency=0.4)
    outcome = checker_for(prometheus)(context=context_for(preset("latency-p99", "p99"), prefix="slow"))
    assert outcome is not None
    assert outcome.verdict == Verdict.FAILED
    # every baseline request took 20 ms: its p99 bucket ends at 25 ms, and every candidate request is slower
    assert "candidate slow-v2 100% of " in outcome.message and "vs baseline slow-v1 0% of " in outcome.message
    assert "share slower than 0.025s (the baseline's p99) ratio inf" in outcome.message
    assert "beyond tolerance 20%" in outcome.message
    assert harm_shown(outcome, "p99", threshold=20)["thresholdSeconds"] == 0.025


def test_a_candidate_with_worse_feedback_accuracy_fails(
    exporter: ModelMetricsExporter, prometheus: LocalPrometheus
) -> None:
    for version, correct in (("acc-v1", 190), ("acc-v2", 150)):
        exporter.label(model=MODEL, version=version, total=0, correct=0)
        prometheus.wait_for_value(f'count(model_feedback_total{{version="{version}"}})', at_least=1)
        exporter.label(model=MODEL, version=version, total=200, correct=correct)
        prometheus.wait_for_value(f'sum(increase(model_feedback_total{{version="{version}"}}[{WINDOW}]))', at_least=100)
    outcome = checker_for(prometheus)(context=context_for(preset("feedback-accuracy", "accuracy"), prefix="acc"))
    assert outcome is not None
    assert outcome.verdict == Verdict.FAILED
    # (increase() extrapolates each counter to the window's edges: the shares are near, not at, 75 % and 95 %)
    found = re.search(r"candidate acc-v2 ([\d.]+)% of \d+ vs baseline acc-v1 ([\d.]+)% of \d+", outcome.message)
    assert found, outcome.message
    assert float(found[1]) == pytest.approx(75, abs=1) and float(found[2]) == pytest.approx(95, abs=1)
    assert "beyond tolerance 0.02" in outcome.message
    latest = harm_shown(outcome, "accuracy", threshold=20)
    assert latest["ratio"] == pytest.approx(5, rel=0.1), "a quarter of the answers wrong against a twentieth"


def test_no_data_for_the_candidate_is_inconclusive_and_holds(prometheus: LocalPrometheus) -> None:
    outcome = checker_for(prometheus)(context=context_for(preset("error-rate", "error-rate"), prefix="absent"))
    assert outcome is not None
    assert outcome.verdict == Verdict.INCONCLUSIVE
    assert outcome.on_inconclusive == InconclusivePolicy.HOLD
    assert "no data for candidate absent-v2, baseline absent-v1" in outcome.message


def test_a_promql_syntax_error_is_inconclusive_at_once_with_a_clear_message(prometheus: LocalPrometheus) -> None:
    analysis = {
        "interval": "1s",
        "onInconclusive": "pause",
        "metrics": [
            {"name": "broken", "provider": {"prometheus": {"query": "sum(rate(x[1m])"}}, "comparison": {"max": 1}}
        ],
    }
    outcome = checker_for(prometheus)(context=context_for(analysis, prefix="broken"))
    assert outcome is not None
    assert outcome.verdict == Verdict.INCONCLUSIVE
    # A configuration error is not retried into a storm: the configured policy applies at once.
    assert outcome.on_inconclusive == InconclusivePolicy.PAUSE
    assert (
        'rejected the query (bad_data: invalid parameter "query": 1:16: parse error: unclosed left parenthesis)'
        in outcome.message
    )
    assert "a configuration error, fix it" in outcome.message


def test_prometheus_stopped_mid_analysis_holds_then_resumes(exporter: ModelMetricsExporter) -> None:
    with LocalPrometheus(scrape_targets=[exporter.target]) as server:
        for version in ("outage-v1", "outage-v2"):
            send_traffic(exporter, server, version=version, errors=0, latency=0.02)
        checker = checker_for(server)
        analysis = preset("error-rate", "error-rate")
        start = datetime.now(UTC)
        first = checker(context=context_for(analysis, prefix="outage", now=start))
        assert first is not None
        assert first.verdict == Verdict.SUCCESSFUL, first.message

        # when Prometheus goes away, the next measurement is an error: hold, no failure
        server.stop()
        stored = ModelRolloutStatus(extra=first.status_fields)
        during = checker(
            context=context_for(analysis, prefix="outage", now=start + timedelta(seconds=2), status=stored)
        )
        assert during is not None
        assert during.verdict == Verdict.INCONCLUSIVE
        assert during.on_inconclusive == InconclusivePolicy.HOLD
        assert "did not answer" in during.message
        assert during.status_fields["analysis"]["measurements"][-1]["verdict"] == "Error"

        # then when it is back, the next measurement passes again
        server.start()
        send_traffic(exporter, server, version="outage-v1", errors=0, latency=0.02)
        send_traffic(exporter, server, version="outage-v2", errors=0, latency=0.02)
        stored = ModelRolloutStatus(extra=during.status_fields)
        after = checker(context=context_for(analysis, prefix="outage", now=start + timedelta(seconds=4), status=stored))
        assert after is not None
        assert after.verdict == Verdict.SUCCESSFUL, after.message


def test_a_batched_query_returns_the_series_of_the_models_it_names_only_matched_literally(
    exporter: ModelMetricsExporter, prometheus: LocalPrometheus
) -> None:
    # Given three models' counters in Prometheus, one named with regex characters and a quote
    models = {"batch.a": 5, 'batch+"b"': 7, "batchXa": 11}
    for model, requests in models.items():
        exporter.serve(model=model, version="v1", requests=requests)
    prometheus.wait_for_value('count(model_requests_total{model=~"batch.*",code="200"})', at_least=3)
    provider = PrometheusProvider(default_address=prometheus.url, timeout_seconds=2)
    asked = ("batch.a", 'batch+"b"')

    # When the batched query of the requests counter is asked for two of them
    query = batch_query(Counter(name="model_requests_total"), by=(), window_seconds=3600, models=asked)
    answer = provider.measure_series(source=PrometheusSource(query=query), labels=IDENTITY_LABELS)

    # Then it holds exactly their series (`batch.a` does not match `batchXa`), with their counts
    assert {labels[1]: value for labels, value in answer.items()} == {"batch.a": 5.0, 'batch+"b"': 7.0}
