"""One policy for problems, on the real controller: a missing object a checker reads holds the
rollout before any traffic (ReferencesValid=False, an InvalidReference Event, the route untouched)
until it is created; a spec mistake in a template is refused before any weight moves.

The missing AnalysisTemplate case is in test_analysis_validation.py; here the golden set's
ConfigMap, read by the pre-traffic gates (real model servers on 127.0.0.1), a training profile's
ConfigMap, read by analysis (found missing while Pending, so no Prometheus is needed), and a
misspelt `{{vresion}}` in an AnalysisTemplate's query.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from localenv.controller import RunningController
from localenv.modelserver import RunningServer, Variant
from localenv.modelserver.dataset import load_dataset
from tests.integration.rollout_world import (
    JSON,
    MODEL,
    WeightRecorder,
    World,
    model_servers,
    rollout_manifest,
    wait_for,
)
from tests.integration.test_analysis_rollouts import condition

pytestmark = pytest.mark.integration

QUIET_SECONDS = 3.0
"""How long a held rollout is watched for a weight change that must not come."""
GOLDEN_ROWS = 20


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, RunningServer]]:
    """v1 and a better v2 of the breast-cancer model, served under the rollouts' model name."""
    with model_servers({"v1": Variant.GOOD, "v2": Variant.BETTER}, model=MODEL) as started:
        yield started


def golden_set() -> list[JSON]:
    rows = load_dataset().test_features
    return [
        {"id": f"row-{i}", "inputs": [{"name": "features", "shape": [1, 30], "data": rows[i].tolist()}]}
        for i in range(GOLDEN_ROWS)
    ]


def missing_reference(world: World) -> JSON | None:
    found = condition(world.status(), "ReferencesValid")
    return found if found.get("status") == "False" else None


def test_a_missing_golden_set_configmap_holds_the_rollout_before_any_traffic_until_it_is_created(
    world: World, controller: RunningController, servers: dict[str, RunningServer]
) -> None:
    # Given a route all on v1, watched
    recorder = WeightRecorder(world)

    # When a rollout's gates name a golden-set ConfigMap that does not exist yet
    manifest = rollout_manifest(
        steps=[{"setWeight": 20}, {"pause": {}}],
        gates={
            "goldenSet": {
                "configMapRef": {"name": "golden", "key": "requests.json"},
                "output": "label",
                "minAgreement": 0.8,
            }
        },
    )
    for version in manifest["spec"]["versions"]:
        if version["version"] in servers:
            version["endpoint"] = servers[version["version"]].url
    world.apply(manifest)

    # Then it waits in Pending with ReferencesValid=False naming the field and the ConfigMap, one
    # Warning Event says so, and the candidate gets no traffic (the gates never failed it)
    problem = wait_for(lambda: missing_reference(world), what="ReferencesValid=False")
    expected = (
        f"spec.gates.goldenSet.configMapRef.name: ConfigMap {world.namespace}/golden does not exist; "
        "create it or fix the name"
    )
    assert problem["message"] == expected
    time.sleep(QUIET_SECONDS)
    assert world.status()["phase"] == "Pending"
    assert recorder.candidate_weights() == [0]
    warnings = [e for e in world.events() if e["reason"] == "InvalidReference"]
    assert [e["message"] for e in warnings] == [f"{expected}; no traffic moves until it is fixed"]
    assert not any(e["reason"] == "GateFailed" for e in world.events())

    # When the ConfigMap is created
    world.apply(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "golden"},
            "data": {"requests.json": json.dumps(golden_set())},
        }
    )

    # Then the gates run on it and pass, and the rollout moves its first weight
    wait_for(lambda: recorder.latest().get("v2") == 20, what="20 % on v2", timeout=60)
    assert recorder.candidate_weights() == [0, 20]
    status = wait_for(
        lambda: found if condition(found := world.status(), "ReferencesValid").get("status") == "True" else None,
        what="ReferencesValid=True",
    )
    assert status["gates"]["verdict"] == "Successful"
    assert status["gates"]["goldenSet"]["requests"] == GOLDEN_ROWS
    recorder.stop()


def test_a_missing_training_profile_holds_the_rollout_before_any_traffic_until_it_is_created(
    world: World, controller: RunningController
) -> None:
    # Given a route all on v1, watched
    recorder = WeightRecorder(world)

    # When a rollout's training-skew check names a profile ConfigMap that does not exist yet
    skew = {"name": "skew", "trainingSkew": {"profile": {"configMap": "profile"}}}
    steps: list[JSON] = [{"setWeight": 50}, {"analyze": {"duration": "1m"}}]
    world.apply(rollout_manifest(steps=steps, analysis={"interval": "2s", "metrics": [skew]}))

    # Then it waits in Pending with ReferencesValid=False naming the field and the ConfigMap,
    # instead of moving traffic and finding the profile missing at its first look
    problem = wait_for(lambda: missing_reference(world), what="ReferencesValid=False")
    assert problem["message"] == (
        f"spec.analysis.metrics[0].trainingSkew.profile.configMap: ConfigMap {world.namespace}/profile does not "
        "exist; create it from the training pipeline's profile or fix the name"
    )
    time.sleep(QUIET_SECONDS)
    assert world.status()["phase"] == "Pending"
    assert recorder.candidate_weights() == [0]

    # When the ConfigMap is created
    profile = {"features": [{"name": "mean radius", "edges": [0.0], "frequencies": [0.5, 0.5]}]}
    world.apply(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "profile"},
         "data": {"profile.json": json.dumps(profile)}}
    )  # fmt: skip

    # Then the rollout moves its first weight, its references valid again
    wait_for(lambda: recorder.latest().get("v2") == 50, what="50 % on v2", timeout=30)
    assert recorder.candidate_weights() == [0, 50]
    wait_for(lambda: condition(world.status(), "ReferencesValid")["status"] == "True", what="ReferencesValid=True")
    recorder.stop()


def test_a_misspelt_placeholder_in_a_template_is_refused_before_any_weight_moves(
    world: World, controller: RunningController
) -> None:
    # Given a route all on v1, watched, and a template whose query says {{vresion}}
    recorder = WeightRecorder(world)
    world.apply(
        {
            "apiVersion": "rollouts.mlops.dev/v1alpha1",
            "kind": "AnalysisTemplate",
            "metadata": {"name": "quality"},
            "spec": {
                "metrics": [
                    {
                        "name": "errors",
                        "provider": {"prometheus": {"query": "errors{version='{{vresion}}'}"}},
                        "comparison": {"maxDifference": 0.01},
                    }
                ]
            },
        }
    )

    # When a rollout measures that template in its analyze step
    world.apply(
        rollout_manifest(
            steps=[{"setWeight": 20}, {"analyze": {"duration": "1m"}}], analysis={"templates": [{"name": "quality"}]}
        )
    )

    # Then it fails with SpecValid=False naming the template and the field, and stays so
    failed = world.wait_for_phase("Failed")
    spec_valid = condition(failed, "SpecValid")
    assert spec_valid["status"] == "False"
    assert spec_valid["message"].startswith(
        "AnalysisTemplate quality: spec.metrics[0].provider.prometheus.query: unknown template variable(s) vresion"
    )
    time.sleep(QUIET_SECONDS)
    assert condition(world.status(), "SpecValid")["status"] == "False"
    # and the candidate never had any traffic
    assert recorder.candidate_weights() == [0]
    recorder.stop()
