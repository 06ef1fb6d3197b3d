"""Parsing Alertmanager's webhook payload (version 4): what is read, and what is refused, by field."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from controller.incidents.alerts import AlertStatus, InvalidPayload, label_fingerprint, parse_time, parse_webhook


def payload(**overrides: Any) -> dict[str, Any]:
    """A notification as Alertmanager 0.25 sends it: one firing alert."""
    body: dict[str, Any] = {
        "receiver": "controller",
        "status": "firing",
        "alerts": [
            {
                "status": "firing",
                "labels": {"alertname": "ModelErrors", "namespace": "ml", "model": "iris"},
                "annotations": {"summary": "error rate above 5 %"},
                "startsAt": "2026-11-30T09:52:26.739266876+02:00",
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "http://prometheus:9090/graph?g0.expr=x",
                "fingerprint": "1a30ba71cca2921f",
            }
        ],
        "groupLabels": {"alertname": "ModelErrors"},
        "commonLabels": {"alertname": "ModelErrors", "namespace": "ml", "model": "iris"},
        "commonAnnotations": {"summary": "error rate above 5 %"},
        "externalURL": "http://alertmanager:9093",
        "version": "4",
        "groupKey": '{}:{alertname="ModelErrors"}',
        "truncatedAlerts": 0,
    }
    body.update(overrides)
    return body


def test_a_notification_as_alertmanager_sends_it_is_read_field_by_field() -> None:
    # given a notification of one firing alert
    # when it is parsed
    group = parse_webhook(payload())

    # then every field is there, typed; Go's zero endsAt reads as "no end"; nanoseconds are cut
    (alert,) = group.alerts
    assert group.status == AlertStatus.FIRING
    assert group.receiver == "controller"
    assert group.group_key == '{}:{alertname="ModelErrors"}'
    assert group.external_url == "http://alertmanager:9093"
    assert group.common_labels["model"] == "iris"
    assert alert.status == AlertStatus.FIRING
    assert alert.name == "ModelErrors"
    assert alert.labels == {"alertname": "ModelErrors", "namespace": "ml", "model": "iris"}
    assert alert.annotations == {"summary": "error rate above 5 %"}
    assert alert.starts_at == datetime(2026, 11, 30, 7, 52, 26, 739266, tzinfo=UTC)
    assert alert.ends_at is None
    assert alert.fingerprint == "1a30ba71cca2921f"
    assert alert.generator_url.startswith("http://prometheus:9090")


def test_only_what_the_controller_acts_on_is_required() -> None:
    # given the smallest payload: a version and one alert with status, labels and startsAt
    minimal = {
        "version": "4",
        "alerts": [{"status": "resolved", "labels": {"alertname": "X"}, "startsAt": "2026-11-30T10:00:00Z"}],
    }

    # when it is parsed
    group = parse_webhook(minimal)

    # then the rest has defaults: the group's status follows its alerts, the fingerprint comes from the labels
    (alert,) = group.alerts
    assert group.status == AlertStatus.RESOLVED
    assert alert.annotations == {}
    assert alert.fingerprint == label_fingerprint({"alertname": "X"})
    assert alert.fingerprint.startswith("labels-")


def test_unknown_fields_are_ignored() -> None:
    # given fields a later Alertmanager (or Grafana) adds
    body = payload(orgId=1)
    body["alerts"][0]["silenceURL"] = "http://x"

    # when it is parsed, then it is accepted
    assert len(parse_webhook(body).alerts) == 1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda b: b.pop("version"), "version: missing"),
        (lambda b: b.update(version="3"), "version: must be '4', not '3'"),
        (lambda b: b.update(version=4), "version: must be '4', not 4"),
        (lambda b: b.pop("alerts"), "alerts: missing"),
        (lambda b: b.update(alerts={}), "alerts: must be a list"),
        (lambda b: b.update(alerts=["x"]), "alerts[0]: must be a JSON object, not a string"),
        (lambda b: b.update(status="burning"), "status: must be 'firing' or 'resolved', not 'burning'"),
        (lambda b: b["alerts"][0].pop("status"), "alerts[0].status: missing"),
        (lambda b: b["alerts"][0].update(status=None), "alerts[0].status: must be 'firing' or 'resolved', not None"),
        (lambda b: b["alerts"][0].pop("labels"), "alerts[0].labels: missing"),
        (lambda b: b["alerts"][0].update(labels={}), "alerts[0].labels: must name at least one label"),
        (lambda b: b["alerts"][0].update(labels=[]), "alerts[0].labels: must be an object of strings, not a list"),
        (
            lambda b: b["alerts"][0]["labels"].update(namespace=3),
            "alerts[0].labels.namespace: must be a string, not a number",
        ),
        (lambda b: b["alerts"][0]["annotations"].update(x=None), "alerts[0].annotations.x: must be a string, not null"),
        (lambda b: b["alerts"][0].pop("startsAt"), "alerts[0].startsAt: missing"),
        (lambda b: b["alerts"][0].update(startsAt="yesterday"), "alerts[0].startsAt: 'yesterday' is not an RFC 3339"),
        (lambda b: b["alerts"][0].update(startsAt="0001-01-01T00:00:00Z"), "alerts[0].startsAt: must be a real time"),
        (lambda b: b["alerts"][0].update(endsAt=5), "alerts[0].endsAt: must be an RFC 3339 time string, not a number"),
        (lambda b: b["alerts"][0].update(endsAt="2026-02-30T00:00:00Z"), "alerts[0].endsAt: day is out of range"),
        (lambda b: b["alerts"][0].update(fingerprint=7), "alerts[0].fingerprint: must be a string, not a number"),
        (lambda b: b.update(commonLabels=None), "commonLabels: must be an object of strings, not null"),
        (lambda b: b.update(truncatedAlerts=-1), "truncatedAlerts: must be a whole number of at least 0"),
        (lambda b: b.update(externalURL=True), "externalURL: must be a string, not a boolean"),
    ],
)
def test_a_wrong_payload_is_refused_naming_the_field(change: Any, message: str) -> None:
    # given a payload with one field wrong
    body = payload()
    change(body)

    # when it is parsed, then the error names the field and what is wrong with it
    with pytest.raises(InvalidPayload) as raised:
        parse_webhook(body)
    assert str(raised.value).startswith(message)
    assert raised.value.field == message.split(":")[0]


def test_a_body_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(InvalidPayload, match="must be a JSON object, not a list"):
        parse_webhook([])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-30T10:00:00Z", datetime(2026, 11, 30, 10, tzinfo=UTC)),
        ("2026-11-30T10:00:00.5Z", datetime(2026, 11, 30, 10, 0, 0, 500000, tzinfo=UTC)),
        ("2026-11-30T10:00:00.123456789-01:30", datetime(2026, 11, 30, 11, 30, 0, 123456, tzinfo=UTC)),
    ],
)
def test_go_times_are_read_to_the_microsecond(text: str, expected: datetime) -> None:
    assert parse_time(text) == expected


def test_an_alert_with_an_end_in_the_past_has_expired() -> None:
    # given an alert whose endsAt is set (senders other than Alertmanager's webhook may set it)
    body = payload()
    body["alerts"][0]["endsAt"] = "2026-11-30T10:00:00+01:00"
    (alert,) = parse_webhook(body).alerts

    # then it expires at that time, not before
    end = datetime(2026, 11, 30, 9, tzinfo=UTC)
    assert alert.ends_at == end
    assert not alert.expired(end - timedelta(seconds=1))
    assert alert.expired(end)
    assert alert.expired(datetime(2026, 11, 30, 12, tzinfo=timezone(timedelta(hours=2))))
