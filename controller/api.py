"""The ModelRollout API as typed, immutable Python values.

The CRD (`manifests/crds/modelrollouts.yaml`) is the source of truth for what the API server
accepts; this module turns the stored JSON into values the pure decision logic works on, and the
status back into JSON. Parsing is strict about what the schema cannot express and raises
`SpecError` naming the field and the fix.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, TypeVar, cast

from controller.watch import LabelSelector

GROUP = "rollouts.mlops.dev"
VERSION = "v1alpha1"
KIND = "ModelRollout"
PLURAL = "modelrollouts"
FINALIZER = f"{GROUP}/finalizer"
ACTION_ANNOTATION = f"{GROUP}/action"
"""One-shot manual actions: the controller handles the value, then removes the annotation."""
UNDO_ANNOTATION = f"{GROUP}/undo"
"""Undo the last promotion: any new value (a token) asks once; the value handled is kept in
status.undoToken, so the annotation may stay (a GitOps tool keeps it) and the same value asks nothing."""
UNDO_TO_VERSION_ANNOTATION = f"{GROUP}/undo-to-version"
"""Optional, with the undo annotation: the version to send all traffic back to (default: the
version the last promotion replaced, status.previousStableVersion)."""

DEFAULT_PROGRESS_DEADLINE_SECONDS = 600
HISTORY_LIMIT = 20
"""Decisions kept in status.history; older ones are dropped so the object stays small."""

JSON = dict[str, Any]


class SpecError(ValueError):
    """The spec cannot be acted on; the message names the field and the fix."""

    def __init__(self, field_path: str, problem: str) -> None:
        super().__init__(f"{field_path}: {problem}")
        self.field_path = field_path


MALFORMED_ERRORS = (TypeError, AttributeError, KeyError, IndexError, ValueError, OverflowError, RecursionError)
"""What a parser that trusts the schema's types raises on a value of another type or form."""

Parse = TypeVar("Parse", bound=Callable[..., Any])


def refusing_malformed(
    field_path: str, *, error: Callable[[str, str], ValueError] = SpecError
) -> Callable[[Parse], Parse]:
    """Makes a parser raise only `error` (or SpecError): any other failure on a malformed value
    becomes `error` naming `field_path`. The CRD schema refuses such values at `kubectl apply`, so
    they reach a parser only from objects stored before a schema rule existed; the backstop keeps
    them from failing a pass with a bare TypeError."""

    def wrap(parse: Parse) -> Parse:
        @functools.wraps(parse)
        def parsed(*args: Any, **kwargs: Any) -> Any:
            try:
                return parse(*args, **kwargs)
            except SpecError:
                raise
            except MALFORMED_ERRORS as raised:
                if isinstance(error, type) and isinstance(raised, error):
                    raise
                raise error(
                    field_path,
                    f"a value has the wrong type or form ({type(raised).__name__}: {str(raised)[:200]}); "
                    "apply the manifest again: the API server names the field",
                ) from raised

        return cast(Parse, parsed)

    return wrap


class Phase(StrEnum):
    """Where a rollout stands. Terminal phases hold until a new candidate or a retry."""

    PENDING = "Pending"
    """Accepted, waiting for its references to be valid before any traffic moves."""
    PROGRESSING = "Progressing"
    """Walking the steps: traffic is shared between baseline and candidate."""
    PAUSED = "Paused"
    """Held by a pause step without a duration or by a manual pause; resume continues."""
    PROMOTED = "Promoted"
    """The candidate serves 100 % and is now the stable version."""
    ROLLED_BACK = "RolledBack"
    """Analysis failed: all traffic is back on the stable version."""
    ABORTED = "Aborted"
    """A person aborted: all traffic is back on the stable version."""
    FAILED = "Failed"
    """The progress deadline passed or the spec cannot be acted on: traffic is back on stable."""


TERMINAL_PHASES = frozenset({Phase.PROMOTED, Phase.ROLLED_BACK, Phase.ABORTED, Phase.FAILED})


class Action(StrEnum):
    """Values of the `rollouts.mlops.dev/action` annotation."""

    PROMOTE = "promote"
    """Finish the current step now (skip a pause) and go on with the next."""
    PROMOTE_FULL = "promote-full"
    """Skip all remaining steps and promote the candidate."""
    ABORT = "abort"
    """Return all traffic to the stable version now; phase Aborted."""
    RETRY = "retry"
    """Start an aborted, rolled-back or failed rollout again from the first step."""
    PAUSE = "pause"
    """Hold at the current weight until resumed."""
    RESUME = "resume"
    """Lift a manual pause or an indefinite pause step."""


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str, *, field_path: str) -> float:
    """Seconds in a duration written like `30s`, `5m`, `1h30m` or `250ms`."""
    pos, total = 0, 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise SpecError(field_path, f"{text!r} is not a duration; write it like 30s, 5m or 1h30m")
    return total


_HTTP_URL = re.compile(r"(?i:https?)://[^/?#\s]+")


def check_http_url(text: object, *, field_path: str, example: str) -> str:
    """`text` when it is a URL starting with http:// or https:// and naming a host (template
    variables such as `{{version}}` may follow); otherwise SpecError naming the field and an example.
    Without a scheme, an HTTP client refuses the URL at every call, which would read as an outage."""
    if not isinstance(text, str) or _HTTP_URL.match(text) is None:
        raise SpecError(
            field_path, f"{text!r} is not an http:// or https:// URL with a host; write the whole URL, e.g. {example}"
        )
    return text


def format_time(moment: datetime) -> str:
    """RFC 3339 in UTC to the millisecond: timed steps and measurement intervals may be sub-second."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(text: str | None) -> datetime | None:
    """Reads what `format_time` writes, and whole-second times written by other clients; None
    for a time that cannot be read or that lies outside the calendar once in UTC (a hand edit)."""
    if not text:
        return None
    try:
        return datetime.fromisoformat(text).astimezone(UTC)
    except (ValueError, OverflowError):
        return None


# ---------------------------------------------------------------------------------------------
# Spec


@dataclass(frozen=True, kw_only=True)
class Backend:
    service: str
    """Name of the Service that serves this version, in the rollout's namespace."""
    port: int
    """Port of that Service the route sends traffic to."""


@dataclass(frozen=True, kw_only=True)
class ModelVersion:
    version: str
    """The version label, e.g. `v2`; steps and status name versions by it."""
    backend: Backend | None = None
    """Where the route sends this version's share. Required in spec.versions; None only for the
    versions a router reads from its routed object (KServe's revisions, which have no Service)."""
    deployment: str | None = None
    """The Deployment serving this version; needed only for scale-down and readiness checks."""
    endpoint: str | None = None
    """Base URL of the version's Open Inference Protocol server, used by pre-traffic gates."""

    @property
    def routed_backend(self) -> Backend:
        """The backend, for the routers that send traffic to Services; SpecError without one."""
        if self.backend is None:
            raise SpecError("spec.versions", f"version {self.version} has no backend; give it a Service and port")
        return self.backend


@dataclass(frozen=True, kw_only=True)
class GatewayAPIRouting:
    http_route: str
    """Name of the HTTPRoute, in the rollout's namespace."""
    rule_names: tuple[str, ...] = ()
    """Rules (by `name`) whose backendRefs the controller manages; empty means every rule."""


@dataclass(frozen=True, kw_only=True)
class TrafficRouting:
    router: str
    """Name of the router implementation, the key used under spec.trafficRouting."""
    config: Mapping[str, Any]
    """That key's raw value, parsed by the router itself."""
    parsed: object = None
    """The router's typed configuration, once the reconciler had the router parse `config`."""


@dataclass(frozen=True, kw_only=True)
class SetWeightStep:
    weight: int
    """Share of traffic, in percent, sent to the candidate."""


@dataclass(frozen=True, kw_only=True)
class PauseStep:
    seconds: float | None
    """How long to hold; None holds until a `resume` action."""


@dataclass(frozen=True, kw_only=True)
class AnalyzeStep:
    seconds: float
    """How long to measure at the current weight before the next step."""
    templates: tuple[str, ...] = ()
    """Named AnalysisTemplates to run on top of spec.analysis.metrics, if any."""


@dataclass(frozen=True, kw_only=True)
class Mirror:
    """A copy of a share of the route's requests sent to one version; the copies' answers are
    discarded, so no client ever sees them."""

    version: str
    """The version receiving the copies (the candidate, during a mirror step)."""
    percent: int
    """Share of the route's requests copied, 1 to 100 (some gateways copy all of them whatever
    this says: docs/api.md)."""

    def to_json(self) -> JSON:
        return {"version": self.version, "percent": self.percent}

    @staticmethod
    def from_json(raw: object) -> Mirror | None:
        """The mirror recorded in status; None for none, or for a value that cannot be read."""
        if not isinstance(raw, Mapping) or not isinstance(raw.get("percent"), int) or not raw.get("version"):
            return None
        return Mirror(version=str(raw["version"]), percent=int(raw["percent"]))


DEFAULT_MIRROR_PERCENT = 100


@dataclass(frozen=True, kw_only=True)
class MirrorStep:
    """Shadow traffic: the candidate gets copies of the route's requests for a while, at the
    weight the previous steps set (`setWeight: 0` first: copies only); spec.analysis measures
    during it as during an analyze step."""

    percent: int = DEFAULT_MIRROR_PERCENT
    """Share of the route's requests copied to the candidate, 1 to 100."""
    seconds: float
    """How long the candidate gets copies before the next step."""


Step = SetWeightStep | PauseStep | AnalyzeStep | MirrorStep
STEP_KINDS = ("setWeight", "pause", "analyze", "mirror")


@dataclass(frozen=True, kw_only=True)
class ScaleDown:
    delay_seconds: float
    """How long the version that lost keeps its replicas after the decision, for a fast undo."""


MAX_ROLLBACK_WINDOW_SECONDS = 7 * 86400.0
"""spec.rollbackWindow is at most a week, like the other timers (the CRD says so too)."""
MAX_ROLLBACK_REVISIONS = 10
"""spec.rollbackRevisions is at most 10: each version kept holds its replicas (the CRD says so too)."""


@dataclass(frozen=True, kw_only=True)
class PostPromotion:
    """spec.postPromotion: after a promotion, the promoted version is measured alone against
    absolute guardrails for a while, and a broken guardrail undoes the promotion."""

    duration_seconds: float
    """How long after the promotion it is measured; at most spec.rollbackWindow, so that the
    version it replaced is still ready to undo to."""
    section: Mapping[str, Any]
    """The raw section (interval, falseRollbackRate, metrics), interpreted by `controller.analysis`."""


NOTIFICATION_SINK_TYPES = ("webhook", "slack")
"""spec.notifications[].type: a generic JSON webhook, or a Slack-compatible incoming webhook."""


@dataclass(frozen=True, kw_only=True)
class SecretKeyRef:
    name: str
    """The Secret, in the rollout's namespace."""
    key: str
    """The key of its data that holds the value."""


@dataclass(frozen=True, kw_only=True)
class NotificationSink:
    """One entry of spec.notifications: where people hear about this rollout (controller.notify)."""

    field_path: str
    """`spec.notifications[0]`: names the sink in Events and logs, which never show its URL."""
    type: str
    """One of NOTIFICATION_SINK_TYPES."""
    url_from: SecretKeyRef
    """The URL, from a Secret: a Slack incoming webhook URL is its own credential."""
    headers_secret: str | None = None
    """A Secret whose every key is a request header (e.g. Authorization); None sends none."""
    kinds: frozenset[str] = frozenset()
    """Notification kinds sent to this sink (Promoted, RolledBack, ...); empty sends every kind.
    (Not `on`: YAML 1.1, which kubectl reads, takes the key `on` for true.)"""


class IncidentAction(StrEnum):
    """spec.incidents.action: what a firing alert that names the rollout does to it during a canary."""

    ROLLBACK = "rollback"
    """All traffic back to the stable version at once, as when the analysis fails (the default)."""
    PAUSE = "pause"
    """Hold at the weight reached while the alert fires; go on once it resolves."""
    IGNORE = "ignore"
    """Act on nothing: the alert is recorded in status and an Event, no more."""


@dataclass(frozen=True, kw_only=True)
class IncidentPolicy:
    """spec.incidents: how alerts from Alertmanager act on this rollout (docs/incidents.md)."""

    action: IncidentAction = IncidentAction.ROLLBACK
    """What a matching firing alert does during a canary; before any traffic, any action but
    ignore freezes the rollout until the alert resolves."""
    alert_selector: LabelSelector | None = None
    """Which alerts name this rollout, over their labels; None: the alert's namespace and model
    labels (and rollout, when it has one) equal the rollout's (controller.incidents.matches)."""


@dataclass(frozen=True, kw_only=True)
class ModelRolloutSpec:
    model: str
    versions: tuple[ModelVersion, ...]
    candidate: str
    baseline: str
    traffic_routing: TrafficRouting
    steps: tuple[Step, ...]
    progress_deadline_seconds: float = DEFAULT_PROGRESS_DEADLINE_SECONDS
    scale_down: ScaleDown | None = None
    analysis: Mapping[str, Any] = field(default_factory=dict)
    """Raw spec.analysis; interpreted by `controller.analysis`."""
    gates: Mapping[str, Any] = field(default_factory=dict)
    """Raw spec.gates; interpreted by `controller.checks`."""
    notifications: tuple[NotificationSink, ...] = ()
    """spec.notifications: this rollout's own sinks, besides the controller's."""
    incidents: IncidentPolicy = field(default_factory=IncidentPolicy)
    """spec.incidents: how alerts that name this rollout act on it."""
    rollback_window_seconds: float | None = None
    """spec.rollbackWindow: after a promotion the replaced version keeps its replicas this long,
    and an alert naming the rollout within it undoes the promotion; None: no window."""
    rollback_revisions: int | None = None
    """spec.rollbackRevisions: the versions this many promotions replaced last keep their replicas
    (status.keptVersions), whenever they were replaced; None: none kept by count."""
    post_promotion: PostPromotion | None = None
    """spec.postPromotion: the guardrails the promoted version is held to after its promotion;
    None: none."""
    versions_from_route: bool = False
    """spec.versions, baseline and candidate are absent: the router reads the versions from the
    routed object (KServe: the InferenceService's revisions), and the reconciler fills them in
    each pass (`controller.routers.plugin.RoutedVersions`); a new candidate there starts a new
    rollout without a spec change."""

    @property
    def has_analysis(self) -> bool:
        """spec.analysis names metrics or templates: they measure during every analyze and mirror step."""
        return bool(self.analysis.get("metrics") or self.analysis.get("templates"))

    def find_version(self, name: str) -> ModelVersion | None:
        """The entry of spec.versions labelled `name`, if there is one."""
        return next((entry for entry in self.versions if entry.version == name), None)

    def version(self, name: str) -> ModelVersion:
        found = self.find_version(name)
        if found is None:
            raise SpecError("spec.versions", f"no entry with version {name!r}; add it to spec.versions")
        return found

    def candidate_hash(self) -> str:
        """Identifies the candidate being rolled out; a change starts the rollout over."""
        version = self.version(self.candidate)
        identity: dict[str, object] = {"version": version.version}
        if version.backend is not None:
            identity.update(service=version.backend.service, port=version.backend.port)
        payload = json.dumps(identity, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:10]


def _require(obj: Mapping[str, Any], key: str, path: str) -> Any:
    if key not in obj or obj[key] in (None, ""):
        raise SpecError(f"{path}.{key}", "is required")
    return obj[key]


def _parse_step(raw: Mapping[str, Any], path: str) -> Step:
    kinds = [k for k in STEP_KINDS if k in raw]
    if len(kinds) != 1:
        raise SpecError(path, "a step has exactly one of setWeight, pause, analyze or mirror")
    if kinds[0] == "setWeight":
        weight = raw["setWeight"]
        if not isinstance(weight, int) or not 0 <= weight <= 100:
            raise SpecError(f"{path}.setWeight", f"{weight!r} is not a whole number from 0 to 100")
        return SetWeightStep(weight=weight)
    if kinds[0] == "pause":
        pause = raw["pause"] or {}
        duration = pause.get("duration")
        seconds = None if duration is None else parse_duration(str(duration), field_path=f"{path}.pause.duration")
        return PauseStep(seconds=seconds)
    if kinds[0] == "mirror":
        return _parse_mirror_step(raw["mirror"], f"{path}.mirror")
    analyze = raw["analyze"] or {}
    return AnalyzeStep(
        seconds=parse_duration(
            str(_require(analyze, "duration", f"{path}.analyze")), field_path=f"{path}.analyze.duration"
        ),
        templates=tuple(t["name"] for t in analyze.get("templates", [])),
    )


def _parse_mirror_step(raw: object, path: str) -> MirrorStep:
    if not isinstance(raw, Mapping):
        raise SpecError(path, "must be an object, e.g. {percent: 100, duration: 5m}")
    percent = raw.get("percent", DEFAULT_MIRROR_PERCENT)
    if isinstance(percent, bool) or not isinstance(percent, int) or not 1 <= percent <= 100:
        raise SpecError(
            f"{path}.percent", f"{percent!r} is not a whole number from 1 to 100; leave it out to mirror every request"
        )
    duration = raw.get("duration")
    if duration in (None, ""):
        raise SpecError(f"{path}.duration", "is required: how long the candidate gets copies, e.g. 5m")
    return MirrorStep(percent=percent, seconds=parse_duration(str(duration), field_path=f"{path}.duration"))


def _refuse_ambiguous_version(version: ModelVersion, earlier: Sequence[ModelVersion], path: str) -> None:
    """A version must be told apart from the earlier entries by a person (its label, whatever the
    letter case) and by the route (its backend): two versions on one backend cannot get different
    weights, so any split between them would land as something else, possibly no traffic at all."""
    for index, other in enumerate(earlier):
        if other.version.lower() == version.version.lower():
            raise SpecError(
                f"{path}.version",
                f"{version.version!r} differs from {other.version!r} (spec.versions[{index}]) only in letter case; "
                "rename one so that each reads differently",
            )
        if version.backend is not None and other.backend == version.backend:
            raise SpecError(
                f"{path}.backend",
                f"Service {version.backend.service} port {version.backend.port} already serves version "
                f"{other.version} (spec.versions[{index}]); give each version its own Service (or port)",
            )


def _endpoint(raw: object, field_path: str) -> str | None:
    return None if raw is None else check_http_url(raw, field_path=field_path, example="http://iris-v2.models.svc:8080")


VERSION_FIELDS = ("versions", "baseline", "candidate")
"""Absent together when the router reads the versions from its routed object (KServe)."""


@refusing_malformed("spec")
def parse_spec(raw: Mapping[str, Any]) -> ModelRolloutSpec:
    """Typed spec from the stored JSON; raises SpecError for what the schema cannot catch.

    Without spec.versions, baseline and candidate (all three absent) the spec is marked
    `versions_from_route`, with no versions yet: only a router that reads them from its routed
    object accepts it (the reconciler checks, and fills them in)."""
    if not any(key in raw for key in VERSION_FIELDS):
        return _parse_rest(raw, versions=(), baseline="", candidate="", from_route=True)
    versions: list[ModelVersion] = []
    seen: set[str] = set()
    for i, item in enumerate(_require(raw, "versions", "spec")):
        path = f"spec.versions[{i}]"
        backend = _require(item, "backend", path)
        version = ModelVersion(
            version=str(_require(item, "version", path)),
            backend=Backend(
                service=str(_require(backend, "service", f"{path}.backend")),
                port=int(_require(backend, "port", f"{path}.backend")),
            ),
            deployment=item.get("deployment"),
            endpoint=_endpoint(item.get("endpoint"), f"{path}.endpoint"),
        )
        if version.version in seen:
            raise SpecError(f"{path}.version", f"{version.version!r} appears twice; version labels must be unique")
        _refuse_ambiguous_version(version, versions, path)
        seen.add(version.version)
        versions.append(version)
    spec = _parse_rest(
        raw,
        versions=tuple(versions),
        baseline=str(_require(raw, "baseline", "spec")),
        candidate=str(_require(raw, "candidate", "spec")),
        from_route=False,
    )
    spec.version(spec.candidate)
    spec.version(spec.baseline)
    if spec.candidate == spec.baseline:
        raise SpecError("spec.candidate", "must differ from spec.baseline")
    return spec


def _parse_rest(
    raw: Mapping[str, Any], *, versions: tuple[ModelVersion, ...], baseline: str, candidate: str, from_route: bool
) -> ModelRolloutSpec:
    routing_raw = _require(raw, "trafficRouting", "spec")
    if len(routing_raw) != 1:
        raise SpecError("spec.trafficRouting", "name exactly one router, e.g. gatewayAPI")
    router, config = next(iter(routing_raw.items()))
    steps = tuple(_parse_step(step, f"spec.steps[{i}]") for i, step in enumerate(_require(raw, "steps", "spec")))
    scale_down_raw = raw.get("scaleDown")
    spec = ModelRolloutSpec(
        model=str(_require(raw, "model", "spec")),
        versions=versions,
        candidate=candidate,
        baseline=baseline,
        traffic_routing=TrafficRouting(router=router, config=config or {}),
        steps=steps,
        progress_deadline_seconds=float(raw.get("progressDeadlineSeconds", DEFAULT_PROGRESS_DEADLINE_SECONDS)),
        scale_down=None
        if scale_down_raw is None
        else ScaleDown(
            delay_seconds=parse_duration(str(scale_down_raw.get("delay", "30s")), field_path="spec.scaleDown.delay")
        ),
        analysis=_section(raw, "analysis"),
        gates=_section(raw, "gates"),
        notifications=parse_notifications(raw.get("notifications")),
        incidents=parse_incidents(raw.get("incidents")),
        rollback_window_seconds=parse_rollback_window(raw.get("rollbackWindow")),
        rollback_revisions=parse_rollback_revisions(raw.get("rollbackRevisions"), router=router, from_route=from_route),
        versions_from_route=from_route,
    )
    spec = replace(spec, post_promotion=parse_post_promotion(raw.get("postPromotion"), spec=spec))
    for i, step in enumerate(spec.steps):
        if isinstance(step, AnalyzeStep) and not (spec.has_analysis or step.templates):
            raise SpecError(
                f"spec.steps[{i}].analyze",
                "has nothing to measure; add spec.analysis.metrics or analyze.templates",
            )
    return spec


def parse_rollback_window(raw: object) -> float | None:
    """spec.rollbackWindow in seconds; None when absent."""
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise SpecError("spec.rollbackWindow", "must be a duration like 1h or 30m, in quotes")
    seconds = parse_duration(raw, field_path="spec.rollbackWindow")
    if seconds > MAX_ROLLBACK_WINDOW_SECONDS:
        raise SpecError("spec.rollbackWindow", f"{raw!r} is longer than 168h (one week)")
    return seconds


def parse_rollback_revisions(raw: object, *, router: str, from_route: bool) -> int | None:
    """spec.rollbackRevisions; None when absent."""
    if raw is None:
        return None
    path = "spec.rollbackRevisions"
    if isinstance(raw, bool) or not isinstance(raw, int) or not 1 <= raw <= MAX_ROLLBACK_REVISIONS:
        raise SpecError(path, f"{raw!r} is not a whole number from 1 to {MAX_ROLLBACK_REVISIONS}")
    if from_route:
        raise SpecError(
            path,
            f"trafficRouting.{router} reads the versions from the object it routes, and a promotion there cannot be "
            "undone yet; drop rollbackRevisions",
        )
    return raw


@refusing_malformed("spec.postPromotion")
def parse_post_promotion(raw: object, *, spec: ModelRolloutSpec) -> PostPromotion | None:
    """spec.postPromotion; None when absent. Its metrics are parsed by the analysis checker, which
    refuses an entry without an absolute guardrail while the rollout is Pending."""
    if raw is None:
        return None
    path = "spec.postPromotion"
    if not isinstance(raw, Mapping):
        raise SpecError(path, "must be an object, e.g. {duration: 30m, metrics: [...]}; see docs/incidents.md")
    if spec.versions_from_route:
        router = spec.traffic_routing.router
        raise SpecError(
            path,
            f"trafficRouting.{router} reads the versions from the object it routes, and a promotion there cannot be "
            "undone yet; drop postPromotion",
        )
    duration = raw.get("duration")
    if duration in (None, ""):
        raise SpecError(f"{path}.duration", "is required: how long the promoted version is measured, e.g. 30m")
    seconds = parse_duration(str(duration), field_path=f"{path}.duration")
    if seconds <= 0:
        raise SpecError(f"{path}.duration", f"{duration!r} measures nothing; give a duration such as 30m")
    window = spec.rollback_window_seconds
    if window is None:
        raise SpecError(
            "spec.rollbackWindow",
            "is required with spec.postPromotion: the version a promotion replaced must stay ready to undo to; "
            f"give at least postPromotion.duration ({duration})",
        )
    if seconds > window:
        raise SpecError(
            f"{path}.duration",
            f"{duration!r} is longer than spec.rollbackWindow ({window:g}s): the version "
            "the promotion replaced could be scaled down before a broken guardrail undoes it; shorten it or "
            "lengthen the window",
        )
    metrics = raw.get("metrics")
    if not isinstance(metrics, list) or not metrics:
        raise SpecError(
            f"{path}.metrics",
            "is required: the guardrails the promoted version is held to, e.g. "
            "[{name: errors, preset: error-rate, comparison: {max: 0.01}}]",
        )
    return PostPromotion(duration_seconds=seconds, section=raw)


@refusing_malformed("spec.notifications")
def parse_notifications(raw: object) -> tuple[NotificationSink, ...]:
    """spec.notifications as typed sinks; absent is none. Which kinds `kinds` may name is the CRD's
    enum: a kind no transition has is never sent, so it needs no second check here."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise SpecError(
            "spec.notifications",
            "must be a list of sinks, e.g. [{type: slack, urlFrom: {secretKeyRef: {name: oncall-slack, key: url}}}]",
        )
    sinks = []
    for index, item in enumerate(raw):
        path = f"spec.notifications[{index}]"
        kind = _require(item, "type", path)
        if kind not in NOTIFICATION_SINK_TYPES:
            raise SpecError(f"{path}.type", f"{kind!r} is not one of {', '.join(NOTIFICATION_SINK_TYPES)}")
        ref = _require(_require(item, "urlFrom", path), "secretKeyRef", f"{path}.urlFrom")
        url_from = SecretKeyRef(
            name=str(_require(ref, "name", f"{path}.urlFrom.secretKeyRef")),
            key=str(_require(ref, "key", f"{path}.urlFrom.secretKeyRef")),
        )
        headers = item.get("headersFrom")
        kinds = item.get("kinds") or []
        if not isinstance(kinds, list) or not all(isinstance(name, str) for name in kinds):
            raise SpecError(f"{path}.kinds", "must be a list of notification kinds, e.g. [RolledBack, Failed]")
        sinks.append(
            NotificationSink(
                field_path=path,
                type=kind,
                url_from=url_from,
                headers_secret=None if headers is None else str(_require(headers, "secretName", f"{path}.headersFrom")),
                kinds=frozenset(kinds),
            )
        )
    return tuple(sinks)


@refusing_malformed("spec.incidents")
def parse_incidents(raw: object) -> IncidentPolicy:
    """spec.incidents as a typed policy; absent is the default (roll back on the alerts whose
    namespace and model labels are the rollout's)."""
    if raw is None:
        return IncidentPolicy()
    if not isinstance(raw, Mapping):
        raise SpecError("spec.incidents", "must be an object, e.g. {action: rollback}; see docs/incidents.md")
    action_text = raw.get("action", IncidentAction.ROLLBACK.value)
    try:
        action = IncidentAction(action_text)
    except ValueError:
        allowed = ", ".join(a.value for a in IncidentAction)
        raise SpecError("spec.incidents.action", f"{action_text!r} is not one of {allowed}") from None
    selector_text = raw.get("alertSelector")
    if selector_text is None:
        return IncidentPolicy(action=action)
    if not isinstance(selector_text, str) or not selector_text.strip():
        # An empty selector selects every alert: surely not what its author meant.
        raise SpecError(
            "spec.incidents.alertSelector",
            "must be a label selector over the alerts' labels, e.g. alertname in (GPUNodeDown),severity=page; "
            "leave it out to match the alert's namespace and model labels",
        )
    try:
        selector = LabelSelector.parse(selector_text)
    except ValueError as error:
        raise SpecError("spec.incidents.alertSelector", str(error)) from None
    return IncidentPolicy(action=action, alert_selector=selector)


# ---------------------------------------------------------------------------------------------
# Status


@dataclass(frozen=True, kw_only=True)
class Condition:
    type: str
    status: str
    reason: str
    message: str
    last_transition_time: str
    observed_generation: int

    def to_json(self) -> JSON:
        return {
            "type": self.type,
            "status": self.status,
            "reason": self.reason,
            "message": self.message,
            "lastTransitionTime": self.last_transition_time,
            "observedGeneration": self.observed_generation,
        }

    @staticmethod
    def from_json(raw: Mapping[str, Any]) -> Condition:
        return Condition(
            type=raw["type"],
            status=raw["status"],
            reason=raw.get("reason", ""),
            message=raw.get("message", ""),
            last_transition_time=raw.get("lastTransitionTime", ""),
            observed_generation=int(raw.get("observedGeneration", 0)),
        )


@dataclass(frozen=True, kw_only=True)
class HistoryEntry:
    time: str
    phase: str
    step: int
    weight: int
    reason: str
    message: str

    def to_json(self) -> JSON:
        return {
            "time": self.time,
            "phase": self.phase,
            "step": self.step,
            "weight": self.weight,
            "reason": self.reason,
            "message": self.message,
        }

    @staticmethod
    def from_json(raw: Mapping[str, Any]) -> HistoryEntry:
        return HistoryEntry(
            time=raw.get("time", ""),
            phase=raw.get("phase", ""),
            step=int(raw.get("step", 0)),
            weight=int(raw.get("weight", 0)),
            reason=raw.get("reason", ""),
            message=raw.get("message", ""),
        )


@dataclass(frozen=True, kw_only=True)
class RecordedEvent:
    """An Event of the last pass that had any, kept in status under the name it is created with.

    A controller that crashed after writing the status and before creating the Event creates it
    after the restart; the API server refuses a second Event of the same name, so none is lost
    and none is doubled."""

    name: str
    type: str
    reason: str
    message: str
    time: str

    def to_json(self) -> JSON:
        return {"name": self.name, "type": self.type, "reason": self.reason, "message": self.message, "time": self.time}

    @staticmethod
    def from_json(raw: Mapping[str, Any]) -> RecordedEvent:
        return RecordedEvent(
            name=str(raw.get("name", "")),
            type=str(raw.get("type", "")),
            reason=str(raw.get("reason", "")),
            message=str(raw.get("message", "")),
            time=str(raw.get("time", "")),
        )


class IncidentResponse(StrEnum):
    """status.incident.response: what the controller did about the alert it records."""

    ROLLED_BACK = "RolledBack"
    """The canary was rolled back (spec.incidents.action: rollback)."""
    PAUSED = "Paused"
    """The canary holds its weight while the alert fires (action: pause)."""
    FROZEN = "Frozen"
    """The rollout holds before any traffic while the alert fires (any action but ignore)."""
    IGNORED = "Ignored"
    """Nothing (action: ignore): recorded only."""
    RECORDED = "Recorded"
    """The alert fired after the promotion, outside spec.rollbackWindow (or with an action other
    than rollback): recorded only, nothing undone."""
    UNDONE = "Undone"
    """The alert fired within spec.rollbackWindow of the promotion: the promotion was undone."""


class UndoState(StrEnum):
    """status.undo.state: where an undo of a promotion stands."""

    PENDING = "Pending"
    """Asked: the version to go back to is being scaled up or becoming ready; traffic unchanged."""
    DONE = "Done"
    """All traffic is back on the version undone to (phase RolledBack)."""
    FAILED = "Failed"
    """That version was not ready within spec.progressDeadlineSeconds: traffic stayed where it was."""


@dataclass(frozen=True, kw_only=True)
class UndoRecord:
    """status.undo: the last undo of a promotion, asked by a person or by an alert."""

    from_version: str
    """The promoted version that was undone."""
    to_version: str
    """The version all traffic went back to."""
    requested_at: str
    """When the undo was asked (RFC 3339); the wait for the version to be ready counts from here."""
    state: UndoState
    cause: str
    """Who asked: `annotation <token>`, or the alert (its description)."""
    time: str = ""
    """When it ended (Done or Failed); empty while Pending."""

    def to_json(self) -> JSON:
        body: JSON = {
            "fromVersion": self.from_version,
            "toVersion": self.to_version,
            "requestedAt": self.requested_at,
            "state": self.state.value,
            "cause": self.cause,
        }
        if self.time:
            body["time"] = self.time
        return body

    @staticmethod
    def from_json(raw: object) -> UndoRecord | None:
        """The record stored in status; None for none, or for a value that cannot be read."""
        if not isinstance(raw, Mapping) or raw.get("state") not in UndoState._value2member_map_:
            return None
        return UndoRecord(
            from_version=str(raw.get("fromVersion", "")),
            to_version=str(raw.get("toVersion", "")),
            requested_at=str(raw.get("requestedAt", "")),
            state=UndoState(raw["state"]),
            cause=str(raw.get("cause", "")),
            time=str(raw.get("time", "")),
        )


class PostPromotionState(StrEnum):
    """status.postPromotion.state: where the analysis after a promotion stands."""

    RUNNING = "Running"
    """The promoted version is being measured against its guardrails."""
    PASSED = "Passed"
    """spec.postPromotion.duration is over and no guardrail was shown broken."""
    FAILED = "Failed"
    """A guardrail was shown broken: the promotion is undone (status.undo)."""
    INCONCLUSIVE = "Inconclusive"
    """The duration is over but its last look could not judge (no data, a provider error): nothing
    is undone, a person decides."""
    ABANDONED = "Abandoned"
    """Ended before its time: a new rollout started, an undo was asked, or postPromotion was removed."""


@dataclass(frozen=True, kw_only=True)
class PostPromotionRecord:
    """status.postPromotion: the analysis of the last promoted version after its promotion."""

    version: str
    """The promoted version measured."""
    state: PostPromotionState
    started_at: str
    """When it began (RFC 3339): the promotion, once the route showed all traffic on `version`."""
    ends_at: str
    """When it ends (started_at + spec.postPromotion.duration)."""
    message: str = ""
    """For people: the guardrails' latest verdict, or why it ended."""
    ended_at: str = ""
    """When it left Running; empty while Running."""
    analysis: Mapping[str, Any] = field(default_factory=dict)
    """Its looks, as status.analysis keeps a canary's (runs, evidence, measurements), kept verbatim."""

    def to_json(self) -> JSON:
        body: JSON = {
            "version": self.version,
            "state": self.state.value,
            "startedAt": self.started_at,
            "endsAt": self.ends_at,
            "message": self.message,
        }
        if self.ended_at:
            body["endedAt"] = self.ended_at
        if self.analysis:
            body["analysis"] = dict(self.analysis)
        return body

    @staticmethod
    def from_json(raw: object) -> PostPromotionRecord | None:
        """The record stored in status; None for none, or for a value that cannot be read."""
        if not isinstance(raw, Mapping) or raw.get("state") not in PostPromotionState._value2member_map_:
            return None
        analysis = raw.get("analysis")
        return PostPromotionRecord(
            version=str(raw.get("version", "")),
            state=PostPromotionState(raw["state"]),
            started_at=str(raw.get("startedAt", "")),
            ends_at=str(raw.get("endsAt", "")),
            message=str(raw.get("message", "")),
            ended_at=str(raw.get("endedAt", "")),
            analysis=dict(analysis) if isinstance(analysis, Mapping) else {},
        )


@dataclass(frozen=True, kw_only=True)
class IncidentRecord:
    """status.incident: the alert the controller last acted on (or recorded) for this rollout."""

    alertname: str
    """The alert's `alertname` label."""
    labels: Mapping[str, str]
    """All its labels, as Alertmanager sent them."""
    starts_at: str
    """When it started firing (RFC 3339)."""
    fingerprint: str
    """Alertmanager's identity of the alert; with starts_at, one firing of it."""
    summary: str = ""
    """Its `summary` (or `description`) annotation."""
    generator_url: str = ""
    """The rule's expression in the Prometheus that fired it."""
    response: IncidentResponse
    time: str
    """When the controller acted (RFC 3339)."""
    holding: bool = False
    """True while a freeze or a pause it caused is in force; False once lifted."""

    def same_firing(self, other: IncidentRecord) -> bool:
        """Whether both are about one firing of one alert (Alertmanager repeats it)."""
        return (self.fingerprint, self.starts_at) == (other.fingerprint, other.starts_at)

    def to_json(self) -> JSON:
        body: JSON = {
            "alertname": self.alertname,
            "labels": dict(sorted(self.labels.items())),
            "startsAt": self.starts_at,
            "fingerprint": self.fingerprint,
            "summary": self.summary,
            "generatorURL": self.generator_url,
            "response": self.response.value,
            "time": self.time,
            "holding": self.holding,
        }
        # The schema types both as date-time: an empty one (from a hand-edited status) is left out.
        return {k: v for k, v in body.items() if not (k in ("startsAt", "time") and not v)}

    @staticmethod
    def from_json(raw: object) -> IncidentRecord | None:
        """The record stored in status; None for none, or for a value that cannot be read."""
        if not isinstance(raw, Mapping) or raw.get("response") not in IncidentResponse._value2member_map_:
            return None
        labels = raw.get("labels")
        return IncidentRecord(
            alertname=str(raw.get("alertname", "")),
            labels={str(k): str(v) for k, v in labels.items()} if isinstance(labels, Mapping) else {},
            starts_at=str(raw.get("startsAt", "")),
            fingerprint=str(raw.get("fingerprint", "")),
            summary=str(raw.get("summary", "")),
            generator_url=str(raw.get("generatorURL", "")),
            response=IncidentResponse(raw["response"]),
            time=str(raw.get("time", "")),
            holding=raw.get("holding") is True,
        )


@dataclass(frozen=True, kw_only=True)
class ModelRolloutStatus:
    phase: Phase | None = None
    message: str = ""
    observed_generation: int = 0
    stable_version: str | None = None
    """The version serving 100 % before this rollout; traffic returns here on abort."""
    candidate_version: str | None = None
    """The version this rollout rolls out (or last rolled out), recorded when it starts: spec.candidate,
    or the revision the router read (KServe). `kubectl get mro` prints it as CANDIDATE."""
    candidate_hash: str | None = None
    """`ModelRolloutSpec.candidate_hash()` of the rollout in progress."""
    current_step_index: int = 0
    current_weight: int = 0
    """Candidate share, in percent, as last verified on the route."""
    step_started_at: str | None = None
    """When the current step began; timed pauses and analyses count from here."""
    paused_by_user: bool = False
    progress_at: str | None = None
    """Last time the rollout made progress; the progress deadline counts from here."""
    scale_down_at: str | None = None
    """When the version that lost may be scaled to zero; cleared once done."""
    scale_down_target: str | None = None
    conditions: tuple[Condition, ...] = ()
    history: tuple[HistoryEntry, ...] = ()
    route_weights: Mapping[str, int] | None = None
    """Percent per version last seen on the route as the controller set it; a route found
    otherwise was edited by someone else (reported, then restored)."""
    route_backends: Mapping[str, Backend] = field(default_factory=dict)
    """Backend of each version with traffic in route_weights: a version removed from
    spec.versions while it has traffic is still known, and drained."""
    route_mirror: Mirror | None = None
    """The mirror last seen on the route as the controller set it (None: none), kept like
    route_weights: a restarted controller knows what it set, and removes it when due."""
    recent_events: tuple[RecordedEvent, ...] = ()
    """The Events of the last pass that had any (see RecordedEvent)."""
    incident: IncidentRecord | None = None
    """The alert from Alertmanager the controller last acted on for this rollout (None: none)."""
    promoted_at: str | None = None
    """When the stable version was last promoted (RFC 3339); spec.rollbackWindow counts from here."""
    previous_stable_version: str | None = None
    """The version that promotion replaced: what an undo goes back to; cleared once undone."""
    kept_versions: tuple[str, ...] = ()
    """The versions promotions replaced that spec.rollbackRevisions keeps ready, newest first:
    never scaled down while listed."""
    undo_token: str | None = None
    """The value of the undo annotation last handled: the same value asks nothing again."""
    undo: UndoRecord | None = None
    """The last undo of a promotion (None: none)."""
    post_promotion: PostPromotionRecord | None = None
    """The analysis of the last promoted version after its promotion (spec.postPromotion; None: none)."""
    extra: Mapping[str, Any] = field(default_factory=dict)
    """Status fields owned by other parts (analysis measurements, gate reports), kept verbatim."""

    def to_json(self) -> JSON:
        body: JSON = dict(self.extra)
        body.update(
            {
                "phase": self.phase.value if self.phase else None,
                "message": self.message,
                "observedGeneration": self.observed_generation,
                "stableVersion": self.stable_version,
                "candidateVersion": self.candidate_version,
                "candidateHash": self.candidate_hash,
                "currentStepIndex": self.current_step_index,
                "currentWeight": self.current_weight,
                "stepStartedAt": self.step_started_at,
                "pausedByUser": self.paused_by_user,
                "progressAt": self.progress_at,
                "scaleDownAt": self.scale_down_at,
                "scaleDownTarget": self.scale_down_target,
                "conditions": [c.to_json() for c in self.conditions],
                "history": [h.to_json() for h in self.history],
                "routeWeights": dict(self.route_weights) if self.route_weights is not None else None,
                "routeBackends": {
                    version: {"service": backend.service, "port": backend.port}
                    for version, backend in self.route_backends.items()
                }
                or None,
                "routeMirror": self.route_mirror.to_json() if self.route_mirror is not None else None,
                "recentEvents": [e.to_json() for e in self.recent_events] or None,
                "incident": self.incident.to_json() if self.incident is not None else None,
                "promotedAt": self.promoted_at,
                "previousStableVersion": self.previous_stable_version,
                "keptVersions": list(self.kept_versions) or None,
                "undoToken": self.undo_token,
                "undo": self.undo.to_json() if self.undo is not None else None,
                "postPromotion": self.post_promotion.to_json() if self.post_promotion is not None else None,
            }
        )
        return {k: v for k, v in body.items() if v is not None}

    @staticmethod
    def from_json(raw: Mapping[str, Any] | None) -> ModelRolloutStatus:
        raw = raw or {}
        known = {
            "phase", "message", "observedGeneration", "stableVersion", "candidateVersion", "candidateHash",
            "currentStepIndex", "currentWeight", "stepStartedAt", "pausedByUser", "progressAt",
            "scaleDownAt", "scaleDownTarget", "conditions", "history", "routeWeights", "routeBackends",
            "routeMirror", "recentEvents", "incident", "promotedAt", "previousStableVersion", "keptVersions",
            "undoToken", "undo", "postPromotion",
        }  # fmt: skip
        phase = raw.get("phase")
        return ModelRolloutStatus(
            phase=Phase(str(phase)) if phase in Phase._value2member_map_ else None,
            message=raw.get("message", ""),
            observed_generation=int(raw.get("observedGeneration", 0)),
            stable_version=raw.get("stableVersion"),
            candidate_version=raw.get("candidateVersion"),
            candidate_hash=raw.get("candidateHash"),
            current_step_index=int(raw.get("currentStepIndex", 0)),
            current_weight=int(raw.get("currentWeight", 0)),
            step_started_at=raw.get("stepStartedAt"),
            paused_by_user=bool(raw.get("pausedByUser", False)),
            progress_at=raw.get("progressAt"),
            scale_down_at=raw.get("scaleDownAt"),
            scale_down_target=raw.get("scaleDownTarget"),
            conditions=tuple(Condition.from_json(c) for c in raw.get("conditions", [])),
            history=tuple(HistoryEntry.from_json(h) for h in raw.get("history", [])),
            route_weights=_route_weights(raw.get("routeWeights")),
            route_backends=_route_backends(raw.get("routeBackends")),
            route_mirror=Mirror.from_json(raw.get("routeMirror")),
            recent_events=tuple(RecordedEvent.from_json(e) for e in raw.get("recentEvents", []) or []),
            incident=IncidentRecord.from_json(raw.get("incident")),
            promoted_at=raw.get("promotedAt"),
            previous_stable_version=raw.get("previousStableVersion"),
            kept_versions=tuple(str(version) for version in raw.get("keptVersions") or ()),
            undo_token=raw.get("undoToken"),
            undo=UndoRecord.from_json(raw.get("undo")),
            post_promotion=PostPromotionRecord.from_json(raw.get("postPromotion")),
            extra={k: v for k, v in raw.items() if k not in known},
        )


def set_condition(
    conditions: Sequence[Condition],
    *,
    type: str,
    status: bool,
    reason: str,
    message: str,
    generation: int,
    now: datetime,
) -> tuple[Condition, ...]:
    """Conditions with `type` set; lastTransitionTime moves only when the status flips."""
    status_text = "True" if status else "False"
    previous = next((c for c in conditions if c.type == type), None)
    transition = (
        previous.last_transition_time if previous is not None and previous.status == status_text else format_time(now)
    )
    updated = Condition(
        type=type,
        status=status_text,
        reason=reason,
        message=message,
        last_transition_time=transition,
        observed_generation=generation,
    )
    return (*(c for c in conditions if c.type != type), updated)


def _section(raw: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    """spec.analysis or spec.gates, interpreted later by their checkers; an object or absent."""
    section = raw.get(name)
    if section is None:
        return {}
    if not isinstance(section, Mapping):
        raise SpecError(f"spec.{name}", f"must be an object, not {type(section).__name__}; see docs/{name}.md")
    return section


def _route_weights(raw: object) -> dict[str, int] | None:
    if not isinstance(raw, Mapping):
        return None
    return {str(version): int(weight) for version, weight in raw.items() if isinstance(weight, int)}


def _route_backends(raw: object) -> dict[str, Backend]:
    if not isinstance(raw, Mapping):
        return {}
    return {
        str(version): Backend(service=str(backend["service"]), port=int(backend["port"]))
        for version, backend in raw.items()
        if isinstance(backend, Mapping) and "service" in backend and isinstance(backend.get("port"), int)
    }


def with_history(status: ModelRolloutStatus, entry: HistoryEntry) -> ModelRolloutStatus:
    return replace(status, history=(*status.history, entry)[-HISTORY_LIMIT:])


def now_utc() -> datetime:
    return datetime.now(UTC)
