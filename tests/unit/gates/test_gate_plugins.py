"""A gate plug-in is one object registered in one place: the gates parse its block under spec.gates
with it, run it after the contract with the contract's tensors, keep its report (verdict and
summary) in status.gates and its items in the rubric, and kubectl prints its summary without
knowing it. Shown with a fake gate that sends the candidate requests of zeros shaped by the
contract's inputs and wants an answer carrying every output the contract compares."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import httpx
import pytest

from controller.checks import ReadConfigMap, Verdict
from controller.cli.render import Style, render_get
from controller.gates import GATES, GatePlugin, registry
from controller.gates.checker import GatesChecker, GatesSettings
from controller.gates.errors import GateInputError
from controller.gates.plugin import Contract, ReferenceLoader, Servers
from tests.unit.cli.test_render import NOW, rollout, section_rows
from tests.unit.gates.test_gates_checker import GOLDEN, IRIS, FakeServer, context, transport


@dataclass(frozen=True, kw_only=True)
class SmokeReport:
    requests: int
    """Requests sent."""
    answered: int
    """Answers carrying every output the contract compares."""

    @property
    def passed(self) -> bool:
        return self.answered == self.requests

    def message(self) -> str:
        return f"smoke: {self.answered}/{self.requests} zero requests answered"

    def to_json(self) -> dict[str, Any]:
        return {"requests": self.requests, "answered": self.answered}


@dataclass(frozen=True, kw_only=True)
class Smoke:
    """Requests of zeros, shaped by the contract's inputs, each answered with the contract's outputs."""

    key: ClassVar[str] = "smoke"
    check: ClassVar[str] = "smoke"
    rubric_items: ClassVar[tuple[str, ...]] = ("Infra 3",)
    requests: int

    def read_reference(
        self, *, namespace: str, field_path: str, read_configmap: ReadConfigMap
    ) -> ReferenceLoader | None:
        return None

    def run(self, *, servers: Servers, contract: Contract, reference: object) -> SmokeReport:
        sizes = {tensor.name: [1 if size == -1 else size for size in tensor.shape] for tensor in contract.inputs}
        body = {
            "inputs": [
                {"name": t.name, "datatype": t.datatype, "shape": sizes[t.name], "data": [0] * math.prod(sizes[t.name])}
                for t in contract.inputs
            ]
        }
        answers = [servers.infer("candidate", body) for _ in range(self.requests)]
        wanted = {tensor.name for tensor in contract.outputs}
        answered = sum(1 for a in answers if a.outputs is not None and wanted <= set(a.outputs))
        return SmokeReport(requests=self.requests, answered=answered)


def parse_smoke(raw: Any, where: str) -> Smoke:
    requests = raw.get("requests") if isinstance(raw, Mapping) else None
    if type(requests) is not int or requests < 1:
        raise GateInputError(f"{where}.requests", f"{requests!r} is not a count of requests >= 1")
    return Smoke(requests=requests)


FAKE = GatePlugin(key=Smoke.key, parse_config=parse_smoke)
WITH_SMOKE = registry((*list(GATES.values())[1:], FAKE))


def checked(gates: Mapping[str, Any], baseline: FakeServer, candidate: FakeServer) -> dict[str, Any]:
    """status.gates after one pass of the gates checker with the fake gate registered."""
    checker = GatesChecker(
        read_configmap=lambda namespace, name: None,
        settings=GatesSettings(readiness_attempts=1),
        transport=transport(baseline, candidate),
        sleep=lambda seconds: None,
        gates=WITH_SMOKE,
    )
    outcome = checker(context=context(gates))
    assert outcome is not None
    status: dict[str, Any] = dict(outcome.status_fields["gates"])
    assert outcome.verdict.value == status["verdict"]
    return status


def test_a_registered_gate_runs_after_the_contract_and_the_golden_set_and_reports_in_status_and_rubric() -> None:
    # given the fake gate registered after the shipped ones, and a rollout configuring all three
    candidate = FakeServer()

    # when the gates run
    status = checked({"goldenSet": {"inline": GOLDEN}, "smoke": {"requests": 3}}, FakeServer(), candidate)

    # then the fake ran last, sending requests shaped by the contract (after the 4 golden ones)
    assert status["ran"] == ["contract", "goldenSet", "smoke"]
    zeros = {"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 4], "data": [0, 0, 0, 0]}]}
    assert candidate.infer_bodies[4:] == [zeros] * 3
    # and its report is kept under its key with its verdict and summary, its item in the rubric
    assert status["verdict"] == Verdict.SUCCESSFUL
    assert status["smoke"] == {
        "requests": 3, "answered": 3, "verdict": "Passed", "summary": "smoke: 3/3 zero requests answered"
    }  # fmt: skip
    assert status["message"].endswith("; smoke: 3/3 zero requests answered")
    assert {"item": "Infra 3", "check": "smoke", "verdict": "Successful"} in status["rubric"]


@dataclass
class Refusing(FakeServer):
    """A server that gives its metadata but refuses every infer request (HTTP 400)."""

    def handle(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/infer"):
            self.requests += 1
            return httpx.Response(400, json={"error": "bad input"})
        return super().handle(request)


def test_a_contract_failure_stops_the_gates_before_the_registered_one() -> None:
    # given a candidate that takes 5 features where the baseline takes 4
    candidate = FakeServer(inputs=[{**IRIS, "shape": [-1, 5]}])

    # when the gates run, then only the contract ran, and nothing was sent
    status = checked({"smoke": {"requests": 2}}, FakeServer(), candidate)
    assert status["verdict"] == Verdict.FAILED and status["ran"] == ["contract"]
    assert "smoke" not in status and candidate.infer_bodies == []


def test_its_failure_fails_the_gates_and_the_rubric_item() -> None:
    # given a candidate that honours the contract but refuses to answer
    status = checked({"smoke": {"requests": 2}}, FakeServer(), Refusing())

    # then the fake gate failed the gates, and says so in its report and the rubric
    assert status["verdict"] == Verdict.FAILED and status["ran"] == ["contract", "smoke"]
    assert status["smoke"]["verdict"] == "Failed"
    assert status["smoke"]["summary"] == "smoke: 0/2 zero requests answered"
    assert {"item": "Infra 3", "check": "smoke", "verdict": "Failed"} in status["rubric"]
    assert {"item": "Infra 2", "check": "contract", "verdict": "Successful"} in status["rubric"]


def test_a_bad_field_of_its_block_fails_the_gates_naming_the_field_before_any_server_is_called() -> None:
    baseline, candidate = FakeServer(), FakeServer()
    status = checked({"smoke": {"requests": 0}}, baseline, candidate)
    assert status["verdict"] == Verdict.FAILED
    assert status["message"] == "gates: spec.gates.smoke.requests: 0 is not a count of requests >= 1"
    assert baseline.requests == candidate.requests == 0


def test_without_the_plugin_its_key_configures_nothing_and_a_key_registered_twice_is_refused() -> None:
    checker = GatesChecker(read_configmap=lambda namespace, name: None)
    assert checker(context=context({"smoke": {"requests": 1}})) is None
    with pytest.raises(ValueError, match=r"two plug-ins under spec\.gates\.smoke"):
        registry((FAKE, FAKE))
    with pytest.raises(ValueError, match=r"two plug-ins under spec\.gates\.contract"):
        registry(GATES.values())


def test_kubectl_prints_each_gate_report_in_the_order_they_ran_without_knowing_the_gate() -> None:
    # given the status of gates that ran with the fake gate
    gates = checked({"goldenSet": {"inline": GOLDEN}, "smoke": {"requests": 1}}, FakeServer(), FakeServer())

    # when the rollout is shown
    text = render_get(
        rollout(status={"phase": "Pending", "gates": gates}), events=[], now=NOW, style=Style(color=False)
    )

    # then each gate has its row: its key, verdict and the summary it wrote
    assert section_rows(text, "Gates") == [
        {"GATE": "contract", "RESULT": "Passed",
         "MESSAGE": "contract: candidate inputs and outputs match baseline v1 metadata"},
        {"GATE": "goldenSet", "RESULT": "Passed",
         "MESSAGE": "golden set: candidate agreed with the baseline on 4/4 requests (100.0%, 95.0% required) "
                    "on output label (label)"},
        {"GATE": "smoke", "RESULT": "Passed", "MESSAGE": "smoke: 1/1 zero requests answered"},
    ]  # fmt: skip
