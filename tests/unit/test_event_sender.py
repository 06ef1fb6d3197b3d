"""Events are created on the sender's own threads: a pass never waits for them, none is lost when
the queue is full or a create fails, none is handed over twice while it is being created, and
those a predecessor recorded wait behind this process's own."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from typing import Any

from controller import telemetry
from controller.api import PLURAL, ModelRolloutStatus, RecordedEvent
from controller.events import EventSender, Outgoing, SenderSettings, TokenBucket
from controller.kube import Kube, ObjectRef
from controller.reconcile import EVENT_TTL_SECONDS, Checkers, Reconciler
from tests.unit.test_cheaper_passes import phase, run_pass, world

ABOUT = ObjectRef(api_version="rollouts.mlops.dev/v1alpha1", kind="ModelRollout", namespace="ns", name="iris", uid="u1")


def recorded(name: str) -> RecordedEvent:
    return RecordedEvent(name=name, type="Normal", reason="StepCompleted", message="", time="2026-11-30T12:00:00Z")


class EventsApi(Kube):
    """Kube whose Event creates are answered here: each fails when its name says so."""

    def __init__(self) -> None:
        self.created: list[str] = []

    def emit_event(self, *, name: str | None = None, now: datetime, **_: Any) -> bool:
        if name and name.startswith("raise"):
            raise RuntimeError("the client broke")
        self.created.append(str(name))
        return True


class Outcomes:
    def __init__(self, expected: int) -> None:
        self.done: dict[str, bool] = {}
        self._expected = expected
        self._all = threading.Event()

    def outgoing(self, name: str, *, inherited: bool = False) -> Outgoing:
        def on_done(created: bool) -> None:
            self.done[name] = created
            if len(self.done) == self._expected:
                self._all.set()

        return Outgoing(about=ABOUT, event=recorded(name), on_done=on_done, inherited=inherited)

    def wait(self) -> dict[str, bool]:
        assert self._all.wait(5), self.done
        return self.done


def test_events_are_created_on_the_senders_threads_and_a_failing_create_ends_no_thread() -> None:
    # given a started sender with one thread
    api = EventsApi()
    sender = EventSender(kube=api, settings=SenderSettings(threads=1))
    sender.start()
    outcomes = Outcomes(expected=3)

    # when it is handed an Event whose create raises between two good ones
    for name in ("first", "raise-once", "third"):
        sender.send(outcomes.outgoing(name))

    # then the good ones are created by the same thread, and each outcome is reported
    assert outcomes.wait() == {"first": True, "raise-once": False, "third": True}
    assert api.created == ["first", "third"]
    sender.stop()


def test_an_event_the_full_queue_cannot_take_is_reported_not_created_at_once() -> None:
    # given a sender whose queue holds one Event, with no thread taking them yet
    sender = EventSender(kube=EventsApi(), settings=SenderSettings(threads=1, queue_limit=1))
    outcomes = Outcomes(expected=1)
    deferred_before = telemetry.EVENTS_DEFERRED._value.get()

    # when it is handed two
    sender.send(outcomes.outgoing("queued"))
    sender.send(outcomes.outgoing("deferred"))

    # then the second is reported not created (its rollout's next pass sends it again), and counted
    assert outcomes.wait() == {"deferred": False}
    assert telemetry.EVENTS_DEFERRED._value.get() == deferred_before + 1


def test_the_events_of_this_processs_passes_are_created_before_those_a_predecessor_recorded() -> None:
    # given a sender, not started yet, handed two Events a predecessor recorded, then one of its own
    api = EventsApi()
    sender = EventSender(kube=api, settings=SenderSettings(threads=1))
    outcomes = Outcomes(expected=3)
    for name in ("inherited-1", "inherited-2"):
        sender.send(outcomes.outgoing(name, inherited=True))
    sender.send(outcomes.outgoing("own"))

    # when its thread starts, then its own Event is created first, the inherited ones in order after
    sender.start()
    assert outcomes.wait() == {"own": True, "inherited-1": True, "inherited-2": True}
    assert api.created == ["own", "inherited-1", "inherited-2"]
    sender.stop()


def test_a_full_lane_of_inherited_events_defers_none_of_this_processs_own() -> None:
    # given a sender whose lanes hold one Event each, with no thread taking them yet, holding an
    # inherited one
    sender = EventSender(kube=EventsApi(), settings=SenderSettings(threads=1, queue_limit=1))
    outcomes = Outcomes(expected=1)
    sender.send(outcomes.outgoing("inherited-1", inherited=True))

    # when it is handed another inherited one and one of its own
    sender.send(outcomes.outgoing("inherited-2", inherited=True))
    sender.send(outcomes.outgoing("own"))

    # then only the second inherited one is deferred: its own Event has a lane of its own
    assert outcomes.wait() == {"inherited-2": False}


def test_stopping_creates_what_is_queued_at_once_whatever_the_rate() -> None:
    # given a started sender allowed one Event now and the next in an hour, holding three
    api = EventsApi()
    sender = EventSender(kube=api, settings=SenderSettings(threads=1, events_per_second=1 / 3600, burst=1))
    sender.start()
    outcomes = Outcomes(expected=3)
    for name in ("a", "b", "c"):
        sender.send(outcomes.outgoing(name))

    # when the controller shuts down
    sender.stop(drain_seconds=5)

    # then all three were created before it stopped
    assert sorted(api.created) == ["a", "b", "c"]
    assert outcomes.wait() == {"a": True, "b": True, "c": True}


def test_events_are_created_in_a_burst_then_at_the_sustained_rate() -> None:
    # given a bucket of 2 a second with a burst of 3, and a clock that stands still
    now = [100.0]
    bucket = TokenBucket(rate=2, burst=3, clock=lambda: now[0])

    # when four creates ask at once
    waits = [bucket.wait_seconds() for _ in range(4)]

    # then three go at once and the fourth is told to wait half a second, after which it goes
    assert waits == [0, 0, 0, 0.5]
    now[0] += 0.5
    assert bucket.wait_seconds() == 0
    # and a long quiet time refills the burst, never more
    now[0] += 3600
    assert [bucket.wait_seconds() for _ in range(4)] == [0, 0, 0, 0.5]


class HeldSender:
    """Keeps what it is handed, as a sender whose threads have not got to it yet."""

    def __init__(self) -> None:
        self.held: list[Outgoing] = []

    def send(self, outgoing: Outgoing) -> None:
        self.held.append(outgoing)


def test_a_pass_hands_over_an_event_being_created_only_once_and_one_not_created_again() -> None:
    # given a rollout whose first pass recorded two Events and handed them to the sender
    sender = HeldSender()
    server, reconciler, _ = world([{"setWeight": 10}, {"setWeight": 50}], events=sender)
    run_pass(server, reconciler)
    assert [o.event.reason for o in sender.held] == ["RolloutStarted", "StepCompleted"]

    # when the next pass runs while those are still being created
    run_pass(server, reconciler)

    # then it hands over only its own Event
    assert [o.event.message for o in sender.held[2:]] == ["step 1 completed"]

    # and when the first create fails and the others succeed, the next pass (the promotion)
    # hands over the failed one again with its own, and none of those created
    first, *others = sender.held
    first.on_done(False)
    for outgoing in others:
        outgoing.on_done(True)
    sender.held.clear()
    run_pass(server, reconciler)
    assert [o.event.reason for o in sender.held] == ["RolloutStarted", "Promoted"]


def restarted(reconciler: Reconciler, sender: HeldSender) -> Reconciler:
    """A new controller process: the same API server and clock, nothing remembered."""
    return Reconciler(
        kube=reconciler.kube, clock=reconciler.clock, events=sender, selector=reconciler.selector, checkers=Checkers()
    )


def test_a_new_process_hands_over_the_recorded_events_as_inherited_until_they_outlive_the_event_ttl() -> None:
    # given a rollout promoted by a controller that created each pass's Events before its next pass
    first = HeldSender()
    server, reconciler, clock = world([{"setWeight": 50}], events=first)
    while phase(server) != "Promoted":
        run_pass(server, reconciler)
        for outgoing in first.held:
            outgoing.on_done(True)
        first.held.clear()
    recorded_events = ModelRolloutStatus.from_json(server.objects[(PLURAL, "iris")]["status"]).recent_events
    assert [event.reason for event in recorded_events] == ["Promoted"]

    # when a new controller process makes its first pass at once
    soon = HeldSender()
    run_pass(server, restarted(reconciler, soon))

    # then it hands the recorded Event over as inherited (the API server refuses it if it exists)
    assert [(o.event.reason, o.inherited) for o in soon.held] == [("Promoted", True)]

    # and when another one starts after the API server's Event time to live has passed, it hands
    # over none: creating it again would bring back an expired Event
    clock.now += timedelta(seconds=EVENT_TTL_SECONDS + 1)
    late = HeldSender()
    run_pass(server, restarted(reconciler, late))
    assert late.held == []
