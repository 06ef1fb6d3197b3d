"""Request-by-request pairing of two versions' prediction logs. Pure: no I/O, no clock.

During a mirror step the gateway sends every request to the baseline and a copy of it to the
candidate, `x-request-id` included; model servers following docs/model-metrics.md ("The
prediction log") log each predicted row under that id. Joining the two logs by (request id, row)
gives one paired comparison per request both versions answered: whether they predicted the same
label (and, with a score tolerance, about the same score), and how far apart their scores were.
A request only one version saw (a copy still in flight, a request from before the step) is not
a pair and counts for nothing.

The pairs become counts (`paired_numbers`), kept in the metric's evidence like any check's
counts, so a restarted controller judges the same pairs; the judge is
controller.analysis.modelchecks.paired.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from controller.analysis.evidence import Numbers, by_label, number_key

PAIRS, AGREED, LOGGED = "pairs", "agreed", "logged"
"""Number names: pairs joined, pairs that agree, rows each version logged in the window."""
DIFFERENCE, SCORE = "difference", "score"
"""Number names keyed by pair (`difference:<request id>`): the largest score differences and each
side's score for them."""
LARGEST_DIFFERENCES_KEPT = 5
"""Pairs kept per look with their scores: enough to look the requests up, little enough for status."""


class MalformedPredictionLog(ValueError):
    """A prediction log that does not follow the convention; the message says where."""


@dataclass(frozen=True, kw_only=True)
class LoggedPrediction:
    """One predicted row as a model server logged it."""

    request_id: str
    row: int = 0
    label: int
    score: float | None
    """None when the server logged no finite score."""

    @property
    def pair_key(self) -> str:
        """The join key; the row only for rows after a request's first (one-row requests are the rule)."""
        return self.request_id if self.row == 0 else f"{self.request_id}#{self.row}"


@dataclass(frozen=True, kw_only=True)
class ScoreDifference:
    pair: str
    """The pair's join key: the request id (and `#row` after a request's first row)."""
    candidate_score: float
    baseline_score: float

    @property
    def difference(self) -> float:
        return abs(self.candidate_score - self.baseline_score)


@dataclass(frozen=True, kw_only=True)
class Pairing:
    """What joining two prediction logs found."""

    pairs: int
    """Rows both versions logged under the same request id and row."""
    agreed: int
    """Pairs with the same label (and scores within the tolerance, when there is one)."""
    candidate_logged: int
    baseline_logged: int
    largest: tuple[ScoreDifference, ...]
    """The pairs whose finite scores differ most, largest first (at most LARGEST_DIFFERENCES_KEPT)."""


def parse_prediction_log(body: object) -> list[LoggedPrediction]:
    """The rows of a `GET .../predictions` answer (docs/model-metrics.md)."""
    entries = body.get("predictions") if isinstance(body, Mapping) else None
    if not isinstance(entries, list):
        raise MalformedPredictionLog("the answer is not a JSON object with a 'predictions' list")
    rows: list[LoggedPrediction] = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, Mapping):
            raise MalformedPredictionLog(f"predictions[{index}] is not an object")
        request_id, row, label, score = (
            entry.get("requestId"),
            entry.get("row", 0),
            entry.get("label"),
            entry.get("score"),
        )
        if not isinstance(request_id, str) or not request_id:
            raise MalformedPredictionLog(f"predictions[{index}].requestId is not a non-empty string")
        if isinstance(row, bool) or not isinstance(row, int) or row < 0:
            raise MalformedPredictionLog(f"predictions[{index}].row is not a whole number >= 0")
        if isinstance(label, bool) or not isinstance(label, int):
            raise MalformedPredictionLog(f"predictions[{index}].label is not a whole number")
        if score is not None and (isinstance(score, bool) or not isinstance(score, int | float)):
            raise MalformedPredictionLog(f"predictions[{index}].score is not a number or null")
        finite = float(score) if score is not None and math.isfinite(score) else None
        rows.append(LoggedPrediction(request_id=request_id, row=row, label=label, score=finite))
    return rows


def pair_predictions(
    *,
    candidate: Sequence[LoggedPrediction],
    baseline: Sequence[LoggedPrediction],
    max_score_difference: float | None = None,
) -> Pairing:
    """Joins the two logs by (request id, row). A pair agrees when both predicted the same label
    and, with `max_score_difference`, their scores are finite and at most that far apart (a score
    one side could not give is a disagreement then). A key logged twice by one version (a client
    reusing an id) keeps its last row: the logs are in time order."""
    baseline_by_key = {entry.pair_key: entry for entry in baseline}
    candidate_by_key = {entry.pair_key: entry for entry in candidate}
    pairs = agreed = 0
    differences: list[ScoreDifference] = []
    for key, ours in candidate_by_key.items():
        theirs = baseline_by_key.get(key)
        if theirs is None:
            continue
        pairs += 1
        scored = _scored(ours, theirs, pair=key)
        close = max_score_difference is None or (scored is not None and scored.difference <= max_score_difference)
        agreed += int(ours.label == theirs.label and close)
        if scored is not None:
            differences.append(scored)
    differences.sort(key=lambda found: found.difference, reverse=True)
    return Pairing(
        pairs=pairs,
        agreed=agreed,
        candidate_logged=len(candidate),
        baseline_logged=len(baseline),
        largest=tuple(differences[:LARGEST_DIFFERENCES_KEPT]),
    )


def _scored(candidate: LoggedPrediction, baseline: LoggedPrediction, *, pair: str) -> ScoreDifference | None:
    """Both scores of a pair; None when either side logged none."""
    if candidate.score is None or baseline.score is None:
        return None
    return ScoreDifference(pair=pair, candidate_score=candidate.score, baseline_score=baseline.score)


def paired_numbers(pairing: Pairing) -> tuple[dict[str, float], dict[str, float]]:
    """The pairing as the counts a look keeps, (candidate's, baseline's): the pair counts are the
    candidate's (its agreement with the baseline), each side keeps its scores of the largest
    differences."""
    candidate: dict[str, float] = {
        PAIRS: float(pairing.pairs),
        AGREED: float(pairing.agreed),
        LOGGED: float(pairing.candidate_logged),
    }
    baseline: dict[str, float] = {LOGGED: float(pairing.baseline_logged)}
    for found in pairing.largest:
        candidate[number_key(DIFFERENCE, found.pair)] = found.difference
        candidate[number_key(SCORE, found.pair)] = found.candidate_score
        baseline[number_key(SCORE, found.pair)] = found.baseline_score
    return candidate, baseline


def largest_differences(
    segments: Sequence[tuple[Numbers, Numbers]], *, kept: int = LARGEST_DIFFERENCES_KEPT
) -> list[ScoreDifference]:
    """The largest score differences over several looks' counts ((candidate, baseline) each),
    largest first; a pair found in two segments counts once."""
    found: dict[str, ScoreDifference] = {}
    for candidate, baseline in segments:
        candidate_scores, baseline_scores = by_label(candidate, SCORE), by_label(baseline, SCORE)
        for pair in by_label(candidate, DIFFERENCE):
            if pair in candidate_scores and pair in baseline_scores:
                found[pair] = ScoreDifference(
                    pair=pair, candidate_score=candidate_scores[pair], baseline_score=baseline_scores[pair]
                )
    return sorted(found.values(), key=lambda difference: difference.difference, reverse=True)[:kept]
