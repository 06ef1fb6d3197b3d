"""A mistake in spec.analysis stops the real controller before the first weight moves.

The analysis section is validated while the rollout is Pending, so the route never leaves the
stable version: a spec mistake fails the rollout (SpecValid=False naming the field), a missing
AnalysisTemplate holds it (ReferencesValid=False) until the template is created.
"""

from __future__ import annotations

import time

import pytest

from localenv.controller import RunningController
from tests.integration.rollout_world import JSON, WeightRecorder, World, rollout_manifest, wait_for
from tests.integration.test_analysis_rollouts import condition

pytestmark = pytest.mark.integration

ERRORS: JSON = {
    "name": "errors",
    "provider": {"prometheus": {"query": "errors{version='{{version}}'}"}},
    "comparison": {"maxDifference": 0.01},
}
STEPS: list[JSON] = [{"setWeight": 20}, {"analyze": {"duration": "1m"}}]
QUIET_SECONDS = 3.0
"""How long a held rollout is watched for a weight change that must not come."""


def test_a_comparison_without_bounds_fails_the_rollout_before_any_traffic(
    world: World, controller: RunningController
) -> None:
    # Given a route all on v1, watched
    recorder = WeightRecorder(world)

    # When a rollout's metric has a comparison that gives a direction but no bound (the CRD accepts it)
    unbounded = {**ERRORS, "comparison": {"direction": "lower-is-worse"}}
    world.apply(rollout_manifest(steps=STEPS, analysis={"metrics": [unbounded]}))

    # Then it fails with SpecValid=False naming the field, and keeps saying so on later passes
    failed = world.wait_for_phase("Failed")
    spec_valid = condition(failed, "SpecValid")
    assert spec_valid["status"] == "False"
    assert spec_valid["message"].startswith("spec.analysis.metrics[0].comparison: give at least one of max")
    time.sleep(QUIET_SECONDS)
    assert condition(world.status(), "SpecValid")["status"] == "False"
    assert any(e["reason"] == "InvalidSpec" and "comparison" in e["message"] for e in world.events())
    # and the candidate never had any traffic
    assert recorder.candidate_weights() == [0]
    recorder.stop()


def test_a_missing_template_holds_the_rollout_before_any_traffic_until_it_is_created(
    world: World, controller: RunningController
) -> None:
    # Given a route all on v1, watched
    recorder = WeightRecorder(world)

    # When a rollout names an AnalysisTemplate that does not exist yet
    world.apply(rollout_manifest(steps=STEPS, analysis={"templates": [{"name": "quality"}]}))

    # Then it waits in Pending with ReferencesValid=False naming the field and the template
    def missing_reference() -> JSON | None:
        found = condition(world.status(), "ReferencesValid")
        return found if found.get("status") == "False" else None

    problem = wait_for(missing_reference, what="ReferencesValid=False")
    assert problem["message"] == (
        f"spec.analysis.templates: AnalysisTemplate 'quality' does not exist in namespace {world.namespace}; "
        "create it or fix the name"
    )
    time.sleep(QUIET_SECONDS)
    assert world.status()["phase"] == "Pending"
    assert recorder.candidate_weights() == [0]

    # When the template is created
    world.apply(
        {
            "apiVersion": "rollouts.mlops.dev/v1alpha1",
            "kind": "AnalysisTemplate",
            "metadata": {"name": "quality"},
            "spec": {"metrics": [ERRORS]},
        }
    )

    # Then the rollout proceeds to its first weight, its references valid again
    wait_for(lambda: recorder.latest().get("v2") == 20, what="20 % on v2", timeout=30)
    assert recorder.candidate_weights() == [0, 20]
    # The route is written before the status of the same pass: wait for the status too.
    wait_for(lambda: condition(world.status(), "ReferencesValid")["status"] == "True", what="ReferencesValid=True")
    recorder.stop()
