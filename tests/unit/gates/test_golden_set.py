"""Golden-set parsing (only declared fields are sent) and the agreement, finiteness and bounds rules."""

from __future__ import annotations

import math
from typing import Any

import pytest

from controller.gates.contract import TensorSpec
from controller.gates.errors import GateInputError
from controller.gates.golden import (
    REPORTED_DISAGREEMENTS,
    AgreementRules,
    Bounds,
    CompareMode,
    GoldenRequest,
    InferAnswer,
    Tensor,
    judge_golden_set,
    parse_golden_set,
    parse_infer_response,
)

FEATURES = TensorSpec(name="features", datatype="FP32", shape=(-1, 4))
SCORE = TensorSpec(name="score", datatype="FP32", shape=(-1,))
LABEL = TensorSpec(name="label", datatype="INT64", shape=(-1,))


def request(label: str) -> GoldenRequest:
    return GoldenRequest(
        label=label, inputs=(Tensor(name="features", datatype="FP32", shape=(1, 4), data=(1, 2, 3, 4)),)
    )


def answer(**outputs: list[Any]) -> InferAnswer:
    return InferAnswer(
        outputs={
            name: Tensor(
                name=name, datatype="INT64" if name == "label" else "FP32", shape=(len(data),), data=tuple(data)
            )
            for name, data in outputs.items()
        }
    )


def test_only_declared_inputs_and_protocol_fields_are_sent() -> None:
    # given a ConfigMap entry with an id, a note, a personal field and an undeclared input
    raw = [
        {
            "id": "setosa-1",
            "note": "from ticket 42",
            "customer_email": "someone@example.com",
            "inputs": [
                {"name": "features", "shape": [1, 4], "data": [[5.1, 3.5, 1.4, 0.2]], "source": "crm"},
                {"name": "user_id", "datatype": "BYTES", "shape": [1], "data": ["u-123"]},
            ],
        }
    ]
    # when the request is built against the contract's inputs
    (built,) = parse_golden_set(raw, where="ConfigMap shop/golden key requests.json", contract_inputs=[FEATURES])
    # then the body holds the declared tensor and its four protocol fields, nothing else
    assert built.label == "setosa-1"
    assert built.body() == {
        "inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 4], "data": [5.1, 3.5, 1.4, 0.2]}]
    }


def test_a_fixed_contract_shape_is_used_when_the_entry_gives_none() -> None:
    fixed = TensorSpec(name="features", datatype="FP32", shape=(1, 2))
    (built,) = parse_golden_set(
        [{"inputs": [{"name": "features", "data": [1.0, 2.0]}]}], where="w", contract_inputs=[fixed]
    )
    assert built.inputs[0].shape == (1, 2)
    assert built.label == "#0"


@pytest.mark.parametrize(
    ("entry_input", "where", "problem"),
    [
        (
            {"name": "features", "shape": [1, 3], "data": [1, 2, 3]},
            "w[0].inputs[0].shape",
            "does not fit the contract's [-1, 4]",
        ),
        (
            {"name": "features", "shape": [1, 4], "data": [1, 2, 3]},
            "w[0].inputs[0].data",
            "has 3 values, shape [1, 4] needs 4",
        ),
        (
            {"name": "features", "data": [1, 2, 3, 4]},
            "w[0].inputs[0].shape",
            "required: the contract's shape [-1, 4] has -1",
        ),
        (
            {"name": "features", "shape": [1, 4], "datatype": "FP64", "data": [1, 2, 3, 4]},
            "w[0].inputs[0].datatype",
            "but the contract declares FP32",
        ),
        (
            {"name": "features", "shape": [1, 4], "data": [1, 2, "three", 4]},
            "w[0].inputs[0].data",
            "'three' is not a FP32 value",
        ),
        ({"name": "other", "shape": [1], "data": [1]}, "w[0].inputs", "lacks 'features'"),
    ],
)
def test_malformed_golden_requests_name_the_problem_and_where(entry_input: Any, where: str, problem: str) -> None:
    with pytest.raises(GateInputError) as raised:
        parse_golden_set([{"inputs": [entry_input]}], where="w", contract_inputs=[FEATURES])
    assert raised.value.where == where
    assert problem in raised.value.problem


def test_an_empty_or_non_list_golden_set_is_refused() -> None:
    malformed: list[Any] = [[], {"requests": []}]
    for raw in malformed:
        with pytest.raises(GateInputError, match="non-empty list"):
            parse_golden_set(raw, where="w", contract_inputs=[FEATURES])


def judge(
    baseline: list[InferAnswer],
    candidate: list[InferAnswer],
    *,
    outputs: tuple[TensorSpec, ...] = (SCORE,),
    **rules: Any,
) -> Any:
    return judge_golden_set(
        requests=[request(f"r{i}") for i in range(len(baseline))],
        baseline=baseline,
        candidate=candidate,
        contract_outputs=outputs,
        rules=AgreementRules(**rules),
    )


def test_scores_within_tolerance_agree_and_the_rest_are_listed_worst_first() -> None:
    # given 10 requests: 8 identical, r8 off by 0.3, r9 off by 0.5; tolerance 0.01
    baseline = [answer(score=[0.5]) for _ in range(10)]
    candidate = [answer(score=[0.505]) for _ in range(8)] + [answer(score=[0.8]), answer(score=[0.0])]
    report = judge(baseline, candidate, tolerance=0.01, min_agreement=0.9)
    # then 8/10 = 80 % < 90 %: failed, r9 listed first
    assert report.mode is CompareMode.SCORE
    assert (report.agreed, report.passed) == (8, False)
    assert [d.request for d in report.worst] == ["r9", "r8"]
    assert report.worst[0].difference == pytest.approx(0.5)
    assert "8/10 requests (80.0%, 90.0% required)" in report.message()


def test_agreement_at_exactly_the_required_share_passes() -> None:
    baseline = [answer(score=[0.5]) for _ in range(10)]
    candidate = [answer(score=[0.5]) for _ in range(9)] + [answer(score=[0.9])]
    assert judge(baseline, candidate, min_agreement=0.9).passed


def test_integer_outputs_are_compared_as_labels() -> None:
    baseline = [answer(label=[1, 2]), answer(label=[0, 0])]
    candidate = [answer(label=[1, 2]), answer(label=[0, 1])]
    report = judge(baseline, candidate, outputs=(LABEL,), min_agreement=1.0)
    assert report.mode is CompareMode.LABEL
    assert report.agreed == 1
    assert report.worst[0].difference == pytest.approx(0.5)  # one label of two differs


def test_argmax_compares_the_predicted_class_not_the_scores() -> None:
    # given class scores that differ a lot but pick the same class, and one that flips
    probabilities = TensorSpec(name="probs", datatype="FP32", shape=(-1, 3))
    same_class = InferAnswer(
        outputs={"probs": Tensor(name="probs", datatype="FP32", shape=(1, 3), data=(0.1, 0.6, 0.3))}
    )
    other_scores = InferAnswer(
        outputs={"probs": Tensor(name="probs", datatype="FP32", shape=(1, 3), data=(0.0, 0.9, 0.1))}
    )
    flipped = InferAnswer(outputs={"probs": Tensor(name="probs", datatype="FP32", shape=(1, 3), data=(0.5, 0.2, 0.3))})
    report = judge(
        [same_class, same_class], [other_scores, flipped], outputs=(probabilities,), compare=CompareMode.ARGMAX
    )
    assert report.agreed == 1
    assert [d.request for d in report.worst] == ["r1"]


def test_a_nan_in_any_candidate_output_fails_even_with_full_agreement_elsewhere() -> None:
    baseline = [answer(score=[0.5], label=[1]) for _ in range(20)]
    candidate = [answer(score=[0.5], label=[1]) for _ in range(19)] + [answer(score=[math.nan], label=[1])]
    report = judge(baseline, candidate, min_agreement=0.5)
    assert not report.passed
    assert report.problems == ("request r19: candidate output score has 1 non-finite values",)
    # and the status shows the NaN spelled out, since JSON has no NaN
    assert report.to_json()["worstDisagreements"][0] == {
        "request": "r19",
        "difference": "inf",
        "baseline": [0.5],
        "candidate": ["nan"],
    }


@pytest.mark.parametrize("spelled", ["NaN", "Infinity", "-inf", None])
def test_non_finite_values_spelled_as_text_or_null_count_too(spelled: Any) -> None:
    report = judge([answer(score=[0.5])], [answer(score=[spelled])])
    assert report.problems == ("request r0: candidate output score has 1 non-finite values",)


def test_values_outside_declared_bounds_fail() -> None:
    report = judge(
        [answer(score=[0.5, 1.0])], [answer(score=[0.5, 1.2])], tolerance=1.0, bounds=Bounds(min=0.0, max=1.0)
    )
    assert report.agreed == 1
    assert report.problems == ("request r0: candidate output score has 1 values outside [0.0, 1.0], e.g. 1.2",)


def test_a_refused_request_fails_and_says_which_side_refused() -> None:
    refused = InferAnswer(outputs=None, error="HTTP 400: bad input")
    report = judge([answer(score=[0.5]), refused], [refused, answer(score=[0.5])], min_agreement=0.0)
    assert report.problems == (
        "request r0: the candidate refused it (HTTP 400: bad input)",
        "request r1: the baseline refused it (HTTP 400: bad input)",
    )


def test_a_missing_compared_output_is_a_problem() -> None:
    report = judge([answer(score=[0.5])], [answer(other=[0.5])])
    assert report.problems == ("request r0: the candidate answer has no output score",)


def test_the_report_keeps_only_the_worst_few_disagreements() -> None:
    baseline = [answer(score=[0.0]) for _ in range(20)]
    candidate = [answer(score=[i / 10]) for i in range(1, 21)]
    report = judge(baseline, candidate)
    assert len(report.worst) == REPORTED_DISAGREEMENTS
    assert report.worst[0].request == "r19"


def test_infer_responses_are_parsed_into_named_flattened_tensors() -> None:
    outputs = parse_infer_response(
        {
            "model_name": "iris",
            "outputs": [{"name": "probs", "datatype": "FP32", "shape": [1, 2], "data": [[0.3, 0.7]]}],
        }
    )
    assert outputs["probs"] == Tensor(name="probs", datatype="FP32", shape=(1, 2), data=(0.3, 0.7))
    with pytest.raises(GateInputError, match="no list `outputs`"):
        parse_infer_response({"error": "boom"})
