"""A rollout held before any traffic (inconclusive gates with the pause policy, or a person's
pause while Pending) stays Pending with no candidate traffic until a person acts: a resume runs the
gates again, a promote skips them."""

from __future__ import annotations

from dataclasses import replace

from controller.api import Phase
from controller.checks import CheckOutcome, InconclusivePolicy, Verdict
from controller.plan import TrafficSplit, stage_to_check
from tests.unit.test_plan import observed, progressing_at, reasons, run, spec_of

SPEC = spec_of([{"setWeight": 1}, {"pause": {"duration": "1m"}}, {"setWeight": 50}])
INCONCLUSIVE = CheckOutcome(verdict=Verdict.INCONCLUSIVE, message="no data", on_inconclusive=InconclusivePolicy.PAUSE)


def test_inconclusive_gates_with_the_pause_policy_hold_the_rollout_pending_with_no_candidate_traffic() -> None:
    # Given a Pending rollout, when its gates come back inconclusive with the pause policy
    plan = run(SPEC, progressing_at(0, phase=Phase.PENDING), observed(gates=INCONCLUSIVE))

    # Then it is held before any traffic, says why once, and runs no check while held
    assert plan.status.phase == Phase.PENDING
    assert plan.status.paused_by_user
    assert plan.traffic == TrafficSplit.all_to("v1")
    assert reasons(plan) == ["Inconclusive"]
    assert "paused, inconclusive: no data" in plan.status.message
    assert stage_to_check(plan.status) is None


def test_a_hand_edited_route_on_a_rollout_held_before_traffic_goes_back_to_the_stable_version() -> None:
    # Given a rollout held by its gates, when a person puts 1 % on the candidate by hand
    held = run(SPEC, progressing_at(0, phase=Phase.PENDING), observed(gates=INCONCLUSIVE)).status
    plan = run(SPEC, held, observed({"v1": 99, "v2": 1}, at=30))

    # Then the plan still sends everything to the stable version (the first step's weight is not
    # adopted: the gates have not passed), and the rollout stays held
    assert plan.traffic == TrafficSplit.all_to("v1")
    assert plan.status.phase == Phase.PENDING and plan.status.paused_by_user


def test_resume_before_traffic_runs_the_gates_again_instead_of_reading_them_as_passed() -> None:
    held = run(SPEC, progressing_at(0, phase=Phase.PENDING), observed(gates=INCONCLUSIVE)).status

    # When a person resumes (no gates ran in this pass: the rollout was held)
    plan = run(SPEC, held, observed(at=60, action="resume"))

    # Then it is Pending and unheld, no traffic moved, and it asks for a pass at once, in which the
    # gates run
    assert plan.status.phase == Phase.PENDING and not plan.status.paused_by_user
    assert plan.traffic == TrafficSplit.all_to("v1")
    assert reasons(plan) == ["Resumed"]
    assert plan.requeue_after == 0
    assert stage_to_check(plan.status) == "gates"

    # And when the gates then pass, the first weight moves
    passed = run(SPEC, plan.status, observed(at=61, gates=CheckOutcome(verdict=Verdict.SUCCESSFUL, message="ok")))
    assert passed.status.phase == Phase.PROGRESSING
    assert passed.traffic == TrafficSplit.canary(stable="v1", candidate="v2", candidate_weight=1)


def test_promote_before_traffic_skips_the_gates_as_a_person_asked() -> None:
    held = run(SPEC, progressing_at(0, phase=Phase.PENDING), observed(gates=INCONCLUSIVE)).status

    plan = run(SPEC, held, observed(at=60, action="promote"))

    assert reasons(plan) == ["GatesSkipped"]
    assert plan.status.phase == Phase.PROGRESSING and not plan.status.paused_by_user
    assert plan.traffic == TrafficSplit.canary(stable="v1", candidate="v2", candidate_weight=1)


def test_a_person_pausing_a_pending_rollout_holds_it_there_until_resumed() -> None:
    # Given a Pending rollout whose gates are running, when a person pauses it
    running = CheckOutcome(verdict=Verdict.RUNNING, message="waiting")
    plan = run(SPEC, progressing_at(0, phase=Phase.PENDING), observed(gates=running, action="pause"))
    assert plan.status.phase == Phase.PENDING and plan.status.paused_by_user

    # Then gates that would pass do not start the traffic while it is held
    later = run(SPEC, plan.status, observed(at=10, gates=replace(running, verdict=Verdict.SUCCESSFUL)))
    assert later.status.phase == Phase.PENDING
    assert later.traffic == TrafficSplit.all_to("v1")
