"""Incident response: alerts from Alertmanager that name rollouts (issue 10).

* `alerts`: the webhook payload (version 4) as typed values, parsed purely.
* `firing`: `FiringAlerts`, the thread-safe registry of firing alerts, and the matching rule.
* `receiver`: `AlertReceiver`, the HTTP(S) server Alertmanager's webhook_config posts to.
* `feed`: `AlertFeed`, the registry as the reconcile passes read it, and since when it is complete.

How the reconcile passes act on a matching alert (roll back, pause, freeze) is not here but in
the pure decision (`controller.plan`, spec.incidents): these modules only know alerts, never
rollouts' state. See docs/incidents.md.
"""

from controller.incidents.alerts import Alert, AlertGroup, AlertStatus, InvalidPayload, parse_webhook
from controller.incidents.feed import AlertFeed
from controller.incidents.firing import FiringAlerts, matches
from controller.incidents.receiver import (
    AlertReceiver,
    BadPayload,
    PayloadTooLarge,
    ReceiverSettings,
    TLSFiles,
    Unauthorized,
    WebhookRefused,
)

__all__ = [
    "Alert",
    "AlertFeed",
    "AlertGroup",
    "AlertReceiver",
    "AlertStatus",
    "BadPayload",
    "FiringAlerts",
    "InvalidPayload",
    "PayloadTooLarge",
    "ReceiverSettings",
    "TLSFiles",
    "Unauthorized",
    "WebhookRefused",
    "matches",
    "parse_webhook",
]
