"""What a gate plug-in is: one object per module, listed once in `controller.gates.GATES`.

    GatePlugin
      key           the key under spec.gates that configures the gate ("contract", "goldenSet", ...)
      parse_config  spec.gates.<key> (raw JSON) and its field path -> the gate's typed `Gate`;
                    GateInputError naming the field (the gates fail on it, before any traffic)

The typed gate says which ML Test Score items it verifies, what it reads from the cluster
(`read_reference`: a golden set's ConfigMap; missing, a ReferenceProblem naming the field, so the
rollout waits for it) and how it judges the two model servers (`run`, to a `GateReport`). The
contract gate always runs first and hands every later gate the `Contract`: the tensors requests
carry and answers are compared on. The checker runs the gates in the registry's order, stops at
the first that fails, and keeps each report in status.gates with its own verdict and one-line
summary; it never looks at a gate's type.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from controller.checks import ReadConfigMap
from controller.gates.contract import ModelMetadata, TensorSpec
from controller.gates.golden import InferAnswer
from controller.gates.oip import OipClient

ROLES = ("baseline", "candidate")
"""The two model servers every gate compares, by role."""

ReferenceLoader = Callable[[], object]
"""Parses what a gate read from the cluster; raises GateInputError when it cannot be used."""


@dataclass(frozen=True, kw_only=True)
class Contract:
    """The tensors the candidate is held to, fixed by the contract gate before any gate runs."""

    inputs: tuple[TensorSpec, ...]
    """What a request carries: declared in spec.gates.contract, else the baseline's inputs."""
    expected_outputs: tuple[TensorSpec, ...] | None
    """What answers must carry; None when the spec allows the candidate's outputs to change."""
    outputs: tuple[TensorSpec, ...]
    """The outputs answers are compared on: the expected ones, else the candidate's own."""
    expected_from: str
    """Where the expected tensors come from, for messages: `baseline v1 metadata`, `spec.gates.contract`."""


@dataclass(frozen=True, kw_only=True)
class Servers:
    """The baseline's and the candidate's model servers, both ready, as the gates call them."""

    model: str
    """The model's name in the servers' URLs."""
    versions: Mapping[str, str]
    """Version by role (`ROLES`)."""
    metadata: Mapping[str, ModelMetadata]
    """What each server says it takes and returns, by role."""
    clients: Mapping[str, OipClient]
    """The Open Inference Protocol client of each server, by role (the outbound fence applies)."""

    def infer(self, role: str, body: dict[str, Any]) -> InferAnswer:
        """What the server in `role` answers to one request; OipUnavailable when it cannot answer now."""
        return self.clients[role].infer(model=self.model, body=body)


class GateReport(Protocol):
    """What one gate found; kept in status.gates under the gate's key."""

    @property
    def passed(self) -> bool:
        """Whether the candidate passed this gate."""
        ...

    def message(self) -> str:
        """What it found, in one line: the gate's summary in status and in kubectl."""
        ...

    def to_json(self) -> dict[str, Any]:
        """The report for status.gates.<key>; short: it lives in the rollout's status."""
        ...


class Gate(Protocol):
    """A gate's typed configuration, and how it judges the servers."""

    key: ClassVar[str]
    """The key under spec.gates that configures it; its report's key in status.gates."""
    check: ClassVar[str]
    """Its name in status.rubric (`golden-set`)."""
    rubric_items: ClassVar[tuple[str, ...]]
    """The ML Test Score items (`Infra 4`) a report of the gate verifies."""

    def read_reference(
        self, *, namespace: str, field_path: str, read_configmap: ReadConfigMap
    ) -> ReferenceLoader | None:
        """What the gate judges with (a golden set, from the spec or a ConfigMap), `field_path`
        being spec.gates.<key>: raises ReferenceProblem naming the field when it is missing (the
        rollout waits for it), returns how to parse it (a malformed one fails the gate); None when
        the gate reads nothing."""
        ...

    def run(self, *, servers: Servers, contract: Contract, reference: object) -> GateReport:
        """The gate's report on the ready servers, held to `contract`, with what its loader parsed
        (None without a reference). May call the servers; raises OipUnavailable, GateInputError."""
        ...


@dataclass(frozen=True, kw_only=True)
class GatePlugin:
    key: str
    """The key under spec.gates that configures the gate."""
    parse_config: Callable[[Any, str], Gate]
    """spec.gates.<key> (raw JSON) and its field path -> the typed gate; raises GateInputError."""


def report_json(report: GateReport) -> dict[str, Any]:
    """A gate's report as status.gates keeps it: its own fields, its verdict and its one-line
    summary, which kubectl prints without knowing the gate."""
    return {**report.to_json(), "verdict": "Passed" if report.passed else "Failed", "summary": report.message()}
