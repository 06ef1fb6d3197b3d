"""GatesChecker against in-memory OIP servers (httpx.MockTransport): order, verdicts, status, caching."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from controller.api import ModelRolloutStatus, parse_spec
from controller.checks import CheckContext, CheckOutcome, Verdict
from controller.errors import ReferenceProblem
from controller.gates.checker import GatesChecker, GatesSettings
from controller.outbound import OutboundPolicy

NOW = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
BASELINE_URL = "http://baseline.test:8080"
CANDIDATE_URL = "http://candidate.test:8080"
IRIS = {"name": "features", "datatype": "FP32", "shape": [-1, 4]}
LABEL = {"name": "label", "datatype": "INT64", "shape": [-1]}
GOLDEN: list[dict[str, Any]] = [
    {"id": f"flower-{i}", "inputs": [{"name": "features", "shape": [1, 4], "data": [i, 1, 1, 1]}]} for i in range(4)
]


@dataclass
class FakeServer:
    """An OIP server in memory: metadata, readiness and a prediction per request."""

    inputs: list[dict[str, Any]] = field(default_factory=lambda: [IRIS])
    outputs: list[dict[str, Any]] = field(default_factory=lambda: [LABEL])
    ready: bool = True
    predict: Any = lambda features: [int(features[0]) % 3]
    infer_bodies: list[dict[str, Any]] = field(default_factory=list)
    requests: int = 0

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        path = request.url.path
        if path.endswith("/ready"):
            return httpx.Response(200 if self.ready else 503, json={"ready": self.ready})
        if path == "/v2/models/iris":
            return httpx.Response(
                200, json={"name": "iris", "platform": "test", "inputs": self.inputs, "outputs": self.outputs}
            )
        if path == "/v2/models/iris/infer":
            body = json.loads(request.content)
            self.infer_bodies.append(body)
            data = self.predict(body["inputs"][0]["data"])
            # allow_nan: the body carries NaN the way a broken server writes it
            content = json.dumps(
                {"outputs": [{"name": "label", "datatype": "INT64", "shape": [len(data)], "data": data}]}
            )
            return httpx.Response(200, content=content, headers={"content-type": "application/json"})
        return httpx.Response(404)


def transport(baseline: FakeServer, candidate: FakeServer) -> httpx.MockTransport:
    servers = {"baseline.test": baseline, "candidate.test": candidate}
    return httpx.MockTransport(lambda request: servers[request.url.host].handle(request))


def context(
    gates: Mapping[str, Any],
    *,
    status: Mapping[str, Any] | None = None,
    now: datetime = NOW,
    candidate_endpoint: str | None = CANDIDATE_URL,
) -> CheckContext:
    candidate_version = {"version": "v2", "backend": {"service": "iris-v2", "port": 8080}}
    if candidate_endpoint is not None:
        candidate_version["endpoint"] = candidate_endpoint
    spec = parse_spec(
        {
            "model": "iris",
            "versions": [
                {"version": "v1", "backend": {"service": "iris-v1", "port": 8080}, "endpoint": BASELINE_URL},
                candidate_version,
            ],
            "candidate": "v2",
            "baseline": "v1",
            "trafficRouting": {"gatewayAPI": {"httpRoute": "iris"}},
            "steps": [{"setWeight": 10}],
            "gates": dict(gates),
        }
    )
    return CheckContext(
        namespace="shop",
        name="iris",
        spec=spec,
        status=ModelRolloutStatus.from_json(status),
        stable_version="v1",
        now=now,
        current_weight=0,
    )


def run(
    gates: Mapping[str, Any],
    baseline: FakeServer,
    candidate: FakeServer,
    *,
    configmaps: Mapping[str, Mapping[str, str]] | None = None,
    status: Mapping[str, Any] | None = None,
    now: datetime = NOW,
) -> CheckOutcome:
    checker = GatesChecker(
        read_configmap=lambda namespace, name: (configmaps or {}).get(f"{namespace}/{name}"),
        settings=GatesSettings(readiness_attempts=2, readiness_interval_seconds=0.0),
        transport=transport(baseline, candidate),
        sleep=lambda seconds: None,
    )
    outcome = checker(context=context(gates, status=status, now=now))
    assert outcome is not None
    return outcome


def test_nothing_configured_means_no_gate() -> None:
    checker = GatesChecker(read_configmap=lambda namespace, name: None)
    assert checker(context=context({})) is None
    assert checker(context=context({"readinessTimeout": "30s"})) is None


def test_a_contract_mismatch_fails_before_any_golden_request() -> None:
    # given a candidate that wants 5 features
    baseline, candidate = FakeServer(), FakeServer(inputs=[{**IRIS, "shape": [-1, 5]}])
    outcome = run({"goldenSet": {"inline": GOLDEN}}, baseline, candidate)
    assert outcome.verdict is Verdict.FAILED
    assert "input features: shape expected [-1, 4], got [-1, 5]" in outcome.message
    assert baseline.infer_bodies == [] and candidate.infer_bodies == []
    gates = outcome.status_fields["gates"]
    assert gates["contract"]["mismatches"][0]["property"] == "shape"
    assert "goldenSet" not in gates
    assert outcome.rubric_items == ("Infra 2", "Data 1")


def test_a_good_candidate_passes_and_reports_status_and_rubric_items() -> None:
    outcome = run({"goldenSet": {"inline": GOLDEN, "minAgreement": 1.0}}, FakeServer(), FakeServer())
    assert outcome.verdict is Verdict.SUCCESSFUL
    assert outcome.rubric_items == ("Infra 2", "Data 1", "Infra 4", "Monitor 5")
    gates = outcome.status_fields["gates"]
    assert gates["verdict"] == "Successful"
    assert gates["baselineVersion"] == "v1" and gates["candidateVersion"] == "v2"
    assert gates["contract"]["expectedFrom"] == "baseline v1 metadata"
    assert gates["goldenSet"]["requests"] == 4 and gates["goldenSet"]["agreed"] == 4
    assert gates["goldenSet"]["compare"] == "label"
    assert gates["goldenSet"]["source"] == "spec.gates.goldenSet.inline"


def test_a_stored_success_is_reused_without_calling_any_server() -> None:
    gates_spec = {"goldenSet": {"inline": GOLDEN}}
    first = run(gates_spec, FakeServer(), FakeServer())
    baseline, candidate = FakeServer(), FakeServer()
    # when the next pass (or a restarted controller) sees the stored status
    again = run(gates_spec, baseline, candidate, status={"gates": first.status_fields["gates"]})
    assert again.verdict is Verdict.SUCCESSFUL
    assert again.rubric_items == first.rubric_items
    assert baseline.requests == 0 and candidate.requests == 0


def test_a_changed_gates_config_runs_the_gates_again() -> None:
    first = run({"goldenSet": {"inline": GOLDEN}}, FakeServer(), FakeServer())
    candidate = FakeServer()
    run({"goldenSet": {"inline": GOLDEN[:2]}}, FakeServer(), candidate, status={"gates": first.status_fields["gates"]})
    assert len(candidate.infer_bodies) == 2


def test_nan_in_golden_outputs_fails() -> None:
    candidate = FakeServer(predict=lambda features: [math.nan])
    outcome = run({"goldenSet": {"inline": GOLDEN, "minAgreement": 0.0}}, FakeServer(), candidate)
    assert outcome.verdict is Verdict.FAILED
    assert "request flower-0: candidate output label has 1 non-finite values" in outcome.message


def test_a_candidate_that_disagrees_too_often_fails_listing_the_worst() -> None:
    candidate = FakeServer(predict=lambda features: [7])
    outcome = run({"goldenSet": {"inline": GOLDEN, "minAgreement": 0.75}}, FakeServer(), candidate)
    assert outcome.verdict is Verdict.FAILED
    golden = outcome.status_fields["gates"]["goldenSet"]
    assert golden["agreed"] == 0
    assert [d["request"] for d in golden["worstDisagreements"]] == ["flower-0", "flower-1", "flower-2", "flower-3"]


def test_a_golden_set_from_a_configmap_forwards_only_declared_fields() -> None:
    entries = [{"id": "a", "email": "x@example.com", "inputs": [{**GOLDEN[0]["inputs"][0], "ssn": "123"}]}]
    candidate = FakeServer()
    outcome = run(
        {"goldenSet": {"configMapRef": {"name": "golden", "key": "requests.json"}}},
        FakeServer(),
        candidate,
        configmaps={"shop/golden": {"requests.json": json.dumps(entries)}},
    )
    assert outcome.verdict is Verdict.SUCCESSFUL
    assert candidate.infer_bodies == [
        {"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 4], "data": [0, 1, 1, 1]}]}
    ]


MISSING_GOLDEN_SET = {
    "the ConfigMap": (
        {},
        "spec.gates.goldenSet.configMapRef.name: ConfigMap shop/golden does not exist; create it or fix the name",
    ),
    "its key": (
        {"shop/golden": {"other": "[]"}},
        "spec.gates.goldenSet.configMapRef.key: ConfigMap shop/golden has no key requests.json (it has ['other']); "
        "add it or fix the key",
    ),
}


@pytest.mark.parametrize(("configmaps", "expected"), MISSING_GOLDEN_SET.values(), ids=MISSING_GOLDEN_SET.keys())
def test_a_missing_golden_set_is_a_reference_problem_naming_the_field_not_a_failed_gate(
    configmaps: Mapping[str, Mapping[str, str]], expected: str
) -> None:
    # given gates whose golden set is a ConfigMap that is missing, or lacks the key named
    baseline, candidate = FakeServer(), FakeServer()
    checker = GatesChecker(
        read_configmap=lambda namespace, name: configmaps.get(f"{namespace}/{name}"),
        transport=transport(baseline, candidate),
        sleep=lambda seconds: None,
    )
    pending = context({"contract": {}, "goldenSet": {"configMapRef": {"name": "golden", "key": "requests.json"}}})

    # when the rollout is validated, and when the gates run, then both raise the same ReferenceProblem
    for check in (checker.validate, checker.__call__):
        with pytest.raises(ReferenceProblem) as raised:
            check(context=pending)
        assert str(raised.value) == expected
    # and no model server was asked anything
    assert baseline.requests == candidate.requests == 0


def test_validate_reads_only_a_golden_set_configmap_and_leaves_spec_mistakes_to_the_gates() -> None:
    # given a checker whose ConfigMap reader would fail the test
    def never(namespace: str, name: str) -> Mapping[str, str] | None:
        raise AssertionError(f"read ConfigMap {namespace}/{name}")

    checker = GatesChecker(read_configmap=never)

    # when rollouts with no gates, an inline golden set, or a malformed gates section are
    # validated, then nothing is raised (the gates report a mistake, naming the field)
    for gates in ({}, {"goldenSet": {"inline": GOLDEN}}, {"goldenSet": {"inline": GOLDEN, "minAgreement": 7}}):
        checker.validate(context=context(gates))


def test_with_the_configmap_present_validate_passes_and_the_gates_read_it() -> None:
    # given the golden set's ConfigMap with its key
    entries = json.dumps(GOLDEN)
    reads: list[str] = []

    def read(namespace: str, name: str) -> Mapping[str, str] | None:
        reads.append(f"{namespace}/{name}")
        return {"requests.json": entries}

    checker = GatesChecker(
        read_configmap=read, transport=transport(FakeServer(), FakeServer()), sleep=lambda seconds: None
    )
    pending = context({"goldenSet": {"configMapRef": {"name": "golden", "key": "requests.json"}}})

    # when validated and run, then it passes, the ConfigMap read by each
    checker.validate(context=pending)
    outcome = checker(context=pending)
    assert outcome is not None and outcome.verdict is Verdict.SUCCESSFUL
    assert reads == ["shop/golden", "shop/golden"]


@pytest.mark.parametrize(
    ("configmaps", "expected"),
    [
        ({"shop/golden": {"requests.json": "[{"}}, "ConfigMap shop/golden key requests.json: not JSON: Expecting"),
        (
            {"shop/golden": {"requests.json": '[{"inputs": [{"name": "features", "shape": [2, 4], "data": [1]}]}]'}},
            "ConfigMap shop/golden key requests.json[0].inputs[0].data: has 1 values, shape [2, 4] needs 8",
        ),
    ],
)
def test_a_malformed_golden_set_fails_naming_the_problem_and_where(
    configmaps: Mapping[str, Mapping[str, str]], expected: str
) -> None:
    baseline, candidate = FakeServer(), FakeServer()
    outcome = run(
        {"goldenSet": {"configMapRef": {"name": "golden", "key": "requests.json"}}},
        baseline,
        candidate,
        configmaps=configmaps,
    )
    assert outcome.verdict is Verdict.FAILED
    assert expected in outcome.message
    assert candidate.infer_bodies == []


def test_a_malformed_declared_contract_fails_naming_the_field() -> None:
    outcome = run(
        {"contract": {"inputs": [{"name": "features", "datatype": "FLOAT32", "shape": [4]}]}},
        FakeServer(),
        FakeServer(),
    )
    assert outcome.verdict is Verdict.FAILED
    assert "spec.gates.contract.inputs[0].datatype: 'FLOAT32' is not one of" in outcome.message


def test_a_declared_contract_replaces_the_baseline_and_output_changes_can_be_allowed() -> None:
    # given a candidate with a new output and a contract that pins only the inputs
    candidate = FakeServer(outputs=[{"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]}])
    gates = {"contract": {"inputs": [IRIS], "allowOutputChanges": True}}
    outcome = run(gates, FakeServer(), candidate)
    assert outcome.verdict is Verdict.SUCCESSFUL
    assert outcome.status_fields["gates"]["contract"] == {
        "passed": True,
        "expectedFrom": "spec.gates.contract",
        "outputsChecked": False,
        "mismatches": [],
        "verdict": "Passed",
        "summary": "contract: candidate inputs match spec.gates.contract",
    }


def test_a_version_without_endpoint_fails_naming_the_field() -> None:
    checker = GatesChecker(read_configmap=lambda namespace, name: None)
    outcome = checker(context=context({"contract": {}}, candidate_endpoint=None))
    assert outcome is not None and outcome.verdict is Verdict.FAILED
    assert "spec.versions[1].endpoint: is required for gates" in outcome.message


def test_waiting_for_readiness_spans_passes_and_gives_up_after_the_timeout() -> None:
    gates = {"contract": {}, "readinessTimeout": "30s"}
    candidate = FakeServer(ready=False)
    first = run(gates, FakeServer(), candidate)
    assert first.verdict is Verdict.RUNNING and first.requeue_after == 5.0
    assert first.status_fields["gates"]["waitingSince"] == "2025-01-01T12:00:00.000Z"
    assert "waiting for candidate v2 (http://candidate.test:8080) to be ready" in first.message
    # when a later pass, 20 s on, still finds it unready: still waiting, same start
    second = run(gates, FakeServer(), candidate, status=first.status_fields, now=NOW + timedelta(seconds=20))
    assert second.verdict is Verdict.RUNNING
    assert second.status_fields["gates"]["waitingSince"] == "2025-01-01T12:00:00.000Z"
    # when 30 s have passed: the candidate fails
    third = run(gates, FakeServer(), candidate, status=second.status_fields, now=NOW + timedelta(seconds=30))
    assert third.verdict is Verdict.FAILED
    assert "not ready after 30s" in third.message


def test_an_unready_baseline_is_inconclusive_not_a_failure_of_the_candidate() -> None:
    gates = {"contract": {}, "readinessTimeout": "10s"}
    first = run(gates, FakeServer(ready=False), FakeServer())
    later = run(
        gates, FakeServer(ready=False), FakeServer(), status=first.status_fields, now=NOW + timedelta(minutes=1)
    )
    assert later.verdict is Verdict.INCONCLUSIVE
    assert "baseline v1" in later.message


def test_a_server_that_stops_answering_mid_gate_means_try_again() -> None:
    candidate = FakeServer()
    servers = {"baseline.test": FakeServer(), "candidate.test": candidate}

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/infer") and request.url.host == "candidate.test":
            raise httpx.ConnectError("connection refused", request=request)
        return servers[request.url.host].handle(request)

    checker = GatesChecker(read_configmap=lambda namespace, name: None, transport=httpx.MockTransport(handle))
    outcome = checker(context=context({"goldenSet": {"inline": GOLDEN}}))
    assert outcome is not None and outcome.verdict is Verdict.RUNNING
    assert "did not answer" in outcome.message


def test_an_endpoint_at_the_metadata_service_fails_the_gates_naming_the_field_and_why() -> None:
    baseline, candidate = FakeServer(), FakeServer()
    checker = GatesChecker(
        read_configmap=lambda namespace, name: None,
        transport=transport(baseline, candidate),
        sleep=lambda seconds: None,
    )
    outcome = checker(context=context({"contract": {}}, candidate_endpoint="http://169.254.169.254/latest"))
    assert outcome is not None and outcome.verdict is Verdict.FAILED
    assert outcome.message == (
        "gates: spec.versions[1].endpoint http://169.254.169.254/latest: requests to 169.254.169.254 are refused: "
        "it is a cloud metadata address (169.254.169.254/32)"
    )
    assert candidate.requests == 0
    assert outcome.requeue_after is None, "a refusal is not retried"


def test_with_allowed_hosts_only_those_endpoints_are_called() -> None:
    baseline, candidate = FakeServer(), FakeServer()
    checker = GatesChecker(
        read_configmap=lambda namespace, name: None,
        settings=GatesSettings(outbound=OutboundPolicy(allowed_hosts=("baseline.test",))),
        transport=transport(baseline, candidate),
        sleep=lambda seconds: None,
    )
    outcome = checker(context=context({"contract": {}}))
    assert outcome is not None and outcome.verdict is Verdict.FAILED
    assert "spec.versions[1].endpoint http://candidate.test:8080: requests to candidate.test are refused" in (
        outcome.message
    )
    assert candidate.requests == 0
