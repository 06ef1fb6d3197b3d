"""Notifications end to end: the real controller process tells loopback receivers what happened.

The controller's own sinks come from `--notifications-config` (a file, as the chart mounts it from
a Secret); a rollout's own from spec.notifications, the URL in a real Secret read with
`--read-secrets`. The receivers are HTTP servers on 127.0.0.1 started by the tests, as are the
sinks that are down: a closed port, and one that takes connections and never answers.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, cast

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from localenv.controller import RunningController, start_controller
from localenv.controlplane import ControlPlane, free_local_port
from localenv.prometheus import Behaviour, LocalPrometheus, MetricsPlayer, ModelMetricsExporter
from tests.integration.rollout_world import JSON, World, rollout_manifest, wait_for
from tests.integration.test_chart import controller_container, helm, of_kind, render, rules_granting

__all__ = ["helm"]  # the chart tests' fixture (a built helm binary), requested below

pytestmark = pytest.mark.integration

WINDOW = "10s"
PAUSED_THEN_PROMOTED: list[JSON] = [{"setWeight": 20}, {"pause": {}}, {"setWeight": 60}]
"""A pause step without a duration: the rollout waits for a person, who is told so."""


class Receiver:
    """A loopback HTTP server keeping the JSON body of every POST, by path, answering 200."""

    def __init__(self) -> None:
        self._bodies: list[tuple[str, JSON]] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with receiver._lock:
                    receiver._bodies.append((self.path, body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}{path}"

    def bodies(self, path: str) -> list[JSON]:
        with self._lock:
            return [body for at, body in self._bodies if at == path]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


@pytest.fixture
def hung_port() -> Iterator[int]:
    """A port that takes connections (the kernel's backlog) and never answers a request."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        yield int(listener.getsockname()[1])


def controller_with_sinks(
    control_plane: ControlPlane, namespace: str, tmp_path: Path, sinks: list[JSON], *extra: str
) -> RunningController:
    """The real controller process, with `sinks` in its --notifications-config and Secret reads on."""
    config = tmp_path / "sinks.yaml"
    config.write_text(yaml.safe_dump({"sinks": sinks}))
    return start_controller(
        kubeconfig=control_plane.kubeconfig,
        namespace=namespace,
        log_file=tmp_path / "controller.log",
        extra_args=["--notifications-config", str(config), "--read-secrets", *extra],
    )


@pytest.fixture
def stopped_at_end() -> Iterator[list[RunningController]]:
    running: list[RunningController] = []
    yield running
    for controller in running:
        controller.stop()
        print(controller.log()[-5000:])


def kinds(bodies: list[JSON]) -> list[str]:
    return [body["kind"] for body in bodies]


def notifications_counted(controller: RunningController) -> dict[tuple[str, str], float]:
    return {
        (sample.labels["sink"], sample.labels["result"]): sample.value
        for family in text_string_to_metric_families(controller.metrics())
        if family.name == "model_rollouts_notifications"
        for sample in family.samples
        if sample.name == "model_rollouts_notifications_total"
    }


def test_a_paused_then_promoted_rollout_is_notified_once_per_transition_to_every_sink(
    world: World,
    control_plane: ControlPlane,
    namespace: str,
    tmp_path: Path,
    receiver: Receiver,
    stopped_at_end: list[RunningController],
) -> None:
    # Given a controller whose own sink is a loopback receiver, and a rollout with a sink of its own,
    # its URL in a Secret
    controller = controller_with_sinks(
        control_plane, namespace, tmp_path, [{"name": "team", "type": "webhook", "url": receiver.url("/team")}]
    )
    stopped_at_end.append(controller)
    world.kubectl("create", "secret", "generic", "oncall", f"--from-literal=url={receiver.url('/oncall')}")
    own_sink = {"type": "webhook", "urlFrom": {"secretKeyRef": {"name": "oncall", "key": "url"}}}

    # When the rollout reaches its pause step, a person resumes it, and it is promoted
    world.apply(rollout_manifest(steps=PAUSED_THEN_PROMOTED, notifications=[own_sink]))
    world.wait_for_phase("Paused", timeout=30)
    wait_for(lambda: receiver.bodies("/oncall") or None, what="the PausedForPerson notification", timeout=10)
    resumed_at = time.monotonic()
    world.action("resume")
    world.wait_for_phase("Promoted", timeout=30)
    print(f"resume to Promoted with the sinks up: {time.monotonic() - resumed_at:.2f}s")
    wait_for(lambda: len(receiver.bodies("/oncall")) >= 2, what="the Promoted notification", timeout=10)
    time.sleep(2)  # a second notification of either transition would have arrived by now

    # Then each sink got exactly one notification per transition, in order, and nothing else
    for path in ("/team", "/oncall"):
        assert kinds(receiver.bodies(path)) == ["PausedForPerson", "Promoted"], path
    paused, promoted = receiver.bodies("/oncall")
    assert paused["message"] == "step 1: paused until resumed"
    assert paused["candidateWeight"] == 20
    assert promoted["rollout"] == "iris" and promoted["namespace"] == namespace
    assert promoted["versions"] == {"baseline": "v1", "candidate": "v2"}
    assert promoted["candidateWeight"] == 100 and promoted["cause"] is None
    # and a notification's id is the name of the Event of its transition, the same for every sink
    events = {event["metadata"]["name"]: event["reason"] for event in world.events()}
    assert events[promoted["id"]] == "Promoted" and events[paused["id"]] == "Paused"
    assert [body["id"] for body in receiver.bodies("/team")] == [paused["id"], promoted["id"]]
    # and the deliveries are counted by sink
    counted = notifications_counted(controller)
    assert counted[("team", "sent")] == 2 and counted[("rollout", "sent")] == 2
    assert not any(event["reason"].startswith("Notification") for event in world.events())


def test_a_controller_that_restarts_right_after_a_transition_notifies_it_again_under_the_same_id(
    world: World,
    control_plane: ControlPlane,
    namespace: str,
    tmp_path: Path,
    receiver: Receiver,
    stopped_at_end: list[RunningController],
) -> None:
    # Given a rollout promoted and notified by a controller
    sinks = [{"name": "team", "type": "webhook", "url": receiver.url("/team")}]
    first = controller_with_sinks(control_plane, namespace, tmp_path, sinks)
    stopped_at_end.append(first)
    world.apply(rollout_manifest())
    world.wait_for_phase("Promoted", timeout=30)
    (promoted,) = wait_for(lambda: receiver.bodies("/team") or None, what="the Promoted notification", timeout=10)

    # When that controller is killed and a new one starts within the replay window (5 minutes)
    first.kill()
    stopped_at_end.append(controller_with_sinks(control_plane, namespace, tmp_path, sinks))

    # Then the new one, which cannot know whether the first delivered it, sends it again: at least
    # once, under the same id, so that a receiver can drop the repeat
    bodies = cast(
        list[dict[str, Any]],
        wait_for(lambda: (b := receiver.bodies("/team")) and len(b) >= 2 and b, what="a repeat", timeout=20),
    )
    time.sleep(1)
    assert [body["id"] for body in receiver.bodies("/team")] == [promoted["id"]] * 2
    assert bodies[1] == promoted


def test_a_sink_whose_secret_is_missing_is_a_warning_and_the_rollout_goes_on(
    world: World,
    control_plane: ControlPlane,
    namespace: str,
    tmp_path: Path,
    receiver: Receiver,
    stopped_at_end: list[RunningController],
) -> None:
    # Given a rollout whose own sink names a Secret that does not exist
    controller = controller_with_sinks(
        control_plane, namespace, tmp_path, [{"name": "team", "type": "webhook", "url": receiver.url("/team")}]
    )
    stopped_at_end.append(controller)
    missing = {"type": "slack", "urlFrom": {"secretKeyRef": {"name": "iris-oncall", "key": "url"}}}

    # When it is applied
    world.apply(rollout_manifest(notifications=[missing]))

    # Then it is promoted as usual, and the controller's own sink is told
    world.wait_for_phase("Promoted", timeout=30)
    wait_for(lambda: receiver.bodies("/team") or None, what="the Promoted notification", timeout=10)
    # and a Warning names the field and the Secret when the rollout starts, and again for the
    # notification the sink missed
    warnings = wait_for(
        lambda: (
            (found := [e for e in world.events() if e["reason"] == "NotificationSinkMissing"])
            and len(found) >= 2
            and found
        ),
        what="two NotificationSinkMissing Events",
        timeout=10,
    )
    warnings = cast(list[dict[str, Any]], warnings)
    expected = f"spec.notifications[0].urlFrom.secretKeyRef: Secret {namespace}/iris-oncall does not exist"
    assert all(e["type"] == "Warning" and e["message"].startswith(expected) for e in warnings)
    assert sorted(e["message"].rsplit("; ", 1)[1] for e in warnings) == [
        "the Promoted notification was not sent to it",
        "this rollout's notifications will not reach it until that is fixed",
    ]
    assert notifications_counted(controller)[("rollout", "missing")] == 2


@pytest.fixture
def player(exporter: ModelMetricsExporter, namespace: str) -> Iterator[MetricsPlayer]:
    playing = MetricsPlayer(exporter, model=f"iris-{namespace}")
    yield playing
    playing.stop()


def test_a_rolled_back_rollout_is_notified_with_the_failing_metric_and_both_values(
    world: World,
    control_plane: ControlPlane,
    namespace: str,
    tmp_path: Path,
    receiver: Receiver,
    prometheus: LocalPrometheus,
    player: MetricsPlayer,
    stopped_at_end: list[RunningController],
) -> None:
    # Given v2 failing a fifth of its requests in Prometheus, and a controller telling a Slack-like
    # receiver about rollbacks only
    player.start(candidate=Behaviour(error_rate=0.2))
    player.wait_until_seen(prometheus, window=WINDOW)
    sinks = [{"name": "oncall", "type": "webhook", "url": receiver.url("/oncall"), "kinds": ["RolledBack"]}]
    controller = controller_with_sinks(
        control_plane, namespace, tmp_path, sinks, "--prometheus-address", prometheus.url
    )
    stopped_at_end.append(controller)

    # When a rollout analyses the error rate at 50 %
    errors = {"name": "errors", "preset": "error-rate", "window": WINDOW}
    world.apply(
        rollout_manifest(
            model=player.model,
            steps=[{"setWeight": 50}, {"analyze": {"duration": "5m"}}, {"setWeight": 100}],
            analysis={"interval": "2s", "metrics": [errors]},
        )
    )
    status = world.wait_for_phase("RolledBack", timeout=40)
    wait_for(lambda: receiver.bodies("/oncall") or None, what="the RolledBack notification", timeout=10)
    time.sleep(1)

    # Then one RolledBack notification names the metric and the values status.analysis recorded
    (body,) = receiver.bodies("/oncall")
    failed = [m for m in status["analysis"]["measurements"] if m["verdict"] == "Failed"][-1]
    assert (body["kind"], body["reason"], body["candidateWeight"]) == ("RolledBack", "AnalysisFailed", 0)
    assert body["cause"]["type"] == "metric" and body["cause"]["metric"] == "errors"
    assert body["cause"]["candidate"] == failed["candidateValue"] and 0.01 < body["cause"]["candidate"] <= 0.2
    assert body["cause"]["baseline"] == failed["baselineValue"] == 0
    assert body["cause"]["detail"] == failed["reason"]
    assert body["message"].startswith("errors failed 1 time(s)") and body["message"].endswith("returned to v1")


def test_a_sink_that_is_down_does_not_slow_the_rollout_and_shows_as_a_warning_event(
    world: World,
    control_plane: ControlPlane,
    namespace: str,
    tmp_path: Path,
    hung_port: int,
    stopped_at_end: list[RunningController],
) -> None:
    # Given a controller whose sinks are a closed port and a server that never answers
    sinks = [
        {"name": "closed", "type": "slack", "url": f"http://127.0.0.1:{free_local_port()}/hook"},
        {"name": "hung", "type": "webhook", "url": f"http://127.0.0.1:{hung_port}/hook"},
    ]
    controller = controller_with_sinks(control_plane, namespace, tmp_path, sinks)
    stopped_at_end.append(controller)

    # When a rollout pauses for a person (a notification both sinks fail to take) and is resumed
    world.apply(rollout_manifest(steps=PAUSED_THEN_PROMOTED))
    world.wait_for_phase("Paused", timeout=30)
    resumed_at = time.monotonic()
    world.action("resume")
    world.wait_for_phase("Promoted", timeout=30)
    resume_to_promoted = time.monotonic() - resumed_at
    print(f"resume to Promoted with both sinks down: {resume_to_promoted:.2f}s")

    # Then the rollout went on at once: the hung sink alone holds a delivery 5 s per attempt, for up to a minute
    assert resume_to_promoted < 4, resume_to_promoted
    # and the closed port, retried with backoff and given up, is a NotificationFailed Warning naming
    # the sink and its host, never the URL
    failed = wait_for(
        lambda: (
            [e for e in world.events() if e["reason"] == "NotificationFailed" and "sink closed" in e["message"]] or None
        ),
        what="a NotificationFailed Event for the closed sink",
        timeout=30,
    )
    assert failed[0]["type"] == "Warning"
    assert failed[0]["message"].startswith("sink closed (127.0.0.1): gave up after ")
    assert failed[0]["message"].endswith("the PausedForPerson notification was not delivered")
    assert "/hook" not in failed[0]["message"]
    assert notifications_counted(controller)[("closed", "failed")] >= 1


def test_the_chart_mounts_the_controllers_sinks_from_a_secret_without_granting_secret_reads(
    helm: Path, tmp_path: Path
) -> None:
    # given the chart with notifications.secretName, and with its defaults
    documents = render(helm, {"notifications": {"secretName": "rollout-sinks"}}, tmp_path=tmp_path)
    defaults = render(helm, {}, tmp_path=tmp_path)

    # then the controller reads the Secret's key from a read-only mount, which needs no RBAC on Secrets
    container = controller_container(documents)
    assert "--notifications-config=/etc/model-rollouts/notifications/sinks.yaml" in container["args"]
    assert {"name": "notifications", "mountPath": "/etc/model-rollouts/notifications", "readOnly": True} in container[
        "volumeMounts"
    ]
    (deployment,) = of_kind(documents, "Deployment")
    volume = next(v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == "notifications")
    assert volume["secret"] == {"secretName": "rollout-sinks", "items": [{"key": "sinks.yaml", "path": "sinks.yaml"}]}
    assert rules_granting(documents, "secrets") == []
    # and by default there is no flag and no mount
    assert not any(arg.startswith("--notifications-config") for arg in controller_container(defaults)["args"])
    assert all(mount["name"] != "notifications" for mount in controller_container(defaults)["volumeMounts"])
