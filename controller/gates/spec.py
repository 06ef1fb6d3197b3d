"""spec.gates as typed values. Pure; raises GateInputError naming the field.

gates:
  readinessTimeout: 60s
  contract: {...}     # controller.gates.contract_gate: always checked when any gate is configured
  goldenSet: {...}    # controller.gates.golden_set_gate
  <key>: {...}        # any gate of the registry (controller.gates.GATES), parsed by its plug-in
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from controller.api import SpecError, parse_duration, refusing_malformed
from controller.gates import GATES, contract_gate
from controller.gates.contract_gate import ContractGate
from controller.gates.errors import GateInputError
from controller.gates.plugin import Gate, GatePlugin

DEFAULT_READINESS_TIMEOUT_SECONDS = 60.0


@dataclass(frozen=True, kw_only=True)
class GatesSpec:
    contract: ContractGate
    """Always checked first when any gate is configured: it fixes the tensors of every later gate."""
    after_contract: tuple[Gate, ...]
    """The other gates configured, in the registry's order."""
    readiness_timeout_seconds: float = DEFAULT_READINESS_TIMEOUT_SECONDS
    """How long both servers may take to become ready before the gates give up."""

    @property
    def gates(self) -> tuple[Gate, ...]:
        """Every gate to run, in order."""
        return (self.contract, *self.after_contract)


def configures_gates(raw: Mapping[str, Any], *, gates: Mapping[str, GatePlugin] = GATES) -> bool:
    """Whether spec.gates asks for any gate; readinessTimeout alone checks nothing."""
    return any(raw.get(key) is not None for key in gates)


@refusing_malformed("spec.gates", error=GateInputError)
def parse_gates(raw: Mapping[str, Any], *, gates: Mapping[str, GatePlugin] = GATES) -> GatesSpec:
    """Typed spec.gates (see `configures_gates` for whether there is anything to parse), each
    gate's block parsed by its plug-in."""
    timeout_raw = raw.get("readinessTimeout")
    try:
        timeout = (
            DEFAULT_READINESS_TIMEOUT_SECONDS
            if timeout_raw is None
            else parse_duration(str(timeout_raw), field_path="spec.gates.readinessTimeout")
        )
    except SpecError as error:
        raise GateInputError(error.field_path, str(error).removeprefix(f"{error.field_path}: ")) from error
    return GatesSpec(
        contract=contract_gate.parse_config(raw.get(contract_gate.KEY), f"spec.gates.{contract_gate.KEY}"),
        after_contract=tuple(
            plugin.parse_config(raw[key], f"spec.gates.{key}")
            for key, plugin in gates.items()
            if key != contract_gate.KEY and raw.get(key) is not None
        ),
        readiness_timeout_seconds=timeout,
    )
