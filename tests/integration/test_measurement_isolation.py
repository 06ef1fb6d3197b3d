"""Metric queries never hold the reconcile workers (issue 14, items 1 and 2).

Twenty rollouts analyse a model (error rate and latency p99, every 2 s) through a Prometheus that
answers every query 4 s late: a delaying HTTP proxy on 127.0.0.1 in front of the real
Prometheus. Beside them, a rollout that only sets weights and an abort of one of the twenty must
finish about as fast as they do when the same proxy answers at once, the twenty keep measuring,
and Prometheus sees about as many queries per interval from the twenty as from one (batched).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from localenv.controller import RunningController, start_controller
from localenv.controlplane import ControlPlane
from localenv.delaying_proxy import DelayingProxy
from localenv.prometheus import LocalPrometheus, MetricsPlayer, ModelMetricsExporter
from tests.integration.rollout_world import JSON, World, rollout_manifest, wait_for

pytestmark = pytest.mark.integration

ANALYSED = 20
SLOW_SECONDS = 4.0
INTERVAL_SECONDS = 2
PROMPT_SLACK_SECONDS = 5.0
"""How much longer than with a healthy Prometheus a weights-only rollout or an abort may take."""


@pytest.fixture
def player(exporter: ModelMetricsExporter, namespace: str) -> Iterator[MetricsPlayer]:
    playing = MetricsPlayer(exporter, model=f"iris-{namespace}")
    yield playing
    playing.stop()


@pytest.fixture
def proxy(prometheus: LocalPrometheus) -> Iterator[DelayingProxy]:
    with DelayingProxy(upstream=prometheus.url) as running:
        yield running


@pytest.fixture
def slow_controller(
    control_plane: ControlPlane, namespace: str, tmp_path: Path, proxy: DelayingProxy
) -> Iterator[RunningController]:
    running = start_controller(
        kubeconfig=control_plane.kubeconfig,
        namespace=namespace,
        log_file=tmp_path / "controller.log",
        extra_args=["--prometheus-address", proxy.url],
    )
    yield running
    running.stop()
    print(running.log()[-5000:])


def on_route(manifest: JSON, route: str) -> JSON:
    manifest["spec"]["trafficRouting"] = {"gatewayAPI": {"httpRoute": route}}
    return manifest


def analysed(name: str, model: str) -> JSON:
    """A rollout holding 10 % on v2 for ten minutes, measuring two presets every 2 s."""
    return on_route(
        rollout_manifest(
            name=name,
            model=model,
            steps=[{"setWeight": 10}, {"analyze": {"duration": "10m"}}],
            analysis={
                "interval": f"{INTERVAL_SECONDS}s",
                "metrics": [{"name": "errors", "preset": "error-rate"}, {"name": "p99", "preset": "latency-p99"}],
            },
        ),
        name,
    )


def weights_only(name: str) -> JSON:
    return on_route(
        rollout_manifest(name=name, steps=[{"setWeight": 20}, {"pause": {"duration": "1s"}}, {"setWeight": 60}]), name
    )


def weights(world: World, route: str) -> dict[str, int]:
    found: Any = client.CustomObjectsApi(world.api).get_namespaced_custom_object(
        "gateway.networking.k8s.io", "v1", world.namespace, "httproutes", route
    )
    return {ref["name"].removeprefix("iris-"): ref.get("weight", 1) for ref in found["spec"]["rules"][0]["backendRefs"]}


def promote_seconds(world: World, name: str) -> float:
    """Seconds from creating a weights-only rollout to its phase Promoted."""
    world.create_route(name)
    started = time.monotonic()
    world.apply(weights_only(name))
    world.wait_for_phase("Promoted", name=name, timeout=300)
    return time.monotonic() - started


def abort_seconds(world: World, name: str) -> float:
    """Seconds from annotating `abort` to all traffic back on v1 and phase Aborted."""
    started = time.monotonic()
    world.action("abort", name=name)
    wait_for(lambda: weights(world, name).get("v2") == 0 or None, what=f"{name} back on v1", timeout=300)
    world.wait_for_phase("Aborted", name=name, timeout=300)
    return time.monotonic() - started


def measured(world: World, name: str) -> int:
    """Looks the rollout's analysis took (its run's tally: status keeps only the last 20 measurements)."""
    runs = (world.status(name).get("analysis") or {}).get("runs") or [{}]
    return max((tally["measurements"] for tally in runs[-1].get("metrics", [])), default=0)


def looked_once(world: World, name: str) -> Callable[[], bool]:
    return lambda: measured(world, name) >= 1


def queries_per_interval(proxy: DelayingProxy, seconds: float) -> float:
    before = proxy.requests["/api/v1/query"]
    time.sleep(seconds)
    return (proxy.requests["/api/v1/query"] - before) / (seconds / INTERVAL_SECONDS)


def test_a_slow_prometheus_holds_neither_weights_only_rollouts_nor_aborts(
    world: World,
    prometheus: LocalPrometheus,
    player: MetricsPlayer,
    proxy: DelayingProxy,
    slow_controller: RunningController,
) -> None:
    # Given a model whose two versions Prometheus sees, and twenty rollouts analysing it
    player.start()
    player.wait_until_seen(prometheus, window="10s")
    names = [f"analysed-{i}" for i in range(ANALYSED)]
    world.create_route(names[0])
    world.apply(analysed(names[0], player.model))
    wait_for(lambda: measured(world, names[0]) >= 2 or None, what="two looks of one rollout", timeout=60)
    one = queries_per_interval(proxy, 10)
    for name in names[1:]:
        world.create_route(name)
        world.apply(analysed(name, player.model))
    for name in names:
        wait_for(looked_once(world, name), what=f"a look of {name}", timeout=120)
    twenty = queries_per_interval(proxy, 10)
    print(f"queries per {INTERVAL_SECONDS}s interval: 1 rollout {one:.1f}, {ANALYSED} rollouts {twenty:.1f}")

    # ... with a healthy Prometheus, a weights-only rollout and an abort take this long
    healthy_promote = promote_seconds(world, "quick-healthy")
    healthy_abort = abort_seconds(world, names[0])

    # When Prometheus answers every query 4 s late
    proxy.delay_seconds = SLOW_SECONDS
    time.sleep(2 * SLOW_SECONDS)

    # Then a weights-only rollout and an abort take about as long as before
    looks_before = {name: measured(world, name) for name in names[2:]}
    slow_promote = promote_seconds(world, "quick-slow")
    slow_abort = abort_seconds(world, names[1])
    print(
        f"weights-only rollout promoted in {healthy_promote:.1f}s healthy, {slow_promote:.1f}s slow; "
        f"abort in {healthy_abort:.1f}s healthy, {slow_abort:.1f}s slow"
    )
    assert slow_promote <= healthy_promote + PROMPT_SLACK_SECONDS
    assert slow_abort <= healthy_abort + PROMPT_SLACK_SECONDS

    # and the other analysed rollouts still take their looks, a few seconds late each, from a few
    # batched queries: about as many as one rollout alone asks for
    wait_for(
        lambda: all(measured(world, name) > looks_before[name] for name in names[2:]) or None,
        what="a new look of every analysed rollout behind the slow Prometheus",
        timeout=60,
    )
    looks_then = sum(measured(world, name) for name in names[2:])
    slow = queries_per_interval(proxy, 12)
    looks = (sum(measured(world, name) for name in names[2:]) - looks_then) / (ANALYSED - 2)
    print(
        f"Prometheus answering 4 s late, {ANALYSED - 2} rollouts: {slow:.1f} queries per {INTERVAL_SECONDS}s "
        f"interval, {looks * 5:.1f} looks per rollout and minute"
    )
    assert twenty <= 2 * one + 2, "batched: the queries do not grow with the rollouts"
