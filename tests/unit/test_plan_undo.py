"""Undoing a promotion in the pure decision (spec.rollbackWindow, the undo annotation): the version
the promotion replaced keeps its replicas for the window; an undo scales it up first when needed,
then sends it all traffic at once, never to a version that is not ready; it is recorded (status.undo,
the Undone condition, history, an Undo Event and notification) and the same token asks nothing twice;
an alert within the window undoes the promotion, one after it is only recorded."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from controller.api import (
    IncidentResponse,
    ModelRolloutSpec,
    ModelRolloutStatus,
    Phase,
    RecordedEvent,
    SpecError,
    UndoState,
    format_time,
    parse_spec,
)
from controller.incidents.alerts import Alert, AlertStatus
from controller.notify.notification import AlertCause, Kind
from controller.notify.transitions import notification_for
from controller.plan import UNDO_CONDITION, Observed, Plan, TrafficSplit, UndoRequest, decide, undo_target

T0 = datetime(2026, 12, 1, 3, 0, tzinfo=UTC)
PROMOTED_AT = T0 - timedelta(minutes=10)
ON_V2 = {"v1": 0, "v2": 100}
ON_V1 = {"v1": 100, "v2": 0}


def spec_of(**extra: Any) -> ModelRolloutSpec:
    raw: dict[str, Any] = {
        "model": "iris",
        "versions": [
            {"version": v, "backend": {"service": f"iris-{v}", "port": 80}, "deployment": f"iris-{v}"}
            for v in ("v1", "v2", "v3")
        ],
        "candidate": "v2",
        "baseline": "v1",
        "trafficRouting": {"gatewayAPI": {"httpRoute": "iris"}},
        "steps": [{"setWeight": 20}, {"setWeight": 100}],
        "scaleDown": {"delay": "30s"},
        "rollbackWindow": "1h",
        **extra,
    }
    return parse_spec(raw)


SPEC = spec_of()


def promoted(**kw: Any) -> ModelRolloutStatus:
    """v2 promoted ten minutes ago, replacing v1."""
    kw.setdefault("promoted_at", format_time(PROMOTED_AT))
    return ModelRolloutStatus(
        phase=Phase.PROMOTED,
        observed_generation=1,
        stable_version="v2",
        candidate_version="v2",
        candidate_hash=SPEC.candidate_hash(),
        current_step_index=2,
        current_weight=100,
        route_weights=ON_V2,
        previous_stable_version="v1",
        **kw,
    )


def observed(weights: dict[str, int], *, at: float = 0, **kw: Any) -> Observed:
    return Observed(now=T0 + timedelta(seconds=at), generation=1, route_weights=weights, **kw)


def run(status: ModelRolloutStatus, obs: Observed, spec: ModelRolloutSpec = SPEC) -> Plan:
    return decide(spec=spec, spec_error=None, status=status, observed=obs)


def reasons(plan: Plan) -> list[str]:
    return [event.reason for event in plan.events]


def undone_condition(plan: Plan) -> tuple[str, str] | None:
    found = next((c for c in plan.status.conditions if c.type == UNDO_CONDITION), None)
    return None if found is None else (found.status, found.reason)


def firing(*, starts_at: datetime = T0 - timedelta(minutes=1)) -> Alert:
    return Alert(
        status=AlertStatus.FIRING,
        labels={"alertname": "ModelErrorRate", "namespace": "ml", "model": "iris"},
        annotations={"summary": "iris v2 answers 5xx"},
        starts_at=starts_at,
        fingerprint="f5c05c93fab5ba48",
        generator_url="http://prometheus/graph?g0.expr=x",
    )


UNDO = UndoRequest(token="incident-42")


# The rollback window keeps the replaced version ready ---------------------------------------------


def test_a_promotion_keeps_the_replaced_version_for_the_whole_rollback_window() -> None:
    # given the last step of v2 done, the route at 100 % on v2, scaleDown 30s and a 1h window
    at_last_step = replace(promoted(), phase=Phase.PROGRESSING, stable_version="v1", promoted_at=None)
    # when the decision promotes v2
    plan = run(at_last_step, observed(ON_V2))
    # then v1 is scaled down only when the window ends, and the promotion is recorded for an undo
    assert plan.status.phase == Phase.PROMOTED
    assert plan.status.scale_down_target == "v1"
    assert plan.status.scale_down_at == format_time(T0 + timedelta(hours=1))
    assert plan.status.promoted_at == format_time(T0)
    assert plan.status.previous_stable_version == "v1"


def test_without_a_window_the_replaced_version_goes_after_the_scale_down_delay() -> None:
    spec = spec_of(rollbackWindow=None)
    at_last_step = replace(promoted(), phase=Phase.PROGRESSING, stable_version="v1", promoted_at=None)
    plan = run(at_last_step, observed(ON_V2), spec)
    assert plan.status.scale_down_at == format_time(T0 + timedelta(seconds=30))


# Undo by the annotation ---------------------------------------------------------------------------


def test_undo_sends_all_traffic_back_at_once_when_the_previous_version_is_ready() -> None:
    # given v2 promoted, v1 still ready (within the window), and the undo annotation set
    obs = observed(ON_V2, undo_request=UNDO, undo_target_ready=True)
    assert undo_target(spec=SPEC, status=promoted(), observed=obs) == "v1"
    # when the controller decides
    plan = run(promoted(), obs)
    # then the route is asked for all traffic on v1 in one write, and the token is handled
    assert plan.traffic == TrafficSplit.all_to("v1")
    assert plan.status.undo_token == "incident-42"
    assert plan.status.undo is not None and plan.status.undo.state == UndoState.PENDING
    assert plan.scale_up_version is None

    # when the route shows it
    done = run(plan.status, observed(ON_V1, at=1, undo_request=UNDO, undo_target_ready=True))
    # then the undo is done and recorded everywhere, and v2 goes after the scale-down delay
    assert done.traffic == TrafficSplit.all_to("v1")
    assert done.status.phase == Phase.ROLLED_BACK
    assert done.status.stable_version == "v1"
    assert done.status.undo is not None and done.status.undo.state == UndoState.DONE
    assert (done.status.undo.from_version, done.status.undo.to_version) == ("v2", "v1")
    assert "Undo" in reasons(done) and undone_condition(done) == ("True", "Undo")
    assert done.status.history[-1].reason == "Undo" and done.status.history[-1].phase == "RolledBack"
    assert done.status.scale_down_target == "v2"


def test_undo_scales_a_scaled_down_version_up_first_and_moves_no_traffic_until_it_is_ready() -> None:
    # given v1 scaled down (the window is over) and an undo asked
    status = promoted(scale_down_at=None, scale_down_target=None)
    # when v1 is not ready
    plan = run(status, observed(ON_V2, undo_request=UNDO, undo_target_ready=False))
    # then the plan scales v1 up, keeps all traffic on v2 and says why
    assert plan.scale_up_version == "v1"
    assert plan.traffic == TrafficSplit.all_to("v2")
    assert plan.status.phase == Phase.PROMOTED
    assert undone_condition(plan) == ("False", "UndoPending")
    assert "waiting for v1 to be ready" in plan.status.message
    assert plan.requeue_after is not None and plan.requeue_after <= 2

    # when it is still not ready a moment later, nothing more happens than waiting
    later = run(plan.status, observed(ON_V2, at=5, undo_request=UNDO, undo_target_ready=False))
    assert later.traffic == TrafficSplit.all_to("v2") and later.scale_up_version == "v1"
    assert reasons(later) == []

    # when it is ready, all traffic goes to it
    ready = run(later.status, observed(ON_V2, at=10, undo_request=UNDO, undo_target_ready=True))
    assert ready.traffic == TrafficSplit.all_to("v1")


def test_an_undo_cancels_the_scale_down_of_the_version_it_goes_back_to() -> None:
    status = promoted(scale_down_at=format_time(T0 + timedelta(minutes=50)), scale_down_target="v1")
    plan = run(status, observed(ON_V2, undo_request=UNDO, undo_target_ready=True))
    assert plan.status.scale_down_target is None and plan.scale_down_version is None


def test_an_undo_whose_version_never_gets_ready_fails_at_the_deadline_and_leaves_traffic() -> None:
    # given an undo waiting for v1 since longer than spec.progressDeadlineSeconds (600 s)
    waiting = run(promoted(), observed(ON_V2, undo_request=UNDO, undo_target_ready=False)).status
    # when the deadline passes
    plan = run(waiting, observed(ON_V2, at=601, undo_request=UNDO, undo_target_ready=False))
    # then the undo failed, traffic stays on v2, and a Warning says so
    assert plan.traffic == TrafficSplit.all_to("v2")
    assert plan.status.undo is not None and plan.status.undo.state == UndoState.FAILED
    assert reasons(plan) == ["UndoFailed"] and plan.status.phase == Phase.PROMOTED
    assert undone_condition(plan) == ("False", "UndoFailed")


def test_a_new_rollout_abandons_a_pending_undo() -> None:
    # given an undo waiting for v1 to be ready
    waiting = run(promoted(), observed(ON_V2, undo_request=UNDO, undo_target_ready=False)).status
    # when a person names v3 the candidate (a new generation)
    spec = spec_of(candidate="v3", baseline="v2")
    plan = decide(spec=spec, spec_error=None, status=waiting, observed=replace(observed(ON_V2, at=5), generation=2))
    # then the new rollout starts and the undo is over: it never resumes later
    assert plan.status.phase == Phase.PENDING
    assert plan.status.undo is not None and plan.status.undo.state == UndoState.FAILED
    assert "UndoFailed" in reasons(plan)


def test_the_same_undo_token_twice_changes_nothing_more() -> None:
    # given an undo done
    moving = run(promoted(), observed(ON_V2, undo_request=UNDO, undo_target_ready=True))
    done = run(moving.status, observed(ON_V1, at=1, undo_request=UNDO, undo_target_ready=True))
    # when the annotation, unchanged, is seen again
    obs = observed(ON_V1, at=2, undo_request=UNDO)
    assert undo_target(spec=SPEC, status=done.status, observed=obs) is None
    again = run(done.status, obs)
    # then nothing: same traffic, same status, no Event
    assert again.traffic == TrafficSplit.all_to("v1")
    assert again.events == ()
    assert again.status.undo == done.status.undo and again.status.phase == Phase.ROLLED_BACK


def test_a_new_token_after_the_undo_is_refused_with_a_reason() -> None:
    moving = run(promoted(), observed(ON_V2, undo_request=UNDO, undo_target_ready=True))
    done = run(moving.status, observed(ON_V1, at=1, undo_request=UNDO, undo_target_ready=True))
    plan = run(done.status, observed(ON_V1, at=2, undo_request=UndoRequest(token="again")))
    assert reasons(plan) == ["UndoRefused"] and "nothing to undo in phase RolledBack" in plan.events[0].message
    assert plan.traffic == TrafficSplit.all_to("v1") and plan.status.undo_token == "again"
    assert plan.status.undo == done.status.undo


def test_undo_to_a_named_version() -> None:
    plan = run(
        promoted(), observed(ON_V2, undo_request=UndoRequest(token="t", to_version="v3"), undo_target_ready=True)
    )
    assert plan.traffic == TrafficSplit.all_to("v3")


def test_undo_to_a_version_not_in_the_spec_is_refused() -> None:
    plan = run(promoted(), observed(ON_V2, undo_request=UndoRequest(token="t", to_version="v9")))
    assert reasons(plan) == ["UndoRefused"] and "v9 is not one of spec.versions" in plan.events[0].message
    assert plan.traffic == TrafficSplit.all_to("v2") and plan.status.undo is None


def test_an_undo_asked_during_a_canary_does_nothing_then_or_later() -> None:
    canary = replace(promoted(), phase=Phase.PROGRESSING, stable_version="v1", current_step_index=1,
                            route_weights={"v1": 80, "v2": 20})  # fmt: skip
    plan = run(canary, observed({"v1": 80, "v2": 20}, undo_request=UNDO))
    assert "UndoIgnored" in reasons(plan) and plan.status.undo_token == "incident-42"
    assert plan.status.undo is None


# Undo by an alert ---------------------------------------------------------------------------------


def test_an_alert_within_the_window_undoes_the_promotion() -> None:
    # given v2 promoted ten minutes ago with a 1 h window and spec.incidents.action rollback (default)
    obs = observed(ON_V2, alerts=(firing(),), undo_target_ready=True)
    assert undo_target(spec=SPEC, status=promoted(), observed=obs) == "v1"
    # when an alert names the rollout
    plan = run(promoted(), obs)
    done = run(plan.status, observed(ON_V1, at=1, alerts=(firing(),), undo_target_ready=True))
    # then all traffic went back to v1, and the alert is named as the cause
    assert plan.traffic == TrafficSplit.all_to("v1")
    assert done.status.phase == Phase.ROLLED_BACK and done.status.stable_version == "v1"
    assert done.status.incident is not None and done.status.incident.response == IncidentResponse.UNDONE
    assert done.status.undo is not None and "ModelErrorRate" in done.status.undo.cause
    # and the Undo notification names the alert
    event = next(e for e in done.events if e.reason == "Undo")
    recorded = RecordedEvent(name="iris.1", type="Warning", reason="Undo", message=event.message, time=format_time(T0))
    rollout = {"metadata": {"namespace": "ml", "name": "iris", "uid": "u"}, "spec": {"model": "iris"}}
    notification = notification_for(rollout=rollout, event=recorded, before=plan.status, after=done.status)
    assert notification is not None and notification.kind == Kind.UNDO
    assert isinstance(notification.cause, AlertCause) and notification.cause.name == "ModelErrorRate"
    # and the alert, still firing, does not undo anything again
    after = run(done.status, observed(ON_V1, at=30, alerts=(firing(),)))
    assert "Undo" not in reasons(after) and after.traffic == TrafficSplit.all_to("v1")


def test_an_alert_after_the_window_is_recorded_and_nothing_is_undone() -> None:
    status = promoted(promoted_at=format_time(T0 - timedelta(hours=2)))
    obs = observed(ON_V2, alerts=(firing(),))
    assert undo_target(spec=SPEC, status=status, observed=obs) is None
    plan = run(status, obs)
    assert plan.traffic == TrafficSplit.all_to("v2") and plan.status.phase == Phase.PROMOTED
    assert reasons(plan) == ["IncidentAfterPromotion"] and "outside spec.rollbackWindow" in plan.events[0].message


@pytest.mark.parametrize("action", ["pause", "ignore"])
def test_an_alert_within_the_window_undoes_nothing_unless_the_action_is_rollback(action: str) -> None:
    spec = spec_of(incidents={"action": action})
    plan = run(promoted(), observed(ON_V2, alerts=(firing(),), undo_target_ready=True), spec)
    assert plan.traffic == TrafficSplit.all_to("v2") and plan.status.undo is None


def test_an_alert_undo_that_failed_is_not_retried_by_the_same_alert() -> None:
    waiting = run(promoted(), observed(ON_V2, alerts=(firing(),), undo_target_ready=False)).status
    failed = run(waiting, observed(ON_V2, at=601, alerts=(firing(),), undo_target_ready=False)).status
    plan = run(failed, observed(ON_V2, at=602, alerts=(firing(),), undo_target_ready=True))
    assert plan.traffic == TrafficSplit.all_to("v2") and plan.status.undo == failed.undo


# The spec -----------------------------------------------------------------------------------------


def test_rollback_window_parses_as_seconds_and_a_mistake_names_the_field() -> None:
    assert spec_of(rollbackWindow="1h30m").rollback_window_seconds == 5400
    with pytest.raises(SpecError, match=r"spec.rollbackWindow: 'an hour' is not a duration"):
        spec_of(rollbackWindow="an hour")
    with pytest.raises(SpecError, match=r"spec.rollbackWindow: .* longer than 168h"):
        spec_of(rollbackWindow="169h")


# A version removed from spec.versions while its scale-down waits -----------------------------------


def test_a_scale_down_whose_version_left_the_spec_is_dropped_with_an_event() -> None:
    # given v2 promoted with v1's scale-down pending, then v1 removed from spec.versions for v3
    versions = [
        {"version": v, "backend": {"service": f"iris-{v}", "port": 80}, "deployment": f"iris-{v}"} for v in ("v2", "v3")
    ]
    spec = spec_of(versions=versions, baseline="v2", candidate="v3")
    waiting = promoted(scale_down_target="v1", scale_down_at=format_time(T0 + timedelta(seconds=10)))

    # when its scale-down is not due yet, it still waits (the version may come back meanwhile)
    early = run(waiting, observed(ON_V2, at=5), spec)
    assert early.status.scale_down_target == "v1" and "ScaleDownDropped" not in reasons(early)

    # when its scale-down falls due
    plan = run(waiting, observed(ON_V2, at=60), spec)

    # then nothing is scaled (v1's Deployment is no longer known), the target is dropped, and an Event says so
    assert plan.scale_down_version is None
    assert plan.status.scale_down_target is None and plan.status.scale_down_at is None
    (dropped,) = [event for event in plan.events if event.reason == "ScaleDownDropped"]
    assert "v1 was removed from spec.versions" in dropped.message
