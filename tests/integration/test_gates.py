"""Pre-traffic gates against real Open Inference Protocol model servers on 127.0.0.1.

The baseline is the `good` breast-cancer model; each test starts one candidate variant. The
golden set is rows of the held-out test split, one row per request, plus the few tumours without
concavity (the rows on which the `nan-outputs` variant divides 0 by 0).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from controller.api import ModelRolloutStatus, parse_spec
from controller.checks import CheckContext, CheckOutcome, Verdict
from controller.gates.checker import GatesChecker, GatesSettings
from localenv.modelserver import RunningServer, Variant, start_model_server
from localenv.modelserver.dataset import load_dataset

pytestmark = pytest.mark.integration

MODEL = "breast-cancer"
MEAN_CONCAVITY_COLUMN = 6
GOLDEN_ROWS = 40


def golden_set() -> list[dict[str, Any]]:
    rows = load_dataset().test_features
    without_concavity = [i for i in range(len(rows)) if rows[i, MEAN_CONCAVITY_COLUMN] == 0]
    chosen = list(range(GOLDEN_ROWS)) + without_concavity[:3]
    return [
        {"id": f"test-row-{i}", "inputs": [{"name": "features", "shape": [1, 30], "data": rows[i].tolist()}]}
        for i in chosen
    ]


@pytest.fixture(scope="module")
def baseline() -> Iterator[RunningServer]:
    with start_model_server(variant=Variant.GOOD, model_name=MODEL, version="v1") as server:
        yield server


def check_gates(*, baseline: RunningServer, candidate_url: str, gates: dict[str, Any]) -> CheckOutcome:
    spec = parse_spec(
        {
            "model": MODEL,
            "versions": [
                {"version": "v1", "backend": {"service": "cancer-v1", "port": 8080}, "endpoint": baseline.url},
                {"version": "v2", "backend": {"service": "cancer-v2", "port": 8080}, "endpoint": candidate_url},
            ],
            "candidate": "v2",
            "baseline": "v1",
            "trafficRouting": {"gatewayAPI": {"httpRoute": "cancer"}},
            "steps": [{"setWeight": 10}],
            "gates": gates,
        }
    )
    checker = GatesChecker(
        read_configmap=lambda namespace, name: None,
        settings=GatesSettings(readiness_attempts=2, readiness_interval_seconds=0.2),
    )
    outcome = checker(
        context=CheckContext(
            namespace="models",
            name="cancer",
            spec=spec,
            status=ModelRolloutStatus(),
            stable_version="v1",
            now=datetime.now(UTC),
            current_weight=0,
        )
    )
    assert outcome is not None
    return outcome


def inference_requests(server: RunningServer) -> float:
    """The server's own count of infer requests (model_requests_total, all status codes)."""
    text = httpx.get(server.metrics_url, timeout=5.0).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "model_requests_total"
    )


@pytest.fixture(scope="module")
def golden_gate() -> dict[str, Any]:
    return {"goldenSet": {"inline": golden_set(), "output": "label", "minAgreement": 0.9}}


def test_a_good_candidate_passes_contract_and_golden_set(baseline: RunningServer, golden_gate: dict[str, Any]) -> None:
    with start_model_server(variant=Variant.BETTER, model_name=MODEL, version="v2") as candidate:
        outcome = check_gates(baseline=baseline, candidate_url=candidate.url, gates=golden_gate)
        served = inference_requests(candidate)
    assert outcome.verdict is Verdict.SUCCESSFUL, outcome.message
    golden = outcome.status_fields["gates"]["goldenSet"]
    assert golden["requests"] == GOLDEN_ROWS + 3
    assert golden["agreement"] >= 0.9
    assert golden["problemCount"] == 0
    assert served == GOLDEN_ROWS + 3
    assert outcome.rubric_items == ("Infra 2", "Data 1", "Infra 4", "Monitor 5")


def test_a_contract_mismatch_fails_before_any_request_reaches_the_candidate(
    baseline: RunningServer, golden_gate: dict[str, Any]
) -> None:
    with start_model_server(variant=Variant.NEW_CONTRACT, model_name=MODEL, version="v2") as candidate:
        outcome = check_gates(baseline=baseline, candidate_url=candidate.url, gates=golden_gate)
        served = inference_requests(candidate)
    assert outcome.verdict is Verdict.FAILED
    assert "input features: presence expected present, got missing" in outcome.message
    assert "input input_1: presence expected absent, got present" in outcome.message
    assert "goldenSet" not in outcome.status_fields["gates"]
    assert served == 0


def test_nan_in_the_golden_outputs_fails_naming_the_requests(
    baseline: RunningServer, golden_gate: dict[str, Any]
) -> None:
    with start_model_server(variant=Variant.NAN_OUTPUTS, model_name=MODEL, version="v2") as candidate:
        outcome = check_gates(baseline=baseline, candidate_url=candidate.url, gates=golden_gate)
    assert outcome.verdict is Verdict.FAILED
    golden = outcome.status_fields["gates"]["goldenSet"]
    # the labels still agree: only the non-finite scores give the candidate away
    assert golden["agreement"] >= 0.9
    assert golden["problemCount"] == 3
    assert all("candidate output score has 1 non-finite values" in p for p in golden["problems"])


def test_a_candidate_that_is_not_up_keeps_the_gate_waiting(
    baseline: RunningServer, golden_gate: dict[str, Any]
) -> None:
    # given a candidate that was started and stopped again: its port refuses connections
    with start_model_server(variant=Variant.BETTER, model_name=MODEL, version="v2") as candidate:
        gone_url = candidate.url
    outcome = check_gates(baseline=baseline, candidate_url=gone_url, gates=golden_gate)
    assert outcome.verdict is Verdict.RUNNING
    assert f"waiting for candidate v2 ({gone_url}) to be ready" in outcome.message
    assert outcome.status_fields["gates"]["waitingSince"]
