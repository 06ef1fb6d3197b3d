"""Events recorded in status before they are created, so that a crash or a failed create loses none."""

from __future__ import annotations

from datetime import UTC, datetime

from controller.api import ModelRolloutStatus, RecordedEvent
from controller.plan import Event, EventType
from controller.reconcile import RECORDED_EVENTS_LIMIT, event_name, with_recorded_events

ROLLOUT = {"metadata": {"name": "iris", "uid": "0b5e"}}
T0 = datetime(2026, 11, 30, 12, 0, 19, tzinfo=UTC)


def recorded(reason: str) -> RecordedEvent:
    return RecordedEvent(name=f"iris.{reason}", type="Normal", reason=reason, message="", time="2026-11-30T12:00:00Z")


def step_completed(index: int) -> Event:
    return Event(type=EventType.NORMAL, reason="StepCompleted", message=f"step {index} completed")


def test_the_same_event_of_the_same_pass_always_gets_the_same_name() -> None:
    time = "2026-11-30T12:00:19.000Z"
    first = event_name(rollout=ROLLOUT, index=0, event=step_completed(1), time=time)
    assert first == event_name(rollout=ROLLOUT, index=0, event=step_completed(1), time=time)
    assert first != event_name(rollout=ROLLOUT, index=0, event=step_completed(2), time=time)
    assert first.startswith("iris.")


def test_events_not_yet_created_stay_recorded_before_the_new_ones() -> None:
    # given a status recording two Events, of which only the first is known to be created
    status = ModelRolloutStatus(recent_events=(recorded("RolloutStarted"), recorded("StepCompleted")))

    # when a pass with an Event of its own records it
    after = with_recorded_events(
        status, (step_completed(2),), rollout=ROLLOUT, now=T0, created=frozenset({"iris.RolloutStarted"})
    )

    # then the one not created is kept, ahead of the new one
    assert [event.reason for event in after.recent_events] == ["StepCompleted", "StepCompleted"]
    assert after.recent_events[0] == recorded("StepCompleted")
    assert after.recent_events[1].message == "step 2 completed"


def test_a_pass_without_events_leaves_the_record_as_it_is() -> None:
    status = ModelRolloutStatus(recent_events=(recorded("Promoted"),))
    assert with_recorded_events(status, (), rollout=ROLLOUT, now=T0, created=frozenset()) == status


def test_the_record_is_bounded() -> None:
    status = ModelRolloutStatus(recent_events=tuple(recorded(f"Old{i}") for i in range(RECORDED_EVENTS_LIMIT)))
    after = with_recorded_events(status, (step_completed(1),), rollout=ROLLOUT, now=T0, created=frozenset())
    assert len(after.recent_events) == RECORDED_EVENTS_LIMIT
    assert after.recent_events[-1].message == "step 1 completed"
