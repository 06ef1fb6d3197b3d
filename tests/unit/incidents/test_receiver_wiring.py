"""The receiver as the command line configures it: off without a token file, fenced to the watched
namespace, and a mistake named by its flag before anything starts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from controller.__main__ import alert_receiver_config, parse_args
from controller.incidents.alerts import Alert, AlertStatus
from controller.incidents.feed import REPEAT_SLACK, AlertFeed, stale_after
from controller.incidents.firing import FiringAlerts
from controller.wiring import AlertReceiverConfig, ReceiverConfigError, build_alert_receiver, read_token

T0 = datetime(2026, 11, 30, 10, tzinfo=UTC)


def ignore(alerts: tuple[Alert, ...]) -> None:
    """A callback that does nothing."""


def token_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "token"
    path.write_text(text)
    return path


def test_without_a_token_file_the_receiver_is_off() -> None:
    assert alert_receiver_config(parse_args([])) is None


def test_the_flags_configure_the_receiver_fenced_to_the_watched_namespace(tmp_path: Path) -> None:
    # given the flags the chart renders, watching one namespace
    args = parse_args([
        "--namespace", "ml", "--alert-receiver-token-file", str(token_file(tmp_path, "s3cret\n")),
        "--alert-receiver-bind-address", "127.0.0.1", "--alert-receiver-port", "9443",
        "--alert-repeat-interval", "5m",
    ])  # fmt: skip
    config = alert_receiver_config(args)
    assert config is not None

    # when the receiver is built from them
    receiver, feed = build_alert_receiver(config=config, on_alerts=ignore)

    # then it takes the token without its line end, listens where asked, fences the namespace
    settings = receiver.settings
    assert settings.bearer_token == "s3cret"
    assert (settings.host, settings.port, settings.tls) == ("127.0.0.1", 9443, None)
    assert settings.allowed_namespaces == frozenset({"ml"})
    assert feed.repeat_interval == timedelta(minutes=5)
    assert feed.alerts is receiver.alerts
    assert "s3cret" not in repr(settings)


@pytest.mark.parametrize(
    ("argv", "refusal"),
    [
        (["--alert-receiver-port", "0"], "give a port from 1 to 65535"),
        (["--alert-repeat-interval", "soon"], "is not a duration"),
        (["--alert-repeat-interval", "0s"], "give a duration above 0"),
    ],
)
def test_a_malformed_flag_stops_the_controller_at_parsing(
    argv: list[str], refusal: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        parse_args(argv)
    assert refusal in capsys.readouterr().err


@pytest.mark.parametrize("text", ["", "  \n", "two tokens"])
def test_a_token_file_without_one_token_is_refused(tmp_path: Path, text: str) -> None:
    with pytest.raises(ReceiverConfigError, match="--alert-receiver-token-file"):
        read_token(token_file(tmp_path, text))


def test_a_missing_token_file_is_refused_naming_the_flag(tmp_path: Path) -> None:
    with pytest.raises(ReceiverConfigError, match=r"--alert-receiver-token-file .*cannot be read"):
        read_token(tmp_path / "absent")


def test_one_tls_file_without_the_other_is_refused(tmp_path: Path) -> None:
    config = AlertReceiverConfig(token_file=token_file(tmp_path, "t"), tls_cert_file=tmp_path / "tls.crt")
    with pytest.raises(ReceiverConfigError, match="go together"):
        build_alert_receiver(config=config, on_alerts=ignore)


def test_the_feed_is_complete_one_repeat_interval_after_it_started_listening() -> None:
    now = [T0]
    feed = AlertFeed(alerts=FiringAlerts(), repeat_interval=timedelta(minutes=5), clock=lambda: now[0])
    feed.listening()
    now[0] = T0 + timedelta(hours=1)
    assert feed.since == T0
    assert feed.complete_at == T0 + timedelta(minutes=5) + REPEAT_SLACK


def test_an_alert_not_sent_again_for_twice_the_repeat_interval_counts_as_resolved() -> None:
    assert stale_after(timedelta(minutes=5)) == timedelta(minutes=10) + REPEAT_SLACK


def test_the_feed_tells_a_firing_heard_resolved_from_one_never_heard() -> None:
    # given a registry that heard one alert fire, then resolve
    alerts = FiringAlerts()
    feed = AlertFeed(alerts=alerts)
    fired = Alert(status=AlertStatus.FIRING, labels={"alertname": "X"}, starts_at=T0, fingerprint="f")
    alerts.apply([fired, Alert(status=AlertStatus.RESOLVED, labels={"alertname": "X"}, starts_at=T0, fingerprint="f")])

    # then that firing (stored to the millisecond) counts as resolved; a later firing, or another alert, does not
    assert feed.resolved(fingerprint="f", starts_at=T0 - timedelta(microseconds=500))
    assert not feed.resolved(fingerprint="f", starts_at=T0 + timedelta(minutes=1))
    assert not feed.resolved(fingerprint="g", starts_at=T0)
