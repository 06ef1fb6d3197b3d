"""Contract matching over Open Inference Protocol model metadata. Pure: values in, values out.

Metadata is what `GET /v2/models/{name}` returns:
`{name, versions, platform, inputs: [{name, datatype, shape}], outputs: [...]}`.

Shapes use -1 for "any size". The candidate must accept every request the expected contract
allows and must not produce anything its consumers do not expect, so the wildcard is read by
direction:

* a -1 in the expected shape accepts any candidate size;
* a -1 in a candidate *input* where a fixed size is expected is fine (it accepts more);
* a -1 in a candidate *output* where a fixed size is expected is a mismatch (it may return
  sizes the consumers cannot handle).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from controller.gates.errors import GateInputError, quoted

OIP_DATATYPES = frozenset(
    {"BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64"}
    | {"FP16", "BF16", "FP32", "FP64", "BYTES"}
)
"""Tensor datatypes of the Open Inference Protocol (v2)."""

ANY_SIZE = -1


class Role(StrEnum):
    INPUT = "input"
    OUTPUT = "output"


@dataclass(frozen=True, kw_only=True)
class TensorSpec:
    name: str
    """The tensor's name in requests and responses."""
    datatype: str
    """One of `OIP_DATATYPES`."""
    shape: tuple[int, ...]
    """Size per dimension; -1 means any size."""

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass(frozen=True, kw_only=True)
class ModelMetadata:
    name: str
    """The model's name as the server reports it."""
    versions: tuple[str, ...]
    """Versions the server says it holds (may be empty)."""
    platform: str
    """The serving platform, e.g. `sklearn` or `onnxruntime_onnx`; reported, not compared."""
    inputs: tuple[TensorSpec, ...]
    """Tensors a request must carry."""
    outputs: tuple[TensorSpec, ...]
    """Tensors a response carries."""


def parse_shape(raw: Any, *, where: str) -> tuple[int, ...]:
    if not isinstance(raw, list) or not all(type(dim) is int and dim >= ANY_SIZE for dim in raw):
        raise GateInputError(where, f"{quoted(raw)} is not a shape; write a list of sizes, -1 for any size")
    return tuple(raw)


def parse_tensor_specs(raw: Any, *, where: str) -> tuple[TensorSpec, ...]:
    """Tensor declarations `[{name, datatype, shape}]`; names must be unique."""
    if not isinstance(raw, list):
        raise GateInputError(where, "must be a list of tensors {name, datatype, shape}")
    specs: list[TensorSpec] = []
    for i, item in enumerate(raw):
        path = f"{where}[{i}]"
        if not isinstance(item, Mapping):
            raise GateInputError(path, "must be an object {name, datatype, shape}")
        name, datatype = item.get("name"), item.get("datatype")
        if not isinstance(name, str) or not name:
            raise GateInputError(f"{path}.name", "is required")
        if datatype not in OIP_DATATYPES:
            raise GateInputError(
                f"{path}.datatype", f"{quoted(datatype)} is not one of {', '.join(sorted(OIP_DATATYPES))}"
            )
        if any(spec.name == name for spec in specs):
            raise GateInputError(f"{path}.name", f"{quoted(name)} appears twice")
        specs.append(
            TensorSpec(name=name, datatype=datatype, shape=parse_shape(item.get("shape"), where=f"{path}.shape"))
        )
    return tuple(specs)


def parse_metadata(raw: Any, *, where: str) -> ModelMetadata:
    """Typed metadata from a `GET /v2/models/{name}` body; `where` names the server for errors."""
    if not isinstance(raw, Mapping):
        raise GateInputError(where, "model metadata must be a JSON object")
    versions = raw.get("versions") or []
    return ModelMetadata(
        name=str(raw.get("name", "")),
        versions=tuple(str(v) for v in versions) if isinstance(versions, list) else (),
        platform=str(raw.get("platform", "")),
        inputs=parse_tensor_specs(raw.get("inputs", []), where=f"{where} inputs"),
        outputs=parse_tensor_specs(raw.get("outputs", []), where=f"{where} outputs"),
    )


def _dimension_fits(*, expected: int, got: int, role: Role) -> bool:
    return expected in (ANY_SIZE, got) or (role is Role.INPUT and got == ANY_SIZE)


def shape_fits(*, expected: Sequence[int], got: Sequence[int], role: Role) -> bool:
    """Whether a candidate tensor of shape `got` honours `expected` (see the module docstring)."""
    return len(expected) == len(got) and all(
        _dimension_fits(expected=e, got=g, role=role) for e, g in zip(expected, got, strict=True)
    )


@dataclass(frozen=True, kw_only=True)
class Mismatch:
    role: Role
    """Whether the tensor is an input or an output."""
    tensor: str
    """The tensor's name."""
    property: str
    """What differs: `presence`, `datatype` or `shape`."""
    expected: str
    """The expected value of that property, as text."""
    got: str
    """The candidate's value of that property, as text."""

    def describe(self) -> str:
        return f"{self.role} {self.tensor}: {self.property} expected {self.expected}, got {self.got}"

    def to_json(self) -> dict[str, str]:
        return {
            "role": self.role.value,
            "tensor": self.tensor,
            "property": self.property,
            "expected": self.expected,
            "got": self.got,
        }


def match_tensors(*, expected: Sequence[TensorSpec], got: Sequence[TensorSpec], role: Role) -> tuple[Mismatch, ...]:
    """Every difference between the expected tensors and the candidate's, expected order first."""
    got_by_name = {spec.name: spec for spec in got}
    expected_names = {spec.name for spec in expected}
    mismatches: list[Mismatch] = []
    for want in expected:
        have = got_by_name.get(want.name)
        if have is None:
            mismatches.append(
                Mismatch(role=role, tensor=want.name, property="presence", expected="present", got="missing")
            )
            continue
        if have.datatype != want.datatype:
            mismatches.append(
                Mismatch(
                    role=role,
                    tensor=want.name,
                    property="datatype",
                    expected=want.datatype,
                    got=have.datatype,
                )
            )
        if not shape_fits(expected=want.shape, got=have.shape, role=role):
            mismatches.append(
                Mismatch(
                    role=role,
                    tensor=want.name,
                    property="shape",
                    expected=str(list(want.shape)),
                    got=str(list(have.shape)),
                )
            )
    mismatches.extend(
        Mismatch(role=role, tensor=extra.name, property="presence", expected="absent", got="present")
        for extra in got
        if extra.name not in expected_names
    )
    return tuple(mismatches)


@dataclass(frozen=True, kw_only=True)
class ContractReport:
    expected_from: str
    """Where the expected tensors came from, e.g. `baseline v1` or `spec.gates.contract`."""
    outputs_checked: bool
    """False when the spec allows the candidate's outputs to change."""
    mismatches: tuple[Mismatch, ...]
    """Every difference found; empty when the contract holds."""

    @property
    def passed(self) -> bool:
        return not self.mismatches

    def message(self) -> str:
        if self.passed:
            checked = "inputs and outputs" if self.outputs_checked else "inputs"
            return f"contract: candidate {checked} match {self.expected_from}"
        return f"contract: candidate does not match {self.expected_from}: " + "; ".join(
            m.describe() for m in self.mismatches
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "expectedFrom": self.expected_from,
            "outputsChecked": self.outputs_checked,
            "mismatches": [m.to_json() for m in self.mismatches],
        }


def check_contract(
    *,
    candidate: ModelMetadata,
    expected_inputs: Sequence[TensorSpec],
    expected_outputs: Sequence[TensorSpec] | None,
    expected_from: str,
) -> ContractReport:
    """The candidate's inputs, and its outputs unless `expected_outputs` is None, against the contract."""
    mismatches = match_tensors(expected=expected_inputs, got=candidate.inputs, role=Role.INPUT)
    if expected_outputs is not None:
        mismatches += match_tensors(expected=expected_outputs, got=candidate.outputs, role=Role.OUTPUT)
    return ContractReport(
        expected_from=expected_from, outputs_checked=expected_outputs is not None, mismatches=mismatches
    )
