"""The analysis after a promotion (spec.postPromotion) end to end: the real controller process
measures the promoted version alone from a real Prometheus, and undoes the promotion on a real API
server when a guardrail breaks.

A loopback exporter plays v1 and v2 of a model (named after the test's namespace) with steady
traffic, Prometheus scrapes it every second, and the controller measures v2 every 2 s once it is
promoted. The canary itself has no analysis: it is promoted after one step, so that what decides is
the analysis after the promotion. The local control plane has no Deployment controller: the test
reports Deployments ready, as tests/integration/test_rollback_window.py does.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from localenv.controller import RunningController
from localenv.controlplane import ControlPlane
from localenv.prometheus import Behaviour, LocalPrometheus, MetricsPlayer, ModelMetricsExporter
from tests.integration.rollout_world import (
    JSON,
    WeightRecorder,
    World,
    controller_reading,
    rollout_manifest,
    wait_for,
)
from tests.integration.test_rollback_window import create_deployment, deployment, deployment_name, report_ready

pytestmark = pytest.mark.integration

INTERVAL = "2s"
GUARDRAIL: JSON = {"name": "errors", "preset": "error-rate", "comparison": {"max": 0.05}}
"""At most 5 % of v2's requests may fail after its promotion."""
FAILING = Behaviour(error_rate=0.2)


@pytest.fixture
def player(exporter: ModelMetricsExporter, namespace: str) -> Iterator[MetricsPlayer]:
    """Plays v1 and v2 of a model named after the test's namespace, once the test starts it."""
    playing = MetricsPlayer(exporter, model=f"iris-{namespace}")
    yield playing
    playing.stop()


def promote_with_post_promotion(world: World, player: MetricsPlayer, *, duration: str) -> WeightRecorder:
    """v1 and v2 with Deployments; v2 rolled out at 50 % then promoted, measured for `duration` after."""
    for version in ("v1", "v2"):
        create_deployment(world, version)
    manifest = rollout_manifest(
        model=player.model,
        steps=[{"setWeight": 50}],
        rollbackWindow="1h",
        scaleDown={"delay": "1s"},
        postPromotion={"duration": duration, "interval": INTERVAL, "metrics": [GUARDRAIL]},
    )
    for entry in manifest["spec"]["versions"]:
        entry["deployment"] = deployment_name(entry["version"])
    recorder = WeightRecorder(world)
    world.apply(manifest)
    return recorder


def post_promotion(world: World) -> dict[str, Any]:
    return dict(world.status().get("postPromotion") or {})


def looked_at(world: World) -> dict[str, Any] | None:
    """status.postPromotion once it holds a measurement; None before."""
    record = post_promotion(world)
    return record if record.get("analysis", {}).get("measurements") else None


def reasons(world: World) -> list[str]:
    return [event["reason"] for event in world.events()]


def test_a_promoted_version_beyond_its_guardrail_is_undone_to_the_previous_version_scaled_up_first(
    world: World, prometheus: LocalPrometheus, player: MetricsPlayer, analysis_controller: RunningController
) -> None:
    # given v2 failing 20 % of its requests in Prometheus, and v1 scaled down meanwhile (by hand)
    player.start(candidate=FAILING)
    player.wait_until_seen(prometheus, window="10s")
    recorder = promote_with_post_promotion(world, player, duration="5m")
    world.wait_for_phase("Promoted", timeout=30)
    client.AppsV1Api(world.api).patch_namespaced_deployment_scale(
        deployment_name("v1"), world.namespace, {"spec": {"replicas": 0}}
    )

    # when the analysis after the promotion looks at v2 alone
    # then it shows the guardrail broken: the promotion is undone, v1 first scaled up, no traffic moved
    wait_for(lambda: deployment(world, "v1").spec.replicas == 1, what="v1 scaled up for the undo", timeout=40)
    assert world.route_weights().get("v2") == 100
    status = world.status()
    assert status["phase"] == "Promoted" and status["undo"]["state"] == "Pending"
    assert status["postPromotion"]["state"] == "Failed"
    assert "errors" in status["undo"]["cause"] and "beyond max 0.05" in status["undo"]["cause"]
    # once v1 reports ready, all traffic goes back to it in one write
    report_ready(world, "v1")
    status = world.wait_for_phase("RolledBack", timeout=20)
    wait_for(lambda: recorder.latest().get("v1") == 100, what="all traffic on v1", timeout=10)
    assert recorder.candidate_weights() == [0, 50, 100, 0]
    assert status["stableVersion"] == "v1" and status["undo"]["state"] == "Done"
    failed = next(e for e in world.events() if e["reason"] == "PostPromotionFailed")
    assert failed["type"] == "Warning" and "beyond max 0.05" in failed["message"]
    assert "20%" in failed["message"]
    condition = next(c for c in status["conditions"] if c["type"] == "PostPromotionAnalysis")
    assert (condition["status"], condition["reason"]) == ("False", "Failed")
    wait_for(lambda: "Undo" in reasons(world), what="the Undo Event", timeout=10)


def test_a_healthy_promoted_version_passes_and_nothing_is_undone(
    world: World, prometheus: LocalPrometheus, player: MetricsPlayer, analysis_controller: RunningController
) -> None:
    # given v2 as good as v1 in Prometheus
    player.start()
    player.wait_until_seen(prometheus, window="10s")

    # when v2 is promoted and measured for 10 s after
    recorder = promote_with_post_promotion(world, player, duration="10s")
    world.wait_for_phase("Promoted", timeout=30)
    running = wait_for(
        lambda: post_promotion(world).get("state") == "Running" and post_promotion(world), what="Running"
    )

    # then it passes at the end of the duration, v2 keeps all traffic, and nothing is undone
    passed = wait_for(lambda: post_promotion(world).get("state") == "Passed" and post_promotion(world), what="Passed",
                      timeout=40, last=lambda: post_promotion(world))  # fmt: skip
    assert (passed["startedAt"], passed["endsAt"]) == (running["startedAt"], running["endsAt"])
    measured = passed["analysis"]["measurements"]
    assert len(measured) >= 3 and {m["verdict"] for m in measured} == {"Successful"}
    assert all(m["candidateVersion"] == "v2" for m in measured)
    status = world.status()
    assert status["phase"] == "Promoted" and "undo" not in status
    assert recorder.candidate_weights() == [0, 50, 100]
    assert "PostPromotionPassed" in reasons(world)
    assert deployment(world, "v1").spec.replicas == 2, "v1 is kept for the whole rollback window"


def test_a_controller_killed_mid_post_promotion_resumes_it_without_moving_traffic(
    world: World,
    control_plane: ControlPlane,
    namespace: str,
    tmp_path: Path,
    prometheus: LocalPrometheus,
    player: MetricsPlayer,
    analysis_controller: RunningController,
) -> None:
    # given v2 promoted and measured for 20 s after, with a look or two taken
    player.start()
    player.wait_until_seen(prometheus, window="10s")
    recorder = promote_with_post_promotion(world, player, duration="20s")
    world.wait_for_phase("Promoted", timeout=30)
    looked = wait_for(lambda: looked_at(world), what="a look after the promotion", timeout=20)

    # when the controller is killed (SIGKILL) and another starts a few seconds later
    analysis_controller.kill()
    time.sleep(3)
    with controller_reading(
        prometheus, control_plane=control_plane, namespace=namespace, log_file=tmp_path / "second.log"
    ):
        # then the second resumes it from the stored status, to the same end, and it passes
        passed = wait_for(lambda: post_promotion(world).get("state") == "Passed" and post_promotion(world),
                          what="Passed", timeout=60, last=lambda: post_promotion(world))  # fmt: skip
    assert (passed["startedAt"], passed["endsAt"]) == (looked["startedAt"], looked["endsAt"])
    assert len(passed["analysis"]["measurements"]) > len(looked["analysis"]["measurements"])
    # and the route never flapped: 50 %, then 100 % on v2, never back
    assert recorder.candidate_weights() == [0, 50, 100]
    assert reasons(world).count("PostPromotionStarted") == 1
    assert reasons(world).count("PostPromotionPassed") == 1
    assert "undo" not in world.status()
