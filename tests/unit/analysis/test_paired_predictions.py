"""The paired check: two versions' prediction logs joined request by request, the agreement rate
judged against the floor the spec sets, and the requests whose scores differ most reported.
Pure logic: the join, the counts kept as evidence, the judge, the spec's fields."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from controller.analysis.checker import AnalysisChecker
from controller.analysis.evaluate import Result
from controller.analysis.evidence import Evidence, Segment
from controller.analysis.judges import Budget, Look, Versions, judge_evidence
from controller.analysis.modelchecks.paired import PairedPredictions
from controller.analysis.pairing import (
    LoggedPrediction,
    MalformedPredictionLog,
    pair_predictions,
    paired_numbers,
    parse_prediction_log,
)
from controller.analysis.prediction_logs import PredictionLogReader
from controller.analysis.spec import SequentialSpec, parse_metric
from controller.api import ModelRolloutStatus, SpecError, parse_spec
from controller.checks import CheckContext, StepWindow, Verdict

T0 = datetime(2026, 12, 1, 2, 0, 0, tzinfo=UTC)
BUDGET = Budget(false_rollback=0.05, false_promotion=0.05)
VERSIONS = Versions(baseline="v1", candidate="v2")


def logged(request_id: str, label: int, score: float | None, *, row: int = 0) -> LoggedPrediction:
    return LoggedPrediction(request_id=request_id, row=row, label=label, score=score)


def judged(test: PairedPredictions, *segments: tuple[Mapping[str, float], Mapping[str, float]]) -> Look:
    evidence = Evidence(
        metric="agreement",
        segments=tuple(
            Segment(step=index, started_at=T0, seconds=60, candidate=candidate, baseline=baseline)
            for index, (candidate, baseline) in enumerate(segments)
        ),
    )
    return judge_evidence(test, evidence, budget=BUDGET, versions=VERSIONS)


def logs_agreeing(pairs: int, agreeing: int) -> tuple[list[LoggedPrediction], list[LoggedPrediction]]:
    """`pairs` requests both versions answered; the candidate predicts the baseline's label on the
    first `agreeing` of them."""
    baseline = [logged(f"r{i}", 1, 0.8) for i in range(pairs)]
    candidate = [logged(f"r{i}", 1 if i < agreeing else 0, 0.8 if i < agreeing else 0.3) for i in range(pairs)]
    return candidate, baseline


# ---------------------------------------------------------------------------------------------
# The join


def test_only_requests_both_versions_answered_are_pairs() -> None:
    # given the baseline answered r1-r3 and the candidate copies of r2-r4 (r4 still in flight to the baseline's log)
    baseline = [logged("r1", 1, 0.9), logged("r2", 0, 0.2), logged("r3", 1, 0.7)]
    candidate = [logged("r2", 0, 0.1), logged("r3", 0, 0.4), logged("r4", 1, 0.9)]

    # when they are joined
    pairing = pair_predictions(candidate=candidate, baseline=baseline)

    # then r2 and r3 are the pairs; r2 agrees, r3 does not; each log's rows are counted
    assert (pairing.pairs, pairing.agreed) == (2, 1)
    assert (pairing.candidate_logged, pairing.baseline_logged) == (3, 3)
    # and the largest score difference comes first
    assert [(d.pair, round(d.difference, 6)) for d in pairing.largest] == [("r3", 0.3), ("r2", 0.1)]


def test_rows_of_one_request_pair_row_by_row() -> None:
    baseline = [logged("batch", 1, 0.9, row=0), logged("batch", 0, 0.1, row=1)]
    candidate = [logged("batch", 1, 0.8, row=0), logged("batch", 1, 0.6, row=1)]

    pairing = pair_predictions(candidate=candidate, baseline=baseline)

    assert (pairing.pairs, pairing.agreed) == (2, 1)
    assert pairing.largest[0].pair == "batch#1"


def test_with_a_score_tolerance_the_same_label_with_distant_scores_disagrees() -> None:
    baseline = [logged("a", 1, 0.95), logged("b", 1, 0.6), logged("c", 1, 0.7)]
    candidate = [logged("a", 1, 0.55), logged("b", 1, 0.65), logged("c", 1, None)]

    by_label = pair_predictions(candidate=candidate, baseline=baseline)
    by_label_and_score = pair_predictions(candidate=candidate, baseline=baseline, max_score_difference=0.1)

    # a: 0.4 apart; c: the candidate gave no finite score, so its closeness cannot be shown
    assert by_label.agreed == 3
    assert by_label_and_score.agreed == 1
    assert [d.pair for d in by_label_and_score.largest] == ["a", "b"], "a pair without both scores has no difference"


def test_a_request_id_logged_twice_by_one_version_is_one_pair() -> None:
    baseline = [logged("r", 1, 0.9)]
    candidate = [logged("r", 0, 0.2), logged("r", 1, 0.9)]

    pairing = pair_predictions(candidate=candidate, baseline=baseline)

    assert (pairing.pairs, pairing.agreed) == (1, 1), "the later row of the id is kept"


def test_the_counts_kept_carry_the_pairs_and_both_scores_of_the_largest_differences() -> None:
    candidate, baseline = logs_agreeing(pairs=20, agreeing=18)

    kept_candidate, kept_baseline = paired_numbers(pair_predictions(candidate=candidate, baseline=baseline))

    assert (kept_candidate["pairs"], kept_candidate["agreed"], kept_candidate["logged"]) == (20, 18, 20)
    assert kept_baseline["logged"] == 20
    assert kept_candidate["score:r18"] == 0.3 and kept_baseline["score:r18"] == 0.8
    assert kept_candidate["difference:r18"] == pytest.approx(0.5)
    assert len([key for key in kept_candidate if key.startswith("difference:")]) == 5, "at most five kept"


def test_a_log_answer_is_read_as_the_convention_writes_it() -> None:
    body = {
        "model_name": "iris",
        "model_version": "v2",
        "predictions": [
            {"requestId": "a", "row": 0, "time": 1.5, "label": 1, "score": 0.75},
            {"requestId": "b", "time": 2.0, "label": 0, "score": None},
        ],
        "truncated": False,
    }

    assert parse_prediction_log(body) == [logged("a", 1, 0.75), logged("b", 0, None)]


@pytest.mark.parametrize(
    ("body", "complaint"),
    [
        ({"predictions": "no"}, "'predictions' list"),
        ({"predictions": [{"row": 0, "label": 1, "score": 0.5}]}, "predictions[0].requestId"),
        ({"predictions": [{"requestId": "a", "label": "1", "score": 0.5}]}, "predictions[0].label"),
        ({"predictions": [{"requestId": "a", "label": 1, "score": "high"}]}, "predictions[0].score"),
        ({"predictions": [{"requestId": "a", "row": -1, "label": 1, "score": 0.5}]}, "predictions[0].row"),
    ],
)
def test_a_log_breaking_the_convention_is_refused_naming_where(body: object, complaint: str) -> None:
    with pytest.raises(MalformedPredictionLog, match=complaint.replace("[", r"\[").replace("]", r"\]")):
        parse_prediction_log(body)


# ---------------------------------------------------------------------------------------------
# The judge


def counts(pairs: int, agreeing: int) -> tuple[dict[str, float], dict[str, float]]:
    candidate, baseline = logs_agreeing(pairs, agreeing)
    return paired_numbers(pair_predictions(candidate=candidate, baseline=baseline))


def test_a_candidate_agreeing_on_half_the_requests_fails_against_a_95_percent_floor() -> None:
    look = judged(PairedPredictions(min_agreement=0.95), counts(200, 100))

    assert look.judgement.result is Result.FAILED
    assert "agreed with baseline v1 on 100 of 200 paired requests, 50%" in look.judgement.reason
    assert "largest score difference 0.5 (request r100: 0.3 vs 0.8)" in look.judgement.reason
    assert look.summary["agreement"] == 0.5 and look.summary["interval"][1] < 0.95
    assert [entry["requestId"] for entry in look.summary["largestDifferences"]] == [f"r{i}" for i in range(100, 105)]
    assert look.candidate.value == 0.5 and look.candidate.samples == 200


def test_a_few_disagreements_on_a_few_pairs_are_not_yet_evidence() -> None:
    # 9 of 10 is 90 %, below the floor, but ten pairs cannot show it at a 5 % error rate
    look = judged(PairedPredictions(min_agreement=0.95), counts(10, 9))

    assert look.judgement.result is Result.SUCCESSFUL and not look.judgement.safe
    assert look.summary["interval"][1] >= 0.95


def test_full_agreement_on_many_pairs_shows_the_floor_reached() -> None:
    look = judged(PairedPredictions(min_agreement=0.95), counts(2000, 2000))

    assert look.judgement.result is Result.SUCCESSFUL and look.judgement.safe
    assert "agreement shown" in look.judgement.reason


def test_without_pairs_the_check_holds_and_says_pairs_come_from_a_mirror_step() -> None:
    look = judged(PairedPredictions(min_agreement=0.95), ({"pairs": 0, "agreed": 0, "logged": 40}, {"logged": 35}))

    assert look.judgement.result is Result.INCONCLUSIVE
    assert "candidate v2 logged 40, baseline v1 logged 35" in look.judgement.reason
    assert "mirror step" in look.judgement.reason


def test_the_mirror_steps_pairs_still_decide_in_a_later_step_without_pairs() -> None:
    # given a mirror step's pairs, then an analyze step where no request reaches both versions
    look = judged(PairedPredictions(min_agreement=0.95), counts(200, 100), ({}, {}))

    assert look.judgement.result is Result.FAILED


def test_a_floor_of_pairs_asked_for_holds_until_reached() -> None:
    look = judged(PairedPredictions(min_agreement=0.5, min_pairs=500), counts(200, 200))

    assert look.judgement.result is Result.INCONCLUSIVE
    assert "minPairs" in look.judgement.reason


def test_the_look_writes_its_rows_for_kubectl() -> None:
    look = judged(PairedPredictions(min_agreement=0.95), counts(200, 100))

    assert look.summary["columns"]["estimate"].startswith("agreement 50%")
    assert look.summary["columns"]["tolerance"] == "at least 95%"
    assert look.summary["rows"][0] == {
        "label": "request r100",
        "baseline": "score 0.8",
        "candidate": "score 0.3",
        "estimate": "difference 0.5",
    }


# ---------------------------------------------------------------------------------------------
# The spec


def parsed(raw: Mapping[str, Any]) -> PairedPredictions:
    metric = parse_metric({"name": "agreement", "pairedPredictions": raw}, path="spec.analysis.metrics[0]")
    assert isinstance(metric, SequentialSpec) and isinstance(metric.test, PairedPredictions)
    return metric.test


def test_a_metric_configures_the_check_with_its_floor_score_tolerance_and_pairs_needed() -> None:
    assert parsed({"minAgreement": 0.95}) == PairedPredictions(min_agreement=0.95)
    assert parsed({"minAgreement": 0.9, "maxScoreDifference": 0.1, "minPairs": 100}) == PairedPredictions(
        min_agreement=0.9, max_score_difference=0.1, min_pairs=100
    )


@pytest.mark.parametrize(
    ("raw", "field", "words"),
    [
        ({}, "spec.analysis.metrics[0].pairedPredictions.minAgreement", "is required"),
        ({"minAgreement": 1.5}, "spec.analysis.metrics[0].pairedPredictions.minAgreement", ""),
        ({"minAgreement": 0.9, "minPairs": -1}, "spec.analysis.metrics[0].pairedPredictions.minPairs", ""),
        (
            {"minAgreement": 0.9, "maxScoreDifference": -0.1},
            "spec.analysis.metrics[0].pairedPredictions.maxScoreDifference",
            "",
        ),
    ],
)
def test_a_malformed_check_is_refused_naming_the_field(raw: Mapping[str, Any], field: str, words: str) -> None:
    with pytest.raises(SpecError) as raised:
        parsed(raw)
    assert str(raised.value).startswith(field), str(raised.value)
    assert words in str(raised.value)


def test_the_check_has_its_own_tolerance_so_a_scalar_bound_is_refused() -> None:
    with pytest.raises(SpecError, match=r"metrics\[0\]\.comparison: does not apply to pairedPredictions"):
        parse_metric(
            {"name": "agreement", "pairedPredictions": {"minAgreement": 0.9}, "comparison": {"max": 1}},
            path="spec.analysis.metrics[0]",
        )


# ---------------------------------------------------------------------------------------------
# What the checker needs before any traffic: a mirror step, and both versions' model servers

MIRRORED = [{"setWeight": 0}, {"mirror": {"duration": "1m"}}, {"setWeight": 50}]
AGREEMENT = {"metrics": [{"name": "agreement", "pairedPredictions": {"minAgreement": 0.95}}]}
ENDPOINTS = {"v1": "http://iris-v1.ml.svc:8080", "v2": "http://iris-v2.ml.svc:8080"}


class NeverAsked:
    """A provider that fails the test when validation measures anything."""

    def measure(self, *, source: object, namespace: str) -> float | None:
        raise AssertionError(f"validation measured {source}")


def pending(*, steps: list[Any], endpoints: Mapping[str, str]) -> CheckContext:
    versions = [
        {
            "version": v,
            "backend": {"service": f"iris-{v}", "port": 8080},
            **({"endpoint": endpoints[v]} if v in endpoints else {}),
        }
        for v in ("v1", "v2")
    ]
    return CheckContext(
        namespace="ml",
        name="iris",
        spec=parse_spec(
            {
                "model": "iris",
                "versions": versions,
                "baseline": "v1",
                "candidate": "v2",
                "trafficRouting": {"gatewayAPI": {"httpRoute": "iris"}},
                "steps": steps,
                "analysis": AGREEMENT,
            }
        ),
        status=ModelRolloutStatus(),
        stable_version="v1",
        now=T0,
        current_weight=0,
    )


def validated(context: CheckContext) -> None:
    checker = AnalysisChecker(
        providers={"prometheus": NeverAsked(), "web": NeverAsked()},
        template_lookup=lambda *, namespace, name: None,
    )
    checker.validate(context=context)


def test_a_rollout_with_a_mirror_step_and_both_endpoints_is_valid() -> None:
    validated(pending(steps=MIRRORED, endpoints=ENDPOINTS))


def test_a_version_without_an_endpoint_is_refused_naming_its_field() -> None:
    with pytest.raises(SpecError) as raised:
        validated(pending(steps=MIRRORED, endpoints={"v2": ENDPOINTS["v2"]}))
    assert str(raised.value).startswith("spec.versions[0].endpoint: is required for version v1"), str(raised.value)


def test_without_a_mirror_step_the_check_is_refused_since_no_request_would_reach_both_versions() -> None:
    with pytest.raises(SpecError) as raised:
        validated(pending(steps=[{"setWeight": 20}, {"analyze": {"duration": "1m"}}], endpoints=ENDPOINTS))
    assert str(raised.value).startswith("spec.analysis.metrics[0].pairedPredictions: "), str(raised.value)
    assert "add a mirror step" in str(raised.value)


def test_an_endpoint_the_outbound_fence_refuses_is_refused_before_any_traffic() -> None:
    with pytest.raises(SpecError) as raised:
        validated(pending(steps=MIRRORED, endpoints={**ENDPOINTS, "v2": "http://169.254.169.254"}))
    assert str(raised.value).startswith("spec.versions[1].endpoint: "), str(raised.value)


# ---------------------------------------------------------------------------------------------
# A look during the mirror step: both logs read, joined, judged and kept


def test_a_look_during_the_mirror_step_reads_both_logs_and_fails_a_disagreeing_candidate() -> None:
    # given model servers whose logs hold 300 requests both answered, the candidate agreeing on a third
    candidate_rows, baseline_rows = logs_agreeing(300, 100)
    logs = {"iris-v1.ml.svc": baseline_rows, "iris-v2.ml.svc": candidate_rows}
    asked: list[str] = []

    def serve(request: httpx.Request) -> httpx.Response:
        asked.append(f"{request.url.host}{request.url.path}?since={request.url.params['since']}")
        rows = [{"requestId": r.request_id, "row": r.row, "time": 1.0, "label": r.label, "score": r.score}
                for r in logs[request.url.host]]  # fmt: skip
        return httpx.Response(200, json={"predictions": rows, "truncated": False})

    checker = AnalysisChecker(
        providers={"prometheus": NeverAsked(), "web": NeverAsked()},
        template_lookup=lambda *, namespace, name: None,
        prediction_logs=PredictionLogReader(transport=httpx.MockTransport(serve)),
    )
    context = pending(steps=MIRRORED, endpoints=ENDPOINTS)
    started = T0 - timedelta(seconds=30)
    in_mirror = replace(
        context,
        status=replace(context.status, current_step_index=1),
        step=StepWindow(index=1, started_at=started, seconds=60),
        now=T0,
    )

    # when the checker looks
    outcome = checker(context=in_mirror)

    # then both logs were read from the step's start, and the candidate failed on the pairs
    assert outcome is not None and outcome.verdict is Verdict.FAILED, outcome
    assert sorted(asked) == [
        f"iris-v1.ml.svc/v2/models/iris/predictions?since={started.timestamp():.3f}",
        f"iris-v2.ml.svc/v2/models/iris/predictions?since={started.timestamp():.3f}",
    ]
    assert "agreed with baseline v1 on 100 of 300 paired requests" in outcome.message
    (evidence,) = outcome.status_fields["analysis"]["evidence"]
    assert evidence["segments"][0]["candidate"]["pairs"] == 300
