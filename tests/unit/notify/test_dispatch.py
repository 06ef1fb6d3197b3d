"""Notifications of a rollout's transitions: prepared from the stored rollout, sent to the
controller's sinks and the rollout's own (URL and headers from Secrets), a missing Secret or a
failing sink reported as a Warning Event on the rollout, and counted. Over httpx.MockTransport."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY

from controller.api import ModelRolloutStatus, Phase, RecordedEvent, format_time
from controller.notify import NotifierSettings, SlackSink, WebhookSink
from controller.notify.config import ControllerSink
from controller.notify.dispatch import Notifications, RolloutRef, Transition

NOW = datetime(2026, 11, 30, 10, 0, 5, tzinfo=UTC)
STARTED = NOW - timedelta(hours=1)
SECRET = "T0KEN-do-not-show"
PROMOTED = ModelRolloutStatus(phase=Phase.PROMOTED, stable_version="v2", candidate_version="v2", current_weight=100)


def rollout(notifications: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"model": "iris", "baseline": "v1", "candidate": "v2"}
    if notifications is not None:
        spec["notifications"] = notifications
    return {"metadata": {"namespace": "ml", "name": "iris", "uid": "u-1"}, "spec": spec}


def own_sink(*, secret: str = "oncall", kinds: list[str] | None = None, headers: str | None = None) -> dict[str, Any]:
    sink: dict[str, Any] = {"type": "webhook", "urlFrom": {"secretKeyRef": {"name": secret, "key": "url"}}}
    if kinds is not None:
        sink["kinds"] = kinds
    if headers is not None:
        sink["headersFrom"] = {"secretName": headers}
    return sink


def event(reason: str, *, at: datetime = NOW) -> RecordedEvent:
    return RecordedEvent(name=f"iris.{reason.lower()}", type="Normal", reason=reason, message="m", time=format_time(at))


class World:
    """The Secrets of namespace ml, the requests each host got, and the Events reported."""

    def __init__(self) -> None:
        self.secrets: dict[str, dict[str, str]] = {
            "oncall": {"url": f"https://oncall.example/{SECRET}"},
            "bot-headers": {"Authorization": f"Bearer {SECRET}"},
        }
        self.requests: list[httpx.Request] = []
        self.failing_hosts: set[str] = set()
        self.reported: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def read_secret(self, namespace: str, name: str) -> Mapping[str, str] | None:
        assert namespace == "ml"
        return self.secrets.get(name)

    def handle(self, request: httpx.Request) -> httpx.Response:
        with self.lock:
            self.requests.append(request)
        return httpx.Response(404 if request.url.host in self.failing_hosts else 200, text="gone")

    def report(self, *, rollout: RolloutRef, reason: str, message: str, name: str) -> None:
        with self.lock:
            self.reported.append({"rollout": rollout, "reason": reason, "message": message, "name": name})

    def hosts(self) -> list[str]:
        with self.lock:
            return sorted(str(request.url.host) for request in self.requests)


@pytest.fixture
def world() -> World:
    return World()


@pytest.fixture
def notifications(world: World) -> Iterator[Notifications]:
    controller_sinks = [
        ControllerSink(sink=SlackSink(name="chat", url=f"https://chat.example/{SECRET}")),
        ControllerSink(sink=WebhookSink(name="pager", url="https://pager.example/x"), kinds=frozenset({"Failed"})),  # type: ignore[arg-type]
    ]
    sender = Notifications(
        report=world.report,
        sinks=controller_sinks,
        read_secret=world.read_secret,
        settings=NotifierSettings(workers=1, max_attempts=1),
        transport=httpx.MockTransport(world.handle),
    )
    sender.start()
    yield sender
    sender.close()


def notified(sender: Notifications, transition: Transition | None) -> None:
    assert transition is not None
    sender.send(transition)
    assert sender.notifier.flush(timeout_seconds=5)


def counted(sink: str, result: str) -> float:
    return REGISTRY.get_sample_value("model_rollouts_notifications_total", {"sink": sink, "result": result}) or 0.0


def test_a_promotion_goes_to_every_sink_that_takes_its_kind(notifications: Notifications, world: World) -> None:
    # given a rollout with a sink of its own, besides the controller's chat (every kind) and pager (Failed)
    chat_sent, own_sent = counted("chat", "sent"), counted("rollout", "sent")
    transition = notifications.prepare(
        rollout=rollout([own_sink()]), event=event("Promoted"), before=None, after=PROMOTED, since=STARTED
    )

    # when its Promoted transition is sent
    notified(notifications, transition)

    # then chat and the rollout's own sink got it, at the URL from the Secret; the pager did not
    assert world.hosts() == ["chat.example", "oncall.example"]
    own = next(r for r in world.requests if r.url.host == "oncall.example")
    body = json.loads(own.content)
    assert (body["kind"], body["rollout"], body["id"]) == ("Promoted", "iris", "iris.promoted")
    assert world.reported == []
    assert counted("chat", "sent") == chat_sent + 1 and counted("rollout", "sent") == own_sent + 1


def test_a_sink_of_the_rollout_takes_only_its_kinds_and_its_headers_from_a_secret(
    notifications: Notifications, world: World
) -> None:
    # given two sinks of the rollout: one for rollbacks only, one for every kind with headers from a Secret
    world.secrets["bot"] = {"url": "https://bot.example/hook"}
    sinks = [own_sink(kinds=["RolledBack"]), own_sink(secret="bot", headers="bot-headers")]

    # when the rollout is promoted
    transition = notifications.prepare(
        rollout=rollout(sinks), event=event("Promoted"), before=None, after=PROMOTED, since=STARTED
    )
    notified(notifications, transition)

    # then the bot got it with its header, and the rollbacks-only sink did not
    assert world.hosts() == ["bot.example", "chat.example"]
    bot = next(r for r in world.requests if r.url.host == "bot.example")
    assert bot.headers["Authorization"] == f"Bearer {SECRET}"


def test_a_missing_secret_is_a_warning_event_naming_the_field_and_the_others_are_still_told(
    notifications: Notifications, world: World
) -> None:
    # given a rollout whose sink's Secret does not exist
    missing = counted("rollout", "missing")
    transition = notifications.prepare(
        rollout=rollout([own_sink(secret="nowhere")]), event=event("Promoted"), before=None, after=PROMOTED,
        since=STARTED,
    )  # fmt: skip

    # when it is promoted
    notified(notifications, transition)

    # then the controller's chat was told, and a NotificationSinkMissing Event names the field and the Secret
    assert world.hosts() == ["chat.example"]
    (warning,) = world.reported
    assert warning["reason"] == "NotificationSinkMissing"
    assert warning["message"].startswith(
        "spec.notifications[0].urlFrom.secretKeyRef: Secret ml/nowhere does not exist; create it or fix the name"
    )
    assert warning["message"].endswith("the Promoted notification was not sent to it")
    assert warning["rollout"] == RolloutRef(namespace="ml", name="iris", uid="u-1")
    assert counted("rollout", "missing") == missing + 1


def test_the_sinks_are_checked_when_the_rollout_starts(notifications: Notifications, world: World) -> None:
    # given a rollout whose sink's Secret lacks the key it names
    world.secrets["oncall"] = {"URL": "https://oncall.example/"}
    started = ModelRolloutStatus(phase=Phase.PROGRESSING)

    # when its RolloutStarted Event is created
    transition = notifications.prepare(
        rollout=rollout([own_sink()]), event=event("RolloutStarted"), before=None, after=started, since=STARTED,
    )  # fmt: skip
    notified(notifications, transition)

    # then nothing is sent, and the Warning says what is missing before any notification is due
    assert world.hosts() == []
    (warning,) = world.reported
    assert warning["message"] == (
        "spec.notifications[0].urlFrom.secretKeyRef: Secret ml/oncall has no key url; add it or fix "
        "spec.notifications[0].urlFrom.secretKeyRef.key; this rollout's notifications will not reach it until "
        "that is fixed"
    )


def test_a_start_without_sinks_of_its_own_asks_nothing(notifications: Notifications) -> None:
    started = ModelRolloutStatus(phase=Phase.PROGRESSING)
    assert (
        notifications.prepare(
            rollout=rollout(), event=event("RolloutStarted"), before=None, after=started, since=STARTED
        )
        is None
    )


def test_a_failing_sink_is_a_warning_event_naming_the_sink_and_never_its_url(
    notifications: Notifications, world: World
) -> None:
    # given the controller's chat answers 404 (a revoked webhook)
    world.failing_hosts.add("chat.example")
    failed = counted("chat", "failed")
    transition = notifications.prepare(
        rollout=rollout(), event=event("Promoted"), before=None, after=PROMOTED, since=STARTED
    )

    # when a promotion is sent
    notified(notifications, transition)

    # then a NotificationFailed Event names the sink, its host and the answer, not the URL's secret part
    (warning,) = world.reported
    assert warning["reason"] == "NotificationFailed"
    assert warning["message"].startswith("sink chat (chat.example): answered 404: gone")
    assert warning["message"].endswith("the Promoted notification was not delivered")
    assert SECRET not in warning["message"]
    assert counted("chat", "failed") == failed + 1
    # and the same failure of the same transition, reported again after a restart, is one Event
    notified(notifications, transition)
    assert world.reported[1]["name"] == warning["name"]


def test_events_a_predecessor_recorded_are_sent_again_only_when_recent(notifications: Notifications) -> None:
    # given a controller started at STARTED, and Events recorded by the controller before it
    def prepared(recorded_at: datetime) -> Transition | None:
        return notifications.prepare(
            rollout=rollout(), event=event("Promoted", at=recorded_at), before=None, after=PROMOTED,
            since=STARTED,
        )  # fmt: skip

    # then one a minute before the restart is sent again (its notification may have been lost), one
    # a day before is not, and one recorded by this controller is sent however late its Event is created
    assert prepared(STARTED - timedelta(minutes=1)) is not None
    assert prepared(STARTED - timedelta(days=1)) is None
    assert prepared(STARTED + timedelta(seconds=1)) is not None
