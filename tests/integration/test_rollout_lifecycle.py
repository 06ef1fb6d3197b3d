"""The controller walks a real HTTPRoute through a rollout's steps, on a real API server."""

from __future__ import annotations

import time

import pytest

from localenv.controller import RunningController
from tests.integration.rollout_world import WeightRecorder, World, rollout_manifest, wait_for

pytestmark = pytest.mark.integration


def test_each_step_weight_reaches_the_route_then_the_candidate_is_promoted(
    world: World, controller: RunningController
) -> None:
    # Given a rollout of v2 against v1 with steps 20 % -> pause 1 s -> 60 %
    recorder = WeightRecorder(world)
    world.apply(rollout_manifest())

    # When the controller runs it to the end
    wait_for(lambda: recorder.latest() == {"v1": 0, "v2": 100}, what="all traffic on v2", timeout=30)
    status = world.wait_for_phase("Promoted")

    # Then the route went through every step's weight, in order, never backwards
    assert recorder.candidate_weights() == [0, 20, 60, 100]
    assert status["stableVersion"] == "v2"
    assert status["currentWeight"] == 100
    assert status["observedGeneration"] == world.rollout()["metadata"]["generation"]
    reasons = [e["reason"] for e in world.events()]
    assert "RolloutStarted" in reasons and "Promoted" in reasons
    assert [h["phase"] for h in status["history"]][-1] == "Promoted"


def test_abort_sends_all_traffic_back_to_the_baseline_at_once(world: World, controller: RunningController) -> None:
    # Given a rollout paused indefinitely at 30 %
    world.apply(rollout_manifest(steps=[{"setWeight": 30}, {"pause": {}}, {"setWeight": 100}]))
    world.wait_for_phase("Paused")
    assert world.route_weights() == {"v1": 70, "v2": 30}

    # When a person aborts it with plain kubectl
    world.action("abort")

    # Then the candidate gets no traffic, the phase says Aborted and the annotation is consumed
    status = world.wait_for_phase("Aborted", timeout=10)
    assert world.route_weights() == {"v1": 100, "v2": 0}
    assert status["stableVersion"] == "v1"
    wait_for(
        lambda: "rollouts.mlops.dev/action" not in (world.rollout()["metadata"].get("annotations") or {}),
        what="the action annotation to be removed",
    )


def test_retry_restarts_an_aborted_rollout_from_the_first_step(world: World, controller: RunningController) -> None:
    # Given an aborted rollout
    world.apply(rollout_manifest(steps=[{"setWeight": 30}, {"pause": {}}]))
    world.wait_for_phase("Paused")
    world.action("abort")
    world.wait_for_phase("Aborted")

    # When a person retries it
    world.action("retry")

    # Then it walks the steps again from the start
    world.wait_for_phase("Paused")
    assert world.route_weights() == {"v1": 70, "v2": 30}
    assert world.status()["currentStepIndex"] == 1


def test_pause_and_resume(world: World, controller: RunningController) -> None:
    # Given a rollout waiting at an indefinite pause step at 25 %
    world.apply(rollout_manifest(steps=[{"setWeight": 25}, {"pause": {}}, {"setWeight": 50}]))
    world.wait_for_phase("Paused")

    # When a person resumes it
    world.action("resume")

    # Then it goes on to the end
    world.wait_for_phase("Promoted")
    assert world.route_weights() == {"v1": 0, "v2": 100}


def test_a_manual_pause_holds_the_weight_until_resumed(world: World, controller: RunningController) -> None:
    # Given a rollout in a long timed pause at 40 %
    world.apply(rollout_manifest(steps=[{"setWeight": 40}, {"pause": {"duration": "4s"}}, {"setWeight": 80}]))
    wait_for(lambda: world.route_weights().get("v2") == 40, what="40 % on v2")

    # When a person pauses it, and the timed pause runs out meanwhile
    world.action("pause")
    world.wait_for_phase("Paused")
    recorder = WeightRecorder(world)
    time.sleep(5)
    assert recorder.candidate_weights() == [40]
    assert world.status()["phase"] == "Paused"

    # Then a resume lets it finish
    world.action("resume")
    world.wait_for_phase("Promoted", timeout=20)


def test_promote_full_skips_the_remaining_steps(world: World, controller: RunningController) -> None:
    # Given a rollout paused at 10 % with steps left
    world.apply(rollout_manifest(steps=[{"setWeight": 10}, {"pause": {}}, {"setWeight": 50}, {"pause": {}}]))
    world.wait_for_phase("Paused")

    # When a person promotes it fully
    world.action("promote-full")

    # Then the candidate takes all traffic without stopping at the later pause
    world.wait_for_phase("Promoted")
    assert world.route_weights() == {"v1": 0, "v2": 100}


def test_a_new_candidate_rolls_out_against_the_promoted_version(world: World, controller: RunningController) -> None:
    # Given v2 promoted
    world.apply(rollout_manifest(steps=[{"setWeight": 50}]))
    world.wait_for_phase("Promoted")

    # When the manifest declares v3 as the next candidate (a small Git diff)
    world.apply(rollout_manifest(candidate="v3", steps=[{"setWeight": 50}, {"pause": {}}]))

    # Then v3 is canaried against v2, the version that served 100 %
    status = world.wait_for_phase("Paused")
    assert status["stableVersion"] == "v2"
    assert status["candidateVersion"] == "v3"
    weights = world.route_weights()
    assert (weights["v2"], weights["v3"], weights["v1"]) == (50, 50, 0)


def test_a_change_mid_rollout_returns_traffic_then_starts_over(world: World, controller: RunningController) -> None:
    # Given a rollout paused at 60 %
    world.apply(rollout_manifest(steps=[{"setWeight": 60}, {"pause": {}}]))
    world.wait_for_phase("Paused")

    # When the steps are changed
    recorder = WeightRecorder(world)
    world.apply(rollout_manifest(steps=[{"setWeight": 10}, {"pause": {}}]))

    # Then traffic went back to v1 before the new first step
    wait_for(lambda: recorder.latest().get("v2") == 10, what="the new first step at 10 %")
    assert recorder.candidate_weights() == [60, 0, 10]
    assert world.wait_for_phase("Paused")["currentStepIndex"] == 1


def test_deleting_an_inflight_rollout_returns_all_traffic_to_the_baseline(
    world: World, controller: RunningController
) -> None:
    # Given a rollout paused at 50 %
    world.apply(rollout_manifest(steps=[{"setWeight": 50}, {"pause": {}}]))
    world.wait_for_phase("Paused")

    # When it is deleted
    world.kubectl("delete", "modelrollout", "iris", "--wait=true", "--timeout=30s")

    # Then the baseline has all traffic and the object is gone
    assert world.route_weights() == {"v1": 100, "v2": 0}
    assert world.kubectl("get", "modelrollouts", "-o", "name").strip() == ""


def test_a_missing_route_is_reported_and_no_traffic_moves(world: World, controller: RunningController) -> None:
    # Given a rollout whose HTTPRoute does not exist
    manifest = rollout_manifest()
    manifest["spec"]["trafficRouting"] = {"gatewayAPI": {"httpRoute": "nope"}}
    world.apply(manifest)

    # Then a condition and an Event name the route, and the existing route is untouched
    def reference_condition() -> dict[str, str] | None:
        conditions = world.status().get("conditions", [])
        return next((c for c in conditions if c["type"] == "ReferencesValid" and c["status"] == "False"), None)

    condition = wait_for(reference_condition, what="ReferencesValid=False")
    assert "HTTPRoute" in condition["message"] and "nope" in condition["message"]
    assert any(e["reason"] == "InvalidReference" and "nope" in e["message"] for e in world.events())
    assert world.route_weights() == {"v1": 100, "v2": 0}


def test_a_missing_service_holds_the_rollout_before_any_traffic(world: World, controller: RunningController) -> None:
    # Given a rollout whose candidate Service does not exist yet
    manifest = rollout_manifest(candidate="v3")
    world.kubectl("delete", "service", "iris-v3")
    world.apply(manifest)
    wait_for(lambda: "iris-v3" in world.status().get("message", ""), what="a message naming the Service")
    assert world.route_weights() == {"v1": 100, "v2": 0}

    # When the Service is created
    world.create_services(("v3",))

    # Then the rollout proceeds
    world.wait_for_phase("Promoted", timeout=30)
    assert world.route_weights()["v3"] == 100
