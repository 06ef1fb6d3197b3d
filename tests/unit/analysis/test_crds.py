"""The CRD schemas agree with each other and with what controller/analysis parses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from controller.analysis.presets import PRESETS
from controller.analysis.spec import PromoteWhen
from controller.checks import InconclusivePolicy

CRDS = Path(__file__).resolve().parents[3] / "manifests" / "crds"


def schema(file: str) -> Any:
    return yaml.safe_load((CRDS / file).read_text())["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


ANALYSIS = schema("modelrollouts.yaml")["properties"]["spec"]["properties"]["analysis"]
TEMPLATE_METRICS = schema("analysistemplates.yaml")["properties"]["spec"]["properties"]["metrics"]


def test_a_template_metric_has_the_same_schema_as_a_rollout_metric() -> None:
    assert TEMPLATE_METRICS["items"] == ANALYSIS["properties"]["metrics"]["items"]


def test_the_schema_offers_exactly_the_presets_and_policies_the_controller_knows() -> None:
    metric = ANALYSIS["properties"]["metrics"]["items"]
    assert set(metric["properties"]["preset"]["enum"]) == set(PRESETS)
    assert set(ANALYSIS["properties"]["onInconclusive"]["enum"]) == {p.value for p in InconclusivePolicy}
    assert set(ANALYSIS["properties"]["promoteWhen"]["enum"]) == {p.value for p in PromoteWhen}


def test_a_post_promotion_metric_is_a_rollout_metric_that_must_hold_a_guardrail() -> None:
    post = schema("modelrollouts.yaml")["properties"]["spec"]["properties"]["postPromotion"]["properties"]["metrics"]
    metric, rollout_metric = post["items"], ANALYSIS["properties"]["metrics"]["items"]
    guardrail, *rules = metric["x-kubernetes-validations"]
    assert rules == rollout_metric["x-kubernetes-validations"]
    assert metric["properties"] == rollout_metric["properties"]
    assert "after promotion no baseline serves" in guardrail["message"]
