"""The detail rows a look's summary carries for people: what kubectl's Evidence section prints,
formatted by the check that judged it, so the CLI prints any check without knowing it. Pure.

A summary holds `columns`, the cells of the metric's own row, and `rows`, the lines under it (a
slice, a drift statistic, a skewed feature, a guardrail), at most `MAX_ROWS`. Cells are short
strings (controller.figures); `tones` says which cells mean harm (`bad`) or safety shown (`good`).
A measurement keeps the columns, not the rows (`measured_summary`): status.analysis.evidence
keeps them once per metric.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from controller.figures import figure, interval, share, span

MAX_ROWS = 10
"""Detail rows kept per look (the worst slices or features); the rest are in the summary's figures."""

COLUMNS = ("baseline", "candidate", "estimate", "tolerance", "evidence", "safety", "detectable")
"""The cells a row may fill, as kubectl's Evidence columns (the evidence of safety is printed in
the EVIDENCE column with `promoteWhen: evidenceOfSafety`)."""

MEASUREMENT_OMITS = ("buckets", "slices", "rows", "verdict")
"""What a measurement's copy of the summary leaves out: the per-bucket, per-slice and detail rows
(kept once per metric in status.analysis.evidence) and the verdict (the measurement's own)."""

Tone = Literal["bad", "good"]


@dataclass(frozen=True, kw_only=True)
class Row:
    """One line of the Evidence section; a cell not given stays blank."""

    label: str = ""
    """What the line is about (`slice borderline`, `PSI`); the metric's own row has the metric's name."""
    about: str = ""
    """The metric's own row only: what its name is followed by, in brackets (`>0.25s`)."""
    verdict: str | None = None
    """A detail line's own verdict (a slice's, a feature's); the metric's row shows the look's."""
    baseline: str = ""
    """The baseline's value and the samples it rests on."""
    candidate: str = ""
    """The candidate's value and the samples it rests on."""
    estimate: str = ""
    """What the test estimates (a ratio, PSI, ...) and its confidence interval."""
    tolerance: str = ""
    """What the estimate is held to."""
    evidence: str = ""
    """The e-value against the threshold that fails the candidate (or the figure judged)."""
    safety: str = ""
    """The evidence that the candidate is within tolerance, against its own threshold."""
    detectable: str = ""
    """What the evidence can see so far."""
    tones: Mapping[str, Tone] = field(default_factory=dict)
    """Cells (by column) that mean harm or safety shown, for colour."""

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            name: value for name in ("label", "about", "verdict", *COLUMNS) if (value := getattr(self, name))
        }
        if self.tones:
            body["tones"] = dict(self.tones)
        return body


def with_rows(summary: Mapping[str, Any], *, columns: Row, rows: Sequence[Row] = ()) -> dict[str, Any]:
    """`summary` with the metric's own cells and its detail rows (at most MAX_ROWS) for kubectl."""
    return {**summary, "columns": columns.to_json(), "rows": [row.to_json() for row in rows[:MAX_ROWS]]}


def measured_summary(summary: Mapping[str, Any]) -> dict[str, Any]:
    """What a measurement keeps of a look's summary (see MEASUREMENT_OMITS)."""
    return {key: value for key, value in summary.items() if key not in MEASUREMENT_OMITS}


def worst_entries(entries: Sequence[Mapping[str, Any]], *, badness: str) -> list[Mapping[str, Any]]:
    """The MAX_ROWS entries with the largest `badness` (a number in each entry; the lower end of an
    interval `[low, high]` when it is one), in their given order."""

    def bad(entry: Mapping[str, Any]) -> float:
        value = entry.get(badness)
        value = value[0] if isinstance(value, Sequence) and value else value
        return float(value) if isinstance(value, int | float) else 0.0

    kept = {id(entry) for entry in sorted(entries, key=bad, reverse=True)[:MAX_ROWS]}
    return [entry for entry in entries if id(entry) in kept]


def _reached(value: object, threshold: object) -> bool:
    return isinstance(value, int | float) and isinstance(threshold, int | float) and value >= threshold


def of_samples(side: object) -> str:
    """A version's value and the samples it rests on: `0.938% of 5120`."""
    if not isinstance(side, Mapping) or not isinstance(side.get("samples"), int | float):
        return "-"
    return f"{share(side.get('value'))} of {side['samples']:.0f}"


def ratio_row(summary: Mapping[str, Any], *, label: str = "", about: str = "", verdict: str | None = None) -> Row:
    """The cells of one comparison of bad-event rates (a metric's or a slice's), from the summary
    `controller.analysis.judges.judge_rates` wrote."""
    null_ratio = summary.get("nullRatio")
    smallest, seconds = summary.get("smallestDetectableRatio"), summary.get("secondsToResolveTolerance")
    tones: dict[str, Tone] = {}
    if _reached(summary.get("eValue"), summary.get("threshold")):
        tones["evidence"] = "bad"
    if _reached(summary.get("safetyEValue"), summary.get("safetyThreshold")):
        tones["safety"] = "good"
    return Row(
        label=label,
        about=about,
        verdict=verdict,
        baseline=of_samples(summary.get("baseline")),
        candidate=of_samples(summary.get("candidate")),
        estimate=f"ratio {figure(summary.get('ratio'))} {interval(summary.get('interval'))}",
        tolerance=str(summary.get("tolerance", "-")) + ("" if null_ratio is None else f" (≤{figure(null_ratio)}x)"),
        evidence=f"{figure(summary.get('eValue'))} of {figure(summary.get('threshold'))}",
        safety=f"{figure(summary.get('safetyEValue'))} of {figure(summary.get('safetyThreshold'))}",
        # The smallest ratio the evidence would catch so far (80 % power), and how long a step at
        # this traffic needs to tell the tolerance's edge from a candidate as good as the baseline.
        detectable=f"{'-' if smallest is None else figure(smallest) + 'x'}; "
        f"tolerance {'out of reach' if seconds is None else 'needs ' + span(seconds)}",
        tones=tones,
    )


def guardrail_rows(summary: Mapping[str, Any]) -> list[Row]:
    """The candidate's interval of events per trial against each guardrail (`maxInterval`, `minInterval`)."""
    return [
        Row(label=f"guardrail {bound}", estimate=f"candidate {interval(summary[key], share)}")
        for key, bound in (("maxInterval", "max"), ("minInterval", "min"))
        if key in summary
    ]
