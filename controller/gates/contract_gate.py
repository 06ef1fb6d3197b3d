"""The contract gate (Infra 2, Data 1): the candidate's inputs and outputs, from its Open Inference
Protocol metadata, against the contract: tensors declared in spec.gates.contract, else the
baseline's metadata (docs/checks/contract.md). It always runs first, whether spec.gates names it or
not: the `Contract` it fixes is what every later gate sends and compares."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from controller.checks import ReadConfigMap
from controller.gates import fields
from controller.gates.contract import ContractReport, ModelMetadata, TensorSpec, check_contract, parse_tensor_specs
from controller.gates.errors import GateInputError
from controller.gates.plugin import Contract, GatePlugin, ReferenceLoader, Servers

KEY = "contract"


@dataclass(frozen=True, kw_only=True)
class ContractGate:
    """spec.gates.contract, typed."""

    key: ClassVar[str] = KEY
    check: ClassVar[str] = "contract"
    rubric_items: ClassVar[tuple[str, ...]] = ("Infra 2", "Data 1")
    allow_output_changes: bool = False
    """True lets the candidate's outputs differ from the expected ones (only inputs are checked)."""
    inputs: tuple[TensorSpec, ...] | None = None
    """Declared inputs; None means the baseline's metadata is the contract."""
    outputs: tuple[TensorSpec, ...] | None = None
    """Declared outputs; None means the baseline's metadata is the contract."""

    def terms(self, *, metadata: Mapping[str, ModelMetadata], baseline: str) -> Contract:
        """The tensors the candidate is held to, from the declared ones and the servers' metadata."""
        from_baseline = f"baseline {baseline} metadata"
        inputs = self.inputs if self.inputs is not None else metadata["baseline"].inputs
        sources = {"spec.gates.contract" if self.inputs is not None else from_baseline}
        expected_outputs = None
        if not self.allow_output_changes:
            expected_outputs = self.outputs if self.outputs is not None else metadata["baseline"].outputs
            sources.add("spec.gates.contract" if self.outputs is not None else from_baseline)
        return Contract(
            inputs=inputs,
            expected_outputs=expected_outputs,
            outputs=expected_outputs if expected_outputs is not None else metadata["candidate"].outputs,
            expected_from=" and ".join(sorted(sources)),
        )

    def read_reference(
        self, *, namespace: str, field_path: str, read_configmap: ReadConfigMap
    ) -> ReferenceLoader | None:
        return None

    def run(self, *, servers: Servers, contract: Contract, reference: object) -> ContractReport:
        return check_contract(
            candidate=servers.metadata["candidate"],
            expected_inputs=contract.inputs,
            expected_outputs=contract.expected_outputs,
            expected_from=contract.expected_from,
        )


def parse_config(raw: Any, where: str) -> ContractGate:
    config = fields.block(raw, where)
    allow = config.get("allowOutputChanges", False)
    if not isinstance(allow, bool):
        raise GateInputError(f"{where}.allowOutputChanges", f"{allow!r} is not true or false")
    return ContractGate(
        allow_output_changes=allow,
        inputs=_declared(config, "inputs", where),
        outputs=_declared(config, "outputs", where),
    )


def _declared(config: Mapping[str, Any], key: str, where: str) -> tuple[TensorSpec, ...] | None:
    return None if config.get(key) is None else parse_tensor_specs(config[key], where=f"{where}.{key}")


PLUGIN = GatePlugin(key=KEY, parse_config=parse_config)
