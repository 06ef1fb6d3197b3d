"""Alerts from Alertmanager in the pure decision (spec.incidents): a firing alert that names a
canary rolls it back, pauses it, or is only recorded; it freezes a rollout that has not moved any
traffic yet until it resolves; after a promotion it is recorded, never acted on."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controller.api import (
    IncidentAction,
    IncidentRecord,
    IncidentResponse,
    ModelRolloutStatus,
    Phase,
    RecordedEvent,
    SpecError,
    format_time,
    parse_spec,
)
from controller.incidents.alerts import Alert, AlertStatus
from controller.notify.notification import AlertCause, Kind
from controller.notify.transitions import notification_for
from controller.plan import INCIDENT_CONDITION, Observed, Plan, TrafficSplit, decide
from controller.urgency import is_urgent
from tests.unit.test_plan_properties import (
    PROPERTIES,
    actions,
    check_status,
    check_traffic,
    outcomes,
    route_weights,
    specs,
    stored_statuses,
)

T0 = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)
STARTED = T0 - timedelta(minutes=3)
ALERT = "ModelErrorRate"
LABELS = {"alertname": "ModelErrorRate", "namespace": "ml", "model": "iris", "severity": "page"}
CANARY = {"v1": 80, "v2": 20}


def spec_of(*, incidents: dict[str, Any] | None = None, steps: list[dict[str, Any]] | None = None) -> Any:
    raw: dict[str, Any] = {
        "model": "iris",
        "versions": [{"version": v, "backend": {"service": f"iris-{v}", "port": 80}} for v in ("v1", "v2")],
        "candidate": "v2",
        "baseline": "v1",
        "trafficRouting": {"gatewayAPI": {"httpRoute": "iris"}},
        "steps": steps or [{"setWeight": 20}, {"pause": {"duration": "10m"}}, {"setWeight": 60}],
    }
    if incidents is not None:
        raw["incidents"] = incidents
    return parse_spec(raw)


def alert(*, starts_at: datetime = STARTED, fingerprint: str = "f5c05c93fab5ba48", **labels: str) -> Alert:
    return Alert(
        status=AlertStatus.FIRING,
        labels={**LABELS, **labels},
        annotations={"summary": "iris v2 answers 5xx"},
        starts_at=starts_at,
        fingerprint=fingerprint,
        generator_url="http://prometheus/graph?g0.expr=x",
    )


def observed(weights: dict[str, int], *, at: float = 0, alerts: tuple[Alert, ...] = (), **kw: Any) -> Observed:
    return Observed(
        now=T0 + timedelta(seconds=at),
        generation=1,
        route_weights=weights,
        alerts=alerts,
        alerts_since=kw.pop("alerts_since", T0 - timedelta(hours=1)),
        alerts_complete_at=kw.pop("alerts_complete_at", T0 - timedelta(minutes=1)),
        **kw,
    )


def status_at(phase: Phase, *, step: int, weight: int, **kw: Any) -> ModelRolloutStatus:
    return ModelRolloutStatus(
        phase=phase,
        observed_generation=1,
        stable_version=kw.pop("stable_version", "v1"),
        candidate_version="v2",
        candidate_hash=spec_of().candidate_hash(),
        current_step_index=step,
        current_weight=weight,
        step_started_at=format_time(T0 - timedelta(seconds=30)),
        progress_at=format_time(T0 - timedelta(seconds=30)),
        route_weights={"v1": 100 - weight, "v2": weight},
        **kw,
    )


def canary(**kw: Any) -> ModelRolloutStatus:
    """Holding 20 % for a 10 minute pause (step 1)."""
    return status_at(kw.pop("phase", Phase.PROGRESSING), step=1, weight=20, **kw)


def pending(**kw: Any) -> ModelRolloutStatus:
    return status_at(Phase.PENDING, step=0, weight=0, **kw)


def run(spec: Any, status: ModelRolloutStatus, obs: Observed) -> Plan:
    return decide(spec=spec, spec_error=None, status=status, observed=obs)


def reasons(plan: Plan) -> list[str]:
    return [event.reason for event in plan.events]


def condition(plan: Plan) -> tuple[str, str, str] | None:
    found = next((c for c in plan.status.conditions if c.type == INCIDENT_CONDITION), None)
    return None if found is None else (found.status, found.reason, found.message)


# The spec --------------------------------------------------------------------------------------


def test_the_default_policy_rolls_back_on_alerts_naming_namespace_and_model() -> None:
    # given a spec without spec.incidents, then it rolls back, matching by labels
    policy = spec_of().incidents
    assert policy.action == IncidentAction.ROLLBACK and policy.alert_selector is None


def test_an_alert_selector_is_parsed_as_a_label_selector() -> None:
    # given a selector in the syntax of kubectl get -l
    selector = "alertname in (GPUNodeDown),severity=page"
    policy = spec_of(incidents={"action": "pause", "alertSelector": selector}).incidents

    # then it is parsed, and selects alerts by their labels
    assert policy.action == IncidentAction.PAUSE and policy.alert_selector is not None
    assert policy.alert_selector.matches({"alertname": "GPUNodeDown", "severity": "page"})
    assert not policy.alert_selector.matches({"alertname": "GPUNodeDown", "severity": "ticket"})


@pytest.mark.parametrize(
    ("incidents", "field"),
    [
        ({"action": "undo"}, "spec.incidents.action"),
        ({"alertSelector": ""}, "spec.incidents.alertSelector"),
        ({"alertSelector": "severity in page"}, "spec.incidents.alertSelector"),
        ({"alertSelector": 7}, "spec.incidents.alertSelector"),
        ("rollback", "spec.incidents"),
    ],
)
def test_a_spec_incidents_mistake_names_its_field(incidents: Any, field: str) -> None:
    with pytest.raises(SpecError) as raised:
        spec_of(incidents=incidents)
    assert raised.value.field_path == field


# During a canary -------------------------------------------------------------------------------


def test_a_matching_alert_during_a_canary_rolls_it_back_at_once_and_names_the_alert() -> None:
    # given a canary at 20 % and a firing alert that names it
    plan = run(spec_of(), canary(), observed(CANARY, alerts=(alert(),)))

    # then all traffic goes back to the stable version in this pass, never a split summing to zero
    assert plan.traffic == TrafficSplit.all_to("v1")
    assert sum(plan.traffic.weights.values()) == 100
    assert plan.status.phase == Phase.ROLLED_BACK

    # and the status, the condition, the history and the Event name the alert
    incident = plan.status.incident
    assert incident is not None
    assert (incident.alertname, incident.fingerprint, incident.starts_at) == (
        "ModelErrorRate",
        "f5c05c93fab5ba48",
        "2026-11-30T09:57:00.000Z",
    )
    assert dict(incident.labels) == LABELS and incident.response == IncidentResponse.ROLLED_BACK
    assert incident.summary == "iris v2 answers 5xx"
    assert reasons(plan) == ["IncidentRollback"]
    assert plan.events[0].type.value == "Warning"
    assert 'alert ModelErrorRate {alertname="ModelErrorRate", model="iris"' in plan.events[0].message
    assert "firing since 2026-11-30T09:57:00.000Z" in plan.events[0].message
    assert plan.events[0].message.endswith("all traffic returned to v1")
    state = condition(plan)
    assert state is not None and state[:2] == ("True", "IncidentRollback")
    assert plan.status.history[-1].reason == "IncidentRollback"
    assert plan.status.history[-1].phase == "RolledBack"
    assert "ModelErrorRate" in plan.status.message


def test_a_rollback_for_an_alert_is_urgent_until_the_route_shows_it() -> None:
    # given the rolled back status, stored before the route write landed
    plan = run(spec_of(), canary(), observed(CANARY, alerts=(alert(),)))

    # then the watch event of that status is queued in the urgent lane
    assert is_urgent({"metadata": {}, "status": plan.status.to_json()})


def test_a_paused_canary_is_rolled_back_too() -> None:
    plan = run(spec_of(), canary(phase=Phase.PAUSED, paused_by_user=True), observed(CANARY, alerts=(alert(),)))
    assert plan.status.phase == Phase.ROLLED_BACK and plan.traffic == TrafficSplit.all_to("v1")


def test_alertmanager_repeating_the_alert_after_the_rollback_changes_nothing() -> None:
    # given the rollout rolled back for the alert and the route showing it
    first = run(spec_of(), canary(), observed(CANARY, alerts=(alert(),)))
    stored = replace(first.status, route_weights={"v1": 100, "v2": 0})

    # when the same alert arrives again, a minute later, and again
    again = run(spec_of(), stored, observed({"v1": 100, "v2": 0}, at=60, alerts=(alert(),)))
    more = run(spec_of(), again.status, observed({"v1": 100, "v2": 0}, at=120, alerts=(alert(),)))

    # then nothing moves, no Event, and the status stays as it is
    assert again.traffic == more.traffic == TrafficSplit.all_to("v1")
    assert again.events == more.events == ()
    assert more.status == again.status
    assert again.status.incident == first.status.incident


def test_with_action_pause_the_canary_holds_its_weight_while_the_alert_fires_then_goes_on() -> None:
    spec = spec_of(incidents={"action": "pause"})

    # when a matching alert fires during the 10 minute pause at 20 %
    held = run(spec, canary(), observed(CANARY, alerts=(alert(),)))

    # then it holds 20 % (no flap), Paused, naming the alert
    assert held.traffic == TrafficSplit.canary(stable="v1", candidate="v2", candidate_weight=20)
    assert held.status.phase == Phase.PAUSED
    assert "ModelErrorRate" in held.status.message and "held at step 1" in held.status.message
    assert reasons(held) == ["IncidentPause"]
    assert held.status.incident is not None and held.status.incident.holding
    assert held.requeue_after is not None and held.requeue_after <= 30

    # when its timer would have run out, it still holds, with no new Event (Alertmanager repeats)
    later = run(spec, held.status, observed(CANARY, at=900, alerts=(alert(),)))
    assert later.traffic == held.traffic and later.status.current_step_index == 1
    assert later.events == () and later.status.phase == Phase.PAUSED

    # when the alert resolves, the step starts over (its whole time watched) and the rollout goes on
    resumed = run(spec, later.status, observed(CANARY, at=960))
    assert reasons(resumed) == ["IncidentResolved"]
    assert resumed.status.phase == Phase.PROGRESSING and resumed.status.current_step_index == 1
    assert resumed.status.step_started_at == format_time(T0 + timedelta(seconds=960))
    assert resumed.status.incident is not None and not resumed.status.incident.holding
    state = condition(resumed)
    assert state is not None and state[:2] == ("False", "AlertResolved")


def test_an_alert_that_fires_again_during_a_pause_never_takes_weight_back() -> None:
    # given a canary that reached 60 % (step 3, after the pause)
    spec = spec_of(incidents={"action": "pause"})
    at_60 = status_at(Phase.PROGRESSING, step=3, weight=60)
    shown = {"v1": 40, "v2": 60}

    # when an alert fires, resolves and fires again
    splits = []
    status = at_60
    for at, alerts in ((0, (alert(),)), (30, ()), (60, (alert(starts_at=T0 + timedelta(seconds=50)),))):
        plan = run(spec, status, observed(shown, at=at, alerts=alerts))
        assert plan.traffic is not None
        splits.append(plan.traffic.weights["v2"])
        status = plan.status

    # then the candidate never had less than what the route showed
    assert min(splits) == 60


def test_with_action_ignore_the_alert_is_recorded_once_and_the_canary_goes_on() -> None:
    spec = spec_of(incidents={"action": "ignore"})

    # when a matching alert fires at the end of the pause
    plan = run(spec, canary(), observed(CANARY, at=600, alerts=(alert(),)))

    # then the rollout moves on as without it, and the alert is recorded with a Normal Event
    assert plan.traffic == TrafficSplit.canary(stable="v1", candidate="v2", candidate_weight=60)
    assert plan.status.incident is not None and plan.status.incident.response == IncidentResponse.IGNORED
    assert "IncidentIgnored" in reasons(plan)
    assert next(e for e in plan.events if e.reason == "IncidentIgnored").type.value == "Normal"

    # and the same alert again is no news
    again = run(spec, plan.status, observed({"v1": 40, "v2": 60}, at=610, alerts=(alert(),)))
    assert "IncidentIgnored" not in reasons(again)


def test_an_alert_that_does_not_reach_the_decision_changes_nothing() -> None:
    # given no matching alert (the reconciler passes only those that name the rollout)
    plan = run(spec_of(), canary(), observed(CANARY, at=60))
    assert plan.traffic == TrafficSplit.canary(stable="v1", candidate="v2", candidate_weight=20)
    assert plan.status.incident is None and condition(plan) is None


def test_an_alert_never_promotes_a_canary_at_its_last_step() -> None:
    # given a canary at its last step, ready to promote, with action pause
    spec = spec_of(incidents={"action": "pause"}, steps=[{"setWeight": 50}])
    last = status_at(Phase.PROGRESSING, step=1, weight=50)

    # when an alert fires, then it is not promoted
    plan = run(spec, last, observed({"v1": 50, "v2": 50}, alerts=(alert(),)))
    assert plan.status.phase == Phase.PAUSED
    assert plan.traffic == TrafficSplit.canary(stable="v1", candidate="v2", candidate_weight=50)


# Before any traffic: the freeze ----------------------------------------------------------------


def test_a_new_rollout_is_frozen_while_an_alert_fires_then_starts_once_it_resolves() -> None:
    spec = spec_of()

    # given a new candidate applied while an alert names the model
    started = run(spec, ModelRolloutStatus(), observed({"v1": 100, "v2": 0}, alerts=(alert(),)))
    frozen = run(spec, started.status, observed({"v1": 100, "v2": 0}, at=1, alerts=(alert(),)))

    # then it stays Pending with all traffic on v1, the message and an Event naming the alert
    assert frozen.status.phase == Phase.PENDING
    assert frozen.traffic == TrafficSplit.all_to("v1")
    assert frozen.status.message.startswith("frozen: alert ModelErrorRate")
    assert reasons(frozen) == ["IncidentFreeze"]
    assert frozen.status.incident is not None and frozen.status.incident.response == IncidentResponse.FROZEN

    # and an hour later (past the progress deadline) it is still frozen, not failed, with no new Event
    still = run(spec, frozen.status, observed({"v1": 100, "v2": 0}, at=3600, alerts=(alert(),)))
    assert still.status.phase == Phase.PENDING and still.events == ()
    assert still.traffic == TrafficSplit.all_to("v1")

    # when the alert resolves, the rollout starts shifting traffic, its deadline counted from now
    thawed = run(spec, still.status, observed({"v1": 100, "v2": 0}, at=3700))
    assert reasons(thawed)[0] == "IncidentResolved"
    assert thawed.status.phase == Phase.PROGRESSING
    assert thawed.traffic == TrafficSplit.canary(stable="v1", candidate="v2", candidate_weight=20)
    assert thawed.status.progress_at == format_time(T0 + timedelta(seconds=3700))


def test_every_action_but_ignore_freezes_a_rollout_before_traffic() -> None:
    for action in ("rollback", "pause"):
        plan = run(spec_of(incidents={"action": action}), pending(), observed({"v1": 100, "v2": 0}, alerts=(alert(),)))
        assert plan.status.phase == Phase.PENDING and plan.status.message.startswith("frozen")
    ignored = run(spec_of(incidents={"action": "ignore"}), pending(), observed({"v1": 100, "v2": 0}, alerts=(alert(),)))
    assert ignored.status.phase == Phase.PROGRESSING


def test_after_a_restart_a_freeze_holds_until_alertmanager_had_time_to_send_the_alert_again() -> None:
    spec = spec_of()
    # given a rollout frozen by an alert, and a controller that restarted since (its registry empty)
    frozen = run(spec, pending(), observed({"v1": 100, "v2": 0}, alerts=(alert(),))).status
    since, complete = T0 + timedelta(minutes=5), T0 + timedelta(hours=4, minutes=6)

    # when it looks again without hearing the alert, then it stays frozen, and looks again when it can tell
    held = run(spec, frozen, observed({"v1": 100, "v2": 0}, at=600, alerts_since=since, alerts_complete_at=complete))
    assert held.status.phase == Phase.PENDING and held.traffic == TrafficSplit.all_to("v1")
    assert held.status.message.startswith("frozen: alert ModelErrorRate")
    assert held.requeue_after is not None and held.requeue_after <= 30

    # when repeat_interval passed without the alert, the freeze ends
    later = run(
        spec,
        held.status,
        observed({"v1": 100, "v2": 0}, at=4 * 3600 + 400, alerts_since=since, alerts_complete_at=complete),
    )
    assert "IncidentResolved" in reasons(later) and later.status.phase == Phase.PROGRESSING


def test_after_a_restart_a_freeze_ends_once_the_alert_is_heard_resolved() -> None:
    spec = spec_of()
    frozen = run(spec, pending(), observed({"v1": 100, "v2": 0}, alerts=(alert(),))).status
    since, complete = T0 + timedelta(minutes=5), T0 + timedelta(hours=4, minutes=10)

    # when the restarted controller hears the alert resolved (Alertmanager's resolved notification)
    thawed = run(
        spec,
        frozen,
        observed(
            {"v1": 100, "v2": 0}, at=600, alerts_since=since, alerts_complete_at=complete, held_alert_resolved=True
        ),
    )

    # then the freeze ends at once
    assert "IncidentResolved" in reasons(thawed) and thawed.status.phase == Phase.PROGRESSING


def test_an_abort_while_frozen_ends_the_hold() -> None:
    spec = spec_of()
    frozen = run(spec, pending(), observed({"v1": 100, "v2": 0}, alerts=(alert(),))).status
    aborted = run(spec, frozen, observed({"v1": 100, "v2": 0}, at=5, alerts=(alert(),), action="abort"))
    assert aborted.status.phase == Phase.ABORTED
    assert aborted.status.incident is not None and not aborted.status.incident.holding


# After the promotion ---------------------------------------------------------------------------


def test_an_alert_after_the_promotion_is_recorded_and_nothing_is_undone() -> None:
    # given v2 promoted (the spec's candidate is the stable version)
    spec = parse_spec({**_raw_promoted(), "candidate": "v2"})
    promoted = status_at(Phase.PROMOTED, step=3, weight=100, stable_version="v2")
    promoted = replace(promoted, route_weights={"v1": 0, "v2": 100})

    # when a matching alert fires
    plan = run(spec, promoted, observed({"v1": 0, "v2": 100}, alerts=(alert(),)))

    # then traffic stays on v2, and status and a Warning Event record the alert
    assert plan.traffic == TrafficSplit.all_to("v2")
    assert plan.status.phase == Phase.PROMOTED
    assert reasons(plan) == ["IncidentAfterPromotion"]
    assert "nothing undone" in plan.events[0].message
    assert plan.status.incident is not None and plan.status.incident.response == IncidentResponse.RECORDED
    again = run(spec, plan.status, observed({"v1": 0, "v2": 100}, at=60, alerts=(alert(),)))
    assert again.events == ()


def _raw_promoted() -> dict[str, Any]:
    return {
        "model": "iris",
        "versions": [{"version": v, "backend": {"service": f"iris-{v}", "port": 80}} for v in ("v1", "v2")],
        "baseline": "v1",
        "trafficRouting": {"gatewayAPI": {"httpRoute": "iris"}},
        "steps": [{"setWeight": 20}],
    }


# The notification ------------------------------------------------------------------------------


def test_the_incident_rollback_notification_names_the_alert() -> None:
    # given the Event and status of a rollback for an alert
    plan = run(spec_of(), canary(), observed(CANARY, alerts=(alert(),)))
    event = plan.events[0]
    recorded = RecordedEvent(name="iris.0123", type="Warning", reason=event.reason, message=event.message,
                             time=format_time(T0))  # fmt: skip
    rollout = {"metadata": {"namespace": "ml", "name": "iris", "uid": "u"}, "spec": {"model": "iris"}}

    # when its notification is made
    notification = notification_for(rollout=rollout, event=recorded, before=canary(), after=plan.status)

    # then it is an IncidentRollback whose cause is the alert, with its labels and start
    assert notification is not None and notification.kind == Kind.INCIDENT_ROLLBACK
    assert notification.candidate_weight == 20 or notification.candidate_weight == 0
    cause = notification.cause
    assert isinstance(cause, AlertCause)
    assert cause.name == "ModelErrorRate" and dict(cause.labels) == LABELS
    assert cause.starts_at == STARTED and cause.summary == "iris v2 answers 5xx"


def test_the_incident_record_survives_the_status_round_trip() -> None:
    record = IncidentRecord(
        alertname="X", labels={"a": "b"}, starts_at="2026-11-30T09:57:00Z", fingerprint="f",
        response=IncidentResponse.PAUSED, time="2026-11-30T10:00:00Z", holding=True,
    )  # fmt: skip
    status = replace(canary(), incident=record)
    assert ModelRolloutStatus.from_json(status.to_json()) == status


# Properties ------------------------------------------------------------------------------------

records = st.none() | st.builds(
    IncidentRecord,
    alertname=st.just(ALERT),
    labels=st.just(LABELS),
    starts_at=st.sampled_from([format_time(STARTED), "not a time"]),
    fingerprint=st.sampled_from(["f5c05c93fab5ba48", "other"]),
    response=st.sampled_from(IncidentResponse),
    time=st.sampled_from([format_time(T0 - timedelta(hours=2)), format_time(T0), ""]),
    holding=st.booleans(),
)


@PROPERTIES
@given(data=st.data())
def test_with_alerts_any_stored_status_gives_a_whole_planned_split_and_no_new_promotion(data: st.DataObject) -> None:
    # given any spec, with any incidents policy, and any stored status with any incident record
    spec = data.draw(specs(), label="spec")
    policy = data.draw(st.sampled_from([None, "rollback", "pause", "ignore"]), label="action")
    if policy is not None:
        spec = replace(spec, incidents=replace(spec.incidents, action=IncidentAction(policy)))
    status = replace(data.draw(stored_statuses(spec), label="status"), incident=data.draw(records, label="record"))
    stable = status.stable_version or spec.baseline
    firing = data.draw(st.lists(st.sampled_from([alert(), alert(fingerprint="b" * 16)]), max_size=2), label="alerts")
    since = T0 + timedelta(seconds=data.draw(st.sampled_from([-7200, -60, 60]), label="since"))
    observed = Observed(
        now=T0 + timedelta(seconds=data.draw(st.sampled_from([0, 30, 3600, 86400]), label="now")),
        generation=data.draw(st.sampled_from([status.observed_generation, status.observed_generation + 1])),
        deleting=data.draw(st.integers(0, 9), label="deleting") == 0,
        action=data.draw(actions, label="action"),
        route_weights=data.draw(route_weights(spec, stable), label="route"),
        gates=data.draw(st.none() | outcomes, label="gates"),
        analysis=data.draw(st.none() | outcomes, label="analysis"),
        alerts=tuple(firing),
        alerts_since=data.draw(st.sampled_from([None, since]), label="alerts_since"),
        alerts_complete_at=since + timedelta(hours=4),
    )

    # when the controller decides
    plan = decide(spec=spec, spec_error=None, status=status, observed=observed)

    # then the split is whole and planned, the status one the schema takes
    check_traffic(spec, plan)
    check_status(plan)
    # and an alert that acts never lets a canary be promoted
    acts = bool(firing) and spec.incidents.action != IncidentAction.IGNORE
    newly_promoted = plan.status.phase == Phase.PROMOTED and status.phase != Phase.PROMOTED
    if acts and newly_promoted:
        assert spec.candidate == stable or observed.deleting, "a firing alert let a canary be promoted"
    # and a canary a firing alert names, under the rollback policy, asks all traffic for the stable version
    canary_phase = status.phase in (Phase.PROGRESSING, Phase.PAUSED)
    same_rollout = status.candidate_hash == spec.candidate_hash() and status.observed_generation == observed.generation
    rolls_back = acts and spec.incidents.action == IncidentAction.ROLLBACK and canary_phase and same_rollout
    if rolls_back and not observed.deleting and spec.candidate != stable and plan.traffic is not None:
        assert plan.traffic.weights.get(spec.candidate, 0) == 0, "a canary named by an alert kept traffic"
