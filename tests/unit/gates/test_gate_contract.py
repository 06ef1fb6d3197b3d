"""Contract matching over OIP metadata: names, datatypes, shapes with -1, outputs, malformed metadata."""

from __future__ import annotations

from typing import Any

import pytest

from controller.gates.contract import Role, TensorSpec, check_contract, parse_metadata, shape_fits
from controller.gates.errors import GateInputError


def tensor(name: str, datatype: str, shape: Any) -> dict[str, Any]:
    return {"name": name, "datatype": datatype, "shape": shape}


def metadata(*, inputs: list[dict[str, Any]], outputs: list[dict[str, Any]]) -> dict[str, Any]:
    return {"name": "iris", "versions": ["2"], "platform": "sklearn", "inputs": inputs, "outputs": outputs}


BASELINE = parse_metadata(
    metadata(inputs=[tensor("features", "FP32", [-1, 4])], outputs=[tensor("label", "INT64", [-1])]),
    where="baseline v1 metadata",
)


def judge(candidate_raw: dict[str, Any], *, check_outputs: bool = True) -> list[str]:
    report = check_contract(
        candidate=parse_metadata(candidate_raw, where="candidate v2 metadata"),
        expected_inputs=BASELINE.inputs,
        expected_outputs=BASELINE.outputs if check_outputs else None,
        expected_from="baseline v1 metadata",
    )
    return [m.describe() for m in report.mismatches]


def test_an_identical_candidate_matches() -> None:
    candidate = metadata(inputs=[tensor("features", "FP32", [-1, 4])], outputs=[tensor("label", "INT64", [-1])])
    assert judge(candidate) == []


def test_a_changed_input_datatype_names_tensor_property_and_both_values() -> None:
    candidate = metadata(inputs=[tensor("features", "FP64", [-1, 4])], outputs=[tensor("label", "INT64", [-1])])
    assert judge(candidate) == ["input features: datatype expected FP32, got FP64"]


def test_a_fixed_feature_count_change_is_a_shape_mismatch() -> None:
    candidate = metadata(inputs=[tensor("features", "FP32", [-1, 5])], outputs=[tensor("label", "INT64", [-1])])
    assert judge(candidate) == ["input features: shape expected [-1, 4], got [-1, 5]"]


def test_a_different_rank_is_a_shape_mismatch() -> None:
    candidate = metadata(inputs=[tensor("features", "FP32", [4])], outputs=[tensor("label", "INT64", [-1])])
    assert judge(candidate) == ["input features: shape expected [-1, 4], got [4]"]


def test_missing_and_extra_inputs_are_both_reported() -> None:
    candidate = metadata(inputs=[tensor("pixels", "FP32", [-1, 4])], outputs=[tensor("label", "INT64", [-1])])
    assert judge(candidate) == [
        "input features: presence expected present, got missing",
        "input pixels: presence expected absent, got present",
    ]


@pytest.mark.parametrize(
    ("expected", "got", "role", "fits"),
    [
        ([-1, 4], [8, 4], Role.INPUT, True),  # expected wildcard accepts any size
        ([-1, 4], [8, 4], Role.OUTPUT, True),
        ([8, 4], [-1, 4], Role.INPUT, True),  # a candidate accepting any batch accepts 8
        ([8, 4], [-1, 4], Role.OUTPUT, False),  # a candidate returning any batch may not return 8
        ([8, 4], [16, 4], Role.INPUT, False),
        ([-1], [-1, 1], Role.INPUT, False),  # the wildcard is per dimension, not per rank
    ],
)
def test_shape_wildcards_read_by_direction(expected: list[int], got: list[int], role: Role, fits: bool) -> None:
    assert shape_fits(expected=expected, got=got, role=role) is fits


def test_output_changes_fail_unless_allowed() -> None:
    candidate = metadata(
        inputs=[tensor("features", "FP32", [-1, 4])], outputs=[tensor("probabilities", "FP32", [-1, 3])]
    )
    assert judge(candidate) == [
        "output label: presence expected present, got missing",
        "output probabilities: presence expected absent, got present",
    ]
    assert judge(candidate, check_outputs=False) == []


def test_the_report_message_lists_every_mismatch() -> None:
    report = check_contract(
        candidate=parse_metadata(
            metadata(inputs=[tensor("features", "INT32", [-1, 3])], outputs=[tensor("label", "INT64", [-1])]),
            where="candidate",
        ),
        expected_inputs=(TensorSpec(name="features", datatype="FP32", shape=(-1, 4)),),
        expected_outputs=None,
        expected_from="spec.gates.contract",
    )
    assert not report.passed
    assert report.message() == (
        "contract: candidate does not match spec.gates.contract: "
        "input features: datatype expected FP32, got INT32; input features: shape expected [-1, 4], got [-1, 3]"
    )
    assert report.to_json()["mismatches"][0] == {
        "role": "input",
        "tensor": "features",
        "property": "datatype",
        "expected": "FP32",
        "got": "INT32",
    }


@pytest.mark.parametrize(
    ("inputs", "where", "problem"),
    [
        ([tensor("x", "FLOAT", [1])], "candidate inputs[0].datatype", "'FLOAT' is not one of"),
        ([tensor("x", "FP32", [-2])], "candidate inputs[0].shape", "[-2] is not a shape"),
        ([tensor("x", "FP32", "4")], "candidate inputs[0].shape", "'4' is not a shape"),
        ([tensor("x", "FP32", [1]), tensor("x", "FP32", [1])], "candidate inputs[1].name", "'x' appears twice"),
        ({"x": 1}, "candidate inputs", "must be a list"),
    ],
)
def test_malformed_metadata_names_the_problem_and_where(inputs: Any, where: str, problem: str) -> None:
    with pytest.raises(GateInputError) as raised:
        parse_metadata(metadata(inputs=inputs, outputs=[]), where="candidate")
    assert raised.value.where == where
    assert problem in raised.value.problem
