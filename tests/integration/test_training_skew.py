"""Training-serving skew (ML Test Score Monitor 3) end to end.

Real Open Inference Protocol model servers on 127.0.0.1 export what their estimator reads, per
input feature, binned at their training profile's edges (`model_input_feature_bucket`); the
training profile is published by the candidate's server and put in a ConfigMap, as a training
pipeline would; a real Prometheus scrapes the servers every second; the real controller judges
the candidate's live inputs against the profile, sequentially, with a tolerance.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from localenv.modelserver import RunningServer, Variant
from localenv.prometheus import LocalPrometheus
from localenv.traffic import TrafficSettings, replay
from tests.integration.rollout_world import World, model_servers, rollout_manifest

pytestmark = pytest.mark.integration

MODEL = "breast-cancer"
VARIANTS = {"v1": Variant.GOOD, "v2": Variant.BETTER, "v3": Variant.UNSCALED}
"""v3 was trained on standardised features and is served without the scaler: skew."""
PROFILE = "training-profile"
SKEW: dict[str, Any] = {"name": "skew", "trainingSkew": {"profile": {"configMap": PROFILE}}}


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, RunningServer]]:
    with model_servers(VARIANTS, model=MODEL) as started:
        yield started


@pytest.fixture(scope="module")
def prometheus(servers: dict[str, RunningServer]) -> Iterator[LocalPrometheus]:
    with LocalPrometheus(scrape_targets=[f"127.0.0.1:{s.port}" for s in servers.values()]) as server:
        yield server


@pytest.fixture
def traffic(servers: dict[str, RunningServer]) -> Iterator[None]:
    """The test split replayed against every server for as long as the test runs (at most 60 s)."""
    stop = threading.Event()
    threads = [
        threading.Thread(
            target=replay,
            args=(TrafficSettings(url=server.url, model_name=MODEL, rate_per_second=40, max_requests=2400,
                                  max_seconds=60, seed=i),),
            kwargs={"stop": stop},
        )
        for i, server in enumerate(servers.values())
    ]  # fmt: skip
    for thread in threads:
        thread.start()
    yield
    stop.set()
    for thread in threads:
        thread.join()


def publish_profile(world: World, server: RunningServer) -> None:
    """The candidate's training profile, from its server, into the ConfigMap the check names."""
    profile = httpx.get(f"{server.url}/v2/models/{MODEL}/training-profile", timeout=5.0)
    profile.raise_for_status()
    world.apply(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": PROFILE}, "data": {"profile.json": profile.text}}
    )


def skew_rollout(candidate: str) -> dict[str, Any]:
    return rollout_manifest(
        model=MODEL,
        candidate=candidate,
        steps=[{"setWeight": 50}, {"analyze": {"duration": "12s"}}],
        analysis={"interval": "2s", "metrics": [SKEW]},
    )


def skew_evidence(status: dict[str, Any]) -> dict[str, Any]:
    latest: dict[str, Any] = next(e["latest"] for e in status["analysis"]["evidence"] if e["metric"] == "skew")
    return latest


def unhealthy_analysis(world: World) -> dict[str, Any] | None:
    """The AnalysisHealthy condition once it is False."""
    conditions: list[dict[str, Any]] = world.status().get("conditions", [])
    found = next((c for c in conditions if c["type"] == "AnalysisHealthy"), None)
    return found if found is not None and found["status"] == "False" else None


def rubric(status: dict[str, Any]) -> dict[tuple[str, str], str]:
    return {(entry["item"], entry["check"]): entry["verdict"] for entry in status.get("rubric", [])}


@pytest.mark.usefixtures("analysis_controller", "traffic")
def test_a_candidate_served_without_its_scaler_is_rolled_back_naming_the_skewed_features(
    world: World, servers: dict[str, RunningServer]
) -> None:
    # Given v3, whose serving path skips the scaler it was trained behind, and its training profile
    publish_profile(world, servers["v3"])

    # When it is rolled out with the training-skew check
    world.apply(skew_rollout("v3"))

    # Then it is rolled back before its step ends, the message naming skewed features
    status = world.wait_for_phase("RolledBack", timeout=40)
    assert "skew beyond tolerance 0.2: feature '" in status["message"]
    evidence = skew_evidence(status)
    assert evidence["test"] == "training-skew" and evidence["verdict"] == "Failed"
    failed = [f for f in evidence["features"] if f["verdict"] == "Failed"]
    assert len(failed) >= 10, "raw measurements sit far above every standardised training decile"
    assert all(f["psiInterval"][0] > 0.2 for f in failed)
    assert evidence["worstFeature"] in {f["feature"] for f in failed}
    # and the rubric lists Monitor 3
    assert rubric(status)[("Monitor 3", "skew")] == "Failed"


@pytest.mark.usefixtures("analysis_controller", "traffic")
def test_a_candidate_whose_inputs_look_like_its_training_data_is_promoted(
    world: World, servers: dict[str, RunningServer]
) -> None:
    # Given v2, served as trained, and its training profile
    publish_profile(world, servers["v2"])

    # When it is rolled out with the training-skew check
    world.apply(skew_rollout("v2"))

    # Then it is promoted: live inputs differ from training a little, within the tolerance
    status = world.wait_for_phase("Promoted", timeout=60)
    evidence = skew_evidence(status)
    assert evidence["verdict"] == "Successful" and len(evidence["features"]) == 30
    assert all(f["psiInterval"][0] <= 0.2 and f["samples"] > 100 for f in evidence["features"])
    assert rubric(status)[("Monitor 3", "skew")] == "Successful"
