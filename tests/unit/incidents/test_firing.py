"""The registry of firing alerts: firing adds, resolved removes, ends expire, late or lost
notifications cannot keep an alert for ever, and which rollouts an alert names."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from controller.incidents.alerts import Alert, AlertStatus
from controller.incidents.firing import FiringAlerts, labels_text, matches
from controller.watch import LabelSelector

T0 = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)


def alert(
    fingerprint: str = "f1",
    *,
    status: AlertStatus = AlertStatus.FIRING,
    starts_at: datetime = T0,
    ends_at: datetime | None = None,
    **labels: str,
) -> Alert:
    return Alert(
        status=status,
        labels=labels or {"alertname": "ModelErrors", "namespace": "ml", "model": "iris"},
        starts_at=starts_at,
        ends_at=ends_at,
        fingerprint=fingerprint,
    )


def labelled(labels: dict[str, str]) -> Alert:
    return Alert(status=AlertStatus.FIRING, labels=labels, starts_at=T0, fingerprint="f1")


# Matching ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        ({"alertname": "A", "namespace": "ml", "model": "iris"}, True),
        ({"alertname": "A", "namespace": "ml", "model": "iris", "rollout": "iris-canary"}, True),
        ({"alertname": "A", "namespace": "ml", "model": "iris", "rollout": "other"}, False),
        ({"alertname": "A", "namespace": "other", "model": "iris"}, False),
        ({"alertname": "A", "namespace": "ml", "model": "wine"}, False),
        ({"alertname": "A", "model": "iris"}, False),
        ({"alertname": "A", "namespace": "ml"}, False),
    ],
)
def test_by_default_an_alert_names_a_rollout_by_namespace_model_and_maybe_rollout(
    labels: dict[str, str], expected: bool
) -> None:
    # given an alert with these labels, and the rollout ml/iris-canary of model iris
    # then it matches when namespace and model are the rollout's, and rollout too when the alert has it
    assert matches(labelled(labels), namespace="ml", model="iris", rollout="iris-canary") is expected


def test_a_rollouts_selector_replaces_the_default_rule() -> None:
    # given a rollout that selects critical alerts of team ml, whatever their model label
    selector = LabelSelector.parse("severity=critical,team in (ml,data),!silenced")

    # then exactly the alerts whose labels satisfy the selector match
    def check(**labels: str) -> bool:
        return matches(labelled(labels), namespace="ml", model="iris", rollout="r", selector=selector)

    assert check(alertname="GPUDown", severity="critical", team="ml")
    assert check(alertname="GPUDown", severity="critical", team="data", namespace="other")
    assert not check(alertname="GPUDown", severity="warning", team="ml")
    assert not check(alertname="GPUDown", severity="critical", team="ml", silenced="yes")
    # and the default labels alone no longer match
    assert not check(alertname="X", namespace="ml", model="iris")


def test_matching_returns_the_firing_alerts_of_the_rollout_earliest_first() -> None:
    # given three firing alerts, two about ml/iris
    registry = FiringAlerts(clock=lambda: T0)
    registry.apply(
        [
            alert("late", starts_at=T0 - timedelta(minutes=1), alertname="B", namespace="ml", model="iris"),
            alert("early", starts_at=T0 - timedelta(minutes=5), alertname="A", namespace="ml", model="iris"),
            alert("wine", alertname="C", namespace="ml", model="wine"),
        ]
    )

    # when asked for ml/iris
    found = registry.matching(namespace="ml", model="iris", rollout="iris")

    # then both come back, the earliest first
    assert [a.fingerprint for a in found] == ["early", "late"]
    assert registry.matching(namespace="ml", model="iris", rollout="iris", selector=LabelSelector.parse("alertname=C"))


# Firing, resolved, expired ---------------------------------------------------------------------------


def test_a_firing_alert_is_registered_once_and_a_resolved_one_removes_it() -> None:
    # given an empty registry
    registry = FiringAlerts(clock=lambda: T0)

    # when the same alert is notified twice (Alertmanager repeats it), then it is held once
    assert registry.apply([alert("f1")]).firing == 1
    registry.apply([alert("f1")])
    assert len(registry) == 1
    assert registry.get("f1") is not None

    # when it is resolved, then it is gone
    applied = registry.apply([alert("f1", status=AlertStatus.RESOLVED, ends_at=T0)])
    assert applied.resolved == 1
    assert registry.firing() == ()


def test_a_resolved_alert_never_seen_firing_changes_nothing() -> None:
    registry = FiringAlerts(clock=lambda: T0)
    registry.apply([alert("f1")])
    registry.apply([alert("other", status=AlertStatus.RESOLVED)])
    assert [a.fingerprint for a in registry.firing()] == ["f1"]


def test_an_alert_whose_end_passed_is_expired() -> None:
    # given a firing alert that ends in a minute, and one that had already ended when it arrived
    now = [T0]
    registry = FiringAlerts(clock=lambda: now[0])
    applied = registry.apply(
        [alert("soon", ends_at=T0 + timedelta(minutes=1)), alert("gone", ends_at=T0 - timedelta(seconds=1))]
    )

    # then the ended one is not registered, and the other fires until its end
    assert (applied.firing, applied.expired) == (1, 1)
    assert [a.fingerprint for a in registry.firing()] == ["soon"]
    now[0] = T0 + timedelta(minutes=1)
    assert registry.firing() == ()
    assert len(registry) == 0


def test_a_late_firing_notification_after_the_resolved_one_is_stale() -> None:
    # given an alert that fired and was resolved
    registry = FiringAlerts(clock=lambda: T0)
    registry.apply([alert("f1")])
    registry.apply([alert("f1", status=AlertStatus.RESOLVED, ends_at=T0)])

    # when a retried (or another replica's) firing notification of that same instance arrives
    applied = registry.apply([alert("f1")])

    # then it is ignored as stale
    assert applied.stale == 1
    assert registry.firing() == ()

    # but when the alert fires again later (a new instance starts later), it is registered
    assert registry.apply([alert("f1", starts_at=T0 + timedelta(minutes=3))]).firing == 1


def test_resolved_alerts_are_forgotten_after_the_memory() -> None:
    now = [T0]
    registry = FiringAlerts(clock=lambda: now[0], resolved_memory=timedelta(minutes=10))
    registry.apply([alert("f1", status=AlertStatus.RESOLVED)])
    now[0] = T0 + timedelta(minutes=11)
    # the same instance firing again, long after: taken as news, not as a stale retry
    assert registry.apply([alert("f1")]).firing == 1


def test_with_stale_after_an_alert_not_sent_again_is_dropped_but_comes_back_when_sent() -> None:
    # given a registry that drops alerts not repeated within 5 minutes (a lost resolved notification)
    now = [T0]
    registry = FiringAlerts(clock=lambda: now[0], stale_after=timedelta(minutes=5))
    registry.apply([alert("f1")])

    # when 5 minutes pass with the alert repeated, it stays; 5 more without, it is gone
    now[0] = T0 + timedelta(minutes=4)
    registry.apply([alert("f1")])
    now[0] = T0 + timedelta(minutes=8)
    assert len(registry.firing()) == 1
    now[0] = T0 + timedelta(minutes=9, seconds=1)
    assert registry.firing() == ()

    # and when Alertmanager repeats it after all, it fires again (it was not resolved)
    assert registry.apply([alert("f1")]).firing == 1


def test_a_full_registry_ignores_new_alerts_but_refreshes_and_resolves_known_ones() -> None:
    registry = FiringAlerts(clock=lambda: T0, max_alerts=2)
    registry.apply([alert("a"), alert("b")])
    applied = registry.apply([alert("c"), alert("a"), alert("b", status=AlertStatus.RESOLVED)])
    assert (applied.full, applied.firing, applied.resolved) == (1, 1, 1)
    assert [a.fingerprint for a in registry.firing()] == ["a"]


def test_the_registry_is_safe_to_write_and_read_from_many_threads() -> None:
    # given writers adding and resolving alerts while readers match
    registry = FiringAlerts(clock=lambda: T0)
    errors: list[BaseException] = []

    def write(prefix: str) -> None:
        for i in range(300):
            registry.apply([alert(f"{prefix}{i}")])
            registry.apply([alert(f"{prefix}{i}", status=AlertStatus.RESOLVED)])

    def read() -> None:
        try:
            for _ in range(300):
                registry.matching(namespace="ml", model="iris", rollout="iris")
        except BaseException as error:  # pragma: no cover - the failure being tested for
            errors.append(error)

    threads = [threading.Thread(target=write, args=(p,)) for p in "abc"] + [threading.Thread(target=read)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    # then nothing failed and every alert was resolved
    assert errors == []
    assert len(registry) == 0


def test_labels_text_reads_like_prometheus() -> None:
    assert labels_text({"model": "iris", "alertname": "X"}) == '{alertname="X", model="iris"}'
