"""Decision benchmark of the paired check: how often a shadow (mirror) step rolls back a candidate
that agrees with its baseline request by request, and how soon it catches one that does not.

Each run rolls a candidate out through the controller's real decision path (`parse_spec`, the
`AnalysisChecker` reading both versions' prediction logs with the real `PredictionLogReader` over an
`httpx.MockTransport`, and `plan.decide`, driven as bench/judge.py drives it): a 10-minute mirror
step at weight 0, judged by one `pairedPredictions` metric with `minAgreement` 0.9 and the default
`falseRollbackRate` 0.05. Mirrored requests arrive as a Poisson process; each is answered by
both versions, the candidate giving the baseline's label with the cell's true agreement. Per cell
it prints how often the candidate was rolled back or promoted and the median minutes to a
rollback; the targets: at a true agreement of at least minAgreement, rolled back at most
falseRollbackRate of the time (the confidence sequence's promise, at every look); at 0.7, caught
in at least 95 % of the runs at 1 request a second and more.

    .venv/bin/python bench/paired.py --runs 200

It exits 0 whether or not the targets are met: it is a measurement.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.judge import T0, Result, _controller_result, _decide_and_route, analysis_outcome
from controller.analysis.checker import AnalysisChecker
from controller.analysis.prediction_logs import PredictionLogReader
from controller.api import TERMINAL_PHASES, Mirror, ModelRolloutSpec, ModelRolloutStatus, parse_spec
from controller.plan import Observed

MIN_AGREEMENT = 0.9
FALSE_ROLLBACK_RATE = 0.05
"""The rollout's falseRollbackRate (the default, written out)."""
MIRROR_SECONDS = 600
LIMIT_SECONDS = MIRROR_SECONDS + 120
MIN_REQUEUE_SECONDS, MAX_REQUEUE_SECONDS = 1.0, 30.0
ENDPOINTS = {"v1": "http://bench-v1.bench.svc:8080", "v2": "http://bench-v2.bench.svc:8080"}
CLASSES = 3
"""Labels a prediction takes: a disagreement is one of the other two."""


def manifest() -> dict[str, Any]:
    return {
        "model": "bench",
        "versions": [
            {"version": version, "backend": {"service": f"bench-{version}", "port": 8080}, "endpoint": endpoint}
            for version, endpoint in ENDPOINTS.items()
        ],
        "baseline": "v1",
        "candidate": "v2",
        "trafficRouting": {"gatewayAPI": {"httpRoute": "bench"}},
        "steps": [{"setWeight": 0}, {"mirror": {"duration": f"{MIRROR_SECONDS}s"}}],
        "analysis": {
            "falseRollbackRate": FALSE_ROLLBACK_RATE,
            "metrics": [{"name": "agreement", "pairedPredictions": {"minAgreement": MIN_AGREEMENT}}],
        },
    }


@dataclass(frozen=True, kw_only=True)
class Cell:
    requests_per_second: float
    agreement: float
    """The candidate's true chance of giving the baseline's label."""

    @property
    def label(self) -> str:
        return f"{self.requests_per_second:g} rps mirrored, true agreement {self.agreement:.2f}"


def cells() -> list[Cell]:
    return [
        Cell(requests_per_second=rate, agreement=agreement)
        for rate in (0.2, 1.0, 5.0)
        for agreement in (0.99, 0.95, MIN_AGREEMENT, 0.85, 0.7)
    ]


class MirroredLogs:
    """Both versions' prediction logs as their servers would serve them at the simulated time."""

    def __init__(self, cell: Cell, *, seed: int) -> None:
        rng = np.random.default_rng(seed)
        count = int(rng.poisson(cell.requests_per_second * LIMIT_SECONDS))
        self.times = np.sort(rng.uniform(0.0, LIMIT_SECONDS, size=count))
        self.baseline = rng.integers(0, CLASSES, size=count)
        shift = rng.integers(1, CLASSES, size=count)
        agrees = rng.random(count) < cell.agreement
        self.candidate = np.where(agrees, self.baseline, (self.baseline + shift) % CLASSES)
        self.elapsed = 0.0
        """Simulated seconds since T0; only requests mirrored by then are in the logs."""
        # Each row encoded once: a look reads every row since the step started, again and again.
        self.rows = {
            role: [
                f'{{"requestId":"r{i}","row":0,"time":{T0.timestamp() + t:.3f},"label":{label},"score":null}}'
                for i, (t, label) in enumerate(zip(self.times.tolist(), labels.tolist(), strict=True))
            ]
            for role, labels in (("v1", self.baseline), ("v2", self.candidate))
        }

    def serve(self, request: httpx.Request) -> httpx.Response:
        since = float(request.url.params["since"]) - T0.timestamp()
        rows = self.rows["v1" if request.url.host.startswith("bench-v1") else "v2"]
        first, last = np.searchsorted(self.times, [since, self.elapsed])
        body = '{"predictions":[' + ",".join(rows[first:last]) + '],"truncated":false}'
        return httpx.Response(200, content=body.encode(), headers={"content-type": "application/json"})


@dataclass(frozen=True, kw_only=True)
class Outcome:
    result: Result
    seconds: float


def run(spec: ModelRolloutSpec, cell: Cell, *, seed: int) -> Outcome:
    logs = MirroredLogs(cell, seed=seed)
    checker = AnalysisChecker(
        providers={},
        template_lookup=lambda *, namespace, name: None,
        prediction_logs=PredictionLogReader(transport=httpx.MockTransport(logs.serve)),
    )
    status = ModelRolloutStatus()
    weights: dict[str, int] = {"v1": 100, "v2": 0}
    mirror: Mirror | None = None
    while logs.elapsed <= LIMIT_SECONDS:
        now = T0 + timedelta(seconds=logs.elapsed)
        analysis = analysis_outcome(checker, spec=spec, status=status, now=now)
        observed = Observed(now=now, generation=1, route_weights=weights, route_mirror=mirror, analysis=analysis)
        plan, weights, mirror = _decide_and_route(spec, status, observed)
        status = plan.status
        if status.phase in TERMINAL_PHASES:
            return Outcome(result=_controller_result(status), seconds=logs.elapsed)
        requeue = MAX_REQUEUE_SECONDS if plan.requeue_after is None else plan.requeue_after
        logs.elapsed += min(max(requeue, MIN_REQUEUE_SECONDS), MAX_REQUEUE_SECONDS)
    return Outcome(result=Result.UNDECIDED, seconds=LIMIT_SECONDS)


def run_cell(task: tuple[int, Cell, int]) -> list[Outcome]:
    index, cell, runs = task
    spec = parse_spec(manifest())
    return [run(spec, cell, seed=index * 1_000_003 + run_index) for run_index in range(runs)]


@dataclass(frozen=True, kw_only=True)
class Row:
    cell: Cell
    outcomes: Sequence[Outcome]

    def share(self, result: Result) -> float:
        return sum(o.result == result for o in self.outcomes) / len(self.outcomes)

    def minutes_to(self, result: Result) -> float | None:
        found = [o.seconds / 60 for o in self.outcomes if o.result == result]
        return statistics.median(found) if found else None


def table(rows: Sequence[Row]) -> list[str]:
    lines = [
        "| cell | rolled back | promoted | other | median minutes to rollback |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        other = 1 - row.share(Result.ROLLED_BACK) - row.share(Result.PROMOTED)
        minutes = row.minutes_to(Result.ROLLED_BACK)
        lines.append(
            f"| {row.cell.label} | {row.share(Result.ROLLED_BACK):.1%} | {row.share(Result.PROMOTED):.1%} "
            f"| {other:.1%} | {'-' if minutes is None else f'{minutes:.1f}'} |"
        )
    return lines


def targets(rows: Sequence[Row], *, false_rollback: float) -> list[str]:
    good = [row for row in rows if row.cell.agreement >= MIN_AGREEMENT]
    worst = max(good, key=lambda row: row.share(Result.ROLLED_BACK))
    bad = [row for row in rows if row.cell.agreement <= 0.7 and row.cell.requests_per_second >= 1]
    missed = min(bad, key=lambda row: row.share(Result.ROLLED_BACK))
    return [
        f"false rollbacks at true agreement >= minAgreement: worst {worst.share(Result.ROLLED_BACK):.1%} "
        f"({worst.cell.label}), target <= {false_rollback:.0%}: "
        f"{'met' if worst.share(Result.ROLLED_BACK) <= false_rollback else 'MISSED'}",
        f"detection at true agreement 0.7, >= 1 rps: worst {missed.share(Result.ROLLED_BACK):.1%} "
        f"({missed.cell.label}), target >= 95%: {'met' if missed.share(Result.ROLLED_BACK) >= 0.95 else 'MISSED'}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=200, help="runs per cell")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    started = time.monotonic()
    tasks = [(index, cell, args.runs) for index, cell in enumerate(cells())]
    with multiprocessing.Pool(args.workers) as pool:
        results = pool.map(run_cell, tasks)
    rows = [Row(cell=cell, outcomes=outcomes) for (_, cell, _), outcomes in zip(tasks, results, strict=True)]
    print(f"bench/paired.py: {args.runs} runs per cell; minAgreement {MIN_AGREEMENT}, mirror step {MIRROR_SECONDS}s\n")
    print("\n".join(table(rows)))
    print()
    print("\n".join(targets(rows, false_rollback=FALSE_ROLLBACK_RATE)))
    print(f"bench time: {time.monotonic() - started:.0f}s")


if __name__ == "__main__":
    main()
