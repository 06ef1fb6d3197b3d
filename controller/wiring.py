"""Builds the checkers the reconciler runs, from the modules that implement them.

The checkers reach the cluster only through the narrow callables built here (a ConfigMap
reader, a Secret reader, an AnalysisTemplate lookup), all going through `Kube`. Each gives None
for an object that does not exist, and the checker that asked raises `ReferenceProblem` naming
the field, so every missing object ends the same way (ReferencesValid=False, no traffic change);
the web provider's Secret reader, which runs on the measurement pool, raises it itself.

Metric queries run on the measurement pool built here (controller.analysis.measurements), never
on a reconcile worker; `on_result` (the work queue's add) brings a rollout back once its reads
are in. Count queries are batched for every rollout at once (controller.analysis.batch).

Notifications (controller.notify) are sent by their own threads; what fails is reported as a
Warning Event on the rollout through the Event sender, like the Events passes record.

The Alertmanager webhook receiver (controller.incidents) is built here from its settings, off
unless a token file is given: it fills the registry the passes read through an `AlertFeed`, and
its callback queues the rollouts the alerts name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from controller.analysis.batch import DEFAULT_BATCH_PERIOD_SECONDS
from controller.analysis.checker import AnalysisChecker
from controller.analysis.measurements import MeasurementPool, PoolSettings
from controller.analysis.providers import ProviderSettings, build_providers
from controller.api import GROUP, KIND, VERSION, RecordedEvent, format_time, now_utc
from controller.errors import ReferenceProblem
from controller.events import Outgoing, SendsEvents
from controller.gates.checker import GatesChecker, GatesSettings
from controller.incidents.alerts import Alert
from controller.incidents.feed import DEFAULT_REPEAT_INTERVAL, AlertFeed, stale_after
from controller.incidents.firing import FiringAlerts
from controller.incidents.receiver import DEFAULT_HOST, DEFAULT_PORT, AlertReceiver, ReceiverSettings, TLSFiles
from controller.kube import Kube, ObjectRef
from controller.notify.config import ControllerSink
from controller.notify.dispatch import Notifications, RolloutRef
from controller.outbound import DEFAULT_POLICY, OutboundPolicy
from controller.reconcile import Checkers

ANALYSIS_TEMPLATE_PLURAL = "analysistemplates"


@dataclass(frozen=True, kw_only=True)
class CheckerSettings:
    prometheus_address: str
    """Prometheus used by metrics that name no address of their own."""
    read_secrets: bool = False
    """Let web metrics take headers from Secrets; off unless the install grants Secret reads."""
    outbound: OutboundPolicy = DEFAULT_POLICY
    """Where the requests a rollout asks for may go: web metrics, a metric's own Prometheus
    address, gate endpoints (controller.outbound)."""
    measurements: PoolSettings = field(default_factory=PoolSettings)
    """The measurement pool: threads per provider and address, how long unread results are kept."""
    batch_period_seconds: float | None = DEFAULT_BATCH_PERIOD_SECONDS
    """Count queries of presets and checks' defaults are batched for every rollout at once, looks
    on a grid of at most this period (controller.analysis.batch); None reads them per rollout."""


def build_checkers(
    *, kube: Kube, settings: CheckerSettings, on_result: Callable[[str, str], None] | None = None
) -> Checkers:
    """`on_result(namespace, name)` is called when a rollout's metric reads are in (wire it to the
    work queue's add); without it a rollout waiting for reads is looked at again every second."""

    def secret_data(namespace: str, name: str) -> Mapping[str, str] | None:
        return kube.get_secret_data(namespace=namespace, name=name)

    def read_secret(*, namespace: str, name: str) -> Mapping[str, str]:
        """For the web provider. The analysis checker asks for the Secret before each look, so
        this finds it missing only when it was deleted in between: the checker then reports the
        ReferenceProblem naming the field, as it does for the Secret it finds missing itself."""
        data = secret_data(namespace, name)
        if data is None:
            raise ReferenceProblem(f"Secret {namespace}/{name} does not exist; create it or fix headersFrom.secretName")
        return data

    def template(*, namespace: str, name: str) -> Mapping[str, Any] | None:
        found = kube.get_custom(
            group=GROUP, version=VERSION, plural=ANALYSIS_TEMPLATE_PLURAL, namespace=namespace, name=name
        )
        return None if found is None else found.get("spec") or {}

    providers = build_providers(
        ProviderSettings(
            prometheus_address=settings.prometheus_address,
            secret_reader=read_secret if settings.read_secrets else None,
            outbound=settings.outbound,
        )
    )

    def read_configmap(namespace: str, name: str) -> Mapping[str, str] | None:
        return kube.get_configmap_data(namespace=namespace, name=name)

    return Checkers(
        gates=GatesChecker(read_configmap=read_configmap, settings=GatesSettings(outbound=settings.outbound)),
        analysis=AnalysisChecker(
            providers=providers,
            template_lookup=template,
            read_configmap=read_configmap,
            read_secret=secret_data if settings.read_secrets else None,
            outbound=settings.outbound,
            measurements=MeasurementPool(settings=settings.measurements, on_result=on_result),
            batch_period_seconds=settings.batch_period_seconds,
        ),
    )


def build_notifications(
    *,
    kube: Kube,
    events: SendsEvents,
    sinks: Sequence[ControllerSink] = (),
    read_secrets: bool = False,
    outbound: OutboundPolicy = DEFAULT_POLICY,
) -> Notifications:
    """The notifications: the controller's `sinks`, each rollout's own (their Secrets read when
    `read_secrets`), sent through the outbound fence; failures become Warning Events."""

    def report(*, rollout: RolloutRef, reason: str, message: str, name: str) -> None:
        # Not recorded in status: one lost to a full sender queue is counted, not sent again.
        event = RecordedEvent(name=name, type="Warning", reason=reason, message=message, time=format_time(now_utc()))
        about = ObjectRef(
            api_version=f"{GROUP}/{VERSION}", kind=KIND, namespace=rollout.namespace, name=rollout.name, uid=rollout.uid
        )
        events.send(Outgoing(about=about, event=event, on_done=lambda created: None))

    def read_secret(namespace: str, name: str) -> Mapping[str, str] | None:
        return kube.get_secret_data(namespace=namespace, name=name)

    return Notifications(report=report, sinks=sinks, read_secret=read_secret if read_secrets else None, policy=outbound)


@dataclass(frozen=True, kw_only=True)
class AlertReceiverConfig:
    """The receiver as the command line configures it (`--alert-receiver-*`)."""

    token_file: Path
    """The bearer token Alertmanager sends (a mounted Secret's key); required: no token, no receiver."""
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    repeat_interval: timedelta = DEFAULT_REPEAT_INTERVAL
    """Alertmanager's repeat_interval for the route to this receiver (see AlertFeed)."""
    namespace: str | None = None
    """The one namespace the controller watches (None: all): the receiver's namespace fence."""


class ReceiverConfigError(ValueError):
    """The receiver cannot be configured as asked; the message names the flag and the fix."""


def read_token(path: Path) -> str:
    """The token in `path`, without the line end a Secret written by hand often has."""
    try:
        token = path.read_text().strip()
    except OSError as error:
        raise ReceiverConfigError(f"--alert-receiver-token-file {path}: cannot be read: {error.strerror}") from None
    if not token or any(character.isspace() for character in token):
        raise ReceiverConfigError(
            f"--alert-receiver-token-file {path}: must hold one token, without spaces (it is empty or has several)"
        )
    return token


def build_alert_receiver(
    *, config: AlertReceiverConfig, on_alerts: Callable[[tuple[Alert, ...]], None]
) -> tuple[AlertReceiver, AlertFeed]:
    """The receiver (not started) and the feed the reconcile passes read; ReceiverConfigError when a
    file cannot be read or the TLS files are given one without the other."""
    if (config.tls_cert_file is None) != (config.tls_key_file is None):
        raise ReceiverConfigError(
            "--alert-receiver-tls-cert-file and --alert-receiver-tls-key-file go together; give both or neither"
        )
    tls = (
        None
        if config.tls_cert_file is None or config.tls_key_file is None
        else TLSFiles(cert_file=config.tls_cert_file, key_file=config.tls_key_file)
    )
    token = read_token(config.token_file)
    try:
        settings = ReceiverSettings(
            bearer_token=token,
            host=config.host,
            port=config.port,
            tls=tls,
            allowed_namespaces=None if config.namespace is None else frozenset({config.namespace}),
        )
    except ValueError as error:
        raise ReceiverConfigError(f"alert receiver: {error}") from None
    alerts = FiringAlerts(stale_after=stale_after(config.repeat_interval))
    receiver = AlertReceiver(settings=settings, on_alerts=on_alerts, alerts=alerts)
    return receiver, AlertFeed(alerts=alerts, repeat_interval=config.repeat_interval)
