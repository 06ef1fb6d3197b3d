"""What the CRD's CEL rules refuse for the gates, refused again by the parsers for objects stored
before a rule existed (issue 13, item 1): golden-set bounds with min above max, and a version's
endpoint that is not an http:// or https:// URL."""

from __future__ import annotations

from typing import Any

import pytest

from controller.api import SpecError, parse_spec
from controller.gates.errors import GateInputError
from controller.gates.golden import Bounds
from controller.gates.golden_set_gate import GoldenSetGate
from controller.gates.spec import parse_gates

GOLDEN = {"configMapRef": {"name": "golden", "key": "requests.json"}}


def rollout(endpoint: Any) -> dict[str, Any]:
    """A rollout spec whose candidate's endpoint is `endpoint`."""
    return {
        "model": "iris",
        "versions": [
            {"version": "v1", "backend": {"service": "iris-v1", "port": 8080}, "endpoint": "http://iris-v1:8080"},
            {"version": "v2", "backend": {"service": "iris-v2", "port": 8080}, "endpoint": endpoint},
        ],
        "baseline": "v1",
        "candidate": "v2",
        "trafficRouting": {"gatewayAPI": {"httpRoute": "iris"}},
        "steps": [{"setWeight": 10}],
    }


def test_golden_set_bounds_with_min_above_max_are_refused_naming_min() -> None:
    # given a golden set whose outputs must be at least 1 and at most 0
    gates = {"goldenSet": {**GOLDEN, "bounds": {"min": 1, "max": 0}}}

    # when spec.gates is parsed
    with pytest.raises(GateInputError) as raised:
        parse_gates(gates)

    # then bounds.min is named and the fix given
    assert raised.value.where == "spec.gates.goldenSet.bounds.min"
    assert raised.value.problem == "1 is above bounds.max 0, so no output can be in bounds; swap them"


@pytest.mark.parametrize(
    ("written", "meant"), [({"min": 0.5, "max": 0.5}, Bounds(min=0.5, max=0.5)), ({"min": 2}, Bounds(min=2))]
)
def test_golden_set_bounds_equal_or_one_sided_are_accepted(written: dict[str, float], meant: Bounds) -> None:
    # given bounds admitting one value, or only a lower bound
    gates = {"goldenSet": {**GOLDEN, "bounds": written}}

    # when spec.gates is parsed, then the bounds are kept
    (golden,) = parse_gates(gates).after_contract
    assert isinstance(golden, GoldenSetGate) and golden.rules.bounds == meant


@pytest.mark.parametrize("endpoint", ["iris-v2:8080", "iris-v2.models.svc", "grpc://iris-v2:8081", "http://", ""])
def test_an_endpoint_that_is_not_an_http_url_is_refused_naming_the_version(endpoint: str) -> None:
    # given a stored rollout whose candidate's endpoint has no http(s) scheme or no host
    raw = rollout(endpoint)

    # when the spec is parsed
    with pytest.raises(SpecError) as raised:
        parse_spec(raw)

    # then the endpoint of that version is named, with an example of a whole URL
    assert raised.value.field_path == "spec.versions[1].endpoint"
    assert "is not an http:// or https:// URL with a host; write the whole URL, e.g. http://iris-v2" in str(
        raised.value
    )


@pytest.mark.parametrize("endpoint", ["http://iris-v2:8080", "https://iris-v2.models.svc", None])
def test_an_http_or_https_endpoint_or_none_is_accepted(endpoint: str | None) -> None:
    # given an endpoint with either scheme, or none at all (no gates)
    raw = rollout(endpoint)

    # when the spec is parsed, then the endpoint is kept as written
    assert parse_spec(raw).version("v2").endpoint == endpoint
