"""status.rubric: both stages' ML Test Score items end up in status, each check's latest verdict."""

from __future__ import annotations

from controller.checks import CheckOutcome, RubricEntry, Stage, Verdict
from controller.plan import merged_rubric

GATES_PASSED = CheckOutcome(
    verdict=Verdict.SUCCESSFUL,
    rubric=(
        RubricEntry(item="Infra 2", check="contract", verdict=Verdict.SUCCESSFUL),
        RubricEntry(item="Data 1", check="contract", verdict=Verdict.SUCCESSFUL),
    ),
)


def test_a_stage_reports_each_item_under_its_check_and_stage() -> None:
    assert merged_rubric(None, stage=Stage.PRE_TRAFFIC, outcome=GATES_PASSED) == [
        {"item": "Infra 2", "check": "contract", "stage": "pre-traffic", "verdict": "Successful"},
        {"item": "Data 1", "check": "contract", "stage": "pre-traffic", "verdict": "Successful"},
    ]


def test_analysis_items_join_the_gates_items_and_replace_their_own_earlier_verdicts() -> None:
    # given: the gates passed, and a first analysis pass found the slices check still running
    gates = merged_rubric(None, stage=Stage.PRE_TRAFFIC, outcome=GATES_PASSED)
    running = CheckOutcome(
        verdict=Verdict.RUNNING,
        rubric=(
            RubricEntry(item="Model 6", check="slices", verdict=Verdict.RUNNING),
            RubricEntry(item="Monitor 7", check="drift", verdict=Verdict.RUNNING),
        ),
    )
    first = merged_rubric(gates, stage=Stage.ANALYSIS, outcome=running)
    # when: a later analyze step measures only the slices, which fail
    failed = CheckOutcome(
        verdict=Verdict.FAILED, rubric=(RubricEntry(item="Model 6", check="slices", verdict=Verdict.FAILED),)
    )
    rubric = merged_rubric(first, stage=Stage.ANALYSIS, outcome=failed)
    # then: gates stay, drift keeps its last verdict, slices carry the new one
    assert [(e["item"], e["check"], e["verdict"]) for e in rubric] == [
        ("Infra 2", "contract", "Successful"),
        ("Data 1", "contract", "Successful"),
        ("Monitor 7", "drift", "Running"),
        ("Model 6", "slices", "Failed"),
    ]


def test_an_outcome_without_items_leaves_the_rubric_as_it_was() -> None:
    gates = merged_rubric(None, stage=Stage.PRE_TRAFFIC, outcome=GATES_PASSED)
    assert merged_rubric(gates, stage=Stage.ANALYSIS, outcome=CheckOutcome(verdict=Verdict.RUNNING)) == gates
