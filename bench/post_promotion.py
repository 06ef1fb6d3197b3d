"""Decision benchmark of the analysis after a promotion (spec.postPromotion): how often it undoes a
promoted version at or within its guardrail, and how soon it catches one beyond it.

Each run rolls v2 out against v1 and promotes it through the controller's real decision path
(`controller.api.parse_spec`, `controller.analysis.checker.AnalysisChecker` with batched reads as
the controller wires it, `controller.plan.decide`, driven as bench/judge.py drives them, with its
`_decide_and_route`), over bench/judge.py's simulated traffic and Prometheus: Poisson arrivals,
10 minutes of v1-only traffic before the rollout. The canary has one step (50 %) and no analysis;
once promoted, v2 alone is measured for 30 minutes against one guardrail, the error-rate preset's
`comparison.max: 0.01`, every 30 s, with `falseRollbackRate: 0.05`. The cells are v2's true error
rate (well within, exactly at, and beyond the guardrail) at 5, 50 and 500 requests a second. Per
cell it prints how often the promotion was undone, how often the analysis passed or was
inconclusive, and the median minutes from the promotion to the undo; then whether the false-undo
rate is at most falseRollbackRate in every cell at or within the guardrail (the confidence
sequence's promise, at every look). It exits 0 whether or not: it is a measurement.

    .venv/bin/python bench/post_promotion.py --runs 200
    .venv/bin/python bench/post_promotion.py --runs 50 --cells "50 rps"
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.judge import (
    MAX_REQUEUE_SECONDS,
    MIN_REQUEUE_SECONDS,
    T0,
    WARMUP_SECONDS,
    _decide_and_route,
    _no_template,
    analysis_outcome,
)
from bench.simulated_prometheus import Behaviour, SimulatedPrometheus, Simulator, Traffic
from controller.analysis.batch import DEFAULT_BATCH_PERIOD_SECONDS
from controller.analysis.checker import AnalysisChecker
from controller.api import ModelRolloutSpec, ModelRolloutStatus, Phase, PostPromotionState, parse_spec, parse_time
from controller.plan import LAST_LOOK_GRACE_SECONDS, Observed

MODEL = "bench"
GUARDRAIL = 0.01
"""comparison.max of the error-rate preset: at most 1 % of v2's requests may fail after its promotion."""
FALSE_ROLLBACK_RATE = 0.05
DURATION_SECONDS = 1800
LIMIT_SECONDS = DURATION_SECONDS + int(LAST_LOOK_GRACE_SECONDS) + 120
SIMULATED_SECONDS = WARMUP_SECONDS + LIMIT_SECONDS + int(MAX_REQUEUE_SECONDS) + 1
REQUESTS_PER_SECOND = (5.0, 50.0, 500.0)
ERROR_RATES = (("well within", 0.005), ("at", GUARDRAIL), ("1.5x beyond", 0.015), ("2x beyond", 0.02))
"""v2's true error rate, by how it stands to the guardrail."""
BASELINE = Behaviour(error_rate=0.005)


def manifest() -> dict[str, Any]:
    return {
        "model": MODEL,
        "versions": [{"version": v, "backend": {"service": f"{MODEL}-{v}", "port": 8080}} for v in ("v1", "v2")],
        "baseline": "v1",
        "candidate": "v2",
        "trafficRouting": {"gatewayAPI": {"httpRoute": MODEL}},
        "steps": [{"setWeight": 50}],
        "rollbackWindow": "1h",
        "postPromotion": {
            "duration": f"{DURATION_SECONDS}s",
            "interval": "30s",
            "falseRollbackRate": FALSE_ROLLBACK_RATE,
            "metrics": [{"name": "errors", "preset": "error-rate", "comparison": {"max": GUARDRAIL}}],
        },
    }


@dataclass(frozen=True, kw_only=True)
class Cell:
    requests_per_second: float
    standing: str
    """How v2's true error rate stands to the guardrail."""
    error_rate: float

    @property
    def label(self) -> str:
        return f"{self.requests_per_second:g} rps {self.standing}"

    @property
    def beyond(self) -> bool:
        """Undoing the promotion is the right call."""
        return self.error_rate > GUARDRAIL

    def traffic(self) -> Traffic:
        return Traffic(
            model=MODEL,
            requests_per_second=self.requests_per_second,
            baseline_version="v1",
            candidate_version="v2",
            baseline=BASELINE,
            candidate=Behaviour(error_rate=self.error_rate),
        )


def all_cells() -> list[Cell]:
    return [
        Cell(requests_per_second=rps, standing=standing, error_rate=rate)
        for rps in REQUESTS_PER_SECOND
        for standing, rate in ERROR_RATES
    ]


class Ending(StrEnum):
    UNDONE = "undone"
    PASSED = "passed"
    INCONCLUSIVE = "inconclusive"
    OTHER = "other"
    """Never promoted, or still running at the limit: never expected."""


@dataclass(frozen=True, kw_only=True)
class RunOutcome:
    ending: Ending
    minutes: float | None
    """From the promotion to the undo (None unless undone)."""


def run_controller(spec: ModelRolloutSpec, simulator: Simulator) -> RunOutcome:
    """One run, pass after pass, as bench/judge.py's `run_controller` drives the controller; the
    analysis checker runs whenever the plan says a stage needs it, after the promotion included."""
    provider = SimulatedPrometheus(simulator, epoch=(T0 - timedelta(seconds=WARMUP_SECONDS)).timestamp())
    checker = AnalysisChecker(
        providers={"prometheus": provider},
        template_lookup=_no_template,
        batch_period_seconds=DEFAULT_BATCH_PERIOD_SECONDS,
    )
    status = ModelRolloutStatus()
    weights = {"v1": 100, "v2": 0}
    elapsed = 0.0
    while elapsed <= LIMIT_SECONDS:
        simulator.advance(to=WARMUP_SECONDS + elapsed, candidate_weight=weights["v2"])
        provider.now = WARMUP_SECONDS + elapsed
        now = T0 + timedelta(seconds=elapsed)
        analysis = analysis_outcome(checker, spec=spec, status=status, now=now)
        # The versions have no Deployment: an undo's target is always ready.
        observed = Observed(now=now, generation=1, route_weights=weights, analysis=analysis, undo_target_ready=True)
        plan, weights, _ = _decide_and_route(spec, status, observed)
        status = plan.status
        ending = _ending(status)
        if ending is not None:
            return ending
        requeue = MAX_REQUEUE_SECONDS if plan.requeue_after is None else plan.requeue_after
        elapsed += min(max(requeue, MIN_REQUEUE_SECONDS), MAX_REQUEUE_SECONDS)
    return RunOutcome(ending=Ending.OTHER, minutes=None)


def _ending(status: ModelRolloutStatus) -> RunOutcome | None:
    """How the analysis after the promotion ended; None while it runs (or before the promotion)."""
    record = status.post_promotion
    if status.phase == Phase.ROLLED_BACK and status.undo is not None and record is not None:
        started, undone = parse_time(record.started_at), parse_time(status.undo.requested_at)
        assert started is not None and undone is not None
        return RunOutcome(ending=Ending.UNDONE, minutes=(undone - started).total_seconds() / 60)
    if record is None or record.state == PostPromotionState.RUNNING:
        return None
    endings = {PostPromotionState.PASSED: Ending.PASSED, PostPromotionState.INCONCLUSIVE: Ending.INCONCLUSIVE}
    return RunOutcome(ending=endings.get(record.state, Ending.OTHER), minutes=None)


@dataclass(frozen=True, kw_only=True)
class Task:
    cell_index: int
    cell: Cell
    run: int
    seed: int


def run_task(task: Task) -> tuple[int, RunOutcome]:
    seed = np.random.SeedSequence([task.seed, zlib.crc32(task.cell.label.encode()), task.run])
    simulator = Simulator(task.cell.traffic(), seed=seed, seconds=SIMULATED_SECONDS)
    return task.cell_index, run_controller(parse_spec(manifest()), simulator)


@dataclass(frozen=True, kw_only=True)
class Summary:
    runs: int
    shares: dict[Ending, float]
    median_minutes: float | None
    """From the promotion to the undo, over the runs undone."""

    @staticmethod
    def of(outcomes: Sequence[RunOutcome]) -> Summary:
        undone = [o.minutes for o in outcomes if o.minutes is not None]
        return Summary(
            runs=len(outcomes),
            shares={e: sum(o.ending is e for o in outcomes) / len(outcomes) for e in Ending},
            median_minutes=statistics.median(undone) if undone else None,
        )


def run_all(cells: Sequence[Cell], *, runs: int, seed: int, workers: int) -> list[Summary]:
    tasks = [Task(cell_index=i, cell=cell, run=run, seed=seed) for i, cell in enumerate(cells) for run in range(runs)]
    collected: list[list[RunOutcome]] = [[] for _ in cells]
    if workers <= 1:
        done = map(run_task, tasks)
        for index, outcome in done:
            collected[index].append(outcome)
    else:
        with multiprocessing.Pool(workers) as pool:
            for index, outcome in pool.imap_unordered(run_task, tasks, chunksize=4):
                collected[index].append(outcome)
    return [Summary.of(outcomes) for outcomes in collected]


def print_table(cells: Sequence[Cell], summaries: Sequence[Summary]) -> None:
    print("| cell | v2 error rate | undone | passed | inconclusive | other | median min to undo |")
    print("|---|---|---|---|---|---|---|")
    for cell, summary in zip(cells, summaries, strict=True):
        minutes = "-" if summary.median_minutes is None else f"{summary.median_minutes:.1f}"
        shares = " | ".join(f"{summary.shares[e] * 100:.1f} %" for e in Ending)
        print(f"| {cell.label} | {cell.error_rate * 100:g} % | {shares} | {minutes} |")


def print_target(cells: Sequence[Cell], summaries: Sequence[Summary]) -> None:
    within = [(c, s) for c, s in zip(cells, summaries, strict=True) if not c.beyond]
    worst_cell, worst = max(within, key=lambda pair: pair[1].shares[Ending.UNDONE])
    rate = worst.shares[Ending.UNDONE]
    met = "met" if rate <= FALSE_ROLLBACK_RATE else "NOT met"
    print(
        f"\nfalse undo at or within the guardrail at most falseRollbackRate {FALSE_ROLLBACK_RATE:g}: {met} "
        f"(worst {rate * 100:.1f} % in {worst_cell.label}, {worst.runs} runs)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=200, help="runs per cell")
    parser.add_argument("--cells", default="", help="only cells whose label (e.g. '50 rps at') has this")
    parser.add_argument("--workers", type=int, default=2, help="processes; 1 runs in this one")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    cells = [cell for cell in all_cells() if args.cells in cell.label]
    if not cells:
        parser.error(f"no cell label contains {args.cells!r}")
    started = time.monotonic()
    summaries = run_all(cells, runs=args.runs, seed=args.seed, workers=args.workers)
    print(f"{len(cells)} cells x {args.runs} runs, seed {args.seed}, {args.workers} workers: "
          f"{time.monotonic() - started:.0f} s\n")  # fmt: skip
    print_table(cells, summaries)
    print_target(cells, summaries)
    return 0


if __name__ == "__main__":
    sys.exit(main())
