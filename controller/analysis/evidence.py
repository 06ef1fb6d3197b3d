"""The evidence a sequential metric has gathered, as kept in status.analysis.evidence.

A segment is one period with a steady traffic split: an analyze step, or one step of background
analysis. At each look the checker reads every count of the metric for both versions over the
whole segment so far (`{{window}}` = time since the segment began) and replaces the segment's
numbers with them, so a segment always holds its cumulative counts and a restarted controller
resumes from status. Segments of earlier steps stay as they were at their last look.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from controller.api import JSON, format_time, parse_time


@dataclass(frozen=True, kw_only=True)
class CountQuery:
    """One PromQL query a sequential test reads per version, over the time since its evidence began."""

    name: str
    """How the judge finds the query's numbers."""
    query: str
    """PromQL with template variables; `{{window}}` is the time since the evidence began."""
    by: str | None = None
    """The label keying the series (`le`, `slice`); None: the query gives one number."""


Numbers = Mapping[str, float]
"""A version's counts at one look: `name` for a one-number query, `name:value` per label value
(`bucket:0.5`, `total:borderline`)."""


def number_key(query: str, label_value: str | None) -> str:
    return query if label_value is None else f"{query}:{label_value}"


def by_label(numbers: Numbers, query: str) -> dict[str, float]:
    """{label value: count} of one query keyed by a label."""
    prefix = f"{query}:"
    return {key[len(prefix) :]: value for key, value in numbers.items() if key.startswith(prefix)}


@dataclass(frozen=True, kw_only=True)
class Segment:
    step: int
    """The step whose traffic split the counts were taken at."""
    started_at: datetime
    seconds: float
    """How long the counts run, from started_at to the segment's last look."""
    candidate: Numbers
    baseline: Numbers

    def to_json(self) -> JSON:
        return {
            "step": self.step,
            "startedAt": format_time(self.started_at),
            "seconds": round(self.seconds, 3),
            "candidate": {k: _finite(v) for k, v in sorted(self.candidate.items())},
            "baseline": {k: _finite(v) for k, v in sorted(self.baseline.items())},
        }

    @staticmethod
    def from_json(raw: Mapping[str, Any]) -> Segment | None:
        started = parse_time(raw.get("startedAt"))
        if started is None or not isinstance(raw.get("step"), int):
            return None
        return Segment(
            step=raw["step"],
            started_at=started,
            seconds=float(raw.get("seconds", 0.0)),
            candidate=_numbers(raw.get("candidate")),
            baseline=_numbers(raw.get("baseline")),
        )


def _finite(value: float) -> float:
    return round(value, 6) if math.isfinite(value) else 0.0


def _numbers(raw: object) -> dict[str, float]:
    if not isinstance(raw, Mapping):
        return {}
    return {str(k): float(v) for k, v in raw.items() if isinstance(v, int | float) and not isinstance(v, bool)}


@dataclass(frozen=True, kw_only=True)
class Evidence:
    """All a metric has gathered for the candidate in progress."""

    metric: str
    segments: tuple[Segment, ...] = ()
    threshold: float | None = None
    """Latency: the bound (seconds) above which a request counts as slow."""
    threshold_basis: float = 0.0
    """Latency: the baseline requests the bound was read from; it is read again at each look until
    they are enough, then kept. Segments keep their buckets, so their slow requests are counted
    again at the bound in force."""
    looks: int = 0
    """Looks taken at this evidence: the one that decides is named in status and Events."""
    summary: Mapping[str, Any] | None = None
    """The latest look's figures, for people (kubectl modelrollout get)."""
    reference: object | None = None
    """What the test judges against besides the counts, read at this look (training skew: the
    profile from its ConfigMap; see `SequentialTest.read_reference`); not kept in status."""

    def with_segment(self, segment: Segment) -> Evidence:
        """The evidence with this look's counts in place of the same segment's earlier ones."""
        kept = tuple(s for s in self.segments if (s.step, s.started_at) != (segment.step, segment.started_at))
        return replace(self, segments=(*kept, segment))

    def to_json(self) -> JSON:
        body: JSON = {"metric": self.metric, "looks": self.looks, "segments": [s.to_json() for s in self.segments]}
        if self.threshold is not None:
            body["thresholdSeconds"] = self.threshold
            body["thresholdBasis"] = round(self.threshold_basis, 3)
        if self.summary is not None:
            body["latest"] = dict(self.summary)
        return body

    @staticmethod
    def from_json(raw: Mapping[str, Any]) -> Evidence | None:
        metric = raw.get("metric")
        if not isinstance(metric, str):
            return None
        segments = (Segment.from_json(s) for s in raw.get("segments") or [] if isinstance(s, Mapping))
        threshold = raw.get("thresholdSeconds")
        basis = raw.get("thresholdBasis")
        return Evidence(
            metric=metric,
            segments=tuple(s for s in segments if s is not None),
            threshold=float(threshold) if isinstance(threshold, int | float) else None,
            threshold_basis=float(basis) if isinstance(basis, int | float) else 0.0,
            looks=int(raw.get("looks", 0)),
            summary=raw.get("latest") if isinstance(raw.get("latest"), Mapping) else None,
        )


def evidence_by_metric(raw: Sequence[Any]) -> dict[str, Evidence]:
    entries = (Evidence.from_json(item) for item in raw if isinstance(item, Mapping))
    return {entry.metric: entry for entry in entries if entry is not None}
