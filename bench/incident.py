"""Incident latency: from an alert to candidate weight 0 on the HTTPRoute, through the real parts.

Everything is real and on 127.0.0.1: the local API server, the controller process with its
Alertmanager receiver on, Prometheus scraping a loopback exporter of model metrics every second
and evaluating an alerting rule (ModelErrorRate: a version failing more than 10 % of its requests
over 3 s, tests/integration/incident_world.py), and Alertmanager posting to the controller through a
tap that notes when each webhook call arrives. Each run rolls out v2 against v1 of a model of its
own, in a namespace of its own, holds it at 20 %, then makes v2 fail half of its requests:

* delivery: from the first byte of Alertmanager's webhook call carrying the firing alert to the
  first route update, seen through a watch, that gives v2 weight 0. Target: p99 at most 2 s;
* firing: from the alert's startsAt (the rule evaluation that found it firing, as Prometheus
  stamps it) to the same route update. Target: p99 at most the rule's evaluation interval plus
  Alertmanager's group_wait plus 2 s.

    python bench/incident.py --runs 20
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import kubernetes
from kubernetes import client

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from localenv.alertmanager import LocalAlertmanager
from localenv.controller import start_controller
from localenv.controlplane import ControlPlane
from localenv.prometheus import Behaviour, MetricsPlayer, ModelMetricsExporter
from tests.integration.incident_world import AlertingPrometheus, WebhookTap, receiver_end
from tests.integration.rollout_world import WeightRecorder, World, rollout_manifest, wait_for

DELIVERY_TARGET_SECONDS = 2.0
SLACK_SECONDS = 2.0
"""What the firing target allows on top of the evaluation interval and group_wait."""
FAILING = Behaviour(error_rate=0.5)
HOLD: list[dict[str, Any]] = [{"setWeight": 20}, {"pause": {"duration": "1h"}}]

# The official client leaves this function unannotated.
_new_client_from_config: Any = kubernetes.config.new_client_from_config


@dataclass(frozen=True, kw_only=True)
class Run:
    regression_to_firing: float
    """From v2 failing to the alert's startsAt: the rate window filling, then an evaluation."""
    firing_to_zero: float
    delivery_to_zero: float


def nearest_rank(values: Sequence[float], percentile: float) -> float:
    """The nearest-rank percentile: over 20 runs, p99 is the largest."""
    ordered = sorted(values)
    return ordered[max(math.ceil(percentile / 100 * len(ordered)) - 1, 0)]


def first_zero(recorder: WeightRecorder, *, after: float) -> float | None:
    """When (monotonic) the route first gave v2 weight 0 at or after `after`."""
    # Copied first: the recorder's thread appends to both lists, the arrival time last.
    seen_at, seen = list(recorder.seen_at), list(recorder.seen)
    return next((at for at, w in zip(seen_at, seen, strict=False) if at >= after and w.get("v2") == 0), None)


def one_run(
    *, index: int, plane: ControlPlane, api: client.ApiClient, exporter: ModelMetricsExporter, tap: WebhookTap
) -> Run:
    namespace = f"incident-{index}-{random.randrange(16**6):06x}"
    client.CoreV1Api(api).create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    world = World(plane=plane, api=api, namespace=namespace)
    world.create_services()
    world.create_route()
    player = MetricsPlayer(exporter, model=namespace)
    try:
        player.start()
        recorder = WeightRecorder(world)
        world.apply(rollout_manifest(model=namespace, steps=HOLD))
        wait_for(lambda: recorder.latest().get("v2") == 20, what="the canary at 20 %", timeout=30)
        time.sleep(random.uniform(0, 1))  # the regression falls anywhere between two evaluations
        regressed, regressed_wall = time.monotonic(), time.time()
        player.play("v2", FAILING)
        zero = wait_for(lambda: first_zero(recorder, after=regressed), what="v2 at weight 0", timeout=60)
        recorder.stop()
        delivery = wait_for(
            lambda: tap.first(status="firing", label="namespace", value=namespace, after=regressed),
            what="the webhook call",
        )
        starts_at = next(
            datetime.fromisoformat(starts).timestamp()
            for status, labels, starts in delivery.alerts
            if status == "firing" and labels.get("namespace") == namespace
        )
        zero_wall = regressed_wall + (zero - regressed)
        run = Run(
            regression_to_firing=starts_at - regressed_wall,
            firing_to_zero=zero_wall - starts_at,
            delivery_to_zero=zero - delivery.arrived,
        )
        print(
            f"run {index + 1}: fired {run.regression_to_firing:.2f}s after the regression, weight 0 "
            f"{run.firing_to_zero:.2f}s after the firing, {run.delivery_to_zero:.3f}s after the webhook call",
            flush=True,
        )
        return run
    finally:
        player.stop()


def table(runs: Sequence[Run], *, evaluation: float, group_wait: float) -> tuple[str, bool]:
    firing_target = evaluation + group_wait + SLACK_SECONDS
    rows = [
        ("webhook delivery -> weight 0", [r.delivery_to_zero for r in runs], DELIVERY_TARGET_SECONDS),
        ("rule firing (startsAt) -> weight 0", [r.firing_to_zero for r in runs], firing_target),
        ("regression -> rule firing (context)", [r.regression_to_firing for r in runs], None),
    ]
    lines = [
        f"incident latency over {len(runs)} runs (rule evaluation {evaluation:g}s, group_wait {group_wait:g}s)",
        "| from -> to | p50 | p99 | max | target (p99) | met |",
        "|---|---|---|---|---|---|",
    ]
    met_all = True
    for name, values, target in rows:
        p99 = nearest_rank(values, 99)
        met = target is None or p99 <= target
        met_all = met_all and met
        lines.append(
            f"| {name} | {statistics.median(values):.3f} s | {p99:.3f} s | {max(values):.3f} s | "
            f"{'-' if target is None else f'<= {target:g} s'} | {'-' if target is None else ('yes' if met else 'NO')} |"
        )
    return "\n".join(lines), met_all


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--evaluation-interval", type=float, default=1.0, help="the rule's, in seconds")
    parser.add_argument("--group-wait", type=float, default=0.2, help="Alertmanager's, in seconds")
    args = parser.parse_args()

    exporter = ModelMetricsExporter()
    with (
        ControlPlane.start() as plane,
        _new_client_from_config(config_file=str(plane.kubeconfig)) as api,
        tempfile.TemporaryDirectory() as scratch,
    ):
        receiver = receiver_end(Path(scratch))
        controller = start_controller(
            kubeconfig=plane.kubeconfig,
            log_file=Path(scratch) / "controller.log",
            extra_args=receiver.controller_args(),
        )
        prometheus: AlertingPrometheus | None = None
        try:
            with (
                WebhookTap(upstream=receiver.url) as tap,
                LocalAlertmanager(
                    receiver_url=tap.url, bearer_token=receiver.token, group_wait_seconds=args.group_wait
                ) as alertmanager,
            ):
                prometheus = AlertingPrometheus(
                    scrape_targets=[exporter.target],
                    alertmanager=f"127.0.0.1:{alertmanager.port}",
                    evaluation_interval_seconds=args.evaluation_interval,
                )
                prometheus.start()
                runs = [one_run(index=i, plane=plane, api=api, exporter=exporter, tap=tap) for i in range(args.runs)]
        finally:
            if prometheus is not None:
                prometheus.close()
            controller.stop()
            exporter.close()
    text, met = table(runs, evaluation=args.evaluation_interval, group_wait=args.group_wait)
    print(text)
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
