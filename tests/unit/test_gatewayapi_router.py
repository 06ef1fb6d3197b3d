"""The Gateway API router's reading and writing of backendRef weights, on plain route JSON."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from controller.api import parse_spec
from controller.errors import ReferenceProblem
from controller.routers.gatewayapi import managed_rules, rule_weights, set_rule_weights

SPEC = parse_spec(
    {
        "model": "iris",
        "versions": [{"version": v, "backend": {"service": f"iris-{v}", "port": 80}} for v in ("v1", "v2", "v3")],
        "candidate": "v2",
        "baseline": "v1",
        "trafficRouting": {"gatewayAPI": {"httpRoute": "iris", "ruleNames": ["predict"]}},
        "steps": [{"setWeight": 10}],
    }
)


def route(*rules: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": "iris"}, "spec": {"rules": list(rules)}}


def test_weights_are_read_as_percent_per_version_and_omitted_weights_count_as_one() -> None:
    rule = {"backendRefs": [{"name": "iris-v1", "weight": 3}, {"name": "iris-v2"}]}
    assert rule_weights(rule, SPEC, "iris") == {"v1": 75, "v2": 25, "v3": 0}


def test_a_backend_outside_the_versions_with_traffic_is_a_reference_problem() -> None:
    rule = {"backendRefs": [{"name": "iris-v1", "weight": 90}, {"name": "legacy", "weight": 10}]}
    with pytest.raises(ReferenceProblem, match="legacy"):
        rule_weights(rule, SPEC, "iris")


def test_writing_sets_only_the_weights_and_adds_a_missing_backend_that_needs_traffic() -> None:
    rule = {
        "name": "predict",
        "matches": [{"path": {"type": "PathPrefix", "value": "/v2"}}],
        "backendRefs": [{"name": "iris-v1", "port": 80, "weight": 100}, {"name": "other", "port": 80, "weight": 0}],
    }
    set_rule_weights(rule, SPEC, {"v1": 90, "v2": 10}, added=set())
    assert rule["matches"] == [{"path": {"type": "PathPrefix", "value": "/v2"}}]
    assert rule["backendRefs"] == [
        {"name": "iris-v1", "port": 80, "weight": 90},
        {"name": "other", "port": 80, "weight": 0},
        {"name": "iris-v2", "port": 80, "weight": 10},
    ]
    assert rule_weights(rule, SPEC, "iris") == {"v1": 90, "v2": 10, "v3": 0}


def test_only_the_named_rules_are_managed_and_a_missing_name_is_reported() -> None:
    predict, health = {"name": "predict", "backendRefs": []}, {"name": "health", "backendRefs": []}
    assert managed_rules(route(health, predict), SPEC) == [predict]
    with pytest.raises(ReferenceProblem, match="no rule named predict"):
        managed_rules(route(health), SPEC)


def test_a_backend_the_controller_added_goes_once_it_serves_nothing_but_the_users_own_stay() -> None:
    # given a rule the user wrote for v1, to which the controller added v2 (recorded in `added`)
    promoted = replace(SPEC, candidate="v3")
    rule = {
        "backendRefs": [
            {"name": "iris-v1", "port": 80, "weight": 0},
            {"name": "iris-v2", "port": 80, "weight": 100},
        ]
    }
    added = {("iris-v2", 80)}

    # when v3 (the new candidate) takes 10 %, then all traffic
    set_rule_weights(rule, promoted, {"v2": 90, "v3": 10}, added=added)
    set_rule_weights(rule, promoted, {"v3": 100}, added=added)

    # then v2's backendRef went with its traffic, the user's v1 stays at 0, and v3 is recorded as added
    assert rule["backendRefs"] == [
        {"name": "iris-v1", "port": 80, "weight": 0},
        {"name": "iris-v3", "port": 80, "weight": 100},
    ]
    assert ("iris-v3", 80) in added


def test_the_candidates_added_backend_stays_at_zero_after_a_rollback_so_a_retry_reuses_it() -> None:
    rule = {
        "backendRefs": [{"name": "iris-v1", "port": 80, "weight": 90}, {"name": "iris-v2", "port": 80, "weight": 10}]
    }

    set_rule_weights(rule, SPEC, {"v1": 100}, added={("iris-v2", 80)})

    assert rule["backendRefs"] == [
        {"name": "iris-v1", "port": 80, "weight": 100},
        {"name": "iris-v2", "port": 80, "weight": 0},
    ]
