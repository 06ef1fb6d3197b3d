"""`python -m controller` / `model-rollouts-controller`: run the controller."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

from kubernetes import client, config

from controller.api import SpecError, parse_duration
from controller.events import DEFAULT_EVENTS_PER_SECOND, DEFAULT_SENDER_THREADS, EventSender, SenderSettings
from controller.incidents.feed import DEFAULT_REPEAT_INTERVAL
from controller.incidents.receiver import DEFAULT_HOST as DEFAULT_ALERT_RECEIVER_HOST
from controller.incidents.receiver import DEFAULT_PORT as DEFAULT_ALERT_RECEIVER_PORT
from controller.kube import Kube
from controller.leader import LeaderElectionSettings, LeaderElector, default_lease_name
from controller.manager import Manager, ManagerSettings
from controller.memory import glibc_malloc_trim, trim_periodically
from controller.notify.config import ConfigError, ControllerSink, load_config
from controller.outbound import OutboundPolicy, parse_allowed_hosts
from controller.reconcile import Reconciler
from controller.server import serve
from controller.watch import LabelSelector
from controller.wiring import (
    AlertReceiverConfig,
    CheckerSettings,
    ReceiverConfigError,
    build_alert_receiver,
    build_checkers,
    build_notifications,
)

log = logging.getLogger("controller")

DEFAULT_PROMETHEUS_ADDRESS = "http://prometheus-operated.monitoring.svc:9090"
API_THREADS_BESIDES_WORKERS = 6
"""Threads other than the workers and the Event sender that call the API server: one watch per
watched kind (three), leader election, a failure report, one spare."""
"""What the Prometheus Operator names its Service; override with --prometheus-address."""

_STANDARD_RECORD_FIELDS = set(vars(logging.makeLogRecord({})))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD_RECORD_FIELDS})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extra = " ".join(f"{k}={v}" for k, v in vars(record).items() if k not in _STANDARD_RECORD_FIELDS)
        base = f"{self.formatTime(record)} {record.levelname:<7} {record.name}: {record.getMessage()}"
        text = f"{base} {extra}" if extra else base
        return f"{text}\n{self.formatException(record.exc_info)}" if record.exc_info else text


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="model-rollouts-controller", description=__doc__)
    parser.add_argument("--kubeconfig", help="kubeconfig file; in-cluster config when absent")
    parser.add_argument("--namespace", default="", help="watch one namespace; empty watches all")
    parser.add_argument(
        "--watch-label-selector",
        type=_label_selector,
        default=LabelSelector(),
        help="own only the ModelRollouts whose labels match this selector (one shard of several "
        "controllers, e.g. sharding.fluxcd.io/key=shard1); empty owns them all",
    )
    parser.add_argument("--workers", type=int, default=4, help="reconcile passes at once")
    parser.add_argument("--resync-seconds", type=float, default=300.0, help="reconcile every rollout this often")
    parser.add_argument(
        "--events-per-second",
        type=_positive_rate,
        default=DEFAULT_EVENTS_PER_SECOND,
        help="sustained rate of Event creates (bursts of up to 50 go at once); Events beyond it wait",
    )
    parser.add_argument(
        "--queue-stall-seconds",
        type=float,
        default=300.0,
        help="/healthz fails when keys are due this long and no worker takes one",
    )
    parser.add_argument("--metrics-host", default="0.0.0.0", help="address of /metrics, /healthz, /readyz")
    parser.add_argument("--metrics-port", type=int, default=8080, help="port of /metrics, /healthz, /readyz")
    parser.add_argument(
        "--leader-elect", action=argparse.BooleanOptionalAction, default=True, help="compete for a Lease"
    )
    parser.add_argument("--lease-namespace", default=os.environ.get("POD_NAMESPACE", "default"))
    parser.add_argument(
        "--lease-name",
        default="",
        help="the Lease replicas compete for; empty: model-rollouts-controller, or with "
        "--watch-label-selector a name derived from the selector (one Lease per shard)",
    )
    parser.add_argument("--identity", default=os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}")
    parser.add_argument(
        "--prometheus-address",
        default=os.environ.get("PROMETHEUS_ADDRESS", DEFAULT_PROMETHEUS_ADDRESS),
        help="Prometheus for metrics that name no address",
    )
    parser.add_argument(
        "--read-secrets",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="let web metrics take headers from Secrets (needs RBAC to read Secrets)",
    )
    parser.add_argument(
        "--allowed-hosts",
        type=_allowed_hosts,
        default=os.environ.get("ALLOWED_HOSTS", ""),
        help="comma-separated hosts that web metrics, metrics' own Prometheus addresses and gate endpoints "
        "may call: names, *.suffix, IP addresses; empty allows any host but link-local and cloud metadata "
        "addresses, which are always refused",
    )
    parser.add_argument(
        "--notifications-config",
        type=_notifications_config,
        default=(),
        metavar="FILE",
        help="YAML file listing the controller's notification sinks (webhook or slack), told about every "
        "rollout; usually a mounted Secret's key (see docs/incidents.md). Rollouts add their own in "
        "spec.notifications (their Secrets need --read-secrets)",
    )
    parser.add_argument(
        "--alert-receiver-token-file",
        type=Path,
        metavar="FILE",
        help="serve the Alertmanager webhook receiver (off without this flag), taking only requests with "
        "this file's token as `Authorization: Bearer` (Alertmanager's http_config.authorization); usually a "
        "mounted Secret's key. Firing alerts roll back, pause or freeze the rollouts they name (spec.incidents; "
        "see docs/incidents.md)",
    )
    parser.add_argument(
        "--alert-receiver-bind-address",
        default=DEFAULT_ALERT_RECEIVER_HOST,
        help="address the alert receiver listens on (its own port, never the metrics one)",
    )
    parser.add_argument(
        "--alert-receiver-port", type=_port, default=DEFAULT_ALERT_RECEIVER_PORT, help="port of the alert receiver"
    )
    parser.add_argument(
        "--alert-receiver-tls-cert-file",
        type=Path,
        metavar="FILE",
        help="serve the alert receiver over HTTPS with this certificate (PEM, with any intermediates); "
        "needs --alert-receiver-tls-key-file. Without both it serves plain HTTP",
    )
    parser.add_argument(
        "--alert-receiver-tls-key-file", type=Path, metavar="FILE", help="the private key of that certificate (PEM)"
    )
    parser.add_argument(
        "--alert-repeat-interval",
        type=_duration,
        default=DEFAULT_REPEAT_INTERVAL,
        metavar="DURATION",
        help="repeat_interval of Alertmanager's route to the receiver (default 4h, Alertmanager's): after a "
        "restart, a freeze or pause an alert caused is kept this long (plus 5m) for Alertmanager to send the "
        "alert again, unless it is heard resolved before; an alert not sent again for twice this (plus 5m) "
        "counts as resolved",
    )
    parser.add_argument("--log-format", choices=["json", "text"], default="text")
    parser.add_argument("--log-level", default="INFO")
    return parser.parse_args(argv)


def _label_selector(text: str) -> LabelSelector:
    """`--watch-label-selector` checked as the API server would; a mistake stops the controller."""
    try:
        return LabelSelector.parse(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from error


def _positive_rate(text: str) -> float:
    """A rate a second: a number above zero."""
    try:
        rate = float(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from error
    if not rate > 0 or rate == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r}: give a rate above 0, such as 25")
    return rate


def _allowed_hosts(text: str) -> tuple[str, ...]:
    """`--allowed-hosts` checked as the policy will read it; a mistake stops the controller at start."""
    hosts = parse_allowed_hosts(text)
    try:
        OutboundPolicy(allowed_hosts=hosts)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from error
    return hosts


def _port(text: str) -> int:
    """A TCP port, 1 to 65535."""
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r}: give a port from 1 to 65535")
    return int(text)


def _duration(text: str) -> timedelta:
    """A duration such as 5m or 4h, written as in the ModelRollout spec."""
    try:
        seconds = parse_duration(text, field_path="--alert-repeat-interval")
    except SpecError as error:
        raise argparse.ArgumentTypeError(str(error)) from error
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give a duration above 0, such as 5m")
    return timedelta(seconds=seconds)


def alert_receiver_config(args: argparse.Namespace) -> AlertReceiverConfig | None:
    """The receiver the flags ask for; None without --alert-receiver-token-file (the receiver is off)."""
    if args.alert_receiver_token_file is None:
        return None
    return AlertReceiverConfig(
        token_file=args.alert_receiver_token_file,
        host=args.alert_receiver_bind_address,
        port=args.alert_receiver_port,
        tls_cert_file=args.alert_receiver_tls_cert_file,
        tls_key_file=args.alert_receiver_tls_key_file,
        repeat_interval=args.alert_repeat_interval,
        namespace=args.namespace or None,
    )


def _notifications_config(text: str) -> tuple[ControllerSink, ...]:
    """`--notifications-config` read and checked at start; a mistake stops the controller."""
    try:
        return load_config(Path(text))
    except ConfigError as error:
        raise argparse.ArgumentTypeError(str(error)) from error


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if args.log_format == "json" else TextFormatter())
    logging.basicConfig(level=args.log_level.upper(), handlers=[handler])
    # Their INFO lines are one per request: two per look for prediction logs, one per webhook call.
    for chatty in ("kubernetes", "httpx", "httpcore"):
        logging.getLogger(chatty).setLevel(logging.WARNING)

    configuration = client.Configuration()
    if args.kubeconfig:
        config.load_kube_config(config_file=args.kubeconfig, client_configuration=configuration)  # type: ignore[no-untyped-call]
    else:
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    # One kept-alive connection per thread that calls the API server at once (the client's
    # default is 10): beyond the pool's size every call would open a new TLS connection, whose
    # handshake costs the API server more than the call itself.
    configuration.connection_pool_maxsize = args.workers + DEFAULT_SENDER_THREADS + API_THREADS_BESIDES_WORKERS
    api_client = client.ApiClient(configuration)

    selector: LabelSelector = args.watch_label_selector
    lease_name = args.lease_name or default_lease_name(selector.text)
    kube = Kube(api_client=api_client, instance=args.identity)
    events = EventSender(kube=kube, settings=SenderSettings(events_per_second=args.events_per_second))
    outbound = OutboundPolicy(allowed_hosts=args.allowed_hosts)
    notifications = build_notifications(
        kube=kube, events=events, sinks=args.notifications_config, read_secrets=args.read_secrets, outbound=outbound
    )
    receiver_config = alert_receiver_config(args)
    try:
        # The callback queues the rollouts alerts name (the receiver calls it only once started, after
        # the manager exists).
        receiver, alert_feed = (
            build_alert_receiver(config=receiver_config, on_alerts=lambda alerts: manager.on_alerts(alerts))
            if receiver_config is not None
            else (None, None)
        )
    except ReceiverConfigError as error:
        log.error("cannot start: %s", error)
        return 2
    manager = Manager(
        api_client=api_client,
        reconciler=Reconciler(
            kube=kube,
            checkers=build_checkers(
                kube=kube,
                settings=CheckerSettings(
                    prometheus_address=args.prometheus_address,
                    read_secrets=args.read_secrets,
                    outbound=outbound,
                ),
                # A rollout whose metric reads are in is queued at once (the pool calls this only
                # after the manager has started).
                on_result=lambda namespace, name: manager.queue.add((namespace, name)),
            ),
            selector=selector,
            events=events,
            notifications=notifications,
            alerts=alert_feed,
        ),
        settings=ManagerSettings(
            namespace=args.namespace or None,
            label_selector=selector.text,
            workers=args.workers,
            resync_seconds=args.resync_seconds,
            queue_stall_seconds=args.queue_stall_seconds,
        ),
    )
    # Passes read their rollout and its route from the informers' caches.
    for (group, plural), cache in manager.caches().items():
        kube.use_cache(group=group, plural=plural, cache=cache)
    stop = threading.Event()
    elector = (
        LeaderElector(
            api_client=api_client,
            settings=LeaderElectionSettings(
                lease_name=lease_name, lease_namespace=args.lease_namespace, identity=args.identity
            ),
        )
        if args.leader_elect
        else None
    )
    serve(
        host=args.metrics_host,
        port=args.metrics_port,
        ready=lambda: manager.synced or (elector is not None and not elector.is_leader.is_set()),
        live_problem=manager.health_problem,
    )

    def shutdown(signum: int, frame: object) -> None:
        log.info("shutting down", extra={"signal": signum})
        stop.set()

    signal.signal(signal.SIGTERM, shutdown)
    signal.signal(signal.SIGINT, shutdown)

    def lost_leadership() -> None:
        # Another replica may already act: stop at once rather than finish in-flight passes.
        os._exit(1)

    if elector is not None:
        threading.Thread(
            target=elector.run, kwargs={"stop": stop, "on_lost": lost_leadership}, name="leader", daemon=True
        ).start()
        log.info("waiting for leadership", extra={"identity": args.identity, "lease": lease_name})
        while not stop.is_set() and not elector.is_leader.wait(0.5):
            pass
    if not stop.is_set():
        log.info(
            "starting",
            extra={
                "namespace": args.namespace or "(all)",
                "labelSelector": selector.text or "(all)",
                "workers": args.workers,
                "allowedHosts": ",".join(args.allowed_hosts) or "(any)",
            },
        )
        if receiver is not None and alert_feed is not None:
            # Only the leader listens: a standby's registry would hold alerts no pass of it acts on,
            # and its closed port makes Alertmanager retry (docs/incidents.md, "High availability").
            alert_feed.listening()
            try:
                receiver.start()
            except (OSError, ValueError) as error:
                log.error("cannot start the alert receiver: %s", error)
                return 1
        notifications.start()
        events.start()
        manager.start(stop)
        threading.Thread(
            target=trim_periodically, kwargs={"stop": stop, "trim": glibc_malloc_trim()}, name="memory", daemon=True
        ).start()
        stop.wait()
    if receiver is not None:
        receiver.stop()
    manager.stop()
    # The Events of the last passes: created now, or left recorded for the next controller.
    events.stop()
    # The notifications of those Events: a few seconds to go out, then dropped (and logged).
    notifications.close()
    if elector is not None:
        elector.release()
    return 0


if __name__ == "__main__":
    sys.exit(main())
