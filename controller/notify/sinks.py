"""Where notifications go: a generic JSON webhook, or a Slack-compatible incoming webhook.

A sink is a value: its name, its URL and headers (both from a Secret, given by the caller), and a
pure `body(notification)`. Sending is the `Notifier`'s (`controller.notify.notifier`), through the
outbound fence. The URL and headers are secrets (a Slack webhook URL is its own credential), so
neither appears in a sink's repr, in a log line or in an error: only the sink's name and the
URL's host do.

Slack's incoming webhooks take `text` (the fallback shown in notifications) and `blocks` (the
message): https://api.slack.com/messaging/webhooks. Mattermost and Rocket.Chat take the same
`text`; Slack's size limits are respected (header 150 characters, section text 3000, fields 2000,
at most 10 fields per section).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

from controller.notify.notification import AlertCause, Kind, MetricCause, Notification

SLACK_HEADER_LIMIT = 150
SLACK_TEXT_LIMIT = 3000
SLACK_FIELD_LIMIT = 2000

_EMOJI = {
    Kind.PROMOTED: ":white_check_mark:",
    Kind.ROLLED_BACK: ":leftwards_arrow_with_hook:",
    Kind.ABORTED: ":octagonal_sign:",
    Kind.FAILED: ":x:",
    Kind.PAUSED_FOR_PERSON: ":raised_hand:",
    Kind.INCIDENT_ROLLBACK: ":rotating_light:",
    Kind.UNDO: ":rewind:",
}
_HEADLINE = {
    Kind.PROMOTED: "promoted",
    Kind.ROLLED_BACK: "rolled back",
    Kind.ABORTED: "aborted",
    Kind.FAILED: "failed",
    Kind.PAUSED_FOR_PERSON: "paused: waiting for a person",
    Kind.INCIDENT_ROLLBACK: "rolled back by an incident alert",
    Kind.UNDO: "promotion undone",
}


class Sink(Protocol):
    """What the Notifier needs of a sink."""

    @property
    def name(self) -> str:
        """Names the sink in logs, errors and on_failure (never its URL)."""
        ...

    @property
    def kind(self) -> str:
        """`webhook` or `slack`: the `sink_type` label of the notifier's metrics."""
        ...

    @property
    def url(self) -> str: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    def body(self, notification: Notification) -> dict[str, Any]:
        """The JSON body for one notification. Pure."""
        ...


def check_url(url: str) -> None:
    """Raises ValueError unless `url` is an absolute http(s) URL with a host. Names no part of it
    but the scheme, since the URL is a secret."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"a sink URL must be http:// or https:// with a host (scheme {parts.scheme!r})")


def url_host(url: str) -> str:
    """The URL's host, the only part of a sink URL fit for a log line."""
    return urlsplit(url).hostname or "?"


def _check_headers(headers: Mapping[str, str]) -> None:
    for name, value in headers.items():
        if not name or any(char in name for char in "\r\n:") or any(char in value for char in "\r\n"):
            raise ValueError(f"sink header {name!r} is not a valid header (no line breaks or colons in names)")


@dataclass(frozen=True, kw_only=True)
class _PostingSink:
    """A sink that POSTs a JSON body to a URL, with extra headers."""

    name: str
    """Names the sink in logs, errors and Events."""
    url: str = field(repr=False)
    """The receiver's URL (http or https); a secret (a Slack incoming webhook URL is one)."""
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    """Extra headers, typically `Authorization`; secrets."""

    def __post_init__(self) -> None:
        check_url(self.url)
        _check_headers(self.headers)


@dataclass(frozen=True, kw_only=True)
class WebhookSink(_PostingSink):
    """POSTs `Notification.to_json()` to a URL: for an incident tool, a bot, or a ticket system."""

    kind = "webhook"

    def body(self, notification: Notification) -> dict[str, Any]:
        return notification.to_json()


@dataclass(frozen=True, kw_only=True)
class SlackSink(_PostingSink):
    """POSTs a Slack message (`text` and `blocks`) to an incoming webhook URL
    (`https://hooks.slack.com/services/...`, or a Slack-compatible server's)."""

    kind = "slack"

    def body(self, notification: Notification) -> dict[str, Any]:
        return slack_message(notification)


SINK_TYPES: Mapping[str, type[WebhookSink] | type[SlackSink]] = {"webhook": WebhookSink, "slack": SlackSink}
"""A sink's `type` in the controller's config and in spec.notifications -> its class."""


def slack_message(notification: Notification) -> dict[str, Any]:
    """A Slack message: a fallback `text` and the `blocks` people see."""
    n = notification
    headline = f"{n.subject} {_HEADLINE[n.kind]}"
    weight = "" if n.candidate_weight is None else f" ({n.candidate_weight}% on {n.candidate})"
    text = escape(f"{headline}: model {n.model}, {n.baseline} -> {n.candidate}{weight}. {n.message}".strip())
    text = f"{_EMOJI[n.kind]} {text}"
    fields = [
        ("Rollout", n.subject),
        ("Model", n.model),
        ("Versions", f"{n.baseline} → {n.candidate}"),
    ]
    if n.candidate_weight is not None:
        fields.append(("Candidate weight", f"{n.candidate_weight}%"))
    if n.reason:
        fields.append(("Reason", n.reason))
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _cut(headline, SLACK_HEADER_LIMIT), "emoji": True}},
    ]
    if n.message:
        blocks.append({"type": "section", "text": _mrkdwn(escape(n.message), SLACK_TEXT_LIMIT)})
    blocks.append(
        {
            "type": "section",
            "fields": [_mrkdwn(f"*{label}*\n{escape(value)}", SLACK_FIELD_LIMIT) for label, value in fields],
        }
    )
    cause = _cause_text(n)
    if cause:
        blocks.append({"type": "section", "text": _mrkdwn(cause, SLACK_TEXT_LIMIT)})
    blocks.append(
        {
            "type": "context",
            "elements": [_mrkdwn(f"{_EMOJI[n.kind]} {n.kind.value} at {n.time.isoformat(timespec='seconds')}", 3000)],
        }
    )
    return {"text": _cut(text, SLACK_TEXT_LIMIT), "blocks": blocks}


def escape(text: str) -> str:
    """Slack's mrkdwn escaping: only &, < and > have to be replaced."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cause_text(n: Notification) -> str:
    cause = n.cause
    if isinstance(cause, MetricCause):
        values = [f"candidate {_number(cause.candidate)}"]
        if cause.baseline is not None:
            values.append(f"baseline {_number(cause.baseline)}")
        if cause.limit is not None:
            values.append(f"limit {_number(cause.limit)}")
        detail = f"\n{escape(cause.detail)}" if cause.detail else ""
        return f"*Cause*: metric `{escape(cause.metric)}`: {', '.join(values)}{detail}"
    if isinstance(cause, AlertCause):
        labels = ", ".join(f'{key}="{value}"' for key, value in sorted(cause.labels.items()))
        since = cause.starts_at.isoformat(timespec="seconds")
        name = escape(cause.name or "alert")
        link = f" (<{escape(cause.generator_url)}|source>)" if cause.generator_url else ""
        summary = f"\n{escape(cause.summary)}" if cause.summary else ""
        return f"*Cause*: alert *{name}* firing since {since}{link}\n`{{{escape(labels)}}}`{summary}"
    return ""


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def _mrkdwn(text: str, limit: int) -> dict[str, str]:
    return {"type": "mrkdwn", "text": _cut(text, limit)}


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
