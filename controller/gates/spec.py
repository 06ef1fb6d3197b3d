"""spec.gates as typed values. Pure; raises GateInputError naming the field.

gates:
  readinessTimeout: 60s
  contract:
    allowOutputChanges: false
    inputs:  [{name, datatype, shape}]   # optional: default is the baseline's metadata
    outputs: [{name, datatype, shape}]   # optional: default is the baseline's metadata
  goldenSet:
    inline: [{id?, inputs: [{name, data, shape?, datatype?}]}]   # or configMapRef
    configMapRef: {name, key}
    output: probabilities
    compare: label | argmax | score
    tolerance: 1e-6
    minAgreement: 0.95
    bounds: {min: 0, max: 1}
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from controller.api import SpecError, parse_duration, refusing_malformed
from controller.gates.contract import TensorSpec, parse_tensor_specs
from controller.gates.errors import GateInputError
from controller.gates.golden import AgreementRules, Bounds, CompareMode

DEFAULT_READINESS_TIMEOUT_SECONDS = 60.0


@dataclass(frozen=True, kw_only=True)
class ContractSpec:
    allow_output_changes: bool = False
    """True lets the candidate's outputs differ from the expected ones (only inputs are checked)."""
    inputs: tuple[TensorSpec, ...] | None = None
    """Declared inputs; None means the baseline's metadata is the contract."""
    outputs: tuple[TensorSpec, ...] | None = None
    """Declared outputs; None means the baseline's metadata is the contract."""


@dataclass(frozen=True, kw_only=True)
class ConfigMapRef:
    name: str
    """ConfigMap in the rollout's namespace."""
    key: str
    """Key whose value is the golden set as JSON."""


@dataclass(frozen=True, kw_only=True)
class GoldenSetSpec:
    inline: tuple[Any, ...] | None
    """Requests written in the spec, still unparsed (parsing needs the contract)."""
    config_map: ConfigMapRef | None
    """Where the requests are otherwise; exactly one of `inline` and `config_map` is set."""
    rules: AgreementRules
    """What the candidate's answers must satisfy."""


@dataclass(frozen=True, kw_only=True)
class GatesSpec:
    contract: ContractSpec
    """Always checked when any gate is configured: the golden set needs the contract's tensors."""
    golden_set: GoldenSetSpec | None
    """The golden-set gate; None when only the contract is checked."""
    readiness_timeout_seconds: float = DEFAULT_READINESS_TIMEOUT_SECONDS
    """How long both servers may take to become ready before the gate gives up."""


def _object(raw: Any, where: str) -> Mapping[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise GateInputError(where, "must be an object")
    return raw


def _number(raw: Mapping[str, Any], key: str, where: str, default: float | None) -> float | None:
    value = raw.get(key, default)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise GateInputError(f"{where}.{key}", f"{value!r} is not a number")
    return None if value is None else float(value)


def _parse_contract(raw: Mapping[str, Any]) -> ContractSpec:
    where = "spec.gates.contract"
    allow = raw.get("allowOutputChanges", False)
    if not isinstance(allow, bool):
        raise GateInputError(f"{where}.allowOutputChanges", f"{allow!r} is not true or false")
    return ContractSpec(
        allow_output_changes=allow,
        inputs=None if raw.get("inputs") is None else parse_tensor_specs(raw["inputs"], where=f"{where}.inputs"),
        outputs=None if raw.get("outputs") is None else parse_tensor_specs(raw["outputs"], where=f"{where}.outputs"),
    )


def _parse_golden_set(raw: Mapping[str, Any]) -> GoldenSetSpec:
    where = "spec.gates.goldenSet"
    inline, ref = raw.get("inline"), raw.get("configMapRef")
    if (inline is None) == (ref is None):
        raise GateInputError(where, "give exactly one of inline and configMapRef")
    if inline is not None and not isinstance(inline, list):
        raise GateInputError(f"{where}.inline", "must be a list of requests {inputs: [...]}")
    config_map = None
    if ref is not None:
        ref = _object(ref, f"{where}.configMapRef")
        name, key = ref.get("name"), ref.get("key")
        if not isinstance(name, str) or not name or not isinstance(key, str) or not key:
            raise GateInputError(f"{where}.configMapRef", "needs both name and key")
        config_map = ConfigMapRef(name=name, key=key)
    compare = raw.get("compare")
    if compare is not None and compare not in CompareMode._value2member_map_:
        raise GateInputError(f"{where}.compare", f"{compare!r} is not one of label, argmax, score")
    min_agreement = _number(raw, "minAgreement", where, AgreementRules.min_agreement)
    if min_agreement is None or not 0 <= min_agreement <= 1:
        raise GateInputError(f"{where}.minAgreement", f"{min_agreement!r} is not a share from 0 to 1")
    tolerance = _number(raw, "tolerance", where, AgreementRules.tolerance)
    if tolerance is None or tolerance < 0:
        raise GateInputError(f"{where}.tolerance", f"{tolerance!r} is not a number >= 0")
    bounds_raw = raw.get("bounds")
    bounds = None
    if bounds_raw is not None:
        bounds_raw = _object(bounds_raw, f"{where}.bounds")
        bounds = Bounds(
            min=_number(bounds_raw, "min", f"{where}.bounds", None),
            max=_number(bounds_raw, "max", f"{where}.bounds", None),
        )
        if bounds.min is not None and bounds.max is not None and bounds.min > bounds.max:
            raise GateInputError(
                f"{where}.bounds.min",
                f"{bounds.min:g} is above bounds.max {bounds.max:g}, so no output can be in bounds; swap them",
            )
    output = raw.get("output")
    if output is not None and (not isinstance(output, str) or not output):
        raise GateInputError(f"{where}.output", f"{output!r} is not a tensor name")
    return GoldenSetSpec(
        inline=None if inline is None else tuple(inline),
        config_map=config_map,
        rules=AgreementRules(
            output=output,
            compare=None if compare is None else CompareMode(compare),
            tolerance=tolerance,
            min_agreement=min_agreement,
            bounds=bounds,
        ),
    )


def configures_gates(raw: Mapping[str, Any]) -> bool:
    """Whether spec.gates asks for any gate; readinessTimeout alone checks nothing."""
    return raw.get("contract") is not None or raw.get("goldenSet") is not None


@refusing_malformed("spec.gates", error=GateInputError)
def parse_gates(raw: Mapping[str, Any]) -> GatesSpec:
    """Typed spec.gates (see `configures_gates` for whether there is anything to parse)."""
    golden_raw = raw.get("goldenSet")
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
        contract=_parse_contract(_object(raw.get("contract"), "spec.gates.contract")),
        golden_set=None if golden_raw is None else _parse_golden_set(_object(golden_raw, "spec.gates.goldenSet")),
        readiness_timeout_seconds=timeout,
    )
