"""The gateway presets: error rate and latency per version from Envoy's own per-cluster metrics.

Each version is found by its gateway cluster, `<namespace>_<service>_<port>` as Contour names it
in Envoy's stats, rendered from the version's backend; Envoy's latency histogram is in
milliseconds and judged in seconds like the convention's. Providers here are in-memory stand-ins
answering by rendered query; tests/integration/test_gateway_metrics.py runs the real Envoy.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from controller.analysis.checker import AnalysisChecker
from controller.analysis.comparison import Tolerance
from controller.analysis.presets import BATCHABLE
from controller.analysis.spec import MetricSource, PrometheusSource, SequentialSpec, SlowRequestsTest, parse_metric
from controller.api import ModelRolloutStatus, ModelVersion, SpecError, parse_spec
from controller.checks import CheckContext, StepWindow, Verdict

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
STEP = StepWindow(index=1, started_at=T0, seconds=600)
FIRST_LOOK = T0 + timedelta(seconds=30)


def cluster(version: str) -> str:
    return f'envoy_cluster_name="ml_iris-{version}_8080"'


def errors_query(version: str) -> str:
    selector = f'{cluster(version)},envoy_response_code_class="5"'
    return f"(sum(increase(envoy_cluster_upstream_rq_xx{{{selector}}}[30s])) or vector(0))"


def requests_query(version: str) -> str:
    return f"sum(increase(envoy_cluster_upstream_rq_completed{{{cluster(version)}}}[30s]))"


class Gateway:
    """Answers the gateway presets' queries like Prometheus scraping Envoy: the errors and answers
    of each version's cluster, and its latency histogram in milliseconds (`le` -> cumulative)."""

    def __init__(
        self,
        *,
        errors: Mapping[str, float] | None = None,
        buckets: Mapping[str, Mapping[str, float]] | None = None,
        answers: float = 1000.0,
    ) -> None:
        self.errors = dict(errors or {})
        self.buckets = dict(buckets or {})
        self.answers = answers
        self.asked: list[str] = []

    def measure(self, *, source: MetricSource, namespace: str) -> float | None:
        assert isinstance(source, PrometheusSource)
        self.asked.append(source.query)
        for version in ("v1", "v2"):
            if source.query == errors_query(version):
                return self.errors.get(version, 0.0)
            if source.query == requests_query(version):
                return self.answers
        raise AssertionError(f"not a gateway count: {source.query}")

    def measure_by(self, *, source: PrometheusSource, label: str) -> dict[str, float]:
        assert label == "le"
        self.asked.append(source.query)
        version = "v1" if cluster("v1") in source.query else "v2"
        assert cluster(version) in source.query, source.query
        return dict(self.buckets[version])


def checker(gateway: Gateway) -> AnalysisChecker:
    return AnalysisChecker(providers={"prometheus": gateway}, template_lookup=lambda *, namespace, name: None)


def context(preset: str, *, now: datetime = FIRST_LOOK, kserve: bool = False) -> CheckContext:
    raw: dict[str, Any] = {
        "model": "iris",
        "versions": [{"version": v, "backend": {"service": f"iris-{v}", "port": 8080}} for v in ("v1", "v2")],
        "baseline": "v1",
        "candidate": "v2",
        "trafficRouting": {"gatewayAPI": {"httpRoute": "iris"}},
        "steps": [{"setWeight": 20}, {"analyze": {"duration": "10m"}}],
        "analysis": {"interval": "30s", "metrics": [{"name": "gateway", "preset": preset}]},
    }
    if kserve:
        # As the reconciler fills them in: KServe's revisions, which are no Services.
        del raw["versions"], raw["baseline"], raw["candidate"]
        raw["trafficRouting"] = {"kserve": {"inferenceService": "iris"}}
    spec = parse_spec(raw)
    if kserve:
        revisions = (ModelVersion(version="v1"), ModelVersion(version="v2"))
        spec = replace(spec, versions=revisions, baseline="v1", candidate="v2")
    return CheckContext(
        namespace="ml",
        name="iris",
        spec=spec,
        status=ModelRolloutStatus(current_step_index=1),
        stable_version="v1",
        now=now,
        current_weight=20,
        step=STEP,
    )


def test_gateway_error_rate_counts_each_versions_5xx_answers_of_its_own_cluster() -> None:
    # Given the gateway's cluster of v2 answering 5xx to 100 of 1000 requests, v1's to none
    gateway = Gateway(errors={"v1": 0.0, "v2": 100.0})

    # When the analyze step takes its first look with gateway-error-rate
    outcome = checker(gateway)(context=context("gateway-error-rate"))

    # Then each version's counts were read from its own cluster, by namespace, Service and port
    assert sorted(gateway.asked) == sorted(
        [errors_query("v2"), requests_query("v2"), errors_query("v1"), requests_query("v1")]
    )
    # and the candidate is rolled back on them, as with the convention's error-rate
    assert outcome is not None and outcome.verdict == Verdict.FAILED
    assert "candidate v2 10% of 1000" in outcome.message and "vs baseline v1 0% of 1000" in outcome.message


def test_gateway_error_rate_passes_a_candidate_that_errs_as_little_as_the_baseline() -> None:
    gateway = Gateway(errors={"v1": 2.0, "v2": 2.0})

    outcome = checker(gateway)(context=context("gateway-error-rate"))

    assert outcome is not None and outcome.verdict == Verdict.RUNNING
    assert "candidate v2 0.2% of 1000 vs baseline v1 0.2% of 1000: no evidence of harm" in outcome.message


ENVOY_BUCKETS_MS = ("0.5", "1", "5", "10", "25", "50", "100", "250", "500", "1000", "+Inf")


def cumulative(latency_ms: float, requests: float = 1000.0) -> dict[str, float]:
    """Envoy's cumulative histogram of `requests` that each took `latency_ms`."""
    return {le: requests if float(le) >= latency_ms else 0.0 for le in ENVOY_BUCKETS_MS}


def test_gateway_latency_reads_envoys_milliseconds_as_seconds() -> None:
    # Given v1 answering in 20 ms and v2 in 400 ms, as Envoy's histogram (milliseconds) shows them
    gateway = Gateway(buckets={"v1": cumulative(20), "v2": cumulative(400)})

    # When the analyze step takes its first look with gateway-latency-p99
    outcome = checker(gateway)(context=context("gateway-latency-p99"))

    # Then the slow-request bound is the baseline's p99 bucket, 25 ms, kept in seconds
    assert outcome is not None
    [evidence] = outcome.status_fields["analysis"]["evidence"]
    assert evidence["thresholdSeconds"] == 0.025
    assert any(f"{cluster('v1')}}}[3600s]" in query for query in gateway.asked), gateway.asked
    # and every v2 answer was slower: rolled back, the reason in seconds
    assert outcome.verdict == Verdict.FAILED
    assert "share slower than 0.025s (the baseline's p99)" in outcome.message
    assert "candidate v2 100% of 1000" in outcome.message


def test_a_slow_request_bound_kept_in_status_finds_its_envoy_bucket_again() -> None:
    # Given the bound a look kept in status (seconds) and the buckets read at the next look (ms)
    test = SlowRequestsTest(buckets_query="b", quantile=0.99, tolerance=Tolerance(relative=0.2), le_per_second=1000.0)
    numbers = {f"bucket:{le}": count for le, count in cumulative(20).items()}

    # When they are read as seconds
    buckets = test.buckets(numbers)

    # Then each of Envoy's bounds is the second it stands for, the same float every time
    assert buckets[0.025] == 1000.0 and buckets[0.0005] == 0.0 and buckets[math.inf] == 1000.0
    assert set(buckets) == {float(le) / 1000 for le in ENVOY_BUCKETS_MS}


@pytest.mark.parametrize("preset", ["gateway-error-rate", "gateway-latency-p99"])
def test_a_gateway_preset_on_a_router_without_services_is_refused_before_any_traffic(preset: str) -> None:
    # Given a KServe rollout, whose versions are revisions without a Service
    kserve = context(preset, now=T0, kserve=True)

    # When the checker validates it while Pending
    with pytest.raises(SpecError) as refused:
        checker(Gateway()).validate(context=kserve)

    # Then the spec is refused naming the metric, what it lacks and what to use instead
    assert refused.value.field_path == "spec.analysis.metrics[0]"
    message = str(refused.value)
    assert "{{service}}" in message and "version v2 has none" in message and "trafficRouting.kserve" in message
    assert "error-rate, latency-p99" in message


def test_the_conventions_presets_still_measure_a_router_without_services() -> None:
    kserve = context("error-rate", now=T0, kserve=True)

    checker(Gateway()).validate(context=kserve)


def test_service_and_port_are_template_variables_of_your_own_counts() -> None:
    # Given counts of your own over the gateway's cluster of each version
    cluster_name = 'envoy_cluster_name="{{namespace}}_{{service}}_{{port}}"'
    raw: dict[str, Any] = {
        "name": "own",
        "counts": {
            "events": f'sum(increase(envoy_cluster_upstream_rq_xx{{{cluster_name},envoy_response_code_class=~"4|5"}}'
            "[{{window}}]))",
            "trials": f"sum(increase(envoy_cluster_upstream_rq_completed{{{cluster_name}}}[{{{{window}}}}]))",
        },
    }

    # When they are parsed, and a misspelt variable is not
    metric = parse_metric(raw, path="spec.analysis.metrics[0]")
    with pytest.raises(SpecError, match=r"unknown template variable\(s\) servcie"):
        parse_metric({**raw, "counts": {**raw["counts"], "trials": "{{servcie}}"}}, path="spec.analysis.metrics[0]")

    # Then they are accepted
    assert isinstance(metric, SequentialSpec)


def test_the_gateway_presets_are_read_per_rollout_not_batched() -> None:
    # Batched queries are keyed by model and version labels, which Envoy's series do not carry.
    for name in ("gateway-error-rate", "gateway-latency-p99"):
        metric = parse_metric({"name": name, "preset": name}, path="m")
        assert isinstance(metric, SequentialSpec)
        assert not any(query.query in BATCHABLE for query in metric.test.queries)
