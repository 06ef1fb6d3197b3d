"""The golden set: fixed requests sent to baseline and candidate, and the rules their answers meet.

Pure: parsing the set, building request bodies and judging the answers. Sending is `oip.py`'s.

Request bodies carry only the tensors the contract declares, with only `name`, `datatype`,
`shape` and `data`: anything else in a golden-set entry (ids, notes, extra fields such as a
customer e-mail) stays in the controller (ML Test Score Data 5).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from controller.gates.contract import Role, TensorSpec, parse_shape, shape_fits
from controller.gates.errors import GateInputError, quoted

MAX_GOLDEN_REQUESTS = 1000
"""A golden set is a smoke test run inside a reconcile pass; larger sets belong in offline eval."""

REPORTED_DISAGREEMENTS = 5
"""Worst disagreements (and problems) listed in status; the rest are only counted."""

REPORTED_VALUES = 8
"""Values of a tensor shown per disagreement, so the status stays small."""

_NON_FINITE_SPELLINGS = frozenset({"nan", "inf", "+inf", "-inf", "infinity", "+infinity", "-infinity"})


class CompareMode(StrEnum):
    """How a candidate answer is compared with the baseline's."""

    LABEL = "label"
    """Every value equal (class ids, class names)."""
    ARGMAX = "argmax"
    """The index of the largest value along the last dimension equal (class scores)."""
    SCORE = "score"
    """Every value within `tolerance` of the baseline's (regression, probabilities)."""


@dataclass(frozen=True, kw_only=True)
class Bounds:
    min: float | None = None
    """Smallest value the compared output may take (inclusive)."""
    max: float | None = None
    """Largest value the compared output may take (inclusive)."""


@dataclass(frozen=True, kw_only=True)
class AgreementRules:
    output: str | None = None
    """Output tensor compared; None means the first output the contract declares."""
    compare: CompareMode | None = None
    """None means `score` for FP datatypes and `label` for all others."""
    tolerance: float = 1e-6
    """Largest absolute difference between two scores that still agrees."""
    min_agreement: float = 0.95
    """Share of golden requests on which the candidate must agree with the baseline."""
    bounds: Bounds | None = None
    """Range every value of the candidate's compared output must fall in."""


@dataclass(frozen=True, kw_only=True)
class Tensor:
    name: str
    """Tensor name."""
    datatype: str
    """OIP datatype."""
    shape: tuple[int, ...]
    """Actual sizes (no -1)."""
    data: tuple[Any, ...]
    """Values, flattened in row-major order."""


@dataclass(frozen=True, kw_only=True)
class GoldenRequest:
    label: str
    """How the report names the request: its `id` in the golden set, else its position."""
    inputs: tuple[Tensor, ...]
    """The contract's input tensors, nothing else."""

    def body(self) -> dict[str, Any]:
        """The infer request body: declared tensors only, and only their protocol fields."""
        return {
            "inputs": [
                {"name": t.name, "datatype": t.datatype, "shape": list(t.shape), "data": list(t.data)}
                for t in self.inputs
            ]
        }


@dataclass(frozen=True, kw_only=True)
class InferAnswer:
    """What one server answered to one golden request."""

    outputs: Mapping[str, Tensor] | None
    """Output tensors by name; None when the server refused or the answer was unreadable."""
    error: str | None = None
    """Why there are no outputs (HTTP status and body, unreadable JSON)."""


def _flatten(data: Any) -> list[Any]:
    if isinstance(data, list):
        return [value for item in data for value in _flatten(item)]
    return [data]


def _value_fits(value: Any, datatype: str) -> bool:
    if datatype == "BYTES":
        return isinstance(value, str)
    if datatype == "BOOL":
        return isinstance(value, bool)
    if datatype.startswith(("INT", "UINT")):
        return type(value) is int
    return isinstance(value, int | float) and not isinstance(value, bool)


def _parse_input(raw: Any, *, declared: TensorSpec, where: str) -> Tensor:
    if not isinstance(raw, Mapping):
        raise GateInputError(where, "must be an object {name, data, shape?, datatype?}")
    datatype = raw.get("datatype", declared.datatype)
    if datatype != declared.datatype:
        raise GateInputError(f"{where}.datatype", f"{datatype!r} but the contract declares {declared.datatype}")
    if "shape" in raw:
        shape = parse_shape(raw["shape"], where=f"{where}.shape")
    elif -1 in declared.shape:
        raise GateInputError(f"{where}.shape", f"required: the contract's shape {list(declared.shape)} has -1")
    else:
        shape = declared.shape
    # A request has concrete sizes: like an output, it may not have -1 where the contract is fixed.
    if -1 in shape or not shape_fits(expected=declared.shape, got=shape, role=Role.OUTPUT):
        raise GateInputError(f"{where}.shape", f"{list(shape)} does not fit the contract's {list(declared.shape)}")
    data = _flatten(raw.get("data"))
    if len(data) != math.prod(shape):
        raise GateInputError(f"{where}.data", f"has {len(data)} values, shape {list(shape)} needs {math.prod(shape)}")
    wrong = next((value for value in data if not _value_fits(value, datatype)), None)
    if wrong is not None:
        raise GateInputError(f"{where}.data", f"{wrong!r} is not a {datatype} value")
    return Tensor(name=declared.name, datatype=datatype, shape=shape, data=tuple(data))


def parse_golden_set(raw: Any, *, where: str, contract_inputs: Sequence[TensorSpec]) -> tuple[GoldenRequest, ...]:
    """Requests `[{id?, inputs: [{name, data, shape?, datatype?}]}]` checked against the contract.

    Every declared input must be present; inputs the contract does not declare are dropped.
    """
    if not isinstance(raw, list) or not raw:
        raise GateInputError(where, "must be a non-empty list of requests {inputs: [...]}")
    if len(raw) > MAX_GOLDEN_REQUESTS:
        raise GateInputError(where, f"has {len(raw)} requests; at most {MAX_GOLDEN_REQUESTS}")
    requests = []
    for i, entry in enumerate(raw):
        path = f"{where}[{i}]"
        if not isinstance(entry, Mapping) or not isinstance(entry.get("inputs"), list):
            raise GateInputError(path, "must be an object with a list `inputs`")
        given = {item.get("name"): j for j, item in enumerate(entry["inputs"]) if isinstance(item, Mapping)}
        tensors = []
        for declared in contract_inputs:
            if declared.name not in given:
                raise GateInputError(f"{path}.inputs", f"lacks {declared.name!r}, which the contract declares")
            j = given[declared.name]
            tensors.append(_parse_input(entry["inputs"][j], declared=declared, where=f"{path}.inputs[{j}]"))
        requests.append(GoldenRequest(label=str(entry.get("id", f"#{i}")), inputs=tuple(tensors)))
    return tuple(requests)


def parse_infer_response(raw: Any) -> dict[str, Tensor]:
    """Output tensors of an infer response body; raises GateInputError when it is not one."""
    if not isinstance(raw, Mapping) or not isinstance(raw.get("outputs"), list):
        raise GateInputError("infer response", "has no list `outputs`")
    outputs: dict[str, Tensor] = {}
    for i, item in enumerate(raw["outputs"]):
        where = f"infer response outputs[{i}]"
        if not isinstance(item, Mapping) or not isinstance(item.get("name"), str):
            raise GateInputError(where, "must be an object with a `name`")
        shape = item.get("shape", [])
        if not isinstance(shape, list) or not all(type(d) is int for d in shape):
            raise GateInputError(f"{where}.shape", f"{quoted(shape)} is not a list of sizes")
        outputs[item["name"]] = Tensor(
            name=item["name"],
            datatype=str(item.get("datatype", "")),
            shape=tuple(shape),
            data=tuple(_flatten(item.get("data", []))),
        )
    return outputs


def is_finite_number(value: Any) -> bool:
    """False for NaN, +-Inf (as floats or spelled as strings, as some servers do) and null."""
    if isinstance(value, str):
        return value.strip().lower() not in _NON_FINITE_SPELLINGS and _is_float_text(value)
    return isinstance(value, int | float) and math.isfinite(value)


def _is_float_text(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def _is_numeric(datatype: str) -> bool:
    return datatype != "BYTES"


def _argmax_rows(tensor: Tensor) -> list[int]:
    width = tensor.shape[-1] if tensor.shape else len(tensor.data)
    if width <= 0:
        return []
    rows = [tensor.data[start : start + width] for start in range(0, len(tensor.data), width)]
    return [max(range(len(row)), key=lambda k: float(row[k])) for row in rows]


def difference(*, baseline: Tensor, candidate: Tensor, mode: CompareMode) -> float:
    """How far the candidate's answer is from the baseline's; inf when not comparable.

    label/argmax: share of values (rows) that differ. score: largest absolute difference.
    """
    if baseline.shape != candidate.shape or len(baseline.data) != len(candidate.data):
        return math.inf
    if mode is CompareMode.LABEL:
        differing = sum(1 for b, c in zip(baseline.data, candidate.data, strict=True) if b != c)
        return differing / max(len(baseline.data), 1)
    if not all(is_finite_number(v) for v in (*baseline.data, *candidate.data)):
        return math.inf
    if mode is CompareMode.ARGMAX:
        base_rows, cand_rows = _argmax_rows(baseline), _argmax_rows(candidate)
        return sum(1 for b, c in zip(base_rows, cand_rows, strict=True) if b != c) / max(len(base_rows), 1)
    return max((abs(float(b) - float(c)) for b, c in zip(baseline.data, candidate.data, strict=True)), default=0.0)


def _agrees(diff: float, *, mode: CompareMode, tolerance: float) -> bool:
    return diff <= tolerance if mode is CompareMode.SCORE else diff == 0


@dataclass(frozen=True, kw_only=True)
class Disagreement:
    request: str
    """The golden request's label."""
    difference: float
    """See `difference()`; inf when the answers cannot be compared."""
    baseline: tuple[Any, ...]
    """First values of the baseline's compared output."""
    candidate: tuple[Any, ...]
    """First values of the candidate's compared output."""

    def to_json(self) -> dict[str, Any]:
        return {
            "request": self.request,
            "difference": self.difference if math.isfinite(self.difference) else str(self.difference),
            "baseline": [_json_safe(v) for v in self.baseline],
            "candidate": [_json_safe(v) for v in self.candidate],
        }


def _json_safe(value: Any) -> Any:
    """NaN and Inf are not JSON; status shows them spelled out."""
    return str(value) if isinstance(value, float) and not math.isfinite(value) else value


@dataclass(frozen=True, kw_only=True)
class GoldenReport:
    output: str
    """The output tensor compared."""
    mode: CompareMode
    """How it was compared."""
    requests: int
    """Golden requests sent."""
    agreed: int
    """Requests on which the candidate agreed with the baseline."""
    min_agreement: float
    """Share required, from the rules."""
    problems: tuple[str, ...]
    """Hard failures whatever the agreement: refused requests, non-finite values, out of bounds."""
    worst: tuple[Disagreement, ...]
    """The largest disagreements, worst first, at most `REPORTED_DISAGREEMENTS`."""
    source: str = ""
    """Where the requests came from: `spec.gates.goldenSet.inline`, or a ConfigMap and its key."""

    @property
    def agreement(self) -> float:
        return self.agreed / self.requests if self.requests else 0.0

    @property
    def passed(self) -> bool:
        return not self.problems and self.agreement >= self.min_agreement

    def message(self) -> str:
        summary = (
            f"golden set: candidate agreed with the baseline on {self.agreed}/{self.requests} requests "
            f"({self.agreement:.1%}, {self.min_agreement:.1%} required) on output {self.output} ({self.mode})"
        )
        if self.problems:
            shown = "; ".join(self.problems[:REPORTED_DISAGREEMENTS])
            more = len(self.problems) - REPORTED_DISAGREEMENTS
            return f"{summary}; {len(self.problems)} problems: {shown}" + (f"; and {more} more" if more > 0 else "")
        if not self.passed and self.worst:
            worst = self.worst[0]
            return f"{summary}; worst: request {worst.request} differs by {worst.difference:g}"
        return summary

    def to_json(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "output": self.output,
            "compare": self.mode.value,
            "requests": self.requests,
            "agreed": self.agreed,
            "agreement": round(self.agreement, 4),
            "minAgreement": self.min_agreement,
            "problemCount": len(self.problems),
            "problems": list(self.problems[:REPORTED_DISAGREEMENTS]),
            "worstDisagreements": [d.to_json() for d in self.worst],
            "source": self.source,
        }


def _candidate_problems(*, label: str, answer: Mapping[str, Tensor], compared: str, bounds: Bounds | None) -> list[str]:
    problems = []
    for tensor in answer.values():
        if _is_numeric(tensor.datatype):
            non_finite = sum(1 for v in tensor.data if not is_finite_number(v))
            if non_finite:
                problems.append(f"request {label}: candidate output {tensor.name} has {non_finite} non-finite values")
    compared_tensor = answer.get(compared)
    if bounds is not None and compared_tensor is not None:
        outside = [
            v
            for v in compared_tensor.data
            if is_finite_number(v)
            and (
                (bounds.min is not None and float(v) < bounds.min) or (bounds.max is not None and float(v) > bounds.max)
            )
        ]
        if outside:
            problems.append(
                f"request {label}: candidate output {compared} has {len(outside)} values outside "
                f"[{bounds.min}, {bounds.max}], e.g. {outside[0]}"
            )
    return problems


def judge_golden_set(
    *,
    requests: Sequence[GoldenRequest],
    baseline: Sequence[InferAnswer],
    candidate: Sequence[InferAnswer],
    contract_outputs: Sequence[TensorSpec],
    rules: AgreementRules,
) -> GoldenReport:
    """Judges the candidate's answers (one per request, same order) against the baseline's.

    `contract_outputs` picks the compared output and its default comparison when the rules do not.
    """
    compared = rules.output or (contract_outputs[0].name if contract_outputs else "")
    declared = next((t for t in contract_outputs if t.name == compared), None)
    datatype = declared.datatype if declared else "FP64"
    mode = rules.compare or (CompareMode.SCORE if datatype.startswith(("FP", "BF")) else CompareMode.LABEL)
    problems: list[str] = []
    disagreements: list[Disagreement] = []
    agreed = 0
    for request, base, cand in zip(requests, baseline, candidate, strict=True):
        if base.outputs is None:
            problems.append(f"request {request.label}: the baseline refused it ({base.error})")
            continue
        if cand.outputs is None:
            problems.append(f"request {request.label}: the candidate refused it ({cand.error})")
            continue
        problems += _candidate_problems(
            label=request.label, answer=cand.outputs, compared=compared, bounds=rules.bounds
        )
        base_tensor, cand_tensor = base.outputs.get(compared), cand.outputs.get(compared)
        if base_tensor is None or cand_tensor is None:
            side = "baseline" if base_tensor is None else "candidate"
            problems.append(f"request {request.label}: the {side} answer has no output {compared}")
            continue
        diff = difference(baseline=base_tensor, candidate=cand_tensor, mode=mode)
        if _agrees(diff, mode=mode, tolerance=rules.tolerance):
            agreed += 1
        else:
            disagreements.append(
                Disagreement(
                    request=request.label,
                    difference=diff,
                    baseline=base_tensor.data[:REPORTED_VALUES],
                    candidate=cand_tensor.data[:REPORTED_VALUES],
                )
            )
    disagreements.sort(key=lambda d: d.difference, reverse=True)
    return GoldenReport(
        output=compared,
        mode=mode,
        requests=len(requests),
        agreed=agreed,
        min_agreement=rules.min_agreement,
        problems=tuple(problems),
        worst=tuple(disagreements[:REPORTED_DISAGREEMENTS]),
    )
