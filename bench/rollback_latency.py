"""Rollback latency: from a regression visible in Prometheus to candidate weight 0 on the HTTPRoute.

Everything is real and on 127.0.0.1: the local API server, Prometheus scraping a loopback exporter
every second, and the controller process measuring from it. Each run rolls out v2 against v1 of
a model of its own, in a namespace of its own: 50 % to v2, then a long analyze step measuring the
`error-rate` preset every `--interval`. Once the analysis is measuring (first measurement passed),
the run waits a random fraction of an interval, so that regressions fall anywhere between two
measurements, then v2 starts failing a fifth of its requests.

* visible: the first time the controller's own judge, fed the preset's own count queries polled on
  Prometheus every 50 ms for both versions over the analyze step so far, finds evidence of harm:
  from then on, any measurement the controller takes fails;
* rolled back: the first route update, seen through a watch, that gives v2 weight 0.

Target: at most one analysis interval plus 2 s.

    python bench/rollback_latency.py --runs 5 --interval 5
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kubernetes
from kubernetes import client

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from controller.analysis.evaluate import Result
from controller.analysis.evidence import Evidence, Segment
from controller.analysis.judges import Budget, Versions, judge_evidence
from controller.analysis.spec import (
    DEFAULT_FALSE_PROMOTION_RATE,
    DEFAULT_FALSE_ROLLBACK_RATE,
    RateTest,
    SequentialSpec,
    format_window,
    parse_metric,
    render_template,
)
from controller.api import parse_time
from localenv.controller import start_controller
from localenv.controlplane import ControlPlane
from localenv.prometheus import Behaviour, LocalPrometheus, MetricsPlayer, ModelMetricsExporter
from tests.integration.rollout_world import WeightRecorder, World, rollout_manifest, wait_for

WINDOW = "10s"
SLACK_SECONDS = 2.0
"""What the target allows on top of one interval: the queries, the decision, the route write."""
POLL_SECONDS = 0.05
REGRESSION = Behaviour(error_rate=0.2)
PRESET = parse_metric({"name": "errors", "preset": "error-rate"}, path="bench")
assert isinstance(PRESET, SequentialSpec) and isinstance(PRESET.test, RateTest)
PRESET_TEST = PRESET.test

# The official client leaves this function unannotated.
_new_client_from_config: Any = kubernetes.config.new_client_from_config


class TimedWeightRecorder(WeightRecorder):
    """A WeightRecorder that also notes when (time.monotonic()) it saw each split."""

    def __init__(self, world: World) -> None:
        self.seen_at: list[float] = []
        super().__init__(world)

    def _record(self, route: dict[str, Any]) -> None:
        arrived = time.monotonic()
        super()._record(route)
        with self._lock:
            if len(self.seen_at) < len(self.seen):
                self.seen_at.append(arrived)

    def first_seen(self, *, candidate_weight: int, after: float) -> float | None:
        """When the route first gave v2 `candidate_weight` at or after the moment `after`."""
        with self._lock:
            timeline = list(zip(self.seen_at, self.seen, strict=True))
        return next((at for at, weights in timeline if at >= after and weights.get("v2") == candidate_weight), None)


def counts(prometheus: LocalPrometheus, *, model: str, version: str, seconds: float) -> dict[str, float]:
    """The preset's counts for `version` over the last `seconds`, as the controller reads them."""
    variables = {"model": model, "version": version, "namespace": "", "window": format_window(round(seconds, 3))}
    numbers = {}
    for query in PRESET_TEST.queries:
        result = prometheus.query(render_template(query.query, variables))
        if result:
            numbers[query.name] = float(result[0]["value"][1])
    return numbers


def regression_visible(prometheus: LocalPrometheus, *, model: str, step_started: datetime) -> bool:
    seconds = max((datetime.now(UTC) - step_started).total_seconds(), 1.0)
    segment = Segment(
        step=1,
        started_at=step_started,
        seconds=seconds,
        candidate=counts(prometheus, model=model, version="v2", seconds=seconds),
        baseline=counts(prometheus, model=model, version="v1", seconds=seconds),
    )
    look = judge_evidence(
        PRESET_TEST,
        Evidence(metric="errors", segments=(segment,)),
        budget=Budget(false_rollback=DEFAULT_FALSE_ROLLBACK_RATE, false_promotion=DEFAULT_FALSE_PROMOTION_RATE),
        versions=Versions(baseline="v1", candidate="v2"),
    )
    return look.judgement.result == Result.FAILED


def one_run(
    *, index: int, plane: ControlPlane, api: client.ApiClient, exporter: ModelMetricsExporter,
    prometheus: LocalPrometheus, interval: float,
) -> float:  # fmt: skip
    """Seconds from the regression visible in Prometheus to v2 at weight 0 on the route."""
    namespace = f"rollback-{index}-{random.randrange(16**6):06x}"
    client.CoreV1Api(api).create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    world = World(plane=plane, api=api, namespace=namespace)
    world.create_services()
    world.create_route()
    player = MetricsPlayer(exporter, model=namespace)
    try:
        player.start()
        player.wait_until_seen(prometheus, window=WINDOW)
        recorder = TimedWeightRecorder(world)
        world.apply(
            rollout_manifest(
                model=namespace,
                steps=[{"setWeight": 50}, {"analyze": {"duration": "1h"}}],
                analysis={
                    "interval": f"{interval:g}s",
                    "metrics": [{"name": "errors", "preset": "error-rate", "window": WINDOW}],
                },
            )
        )
        wait_for(
            lambda: (world.status().get("analysis") or {}).get("measurements") or None,
            what="the first measurement",
            timeout=interval + 30,
        )
        step_started = parse_time(world.status().get("stepStartedAt"))
        assert step_started is not None
        time.sleep(random.uniform(0, interval))
        regressed_at = time.monotonic()
        player.play("v2", REGRESSION)
        wait_for(lambda: regression_visible(prometheus, model=namespace, step_started=step_started),
                 what="the regression in Prometheus", timeout=30)  # fmt: skip
        visible_at = time.monotonic()
        world.wait_for_phase("RolledBack", timeout=interval + 30)
        zero_at = wait_for(
            lambda: recorder.first_seen(candidate_weight=0, after=regressed_at), what="v2 at 0 on the route"
        )
        recorder.stop()
        latency = zero_at - visible_at
        print(
            f"run {index + 1}: visible {visible_at - regressed_at:.2f}s after the change, "
            f"weight 0 {latency:.2f}s after that",
            flush=True,
        )
        return latency
    finally:
        player.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--interval", type=float, default=5.0, help="analysis interval in seconds")
    args = parser.parse_args()

    exporter = ModelMetricsExporter()
    with (
        ControlPlane.start() as plane,
        _new_client_from_config(config_file=str(plane.kubeconfig)) as api,
        LocalPrometheus(scrape_targets=[exporter.target]) as prometheus,
        tempfile.TemporaryDirectory() as logs,
    ):
        controller = start_controller(
            kubeconfig=plane.kubeconfig,
            log_file=Path(logs) / "controller.log",
            extra_args=["--prometheus-address", prometheus.url],
        )
        try:
            latencies = [
                one_run(index=i, plane=plane, api=api, exporter=exporter, prometheus=prometheus, interval=args.interval)
                for i in range(args.runs)
            ]
        finally:
            controller.stop()
            exporter.close()
    target = args.interval + SLACK_SECONDS
    print(
        f"rollback latency over {len(latencies)} runs, interval {args.interval:g}s: "
        f"min {min(latencies):.2f}s, median {statistics.median(latencies):.2f}s, max {max(latencies):.2f}s; "
        f"target <= {target:g}s (interval + {SLACK_SECONDS:g}s): {'met' if max(latencies) <= target else 'MISSED'}"
    )
    return 0 if max(latencies) <= target else 1


if __name__ == "__main__":
    sys.exit(main())
