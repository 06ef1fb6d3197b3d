"""Paired predictions: the candidate's and the baseline's answers to the very same requests,
compared request by request (docs/checks/paired-predictions.md).

During a mirror step the baseline answers every request and the candidate a copy of it; model
servers that log their predictions by request id (docs/model-metrics.md, "The prediction log")
let the two answers be joined. The check counts the pairs on which both versions predicted the
same label (and, with `maxScoreDifference`, about the same score) and fails once the agreement
rate is shown below `minAgreement`: the upper end of its confidence sequence, at the metric's
share of the rollout's false-rollback rate, lies below it (anytime-valid, so looking every
interval costs nothing). Each look reports the agreement rate and the requests whose scores
differ most.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from controller.analysis import fields
from controller.analysis.evaluate import Judgement, Reading, Result
from controller.analysis.evidence import CountQuery, Evidence
from controller.analysis.judges import JSON, Budget, JudgedOnCountsAlone, Look, Versions, below_floor, rounded
from controller.analysis.modelchecks.plugin import ModelCheckPlugin
from controller.analysis.pairing import (
    AGREED,
    LOGGED,
    PAIRS,
    LoggedPrediction,
    largest_differences,
    pair_predictions,
    paired_numbers,
)
from controller.analysis.rows import Row, with_rows
from controller.analysis.sequential import proportion_interval
from controller.api import SpecError
from controller.figures import figure, interval, share


@dataclass(frozen=True, kw_only=True)
class PairedPredictions(JudgedOnCountsAlone):
    """The candidate's agreement with the baseline on the same requests (a mirror step's)."""

    key: ClassVar[str] = "pairedPredictions"
    rubric_items: ClassVar[tuple[str, ...]] = ("Monitor 7",)
    """Prediction quality has not regressed: judged against the version it replaces, on the same inputs."""
    address_field: ClassVar[str] = "pairedPredictions"
    compares_baseline: ClassVar[bool] = True
    tests: ClassVar[int] = 1
    queries: ClassVar[tuple[CountQuery, ...]] = ()
    """None from Prometheus: the counts are the prediction logs joined (`pair`)."""
    address: ClassVar[str | None] = None
    min_agreement: float
    """The share of paired requests on which the candidate must agree with the baseline."""
    max_score_difference: float | None = None
    """A pair whose scores differ by more also disagrees (None: the label alone decides)."""
    min_pairs: float = 0
    """Pairs needed before the check may pass."""

    def pair(
        self, *, candidate: Sequence[LoggedPrediction], baseline: Sequence[LoggedPrediction]
    ) -> tuple[dict[str, float], dict[str, float]]:
        return paired_numbers(
            pair_predictions(candidate=candidate, baseline=baseline, max_score_difference=self.max_score_difference)
        )

    def judge(self, evidence: Evidence, *, budget: Budget, versions: Versions) -> Look:
        return judge_paired(self, evidence, budget=budget, versions=versions)


def parse_config(raw: Mapping[str, Any], path: str) -> PairedPredictions:
    min_agreement = fields.fraction(raw, "minAgreement", path)
    if min_agreement is None:
        raise SpecError(
            f"{path}.minAgreement",
            "is required: the share of paired requests on which the candidate must predict what the baseline "
            "predicted, e.g. 0.95",
        )
    return PairedPredictions(
        min_agreement=min_agreement,
        max_score_difference=fields.number(raw, "maxScoreDifference", path, minimum=0.0),
        **fields.given(min_pairs=fields.number(raw, "minPairs", path, minimum=0.0)),
    )


def judge_paired(test: PairedPredictions, evidence: Evidence, *, budget: Budget, versions: Versions) -> Look:
    """All the pairs so far (every segment's: the mirror step's pairs still count in a later step,
    which has none) against `minAgreement`."""
    pairs = sum(max(segment.candidate.get(PAIRS, 0.0), 0.0) for segment in evidence.segments)
    agreed = min(sum(max(segment.candidate.get(AGREED, 0.0), 0.0) for segment in evidence.segments), pairs)
    if pairs < 1:
        logged = ", ".join(
            f"{role} {version} logged {sum(getattr(s, role).get(LOGGED, 0.0) for s in evidence.segments):.0f}"
            for role, version in (("candidate", versions.candidate), ("baseline", versions.baseline))
        )
        reason = f"no request answered by both versions yet ({logged} predictions; pairs come from a mirror step)"
        return Look(
            judgement=Judgement(result=Result.INCONCLUSIVE, reason=reason),
            baseline=Reading(version=versions.baseline),
            candidate=Reading(version=versions.candidate, samples=0),
        )
    if pairs < test.min_pairs:
        return below_floor(versions, have=pairs, need=test.min_pairs, what="paired requests (minPairs)")
    agreement = agreed / pairs
    low, high = proportion_interval(agreed, pairs, alpha=budget.false_rollback)
    safe_low, _ = proportion_interval(agreed, pairs, alpha=budget.false_promotion)
    largest = largest_differences([(s.candidate, s.baseline) for s in evidence.segments])
    summary: JSON = {
        "test": "paired",
        "pairs": rounded(pairs, 3),
        "agreed": rounded(agreed, 3),
        "agreement": rounded(agreement, 4),
        "interval": [rounded(low, 4), rounded(high, 4)],
        "minAgreement": test.min_agreement,
        "largestDifferences": [
            {
                "requestId": found.pair,
                "candidateScore": rounded(found.candidate_score, 4),
                "baselineScore": rounded(found.baseline_score, 4),
                "difference": rounded(found.difference, 4),
            }
            for found in largest
        ],
    }
    if test.max_score_difference is not None:
        summary["maxScoreDifference"] = test.max_score_difference
    summary = with_paired_rows(summary)
    worst = (
        f"; largest score difference {figure(largest[0].difference)} (request {largest[0].pair}: "
        f"{figure(largest[0].candidate_score)} vs {figure(largest[0].baseline_score)})"
        if largest
        else ""
    )
    figures = (
        f"agreed with baseline {versions.baseline} on {agreed:.0f} of {pairs:.0f} paired requests, "
        f"{share(agreement)} (interval {share(low)}-{share(high)}), at least {share(test.min_agreement)} "
        f"required{worst}"
    )
    candidate = Reading(version=versions.candidate, value=agreement, samples=pairs)
    baseline = Reading(version=versions.baseline, value=1.0, samples=pairs)
    if high < test.min_agreement:
        judgement = Judgement(result=Result.FAILED, reason=f"candidate {versions.candidate} {figures}")
    else:
        safe = safe_low >= test.min_agreement
        shown = "agreement shown" if safe else "no evidence of disagreement beyond tolerance"
        judgement = Judgement(
            result=Result.SUCCESSFUL, reason=f"candidate {versions.candidate}: {shown}: {figures}", safe=safe
        )
    return Look(judgement=judgement, baseline=baseline, candidate=candidate, summary=summary)


def with_paired_rows(summary: JSON) -> JSON:
    """The summary with its rows for kubectl: the agreement against its floor, then the requests
    whose scores differ most."""
    return with_rows(
        summary,
        columns=Row(
            candidate=f"{share(summary['agreement'])} of {summary['pairs']:.0f} pairs",
            estimate=f"agreement {share(summary['agreement'])} {interval(summary['interval'], share)}",
            tolerance=f"at least {share(summary['minAgreement'])}",
        ),
        rows=[
            Row(
                label=f"request {entry['requestId']}",
                baseline=f"score {figure(entry['baselineScore'])}",
                candidate=f"score {figure(entry['candidateScore'])}",
                estimate=f"difference {figure(entry['difference'])}",
            )
            for entry in summary["largestDifferences"]
        ],
    )


PLUGIN = ModelCheckPlugin(key=PairedPredictions.key, parse_config=parse_config)
