"""spec.gates parsing: defaults and errors that name the field."""

from __future__ import annotations

from typing import Any

import pytest

from controller.gates.errors import GateInputError
from controller.gates.golden import AgreementRules, Bounds, CompareMode
from controller.gates.golden_set_gate import ConfigMapRef, GoldenSetGate
from controller.gates.spec import configures_gates, parse_gates


def test_only_a_contract_or_a_golden_set_configures_a_gate() -> None:
    assert not configures_gates({})
    assert not configures_gates({"readinessTimeout": "30s"})
    assert configures_gates({"contract": {}})
    assert configures_gates({"goldenSet": {"inline": []}})


def test_a_full_golden_set_spec() -> None:
    gates = parse_gates(
        {
            "readinessTimeout": "2m",
            "goldenSet": {
                "configMapRef": {"name": "golden", "key": "requests.json"},
                "output": "probabilities",
                "compare": "argmax",
                "tolerance": 0.01,
                "minAgreement": 0.9,
                "bounds": {"min": 0, "max": 1},
            },
        }
    )
    (golden,) = gates.after_contract
    assert isinstance(golden, GoldenSetGate)
    assert gates.readiness_timeout_seconds == 120
    assert gates.contract.allow_output_changes is False and gates.contract.inputs is None
    assert golden.config_map == ConfigMapRef(name="golden", key="requests.json")
    assert golden.rules == AgreementRules(
        output="probabilities",
        compare=CompareMode.ARGMAX,
        tolerance=0.01,
        min_agreement=0.9,
        bounds=Bounds(min=0, max=1),
    )


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"goldenSet": {}}, "spec.gates.goldenSet: give exactly one of inline and configMapRef"),
        ({"goldenSet": {"inline": [], "configMapRef": {"name": "a", "key": "b"}}}, "give exactly one"),
        ({"goldenSet": {"configMapRef": {"name": "a"}}}, "spec.gates.goldenSet.configMapRef: needs both name and key"),
        ({"goldenSet": {"inline": [{}], "minAgreement": 1.5}}, "spec.gates.goldenSet.minAgreement: 1.5 is not a share"),
        (
            {"goldenSet": {"inline": [{}], "tolerance": "small"}},
            "spec.gates.goldenSet.tolerance: 'small' is not a number",
        ),
        ({"goldenSet": {"inline": [{}], "compare": "exact"}}, "spec.gates.goldenSet.compare: 'exact' is not one of"),
        (
            {"contract": {"allowOutputChanges": "yes"}},
            "spec.gates.contract.allowOutputChanges: 'yes' is not true or false",
        ),
        ({"contract": {}, "readinessTimeout": "soon"}, "spec.gates.readinessTimeout: 'soon' is not a duration"),
    ],
)
def test_errors_name_the_field(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(GateInputError) as raised:
        parse_gates(raw)
    assert message in str(raised.value)
