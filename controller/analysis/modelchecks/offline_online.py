"""Offline vs online (Model 2): the candidate's quality measured online against the quality its
offline evaluation declared; fails once the gap is shown beyond tolerance
(docs/checks/offline-online.md)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from controller.analysis import fields
from controller.analysis.evaluate import Judgement, Reading, Result
from controller.analysis.evidence import CountQuery, Evidence
from controller.analysis.judges import (
    JSON,
    Budget,
    JudgedOnCountsAlone,
    Look,
    Versions,
    below_floor,
    no_data,
    rounded,
)
from controller.analysis.modelchecks.plugin import ModelCheckPlugin
from controller.analysis.presets import (
    FEEDBACK_CORRECT_QUERY,
    FEEDBACK_TOTAL_QUERY,
)
from controller.analysis.rows import Row, with_rows
from controller.analysis.sequential import (
    proportion_interval,
)
from controller.api import SpecError
from controller.figures import figure, interval

DEFAULT_MAX_OFFLINE_ONLINE_GAP = 0.05


@dataclass(frozen=True, kw_only=True)
class OfflineVsOnline(JudgedOnCountsAlone):
    """The candidate's declared offline quality against its quality measured online (Model 2)."""

    key: ClassVar[str] = "offlineVsOnline"
    rubric_items: ClassVar[tuple[str, ...]] = ("Model 2",)
    address_field: ClassVar[str] = "offlineVsOnline.address"
    compares_baseline: ClassVar[bool] = False
    tests: ClassVar[int] = 1
    offline: float
    """The candidate's quality (correct / labelled) from offline evaluation, e.g. test-set accuracy."""
    max_gap: float = DEFAULT_MAX_OFFLINE_ONLINE_GAP
    """Tolerance: the largest |offline - online| that passes."""
    min_samples: float = 0
    """Labelled predictions of the candidate needed before the gap may pass."""
    correct_query: str = FEEDBACK_CORRECT_QUERY
    total_query: str = FEEDBACK_TOTAL_QUERY
    address: str | None = None

    def judge(self, evidence: Evidence, *, budget: Budget, versions: Versions) -> Look:
        return _judge_offline_online(self, evidence, budget, versions)

    @property
    def queries(self) -> tuple[CountQuery, ...]:
        return (CountQuery(name="correct", query=self.correct_query), CountQuery(name="total", query=self.total_query))


def parse_config(raw: Mapping[str, Any], path: str) -> OfflineVsOnline:
    offline = fields.fraction(raw, "offline", path)
    if offline is None:
        raise SpecError(f"{path}.offline", "is required: the candidate's offline quality, e.g. 0.93")
    return OfflineVsOnline(
        offline=offline,
        **fields.given(
            max_gap=fields.fraction(raw, "maxGap", path),
            min_samples=fields.number(raw, "minSamples", path, minimum=0.0),
        ),
        correct_query=fields.query(raw, "correctQuery", path, default=FEEDBACK_CORRECT_QUERY),
        total_query=fields.query(raw, "totalQuery", path, default=FEEDBACK_TOTAL_QUERY),
        address=fields.prometheus_address(raw, path),
    )


def _judge_offline_online(test: OfflineVsOnline, evidence: Evidence, budget: Budget, versions: Versions) -> Look:
    latest = evidence.segments[-1] if evidence.segments else None
    if latest is None or "total" not in latest.candidate:
        return no_data(versions, [f"candidate {versions.candidate}"])
    total = sum(max(s.candidate.get("total", 0.0), 0.0) for s in evidence.segments)
    correct = sum(max(s.candidate.get("correct", 0.0), 0.0) for s in evidence.segments)
    correct = min(correct, total)
    if total < max(test.min_samples, 1):
        return below_floor(
            versions, have=total, need=max(test.min_samples, 1), what="labelled predictions (minSamples)"
        )
    low, high = proportion_interval(correct, total, alpha=budget.false_rollback)
    safe_low, safe_high = proportion_interval(correct, total, alpha=budget.false_promotion)
    online = correct / total
    band = (test.offline - test.max_gap, test.offline + test.max_gap)
    summary: JSON = {
        "test": "offline-online",
        "declared": test.offline,
        "online": rounded(online, 4),
        "interval": [rounded(low, 4), rounded(high, 4)],
        "gap": rounded(abs(test.offline - online), 4),
        "maxGap": test.max_gap,
        "samples": rounded(total, 3),
    }
    summary = with_gap_rows(summary)
    figures = (
        f"online {online:.4f} (interval {low:.4f}-{high:.4f}) over {total:.0f} labels vs declared offline "
        f"{test.offline:.4f}, tolerance {test.max_gap:g}"
    )
    candidate = Reading(version=versions.candidate, value=online, samples=total)
    if low > band[1] or high < band[0]:
        judgement = Judgement(
            result=Result.FAILED, reason=f"candidate {versions.candidate}: gap beyond tolerance: {figures}"
        )
    else:
        safe = band[0] <= safe_low and safe_high <= band[1]
        shown = "within tolerance shown" if safe else "no evidence of a gap beyond tolerance"
        judgement = Judgement(result=Result.SUCCESSFUL, reason=f"candidate {versions.candidate}: {shown}: {figures}",
                              safe=safe)  # fmt: skip
    return Look(judgement=judgement, baseline=Reading(version=versions.baseline), candidate=candidate, summary=summary)


def with_gap_rows(summary: JSON) -> JSON:
    """The summary with its row for kubectl: the candidate's online quality against the quality it
    declared offline."""
    online = figure(summary["online"])
    return with_rows(
        summary,
        columns=Row(
            candidate=f"{online} of {summary['samples']:.0f}",
            estimate=f"online {online} {interval(summary['interval'])}",
            tolerance=f"declared {figure(summary['declared'])} ± {figure(summary['maxGap'])}",
            evidence=f"gap {figure(summary['gap'])}",
        ),
    )


PLUGIN = ModelCheckPlugin(key=OfflineVsOnline.key, parse_config=parse_config)
