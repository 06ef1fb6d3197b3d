"""What each sink sends: the generic webhook's JSON, and a Slack message within Slack's limits."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from controller.incidents.alerts import Alert, AlertStatus
from controller.notify import AlertCause, Kind, MetricCause, Notification, SlackSink, WebhookSink
from controller.notify.sinks import SLACK_HEADER_LIMIT, SLACK_TEXT_LIMIT

AT = datetime(2026, 11, 30, 10, 0, 5, tzinfo=UTC)


def rolled_back(**changes: object) -> Notification:
    fields: dict[str, object] = {
        "kind": Kind.ROLLED_BACK,
        "namespace": "ml",
        "rollout": "iris",
        "model": "iris",
        "baseline": "v1",
        "candidate": "v2",
        "candidate_weight": 0,
        "reason": "AnalysisFailed",
        "message": "error rate of v2 above v1's",
        "cause": MetricCause(metric="error-rate", candidate=0.12, baseline=0.01, limit=0.05, detail="e-value 41 > 20"),
        "time": AT,
        "id": "iris.5f2c0a1b9d3e4f60",
    }
    fields.update(changes)
    return Notification(**fields)  # type: ignore[arg-type]


def test_the_webhook_body_is_the_notification_as_versioned_json() -> None:
    body = WebhookSink(name="ops", url="https://hooks.example/x").body(rolled_back())
    assert body == {
        "schema": "rollouts.mlops.dev/notification/v1",
        "id": "iris.5f2c0a1b9d3e4f60",
        "kind": "RolledBack",
        "namespace": "ml",
        "rollout": "iris",
        "model": "iris",
        "versions": {"baseline": "v1", "candidate": "v2"},
        "candidateWeight": 0,
        "reason": "AnalysisFailed",
        "message": "error rate of v2 above v1's",
        "cause": {
            "type": "metric",
            "metric": "error-rate",
            "candidate": 0.12,
            "baseline": 0.01,
            "limit": 0.05,
            "detail": "e-value 41 > 20",
        },
        "time": "2026-11-30T10:00:05Z",
    }


def test_an_alert_cause_carries_the_alerts_name_labels_and_start() -> None:
    alert = Alert(
        status=AlertStatus.FIRING,
        labels={"alertname": "ModelErrors", "namespace": "ml", "model": "iris"},
        annotations={"summary": "5xx above 5 %"},
        starts_at=AT,
        fingerprint="abc",
        generator_url="http://prometheus/graph",
    )
    notification = rolled_back(kind=Kind.INCIDENT_ROLLBACK, cause=AlertCause.from_alert(alert))
    cause = WebhookSink(name="ops", url="http://127.0.0.1/x").body(notification)["cause"]
    assert cause == {
        "type": "alert",
        "name": "ModelErrors",
        "labels": {"alertname": "ModelErrors", "model": "iris", "namespace": "ml"},
        "startsAt": "2026-11-30T10:00:05Z",
        "summary": "5xx above 5 %",
        "generatorURL": "http://prometheus/graph",
        "fingerprint": "abc",
    }

    # and Slack shows it, with a link to the rule
    text = str(SlackSink(name="s", url="https://hooks.slack.com/x").body(notification))
    assert "*ModelErrors*" in text and "<http://prometheus/graph|source>" in text
    assert 'alertname="ModelErrors"' in text


def test_the_slack_message_has_a_fallback_text_and_blocks() -> None:
    message = SlackSink(name="oncall", url="https://hooks.slack.com/services/T/B/X").body(rolled_back())
    assert message["text"].startswith(":leftwards_arrow_with_hook: ml/iris rolled back: model iris, v1 -&gt; v2")
    kinds = [block["type"] for block in message["blocks"]]
    assert kinds == ["header", "section", "section", "section", "context"]
    assert message["blocks"][0]["text"] == {"type": "plain_text", "text": "ml/iris rolled back", "emoji": True}
    fields = [field["text"] for field in message["blocks"][2]["fields"]]
    assert "*Versions*\nv1 → v2" in fields and "*Candidate weight*\n0%" in fields
    assert "candidate 0.12, baseline 0.01, limit 0.05" in message["blocks"][3]["text"]["text"]


def test_slack_text_is_escaped_and_cut_to_slacks_limits() -> None:
    long = rolled_back(rollout="r" * 300, message="<script> & " + "x" * 5000, cause=None)
    message = SlackSink(name="s", url="https://hooks.slack.com/x").body(long)
    assert len(message["blocks"][0]["text"]["text"]) <= SLACK_HEADER_LIMIT
    assert len(message["text"]) <= SLACK_TEXT_LIMIT
    section = message["blocks"][1]["text"]["text"]
    assert section.startswith("&lt;script&gt; &amp; ") and len(section) <= SLACK_TEXT_LIMIT
    assert "<script>" not in str(message)


@pytest.mark.parametrize("kind", list(Kind))
def test_every_kind_renders(kind: Kind) -> None:
    message = SlackSink(name="s", url="https://hooks.slack.com/x").body(rolled_back(kind=kind))
    assert message["text"] and message["blocks"]


@pytest.mark.parametrize("url", ["ftp://host/SECRET", "/SECRET", "https:///SECRET", "hooks.slack.com/SECRET"])
def test_a_sink_url_that_is_not_http_is_refused_without_quoting_it(url: str) -> None:
    with pytest.raises(ValueError) as raised:
        WebhookSink(name="s", url=url)
    assert "SECRET" not in str(raised.value)


def test_header_values_cannot_smuggle_lines() -> None:
    with pytest.raises(ValueError):
        WebhookSink(name="s", url="https://h/x", headers={"X-Token": "a\r\nX-Other: b"})


def test_url_and_headers_never_show_in_a_sinks_repr() -> None:
    sink = SlackSink(name="oncall", url="https://hooks.slack.com/services/SECRET", headers={"X": "TOKEN"})
    assert "SECRET" not in repr(sink) and "TOKEN" not in repr(sink)
    assert "oncall" in repr(sink)


def test_a_notification_time_must_carry_its_zone() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        rolled_back(time=datetime(2026, 11, 30, 10))
