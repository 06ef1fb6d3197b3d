"""The real controller reads its rollouts and routes from the informers' caches: what a pass costs
in API calls, measured with model_rollouts_api_calls_total."""

from __future__ import annotations

import re
import time

import pytest

from localenv.controller import RunningController
from tests.integration.rollout_world import WeightRecorder, World, rollout_manifest, wait_for

pytestmark = pytest.mark.integration


def counters(metrics: str, name: str, label: str) -> dict[str, float]:
    """The counter's samples summed by one label's value."""
    sums: dict[str, float] = {}
    for labels, value in re.findall(rf"^{name}\{{(.*)\}} (\S+)$", metrics, re.M):
        key = dict(re.findall(r'(\w+)="([^"]*)"', labels)).get(label, "")
        sums[key] = sums.get(key, 0.0) + float(value)
    return sums


def reads(metrics: str) -> dict[str, float]:
    """GETs by resource."""
    found = re.findall(r'^model_rollouts_api_calls_total\{operation="get",resource="([^"]*)"\} (\S+)$', metrics, re.M)
    return {resource: float(value) for resource, value in found if float(value)}


def test_a_rollout_runs_on_two_writes_per_traffic_step_without_reading_itself_back(
    world: World, controller: RunningController
) -> None:
    # Given a rollout with two weight steps (three traffic steps with the promotion)
    recorder = WeightRecorder(world)
    world.apply(rollout_manifest(steps=[{"setWeight": 20}, {"setWeight": 60}]))

    # When the controller runs it to the end, and settles
    world.wait_for_phase("Promoted")
    wait_for(lambda: recorder.latest() == {"v1": 0, "v2": 100}, what="all traffic on v2")
    time.sleep(2)

    # Then the route and the status were written once per traffic step (the route claimed in its
    # first write, the gates passed in the pass that started the rollout), and nothing was read
    # back: the only GETs are of the two Services and the route, when the first pass runs before
    # their watch events have reached the caches (an unsharded controller confirms nothing)
    metrics = controller.metrics()
    calls = counters(metrics, "model_rollouts_api_calls_total", "operation")
    passes = sum(counters(metrics, "model_rollouts_reconcile_total", "result").values())
    print(f"{passes:.0f} passes: {calls}")
    assert recorder.candidate_weights() == [0, 20, 60, 100]
    assert calls["write"] == 3, calls
    assert calls["update"] == 3, calls
    assert calls["patch"] == 1, calls  # the finalizer
    assert set(reads(metrics)) <= {"Service", "httproutes.gateway.networking.k8s.io"}, reads(metrics)
    assert calls.get("get", 0) <= 3, calls
