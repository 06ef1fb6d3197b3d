"""Sharding: two real controller processes, each owning the rollouts labelled for it.

Each shard is started as the chart starts it: `--watch-label-selector sharding.fluxcd.io/key=<shard>`,
leader election on, and no --lease-name, so that each derives a Lease of its own from its selector.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from controller.api import FINALIZER
from controller.leader import default_lease_name
from controller.routers.ownership import OWNER_ANNOTATION
from localenv.controller import RunningController, start_controller
from localenv.controlplane import ControlPlane
from tests.integration.rollout_world import WeightRecorder, World, rollout_manifest, wait_for

pytestmark = pytest.mark.integration

SHARD_KEY = "sharding.fluxcd.io/key"
SHARDS = ("shard-a", "shard-b")


def selector(shard: str) -> str:
    return f"{SHARD_KEY}={shard}"


def identity(shard: str) -> str:
    return f"controller-{shard}"


@pytest.fixture
def shards(control_plane: ControlPlane, world: World, tmp_path: Path) -> Iterator[dict[str, RunningController]]:
    """Both shards running, each leading its own Lease."""
    running: dict[str, RunningController] = {}
    try:
        for shard in SHARDS:
            running[shard] = start_controller(
                kubeconfig=control_plane.kubeconfig, namespace=world.namespace, leader_elect=True,
                lease_namespace=world.namespace, identity=identity(shard), log_file=tmp_path / f"{shard}.log",
                extra_args=["--watch-label-selector", selector(shard)],
            )  # fmt: skip
        wait_for(lambda: all(lease_holder(world, s) == identity(s) for s in SHARDS), what="each shard leading")
        yield running
    finally:
        for shard, controller in running.items():
            controller.stop()
            print(f"--- {shard}\n{controller.log()[-4000:]}")


def lease_holder(world: World, shard: str) -> str | None:
    try:
        lease = client.CoordinationV1Api(world.api).read_namespaced_lease(
            default_lease_name(selector(shard)), world.namespace
        )
    except client.ApiException:
        return None
    return lease.spec.holder_identity if lease.spec else None


def labelled(manifest: dict[str, Any], shard: str | None) -> dict[str, Any]:
    if shard is not None:
        manifest["metadata"]["labels"] = {SHARD_KEY: shard}
    return manifest


def relabel(world: World, name: str, shard: str) -> None:
    world.kubectl("label", "modelrollout", name, f"{SHARD_KEY}={shard}", "--overwrite")


def reporting_instances(world: World, name: str) -> set[str]:
    return {event.get("reportingInstance", "") for event in world.events(name)}


def new_events(world: World, seen: set[str]) -> list[dict[str, Any]]:
    return [event for event in world.events() if event["metadata"]["name"] not in seen]


def rollouts_in_metrics(controller: RunningController) -> set[str]:
    return set(re.findall(r'^model_rollouts_phase\{[^}]*rollout="([^"]+)"', controller.metrics(), re.M))


def test_each_shard_owns_only_the_rollouts_labelled_for_it(world: World, shards: dict[str, RunningController]) -> None:
    # Given a rollout labelled for each shard, and one labelled for neither
    owners = {"alpha": "shard-a", "beta": "shard-b", "stray": None}
    for name, shard in owners.items():
        world.create_route(name)
        manifest = rollout_manifest(name=name, steps=[{"setWeight": 30}, {"pause": {}}])
        manifest["spec"]["trafficRouting"] = {"gatewayAPI": {"httpRoute": name}}
        world.apply(labelled(manifest, shard))

    # When both shards have acted
    world.wait_for_phase("Paused", name="alpha")
    world.wait_for_phase("Paused", name="beta")
    time.sleep(2)

    # Then each shard acted on its own rollout only: Events, metrics and Leases say which
    assert reporting_instances(world, "alpha") == {identity("shard-a")}
    assert reporting_instances(world, "beta") == {identity("shard-b")}
    assert rollouts_in_metrics(shards["shard-a"]) == {"alpha"}
    assert rollouts_in_metrics(shards["shard-b"]) == {"beta"}
    assert default_lease_name(selector("shard-a")) != default_lease_name(selector("shard-b"))
    # And the unlabelled rollout was not touched at all: no status, no finalizer, route unclaimed
    stray = world.rollout("stray")
    assert "status" not in stray and FINALIZER not in stray["metadata"].get("finalizers", [])
    assert world.events("stray") == []
    route = world.custom("gateway.networking.k8s.io", "httproutes", "stray", version="v1")
    assert OWNER_ANNOTATION not in (route["metadata"].get("annotations") or {})


def test_a_rollout_relabelled_mid_rollout_continues_in_the_other_shard_without_a_flap(
    world: World, shards: dict[str, RunningController]
) -> None:
    # Given a rollout of shard a paused at 20 % by an indefinite pause
    recorder = WeightRecorder(world)
    steps: list[dict[str, Any]] = [
        {"setWeight": 20}, {"pause": {}}, {"setWeight": 50}, {"pause": {"duration": "1s"}}, {"setWeight": 80},
    ]  # fmt: skip
    world.apply(labelled(rollout_manifest(steps=steps), "shard-a"))
    world.wait_for_phase("Paused")
    assert reporting_instances(world, "iris") == {identity("shard-a")}
    seen_before = {event["metadata"]["name"] for event in world.events()}

    # When it is relabelled for shard b, and then resumed
    relabel(world, "iris", "shard-b")
    wait_for(lambda: "iris" not in rollouts_in_metrics(shards["shard-a"]), what="shard a letting go")
    assert world.rollout()["metadata"]["finalizers"] == [FINALIZER], "leaving a shard is not a deletion"
    world.action("resume")

    # Then shard b finishes it from the stored status: every weight once, in order, never back down
    world.wait_for_phase("Promoted", timeout=40)
    assert recorder.candidate_weights() == [0, 20, 50, 80, 100]

    # (a pass creates its Events after writing the status)
    def promoted() -> list[dict[str, Any]] | None:
        events = new_events(world, seen_before)
        return events if "Promoted" in {event["reason"] for event in events} else None

    after = wait_for(
        promoted,
        what="the Promoted Event",
        last=lambda: [(e["reason"], e.get("reportingInstance")) for e in new_events(world, seen_before)],
    )
    assert {event.get("reportingInstance") for event in after} == {identity("shard-b")}
    assert rollouts_in_metrics(shards["shard-a"]) == set()
    route = world.custom("gateway.networking.k8s.io", "httproutes", "iris", version="v1")
    assert route["metadata"]["annotations"][OWNER_ANNOTATION] == "iris"


def test_a_rollout_relabelled_back_and_forth_while_it_moves_never_flaps(
    world: World, shards: dict[str, RunningController]
) -> None:
    # Given a rollout moving through timed steps, started in shard a
    recorder = WeightRecorder(world)
    steps: list[dict[str, Any]] = [
        {"setWeight": 10}, {"pause": {"duration": "1s"}},
        {"setWeight": 30}, {"pause": {"duration": "1s"}},
        {"setWeight": 50}, {"pause": {"duration": "1s"}},
        {"setWeight": 70}, {"pause": {"duration": "1s"}},
    ]  # fmt: skip
    world.apply(labelled(rollout_manifest(steps=steps), "shard-a"))

    # When it is handed to the other shard as soon as the route shows each new weight (often
    # before the shard that wrote it has stored its status), until it is promoted
    moves = 0
    done = threading.Event()

    def hand_over_at_each_weight() -> None:
        nonlocal moves
        handed_at = recorder.latest()
        while not done.wait(0.05):
            if recorder.latest() != handed_at:
                handed_at = recorder.latest()
                relabel(world, "iris", SHARDS[(moves + 1) % 2])
                moves += 1

    mover = threading.Thread(target=hand_over_at_each_weight, daemon=True)
    mover.start()
    try:
        world.wait_for_phase("Promoted", timeout=60)
    finally:
        done.set()
        mover.join()

    # Then both shards took part, and the route saw every weight once, in order
    assert moves >= 4
    assert reporting_instances(world, "iris") == {identity("shard-a"), identity("shard-b")}
    assert recorder.candidate_weights() == [0, 10, 30, 50, 70, 100]
