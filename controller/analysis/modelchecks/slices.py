"""Important slices (Model 6): the candidate's quality on each named data slice against the
baseline's, each slice judged on its own as a rate of wrong answers, sharing the metric's error
budget (docs/checks/important-slices.md)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from controller.analysis import fields
from controller.analysis.comparison import Tolerance
from controller.analysis.evaluate import Judgement, Result
from controller.analysis.evidence import CountQuery, Evidence, Numbers, Segment, by_label
from controller.analysis.judges import (
    JSON,
    Budget,
    JudgedOnCountsAlone,
    Look,
    RateOutcome,
    Versions,
    judge_rates,
    missing_roles,
    no_data,
    readings_of,
)
from controller.analysis.modelchecks.plugin import ModelCheckPlugin
from controller.analysis.presets import (
    SLICE_CORRECT_QUERY,
    SLICE_TOTAL_QUERY,
)
from controller.analysis.rows import Row, ratio_row, with_rows, worst_entries
from controller.analysis.sequential import (
    RatioSegment,
    pooled,
)
from controller.api import SpecError
from controller.figures import figure

DEFAULT_MAX_SLICE_DROP = 0.02


@dataclass(frozen=True, kw_only=True)
class ImportantSlices(JudgedOnCountsAlone):
    """Quality on each named data slice, each judged on its own (Model 6)."""

    key: ClassVar[str] = "importantSlices"
    rubric_items: ClassVar[tuple[str, ...]] = ("Model 6",)
    address_field: ClassVar[str] = "importantSlices.address"
    compares_baseline: ClassVar[bool] = True
    slices: tuple[str, ...]
    """The slices that matter, in the order reported."""
    max_drop: float = DEFAULT_MAX_SLICE_DROP
    """Tolerance: how much lower (absolute, 0.02 = two points) a slice's quality may be."""
    min_quality: float | None = None
    """Guardrail: the candidate's quality on every slice must not be shown below this."""
    min_samples: float = 0
    """Labelled predictions the candidate needs on each slice before it may pass."""
    correct_query: str = SLICE_CORRECT_QUERY
    total_query: str = SLICE_TOTAL_QUERY
    address: str | None = None

    def judge(self, evidence: Evidence, *, budget: Budget, versions: Versions) -> Look:
        return _judge_slices(self, evidence, budget, versions)

    @property
    def queries(self) -> tuple[CountQuery, ...]:
        return (
            CountQuery(name="correct", query=self.correct_query, by="slice"),
            CountQuery(name="total", query=self.total_query, by="slice"),
        )

    @property
    def tests(self) -> int:
        return len(self.slices) * (1 + (self.min_quality is not None))


def parse_config(raw: Mapping[str, Any], path: str) -> ImportantSlices:
    names = raw.get("slices")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n.strip() for n in names):
        raise SpecError(f"{path}.slices", "is required: the names of the slices that matter, e.g. [borderline]")
    if len(set(names)) != len(names):
        raise SpecError(f"{path}.slices", "names a slice twice")
    return ImportantSlices(
        slices=tuple(names),
        **fields.given(
            max_drop=fields.fraction(raw, "maxDrop", path),
            min_samples=fields.number(raw, "minSamples", path, minimum=0.0),
        ),
        min_quality=fields.fraction(raw, "minQuality", path),
        correct_query=fields.query(raw, "correctQuery", path, default=SLICE_CORRECT_QUERY),
        total_query=fields.query(raw, "totalQuery", path, default=SLICE_TOTAL_QUERY),
        address=fields.prometheus_address(raw, path),
    )


def _judge_slices(test: ImportantSlices, evidence: Evidence, budget: Budget, versions: Versions) -> Look:
    latest = evidence.segments[-1] if evidence.segments else None
    missing = missing_roles(latest, versions, lambda numbers: bool(by_label(numbers, "total")))
    if missing:
        return no_data(versions, missing)
    assert latest is not None
    per_slice = budget.split(len(test.slices))
    results: list[tuple[str, RateOutcome, RatioSegment]] = []
    for name in test.slices:
        segments = [_slice_segment(s, name) for s in evidence.segments]
        outcome = judge_rates(
            segments,
            tolerance=Tolerance(absolute=test.max_drop),
            budget=per_slice,
            seconds=latest.seconds,
            bad_events=False,
            minimum=test.min_quality,
            versions=versions,
            noun=f"slice {name} wrong-answer rate",
        )
        results.append((name, outcome, pooled(segments)))
    failed = [(name, outcome) for name, outcome, _ in results if outcome.harm]
    slices_json = [
        {"slice": name, **outcome.summary, "verdict": (Result.FAILED if outcome.harm else Result.SUCCESSFUL).value}
        for name, outcome, _ in results
    ]
    worst_name, worst, _ = min(
        results,
        key=lambda item: (not item[1].harm, -(item[1].summary["eValue"] or 0.0)),
    )
    summary = with_slice_rows({"test": "slices", "worstSlice": worst_name, "slices": slices_json})
    readings = readings_of(worst.summary, versions)
    if failed:
        reason = "; ".join(f"slice {name}: {outcome.text}: {'; '.join(outcome.harm)}" for name, outcome in failed)
        return Look(judgement=Judgement(result=Result.FAILED, reason=reason), baseline=readings[0],
                    candidate=readings[1], summary=summary)  # fmt: skip
    short = [name for name, _, counts in results if counts.candidate_trials < test.min_samples]
    if short:
        reason = (
            f"waiting for {test.min_samples:g} labelled predictions of candidate {versions.candidate} "
            f"(minSamples) on slices: {', '.join(short)}"
        )
        return Look(judgement=Judgement(result=Result.INCONCLUSIVE, reason=reason), baseline=readings[0],
                    candidate=readings[1], summary=summary)  # fmt: skip
    safe = all(outcome.safe for _, outcome, _ in results)
    detail = ", ".join(
        f"{name} {figure(o.summary['candidate']['value'] or 0.0)} vs {figure(o.summary['baseline']['value'] or 0.0)}"
        f" (evidence {figure(o.summary['eValue'] or 0.0)} of {figure(o.summary['threshold'])})"
        for name, o, _ in results
    )
    shown = "within tolerance shown" if safe else "no evidence of harm"
    reason = f"candidate {versions.candidate} vs baseline {versions.baseline}: {shown} on slices {detail}"
    return Look(
        judgement=Judgement(result=Result.SUCCESSFUL, reason=reason, safe=safe),
        baseline=readings[0],
        candidate=readings[1],
        summary=summary,
    )


def with_slice_rows(summary: JSON) -> JSON:
    """The summary with its rows for kubectl: the worst slice, then each slice's own comparison
    (the worst ones when there are many)."""
    return with_rows(
        summary,
        columns=Row(estimate=f"worst slice {summary['worstSlice']}"),
        rows=[
            ratio_row(entry, label=f"slice {entry['slice']}", verdict=entry["verdict"])
            for entry in worst_entries(summary["slices"], badness="eValue")
        ],
    )


def _slice_segment(segment: Segment, name: str) -> RatioSegment:
    def counts(numbers: Numbers) -> tuple[float, float]:
        total = max(by_label(numbers, "total").get(name, 0.0), 0.0)
        # The convention creates the correct series with the total one; a missing one counts 0.
        correct = min(max(by_label(numbers, "correct").get(name, 0.0), 0.0), total)
        return total - correct, total

    candidate_wrong, candidate_total = counts(segment.candidate)
    baseline_wrong, baseline_total = counts(segment.baseline)
    return RatioSegment(
        candidate_events=candidate_wrong,
        candidate_trials=candidate_total,
        baseline_events=baseline_wrong,
        baseline_trials=baseline_total,
    )


PLUGIN = ModelCheckPlugin(key=ImportantSlices.key, parse_config=parse_config)
