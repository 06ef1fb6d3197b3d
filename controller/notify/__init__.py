"""Notifications to people: what happened to a rollout, sent to webhooks and Slack (issue 10).

* `notification`: `Notification`, a value: kind, rollout, versions, reason, message, cause.
* `sinks`: `WebhookSink` (the notification as JSON) and `SlackSink` (text and blocks).
* `notifier`: `Notifier`, which delivers on its own threads, retries, and reports failures.

Who sends what, and where the sinks' URLs and headers come from (Secrets), is the caller's.
See docs/incidents.md.
"""

from controller.notify.notification import AlertCause, Cause, Kind, MetricCause, Notification
from controller.notify.notifier import (
    DeliveryDropped,
    DeliveryExhausted,
    DeliveryFailed,
    DeliveryRefused,
    DeliveryRejected,
    Notifier,
    NotifierSettings,
)
from controller.notify.sinks import Sink, SlackSink, WebhookSink, slack_message

__all__ = [
    "AlertCause",
    "Cause",
    "DeliveryDropped",
    "DeliveryExhausted",
    "DeliveryFailed",
    "DeliveryRefused",
    "DeliveryRejected",
    "Kind",
    "MetricCause",
    "Notification",
    "Notifier",
    "NotifierSettings",
    "Sink",
    "SlackSink",
    "WebhookSink",
    "slack_message",
]
