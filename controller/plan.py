"""The rollout state machine, as a pure function.

`decide(spec, status, observed)` looks at the stored status and at what the reconciler observed
(route weights, reference problems, check outcomes, a manual action) and returns a `Plan`: the
new status, the traffic split the route must have, Events to emit and when to look again. It
does no I/O and reads no clock.

Crash safety rests on two properties:

* the traffic split asked for is a function of the stored status alone, so a restarted
  controller asks for exactly what the crashed one last asked for (no flapping);
* a `setWeight` step completes only once the route is observed at its weight, so a crash
  between writing the route and writing the status repeats an idempotent write, never a step.

The same holds for the mirror a `mirror` step asks for: it is part of the split asked (a function
of the stored status), its step runs only once the route shows it, and ends only once the route
shows it removed, before any later step moves weight.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum

from controller.api import (
    DEFAULT_PROGRESS_DEADLINE_SECONDS,
    TERMINAL_PHASES,
    Action,
    AnalyzeStep,
    Backend,
    HistoryEntry,
    IncidentAction,
    IncidentRecord,
    IncidentResponse,
    Mirror,
    MirrorStep,
    ModelRolloutSpec,
    ModelRolloutStatus,
    ModelVersion,
    PauseStep,
    Phase,
    PostPromotionRecord,
    PostPromotionState,
    SetWeightStep,
    Step,
    UndoRecord,
    UndoState,
    format_time,
    parse_time,
    set_condition,
    with_history,
)
from controller.checks import CheckOutcome, InconclusivePolicy, Stage, StepWindow, Verdict
from controller.incidents.alerts import Alert
from controller.incidents.firing import labels_text

FULL_SHARE = 100
"""Percent: all of the route's traffic."""
MAX_TIMER_SECONDS = 100 * 365 * 86400.0
"""Timers further away than a century are a century: a stored `pause: 99999999h` (from before
the schema's one-week maximum) must not overflow the calendar."""
WAIT_FOR_ROUTE_SECONDS = 2.0
"""Look again this soon when the route did not show the weight just written."""
REFERENCE_RETRY_SECONDS = 10.0
"""Look again this soon while a referenced object is missing or does not fit."""
RUBRIC_FIELD = "rubric"
"""Status field listing the ML Test Score items the rollout verified, per stage and check."""
ANALYSIS_FIELD = "analysis"
"""The analysis checker's status field; after a promotion its looks go to status.postPromotion.analysis."""
CHECK_STATUS_FIELDS = (ANALYSIS_FIELD, "gates", RUBRIC_FIELD)
"""Status fields owned by checkers (and the rubric they report); cleared when a rollout starts over."""
INCIDENT_CONDITION = "IncidentAlert"
"""True while a firing alert from Alertmanager names the rollout and was acted on (or recorded);
its reason is the Event's (IncidentRollback, IncidentPause, IncidentFreeze, IncidentIgnored,
IncidentAfterPromotion); False, reason AlertResolved, once no such alert fires."""
UNDO_CONDITION = "Undone"
"""True once an undo sent all traffic back to the version a promotion replaced (reason Undo);
False while one waits for that version to be ready (UndoPending) or when it could not be
(UndoFailed)."""
UNDO_READY_RECHECK_SECONDS = 2.0
"""Look again this soon while an undo waits for the version it goes back to to be ready."""
POST_PROMOTION_CONDITION = "PostPromotionAnalysis"
"""True while the analysis after a promotion runs (reason Running) and once it passed (Passed);
False once a guardrail was shown broken (Failed), its last look could not judge (Inconclusive) or
it ended before its time (Abandoned)."""
LAST_LOOK_GRACE_SECONDS = 300.0
"""After spec.postPromotion.duration, how long its last look may take (reads in flight, a
controller restarting) before the analysis ends Inconclusive without it."""
ALERT_RECHECK_SECONDS = 30.0
"""Look again this often while an alert holds a rollout: a resolved alert queues the rollout at
once, this only covers a resolution that arrives otherwise (an alert that expires, a lost call)."""


class EventType(StrEnum):
    NORMAL = "Normal"
    WARNING = "Warning"


@dataclass(frozen=True, kw_only=True)
class Event:
    type: EventType
    reason: str
    message: str


@dataclass(frozen=True, kw_only=True)
class TrafficSplit:
    """What the route must do: the weights, in percent, it gives each version (versions not named
    get 0), and the copy of requests it sends, if any."""

    weights: Mapping[str, int]
    mirror: Mirror | None = None
    """The copies a mirror step asks for; None: the route mirrors nothing (for the controller)."""

    @staticmethod
    def all_to(version: str) -> TrafficSplit:
        return TrafficSplit(weights={version: 100})

    @staticmethod
    def canary(*, stable: str, candidate: str, candidate_weight: int, mirror: Mirror | None = None) -> TrafficSplit:
        return TrafficSplit(weights={stable: 100 - candidate_weight, candidate: candidate_weight}, mirror=mirror)

    def weights_match(self, observed: Mapping[str, int] | None) -> bool:
        """Whether the route gives each version the weight asked (whatever it mirrors)."""
        if observed is None:
            return False
        versions = set(self.weights) | set(observed)
        return all(observed.get(v, 0) == self.weights.get(v, 0) for v in versions)

    def satisfied_by(self, observed: Mapping[str, int] | None, mirror: Mirror | None) -> bool:
        """Whether a route showing `observed` weights and `mirror` is as asked."""
        return self.weights_match(observed) and mirror == self.mirror


class RouteWrite(StrEnum):
    """What one route write changes: a pass writes the route at most once."""

    WEIGHTS = "weights"
    MIRROR = "mirror"


def next_route_write(split: TrafficSplit, *, weights: Mapping[str, int], mirror: Mirror | None) -> RouteWrite | None:
    """Which part of `split` to write first on a route showing `weights` and `mirror` (None: it is
    as asked). The weights go first, so that a rollback is never delayed, except that a mirror
    is removed before the weights give its version more traffic: the candidate never gets both
    live requests of a later step and copies of them."""
    weights_differ = not split.weights_match(weights)
    if mirror == split.mirror:
        return RouteWrite.WEIGHTS if weights_differ else None
    if not weights_differ:
        return RouteWrite.MIRROR
    gains = mirror is not None and split.weights.get(mirror.version, 0) > weights.get(mirror.version, 0)
    return RouteWrite.MIRROR if split.mirror is None and gains else RouteWrite.WEIGHTS


@dataclass(frozen=True, kw_only=True)
class Observed:
    """What the reconciler saw this pass, before acting."""

    now: datetime
    generation: int
    deleting: bool = False
    deletion_requested_at: datetime | None = None
    """metadata.deletionTimestamp: returning traffic on deletion is given this long."""
    action: str | None = None
    """Raw value of the action annotation, if present."""
    route_weights: Mapping[str, int] | None = None
    """Percent of traffic per version (of spec.versions) on the route; None when unreadable."""
    route_mirror: Mirror | None = None
    """The mirror the controller owns on the route (None: none, or a router that cannot mirror)."""
    unrecorded_write: TrafficSplit | None = None
    """The route as this process wrote it in a pass whose status write did not land (a
    conflict): found on the route, it is the controller's own doing, not an edit."""
    reference_problem: str | None = None
    gates: CheckOutcome | None = None
    analysis: CheckOutcome | None = None
    alerts: tuple[Alert, ...] = ()
    """The firing alerts from Alertmanager that name this rollout (spec.incidents), earliest first."""
    alerts_since: datetime | None = None
    """When this process began to hear alerts (its receiver started); None: it hears none."""
    alerts_complete_at: datetime | None = None
    """From then on every alert that fires has reached this process: Alertmanager sends a firing
    alert again every repeat_interval, so a hold recorded before `alerts_since` by an alert not
    heard again by then is over. None: at once."""
    held_alert_resolved: bool = False
    """This process heard the alert whose hold status.incident records resolved: the hold ends,
    however recently it started listening."""
    undo_request: UndoRequest | None = None
    """The undo annotation (and the version it names), if set; handled once per value."""
    undo_target_ready: bool | None = None
    """Whether the Deployment of the version an undo goes back to (`undo_target`) is ready: True
    also for a version without a Deployment; None when not looked at (no undo wanted)."""


@dataclass(frozen=True, kw_only=True)
class UndoRequest:
    """The undo annotation as a person (or `kubectl modelrollout undo`) set it."""

    token: str
    """Its value: any new value asks for one undo."""
    to_version: str | None = None
    """The version to go back to (the undo-to-version annotation); None: the one the promotion replaced."""


@dataclass(frozen=True, kw_only=True)
class Plan:
    status: ModelRolloutStatus
    traffic: TrafficSplit | None
    """Split the route must have; None leaves the route alone."""
    events: tuple[Event, ...] = ()
    requeue_after: float | None = None
    scale_down_version: str | None = None
    """Version whose Deployment is due to be scaled to zero now."""
    scale_up_version: str | None = None
    """Version whose Deployment must have its replicas back now (an undo goes back to it)."""
    remove_finalizer: bool = False
    action_handled: bool = False


def stage_to_check(status: ModelRolloutStatus) -> str | None:
    """Which checker the reconciler must run before deciding: gates, analysis (while traffic is
    shared, and after a promotion while status.postPromotion runs) or none."""
    if _post_promotion_running(status):
        return "analysis"
    if status.phase == Phase.PENDING:
        # Held before any traffic, the gates wait for the resume that runs them again.
        return None if status.paused_by_user else "gates"
    if status.phase in (Phase.PROGRESSING, Phase.PAUSED):
        return "analysis"
    return None


def _post_promotion_running(status: ModelRolloutStatus) -> PostPromotionRecord | None:
    """status.postPromotion while it runs on the promoted version; None otherwise."""
    record = status.post_promotion
    if record is None or record.state != PostPromotionState.RUNNING or status.phase != Phase.PROMOTED:
        return None
    return record if record.version == status.stable_version else None


def post_promotion_window(spec: ModelRolloutSpec, status: ModelRolloutStatus) -> StepWindow | None:
    """The window the analysis after a promotion judges (spec.postPromotion, status.postPromotion),
    while it runs on the version the spec still names; indexed after the last step."""
    record = _post_promotion_running(status)
    started, ends = (parse_time(record.started_at), parse_time(record.ends_at)) if record else (None, None)
    if record is None or spec.post_promotion is None or spec.candidate != record.version:
        return None
    if started is None or ends is None:
        return None
    return StepWindow(index=len(spec.steps), started_at=started, seconds=(ends - started).total_seconds())


def analyze_window(spec: ModelRolloutSpec, status: ModelRolloutStatus) -> StepWindow | None:
    """The step in progress whose analysis judges a window of its own (an analyze step, or a
    mirror step with spec.analysis), if the current step is one."""
    index = status.current_step_index
    started = parse_time(status.step_started_at)
    if status.phase != Phase.PROGRESSING or index >= len(spec.steps) or started is None:
        return None
    return measured_window(spec, index, started_at=started)


def measured_window(spec: ModelRolloutSpec, index: int, *, started_at: datetime) -> StepWindow | None:
    """The window step `index` judges when it starts at `started_at`: an analyze step's, or a mirror
    step's when spec.analysis names metrics (the candidate's answers to the copies are measured as
    an analyze step measures its share); None for the other steps."""
    step = spec.steps[index]
    if not _judges_window(spec, step):
        return None
    assert isinstance(step, AnalyzeStep | MirrorStep)
    templates = step.templates if isinstance(step, AnalyzeStep) else ()
    return StepWindow(index=index, started_at=started_at, seconds=step.seconds, templates=templates)


def _judges_window(spec: ModelRolloutSpec, step: Step) -> bool:
    """An analyze step, or a mirror step with spec.analysis: the analysis judges its window."""
    return isinstance(step, AnalyzeStep) or (isinstance(step, MirrorStep) and spec.has_analysis)


def mirror_at(spec: ModelRolloutSpec, index: int) -> Mirror | None:
    """The mirror step `index` asks for while it runs; None for any other step (or the promotion)."""
    step = spec.steps[index] if index < len(spec.steps) else None
    return Mirror(version=spec.candidate, percent=step.percent) if isinstance(step, MirrorStep) else None


def holding_weight(d: _Decision, spec: ModelRolloutSpec) -> int:
    """The candidate weight to hold at while a rollout waits (a pause, an inconclusive analysis):
    the weight the route shows when that is one the current step may show (the previous step's,
    this setWeight step's, or 100 at the promotion), else the previous step's. Holding never takes
    back a weight already on the route, so a waiting rollout never flaps."""
    index = d.status.current_step_index
    held = held_weight(spec, index)
    allowed = {held}
    step = spec.steps[index] if index < len(spec.steps) else None
    if isinstance(step, SetWeightStep):
        allowed.add(step.weight)
    if index >= len(spec.steps):
        allowed.add(FULL_SHARE)
    weights = d.observed.route_weights or {}
    shown = weights.get(spec.candidate)
    for share in sorted(allowed, reverse=True):
        if shown == share and sum(weights.values()) == FULL_SHARE:
            return share
    return held


def held_weight(spec: ModelRolloutSpec, index: int) -> int:
    """Candidate weight set by the last setWeight step before `index` (0 if none)."""
    for step in reversed(spec.steps[:index]):
        if isinstance(step, SetWeightStep):
            return step.weight
    return 0


@dataclass(kw_only=True)
class _Decision:
    """Mutable scratch state of one `decide` call; frozen into a Plan at the end."""

    status: ModelRolloutStatus
    observed: Observed
    events: list[Event] = field(default_factory=list)
    requeue: list[float] = field(default_factory=list)
    scale_down_version: str | None = None
    scale_up_version: str | None = None
    remove_finalizer: bool = False
    asked: list[TrafficSplit] = field(default_factory=list)
    """Every split this decision asked for on its way (a step done, the next one entered): a
    route that shows one of them shows the controller's own doing."""

    @property
    def traffic(self) -> TrafficSplit | None:
        """The split the route must have when the decision is made; None leaves the route alone."""
        return self.asked[-1] if self.asked else None

    @traffic.setter
    def traffic(self, split: TrafficSplit | None) -> None:
        if split is None:
            self.asked.clear()
        else:
            self.asked.append(split)

    @property
    def now(self) -> datetime:
        return self.observed.now

    def shown(self, split: TrafficSplit) -> bool:
        """Whether the route, as observed, is as `split` asks: weights and mirror."""
        return split.satisfied_by(self.observed.route_weights, self.observed.route_mirror)

    def update(self, **changes: object) -> None:
        self.status = replace(self.status, **changes)  # type: ignore[arg-type]

    def event(self, type: EventType, reason: str, message: str) -> None:
        self.events.append(Event(type=type, reason=reason, message=message))

    def condition(self, type: str, ok: bool, reason: str, message: str) -> None:
        self.update(
            conditions=set_condition(
                self.status.conditions,
                type=type,
                status=ok,
                reason=reason,
                message=message,
                generation=self.observed.generation,
                now=self.now,
            )
        )

    def after(self, seconds: float) -> None:
        self.requeue.append(max(seconds, 0.0))

    def to_plan(self, *, original: ModelRolloutStatus) -> Plan:
        status = self.status
        if status.phase != original.phase or status.current_step_index != original.current_step_index:
            status = with_history(
                status,
                HistoryEntry(
                    time=format_time(self.now),
                    phase=status.phase.value if status.phase else "",
                    step=status.current_step_index,
                    weight=status.current_weight,
                    reason=self.events[-1].reason if self.events else "",
                    message=status.message,
                ),
            )
        return Plan(
            status=status,
            traffic=self.traffic,
            events=tuple(self.events),
            requeue_after=min(self.requeue) if self.requeue else None,
            scale_down_version=self.scale_down_version,
            scale_up_version=self.scale_up_version,
            remove_finalizer=self.remove_finalizer,
            action_handled=self.observed.action is not None,
        )


def decide(
    *,
    spec: ModelRolloutSpec | None,
    spec_error: str | None,
    status: ModelRolloutStatus,
    observed: Observed,
) -> Plan:
    """The next move of one rollout. `spec` is None exactly when `spec_error` says why."""
    d = _Decision(status=status, observed=observed)
    stable = status.stable_version or (spec.baseline if spec else None)
    if observed.deleting:
        deadline = spec.progress_deadline_seconds if spec else DEFAULT_PROGRESS_DEADLINE_SECONDS
        _finalize(d, stable, deadline_seconds=deadline)
    elif spec is None:
        _invalid_spec(d, spec_error or "invalid spec", stable)
    else:
        _mark_spec_valid(d)
        _run(d, spec)
    _track_route(d, spec)
    d.update(current_weight=_candidate_share(d, spec))
    _progressing_condition(d)
    return d.to_plan(original=status)


def wait_for_versions(*, status: ModelRolloutStatus, observed: Observed, deadline_seconds: float) -> Plan:
    """The plan of a rollout whose router reads the versions from the routed object (KServe), which
    cannot be read (`observed.reference_problem` says why) and never could: no version is known, so
    no traffic is asked for or returned. It waits Pending with ReferencesValid=False, looking again
    every REFERENCE_RETRY_SECONDS, and fails at the progress deadline (counted from when it started
    waiting); once the object can be read, the rollout starts (it has no candidate yet). On deletion
    it lets the object go."""
    d = _Decision(status=status, observed=observed)
    if observed.deleting:
        d.remove_finalizer = True
        return d.to_plan(original=status)
    _mark_spec_valid(d)
    _handle_action_not_applicable(d, _parse_action(d))
    if d.status.phase is None:
        d.update(phase=Phase.PENDING, progress_at=format_time(d.now), observed_generation=observed.generation)
    if d.status.phase == Phase.FAILED:
        return d.to_plan(original=status)
    _reference_condition(d)
    d.after(REFERENCE_RETRY_SECONDS)
    missing = next(c for c in d.status.conditions if c.type == "ReferencesValid")
    waited = _waited(d, not_before=missing.last_transition_time) or 0.0
    if waited > deadline_seconds:
        message = _deadline_message(waited, deadline_seconds, f"for the versions: {observed.reference_problem}")
        d.update(phase=Phase.FAILED, message=message)
        d.event(EventType.WARNING, "ProgressDeadlineExceeded", message)
        d.condition("Progressing", False, "ProgressDeadlineExceeded", message)
        return d.to_plan(original=status)
    _progressing_condition(d)
    return d.to_plan(original=status)


def describe_weights(weights: Mapping[str, int]) -> str:
    """`v1 90%, v2 10%`: the versions with traffic, for messages."""
    shares = [f"{version} {weight}%" for version, weight in sorted(weights.items()) if weight]
    return ", ".join(shares) or "no traffic anywhere"


def describe_split(split: TrafficSplit) -> str:
    """`v1 100%; copies 100% of requests to v2`: the weights and the mirror, for messages."""
    mirror = split.mirror
    copies = f"; copies {mirror.percent}% of requests to {mirror.version}" if mirror is not None else ""
    return describe_weights(split.weights) + copies


def _track_route(d: _Decision, spec: ModelRolloutSpec | None) -> None:
    """Remembers the route as the controller set it, and reports a route someone else changed.

    Found otherwise than recorded and otherwise than asked, the route was edited by hand (or by
    another tool): the plan restores it, and the Event says what was found and what is restored.
    Found as asked (by this decision, on its way) but not as recorded is no edit: a crash between
    a route write and the status write leaves exactly that, and it is simply recorded; so is the
    split of a route write whose status write was refused (`Observed.unrecorded_write`), which a
    person's action handled since may no longer ask. The mirror the controller owns on the route
    is part of it: recorded with the weights, restored with them."""
    found = d.observed.route_weights
    planned = d.traffic
    if found is None:
        return
    own = d.observed.unrecorded_write
    if planned is None or any(d.shown(split) for split in d.asked) or (own is not None and d.shown(own)):
        d.update(
            route_weights=dict(found),
            route_mirror=d.observed.route_mirror,
            route_backends=_backends_with_traffic(d.status, spec, found),
        )
        return
    if d.status.route_weights is None:
        return
    recorded = TrafficSplit(weights=d.status.route_weights, mirror=d.status.route_mirror)
    if not d.shown(recorded):
        seen = TrafficSplit(weights=found, mirror=d.observed.route_mirror)
        d.event(
            EventType.WARNING,
            "TrafficDrift",
            f"the route was changed outside the controller: found {describe_split(seen)} where it had set "
            f"{describe_split(recorded)}; restoring {describe_split(planned)}",
        )


def _backends_with_traffic(
    status: ModelRolloutStatus, spec: ModelRolloutSpec | None, weights: Mapping[str, int]
) -> dict[str, Backend]:
    known = dict(status.route_backends)
    if spec is not None:
        known.update({version.version: version.backend for version in spec.versions if version.backend is not None})
    return {version: known[version] for version, weight in weights.items() if weight > 0 and version in known}


def route_spec(spec: ModelRolloutSpec, status: ModelRolloutStatus) -> ModelRolloutSpec:
    """The spec as the router must see it: spec.versions plus each version removed from them while
    the route still gives it traffic (recorded in status), so that its share can be drained."""
    labels = {version.version for version in spec.versions}
    backends = {version.backend for version in spec.versions}
    retired = tuple(
        ModelVersion(version=version, backend=backend)
        for version, backend in status.route_backends.items()
        if version not in labels and backend not in backends and (status.route_weights or {}).get(version, 0) > 0
    )
    return replace(spec, versions=spec.versions + retired) if retired else spec


def _progressing_condition(d: _Decision) -> None:
    phase = d.status.phase
    if phase is None:
        return
    in_flight = phase not in TERMINAL_PHASES
    d.condition("Progressing", in_flight, phase.value, d.status.message)


def _candidate_share(d: _Decision, spec: ModelRolloutSpec | None) -> int:
    weights = d.observed.route_weights
    if spec is None or weights is None:
        return d.status.current_weight
    if d.traffic is not None and not d.traffic.weights_match(weights):
        return d.status.current_weight
    share = weights.get(spec.candidate, 0)
    # A route whose rules disagree reads -1 everywhere: no share to report.
    return share if 0 <= share <= FULL_SHARE else d.status.current_weight


def _finalize(d: _Decision, stable: str | None, *, deadline_seconds: float) -> None:
    """On deletion: all traffic back to the stable version, then let the object go."""
    if stable is None or d.observed.route_weights is None:
        d.remove_finalizer = True
        return
    d.traffic = TrafficSplit.all_to(stable)
    if d.shown(d.traffic):
        d.remove_finalizer = True
        return
    since = d.observed.deletion_requested_at
    waited = (d.now - since).total_seconds() if since is not None else 0.0
    if waited <= deadline_seconds:
        d.after(min(WAIT_FOR_ROUTE_SECONDS, deadline_seconds - waited + 0.5))
        return
    # Holding the object longer would only block its deletion (and its namespace's) for ever.
    found = TrafficSplit(weights=d.observed.route_weights, mirror=d.observed.route_mirror)
    unmirror = ", and remove the mirror" if found.mirror is not None else ""
    d.event(
        EventType.WARNING,
        "DrainAbandoned",
        f"deleted, but the route still shows {describe_split(found)} after {waited:.0f}s "
        f"(spec.progressDeadlineSeconds); send all traffic to {stable} by hand{unmirror}",
    )
    d.traffic = None
    d.remove_finalizer = True


def _invalid_spec(d: _Decision, error: str, stable: str | None) -> None:
    d.condition("SpecValid", False, "InvalidSpec", error)
    if stable is not None:
        d.traffic = TrafficSplit.all_to(stable)
    if d.status.phase != Phase.FAILED or d.status.message != error:
        d.event(EventType.WARNING, "InvalidSpec", error)
    d.update(phase=Phase.FAILED, message=error, observed_generation=d.observed.generation)
    _abandon_post_promotion(d, f"the spec cannot be acted on: {error}")
    _handle_action_not_applicable(d, _parse_action(d))


def _mark_spec_valid(d: _Decision) -> None:
    """SpecValid=True, unless the rollout failed on a mistake its checkers found: parsing alone
    cannot tell that it is fixed, so it stays False until the rollout starts over (a new spec or a
    retry) and is validated again while Pending."""
    previous = next((c for c in d.status.conditions if c.type == "SpecValid"), None)
    if d.status.phase == Phase.FAILED and previous is not None and previous.status == "False":
        return
    d.condition("SpecValid", True, "Valid", "")


def _run(d: _Decision, spec: ModelRolloutSpec) -> None:
    status = d.status
    stable = status.stable_version or spec.baseline
    if status.stable_version is None:
        d.update(stable_version=stable)
    action = _parse_action(d)

    if spec.candidate == stable:
        _steady(d, spec, stable, action)
        return
    if _must_start_over(d, spec, action):
        d.traffic = TrafficSplit.all_to(stable)
        readable = d.observed.route_weights is not None
        if readable and not d.shown(d.traffic) and status.candidate_hash is not None:
            # The previous rollout's traffic goes home first; the new one starts on the next plan.
            # (An unreadable route does not wait here: the new rollout waits while Pending, where
            # the progress deadline applies.)
            _reference_condition(d)
            d.after(WAIT_FOR_ROUTE_SECONDS)
            return
        _start(d, spec, stable)
        # Checkers ran against the stored status; the new rollout's gates run on the next pass.
        d.after(0)
        return

    phase = d.status.phase
    if phase in TERMINAL_PHASES:
        d.traffic = TrafficSplit.all_to(d.status.stable_version or stable)
        _handle_action_not_applicable(d, action)
        _settle_incident(d, spec)
        if not _undo(d, spec) and phase == Phase.PROMOTED:
            _record_alert_after_promotion(d, spec)
        _scale_down_when_due(d, spec)
        return
    _ignore_undo_request(d)

    if action is not None:
        _apply_action(d, spec, stable, action)
        if d.status.phase in TERMINAL_PHASES:
            _settle_incident(d, spec)
            return
        resumed_before_traffic = status.paused_by_user and not d.status.paused_by_user
        if resumed_before_traffic and d.status.phase == Phase.PENDING:
            # Resumed before any traffic: no gates ran while it was held, so they run first (as
            # at a start), never read as passed.
            d.traffic = TrafficSplit.all_to(stable)
            d.after(0)
            return

    _settle_incident(d, spec)
    if _rolled_back_for_alert(d, spec, stable):
        return

    if not _reference_condition(d):
        d.after(REFERENCE_RETRY_SECONDS)
        # Counted from when the reference went missing too: a rollout that waited for a person or
        # a long pause is not failed at once for an object deleted a moment ago.
        missing = next(c for c in d.status.conditions if c.type == "ReferencesValid")
        _check_deadline(d, spec, stable, waiting_for="valid references", not_before=missing.last_transition_time)
        return
    if d.status.phase == Phase.PENDING:
        _pending(d, spec, stable)
    else:
        _progress(d, spec, stable)
    _scale_down_when_due(d, spec)


def _parse_action(d: _Decision) -> Action | None:
    raw = d.observed.action
    if raw is None:
        return None
    try:
        return Action(raw.strip())
    except ValueError:
        allowed = ", ".join(a.value for a in Action)
        d.event(EventType.WARNING, "UnknownAction", f"action {raw!r} is not one of: {allowed}; nothing was done")
        return None


def _must_start_over(d: _Decision, spec: ModelRolloutSpec, action: Action | None) -> bool:
    status = d.status
    if status.candidate_hash is None or status.phase is None:
        return True
    if spec.versions_from_route and status.candidate_hash != spec.candidate_hash():
        # The routed object shows a new candidate (KServe: a new revision): no spec change says so.
        return True
    if status.observed_generation != d.observed.generation:
        return not (status.phase == Phase.PROMOTED and status.candidate_hash == spec.candidate_hash())
    return action == Action.RETRY and status.phase in (Phase.ROLLED_BACK, Phase.ABORTED, Phase.FAILED)


def _start(d: _Decision, spec: ModelRolloutSpec, stable: str) -> None:
    now = format_time(d.now)
    scale_down_target = d.status.scale_down_target
    keep_scale_down = scale_down_target is not None and scale_down_target != spec.candidate
    d.update(
        phase=Phase.PENDING,
        message=f"rolling out {spec.candidate} against {stable}",
        observed_generation=d.observed.generation,
        candidate_version=spec.candidate,
        candidate_hash=spec.candidate_hash(),
        current_step_index=0,
        step_started_at=now,
        progress_at=now,
        paused_by_user=False,
        scale_down_at=d.status.scale_down_at if keep_scale_down else None,
        scale_down_target=scale_down_target if keep_scale_down else None,
        extra={k: v for k, v in d.status.extra.items() if k not in CHECK_STATUS_FIELDS},
        # An alert that holds (a freeze) holds the new rollout too; one that is over is the old one's.
        incident=d.status.incident if d.status.incident is not None and d.status.incident.holding else None,
    )
    d.event(EventType.NORMAL, "RolloutStarted", f"rolling out {spec.candidate} against {stable}")
    _abandon_post_promotion(d, f"a new rollout of {spec.candidate} started")
    undo = d.status.undo
    if undo is not None and undo.state == UndoState.PENDING:
        # A new rollout replaces what the undo was about: it must never resume once that one is promoted.
        message = f"undo of {undo.from_version} abandoned: a new rollout of {spec.candidate} started"
        d.update(undo=replace(undo, state=UndoState.FAILED, time=now))
        d.event(EventType.WARNING, "UndoFailed", message)


def _steady(d: _Decision, spec: ModelRolloutSpec, stable: str, action: Action | None) -> None:
    """Nothing to roll out: the candidate already is the stable version."""
    d.traffic = TrafficSplit.all_to(stable)
    if d.status.phase != Phase.PROMOTED:
        message = f"{stable} serves all traffic; nothing to roll out"
        d.update(phase=Phase.PROMOTED, message=message, candidate_version=stable, paused_by_user=False)
        d.event(EventType.NORMAL, "Steady", message)
    d.update(observed_generation=d.observed.generation, candidate_hash=spec.candidate_hash())
    _handle_action_not_applicable(d, action)
    _settle_incident(d, spec)
    if not _undo(d, spec):
        _record_alert_after_promotion(d, spec)
        _watch_after_promotion(d, spec)
    _scale_down_when_due(d, spec)


def _handle_action_not_applicable(d: _Decision, action: Action | None) -> None:
    if action is not None:
        phase = d.status.phase.value if d.status.phase else "none"
        d.event(EventType.NORMAL, "ActionIgnored", f"action {action.value} does nothing in phase {phase}")


def _apply_action(d: _Decision, spec: ModelRolloutSpec, stable: str, action: Action) -> None:
    index = d.status.current_step_index
    if action == Action.ABORT:
        _return_to_stable(d, spec, stable, Phase.ABORTED, "Aborted", "aborted by a person")
    elif action == Action.PROMOTE_FULL:
        d.event(EventType.NORMAL, "PromotedByPerson", "remaining steps skipped by a person")
        _enter_step(d, spec, len(spec.steps), phase=Phase.PROGRESSING, paused_by_user=False)
    elif action == Action.PROMOTE:
        if d.status.phase == Phase.PENDING:
            d.event(EventType.NORMAL, "GatesSkipped", "pre-traffic gates skipped by a person")
            _enter_step(d, spec, index, phase=Phase.PROGRESSING, paused_by_user=False)
        else:
            d.event(EventType.NORMAL, "StepSkipped", f"step {index} skipped by a person")
            _enter_step(d, spec, index + 1, phase=Phase.PROGRESSING, paused_by_user=False)
    elif action == Action.PAUSE:
        d.update(paused_by_user=True, message=f"paused by a person at step {index}")
        d.event(EventType.NORMAL, "Paused", "paused by a person")
    elif action == Action.RESUME:
        before_traffic = d.status.phase == Phase.PENDING
        at_indefinite_pause = (
            not before_traffic and index < len(spec.steps) and spec.steps[index] == PauseStep(seconds=None)
        )
        if before_traffic and d.status.paused_by_user:
            d.event(EventType.NORMAL, "Resumed", "resumed by a person; the pre-traffic gates run again")
            d.update(paused_by_user=False, progress_at=format_time(d.now))
        elif d.status.paused_by_user or at_indefinite_pause:
            d.event(EventType.NORMAL, "Resumed", "resumed by a person")
            _enter_step(d, spec, index + 1 if at_indefinite_pause else index, phase=Phase.PROGRESSING)
            d.update(paused_by_user=False, progress_at=format_time(d.now))
        else:
            _handle_action_not_applicable(d, action)
    else:
        _handle_action_not_applicable(d, action)


def _enter_step(
    d: _Decision, spec: ModelRolloutSpec, index: int, *, phase: Phase, paused_by_user: bool | None = None
) -> None:
    index = min(index, len(spec.steps))
    step = spec.steps[index] if index < len(spec.steps) else None
    timed_seconds = step.seconds if isinstance(step, PauseStep | AnalyzeStep | MirrorStep) and step.seconds else 0.0
    if _analysis_runs_at(spec, index):
        # This pass's checker looked at the step left behind: the checker must start this step's
        # run (its first look is due within a grid period of the step's start). The reconciler
        # does so in the same pass (`entered_measured_step`); other callers get a pass at once.
        d.after(0)
    d.update(
        phase=phase,
        current_step_index=index,
        step_started_at=format_time(d.now),
        # The deadline counts from when a timed step is due to end, not from when it starts.
        progress_at=format_time(d.now + timedelta(seconds=min(timed_seconds, MAX_TIMER_SECONDS))),
        paused_by_user=d.status.paused_by_user if paused_by_user is None else paused_by_user,
    )


def entered_measured_step(spec: ModelRolloutSpec, *, checked: ModelRolloutStatus, decided: ModelRolloutStatus) -> bool:
    """Whether `decided` entered a step where the analysis measures, the checker having run on the
    step of `checked` (or not at all): its run has not started, and the checker must run on it."""
    if stage_to_check(decided) != "analysis":
        return False
    step = (decided.current_step_index, decided.step_started_at)
    return step != (checked.current_step_index, checked.step_started_at) and _analysis_runs_at(
        spec, decided.current_step_index
    )


def _analysis_runs_at(spec: ModelRolloutSpec, index: int) -> bool:
    """Whether the analysis measures at step `index`: an analyze step, a mirror step with
    spec.analysis, or background analysis (spec.analysis.startingStep) from its starting step on."""
    if index < len(spec.steps) and _judges_window(spec, spec.steps[index]):
        return True
    starting = spec.analysis.get("startingStep")
    return isinstance(starting, int) and index >= starting


def _reference_condition(d: _Decision) -> bool:
    problem = d.observed.reference_problem
    previous = next((c for c in d.status.conditions if c.type == "ReferencesValid"), None)
    if problem is None:
        d.condition("ReferencesValid", True, "Valid", "")
        return True
    if previous is None or previous.message != problem:
        d.event(EventType.WARNING, "InvalidReference", f"{problem}; no traffic moves until it is fixed")
    d.condition("ReferencesValid", False, "InvalidReference", problem)
    d.update(message=f"waiting: {problem}")
    return False


def merged_rubric(previous: object, *, stage: Stage, outcome: CheckOutcome) -> list[dict[str, str]]:
    """status.rubric with this outcome's entries in place of what the same checks reported before;
    entries of other checks and of the other stage stay (an analyze step reports only its metrics)."""
    entries = outcome.rubric
    reported = {entry.check for entry in entries}
    kept = [
        dict(entry)
        for entry in (previous if isinstance(previous, list) else [])
        if isinstance(entry, Mapping) and not (entry.get("stage") == stage.value and entry.get("check") in reported)
    ]
    return kept + [
        {"item": entry.item, "check": entry.check, "stage": stage.value, "verdict": entry.verdict.value}
        for entry in entries
    ]


def _check_outcome_condition(d: _Decision, type: str, outcome: CheckOutcome | None, *, stage: Stage) -> None:
    if outcome is None:
        return
    ok = outcome.verdict in (Verdict.SUCCESSFUL, Verdict.RUNNING)
    d.condition(type, ok, outcome.verdict.value, outcome.message)
    extra = dict(d.status.extra)
    extra.update(outcome.status_fields)
    rubric = merged_rubric(extra.get(RUBRIC_FIELD), stage=stage, outcome=outcome)
    if rubric:
        extra[RUBRIC_FIELD] = rubric
    d.update(extra=extra)
    if outcome.requeue_after is not None:
        d.after(outcome.requeue_after)


def _pending(d: _Decision, spec: ModelRolloutSpec, stable: str) -> None:
    """Before any traffic: the pre-traffic gates must pass."""
    d.traffic = TrafficSplit.all_to(stable)
    if _frozen_by_alert(d, spec):
        return
    if d.status.paused_by_user:
        return
    gates = d.observed.gates
    _check_outcome_condition(d, "GatesPassed", gates, stage=Stage.PRE_TRAFFIC)
    verdict = Verdict.SUCCESSFUL if gates is None else gates.verdict
    if verdict == Verdict.SUCCESSFUL:
        if gates is not None:
            d.event(EventType.NORMAL, "GatesPassed", gates.message or "pre-traffic gates passed")
        _enter_step(d, spec, 0, phase=Phase.PROGRESSING)
        _progress(d, spec, stable)
        return
    assert gates is not None
    if _judged_failed(d, gates):
        _return_to_stable(d, spec, stable, Phase.ROLLED_BACK, "GateFailed", gates.message)
        return
    if _paused_by_inconclusive(d, gates, phase=Phase.PENDING):
        return
    d.update(message=f"waiting for pre-traffic gates: {gates.message}" if gates.message else "running gates")
    _check_deadline(d, spec, stable, waiting_for="pre-traffic gates")


def _judged_failed(d: _Decision, outcome: CheckOutcome) -> bool:
    return outcome.verdict == Verdict.FAILED or (
        outcome.verdict == Verdict.INCONCLUSIVE and outcome.on_inconclusive == InconclusivePolicy.ROLLBACK
    )


def _paused_by_inconclusive(d: _Decision, outcome: CheckOutcome, *, phase: Phase = Phase.PAUSED) -> bool:
    """Held for a person by an inconclusive check with the pause policy. Gates hold in `phase`
    Pending: no traffic has moved, and a resume runs them again."""
    if outcome.verdict == Verdict.INCONCLUSIVE and outcome.on_inconclusive == InconclusivePolicy.PAUSE:
        if not d.status.paused_by_user:
            d.event(EventType.WARNING, "Inconclusive", f"paused: {outcome.message}")
        d.update(phase=phase, paused_by_user=True, message=f"paused, inconclusive: {outcome.message}")
        return True
    return False


def _progress(d: _Decision, spec: ModelRolloutSpec, stable: str) -> None:
    """Traffic is shared: walk the steps while they are done, then promote."""
    analysis = d.observed.analysis
    _check_outcome_condition(d, "AnalysisHealthy", analysis, stage=Stage.ANALYSIS)
    if analysis is not None and _judged_failed(d, analysis):
        _return_to_stable(d, spec, stable, Phase.ROLLED_BACK, "AnalysisFailed", analysis.message)
        return
    index = d.status.current_step_index
    # Held at a mirror step (a pause, an inconclusive look), the copies go on: the analysis needs them.
    d.traffic = TrafficSplit.canary(
        stable=stable, candidate=spec.candidate, candidate_weight=holding_weight(d, spec), mirror=mirror_at(spec, index)
    )
    if analysis is not None and _paused_by_inconclusive(d, analysis):
        return
    if _paused_by_alert(d, spec):
        return
    if d.status.paused_by_user:
        d.update(phase=Phase.PAUSED, message=f"paused by a person at step {index}")
        return
    hold = analysis is not None and analysis.verdict == Verdict.INCONCLUSIVE
    if hold:
        assert analysis is not None
        d.update(phase=Phase.PROGRESSING, message=f"holding at step {index}, inconclusive: {analysis.message}")
        _check_deadline(d, spec, stable, waiting_for="a conclusive analysis")
        return
    _walk_steps(d, spec, stable, analysis)


def _walk_steps(d: _Decision, spec: ModelRolloutSpec, stable: str, analysis: CheckOutcome | None) -> None:
    while (index := d.status.current_step_index) < len(spec.steps):
        step = spec.steps[index]
        started = parse_time(d.status.step_started_at) or d.now
        measured = measured_window(spec, index, started_at=started) is not None
        if isinstance(step, SetWeightStep):
            d.traffic = TrafficSplit.canary(stable=stable, candidate=spec.candidate, candidate_weight=step.weight)
            if _waiting_for_route(d, spec, stable, index, f"setting weight {step.weight}"):
                return
        elif isinstance(step, PauseStep) and step.seconds is None:
            if d.status.phase != Phase.PAUSED:
                d.event(EventType.NORMAL, "Paused", f"step {index}: paused until resumed")
            d.update(phase=Phase.PAUSED, message=f"step {index}: paused until resumed")
            return
        elif isinstance(step, MirrorStep):
            mirror = mirror_at(spec, index)
            d.traffic = TrafficSplit.canary(
                stable=stable, candidate=spec.candidate, candidate_weight=held_weight(spec, index), mirror=mirror
            )
            copying = f"copying {step.percent}% of requests to {spec.candidate}"
            # The step runs once the route showed the copies (status.routeMirror remembers it, so
            # that a route without them at the step's end reads as removed, not as never set), and
            # ends once the route shows them removed: no later step moves weight meanwhile.
            seen = mirror in (d.status.route_mirror, d.observed.route_mirror)
            if not seen and _waiting_for_route(d, spec, stable, index, copying):
                return
            if _timed_step_running(d, spec, stable, step, started=started, measured=measured, analysis=analysis):
                _waiting_for_route(d, spec, stable, index, copying)  # copies removed by hand come back
                return
            d.traffic = replace(d.traffic, mirror=None)
            if _waiting_for_route(d, spec, stable, index, "removing the mirror"):
                return
        elif _timed_step_running(d, spec, stable, step, started=started, measured=measured, analysis=analysis):
            return
        judged = f": {analysis.message}" if measured and analysis is not None else ""
        d.event(EventType.NORMAL, "StepCompleted", f"step {index} completed{judged}")
        _enter_step(d, spec, index + 1, phase=Phase.PROGRESSING)
    _promote(d, spec)


def _waiting_for_route(d: _Decision, spec: ModelRolloutSpec, stable: str, index: int, doing: str) -> bool:
    """Whether step `index` waits for the route to show what it asks (`d.traffic`): a step
    completes only once the route is observed as asked, within the progress deadline."""
    assert d.traffic is not None
    if d.shown(d.traffic):
        return False
    d.update(phase=Phase.PROGRESSING, message=f"step {index}: {doing}")
    d.after(WAIT_FOR_ROUTE_SECONDS)
    _check_deadline(d, spec, stable, waiting_for=f"the route to show {describe_split(d.traffic)}")
    return True


def _timed_step_running(
    d: _Decision,
    spec: ModelRolloutSpec,
    stable: str,
    step: PauseStep | AnalyzeStep | MirrorStep,
    *,
    started: datetime,
    measured: bool,
    analysis: CheckOutcome | None,
) -> bool:
    """Whether a timed step (a pause with a duration, an analyze or mirror step) still runs: its
    time is not up, or the analysis judging its window (`measured`) has not succeeded yet."""
    index = d.status.current_step_index
    remaining = (started - d.now).total_seconds() + (step.seconds or 0.0)
    analysis_done = not measured or (analysis is not None and analysis.verdict == Verdict.SUCCESSFUL)
    if remaining <= 0 and analysis_done:
        return False
    doing = {
        PauseStep: "pause",
        AnalyzeStep: "analysis",
        MirrorStep: f"shadow of {spec.candidate}" + (", analysis" if measured else ""),
    }[type(step)]
    d.update(phase=Phase.PROGRESSING, message=f"step {index}: {doing} at weight {held_weight(spec, index)}")
    if remaining > 0:
        d.after(remaining)
    else:
        _check_deadline(d, spec, stable, waiting_for="the analysis of this step to succeed")
    return True


def _promote(d: _Decision, spec: ModelRolloutSpec) -> None:
    previous_stable = d.status.stable_version
    d.traffic = TrafficSplit.all_to(spec.candidate)
    if not d.shown(d.traffic):
        d.update(phase=Phase.PROGRESSING, message=f"promoting {spec.candidate}: sending it all traffic")
        d.after(WAIT_FOR_ROUTE_SECONDS)
        _check_deadline(
            d, spec, d.status.stable_version or spec.baseline, waiting_for="the route to show the promotion"
        )
        return
    d.update(
        phase=Phase.PROMOTED,
        stable_version=spec.candidate,
        message=f"{spec.candidate} promoted; it serves all traffic",
        paused_by_user=False,
        promoted_at=format_time(d.now),
        previous_stable_version=previous_stable,
    )
    d.event(EventType.NORMAL, "Promoted", f"{spec.candidate} promoted, replacing {previous_stable}")
    if previous_stable is not None:
        _keep_replaced(d, spec, previous_stable)
        _start_post_promotion(d, spec)


def _keep_replaced(d: _Decision, spec: ModelRolloutSpec, replaced: str) -> None:
    """The version a promotion replaced stays ready for a fast undo: first in status.keptVersions
    with spec.rollbackRevisions (the version it pushes beyond that many leaves the list for its
    scale-down, in `_scale_down_when_due`, which follows in the same decision), and for the whole
    rollback window otherwise. The promoted version, now stable, is no longer kept."""
    kept = tuple(version for version in d.status.kept_versions if version not in (replaced, spec.candidate))
    if spec.rollback_revisions is not None:
        d.update(kept_versions=(replaced, *kept))
    else:
        d.update(kept_versions=kept)
        _schedule_scale_down(d, spec, replaced, not_before_seconds=_window_left(d, spec, replaced))


# After a promotion (spec.postPromotion) ---------------------------------------------------------


def _start_post_promotion(d: _Decision, spec: ModelRolloutSpec) -> None:
    """The promoted version (the route shows it at 100 %) is measured alone from now on, for
    spec.postPromotion.duration; its looks start empty, whatever an earlier promotion of it left."""
    if spec.post_promotion is None:
        return
    ends = d.now + timedelta(seconds=spec.post_promotion.duration_seconds)
    message = f"{spec.candidate} promoted; post-promotion analysis until {format_time(ends)}"
    d.update(
        post_promotion=PostPromotionRecord(
            version=spec.candidate,
            state=PostPromotionState.RUNNING,
            started_at=format_time(d.now),
            ends_at=format_time(ends),
            message="first look pending",
        ),
        message=message,
    )
    d.event(EventType.NORMAL, "PostPromotionStarted", f"{message}, against its guardrails (spec.postPromotion)")
    d.condition(POST_PROMOTION_CONDITION, True, "Running", message)
    # The next pass, at once, lets the analysis schedule its first look.
    d.after(0)


def _end_post_promotion(
    d: _Decision, state: PostPromotionState, message: str, *, looks: Mapping[str, object] | None = None
) -> None:
    """status.postPromotion leaves Running for `state`, with its condition."""
    record = d.status.post_promotion
    assert record is not None
    d.update(
        post_promotion=replace(
            record,
            state=state,
            message=message,
            ended_at=format_time(d.now),
            analysis=record.analysis if looks is None else looks,
        )
    )
    ok = state == PostPromotionState.PASSED
    d.condition(POST_PROMOTION_CONDITION, ok, state.value, message)


def _looks(outcome: CheckOutcome | None) -> Mapping[str, object] | None:
    """The looks an analysis outcome reports (its status.analysis), if any."""
    looks = outcome.status_fields.get(ANALYSIS_FIELD) if outcome is not None else None
    return looks if isinstance(looks, Mapping) else None


def broken_guardrail(*, spec: ModelRolloutSpec, status: ModelRolloutStatus, observed: Observed) -> str | None:
    """Why the promotion must be undone: the analysis after it (running on the promoted version)
    showed a guardrail broken; None otherwise."""
    analysis = observed.analysis
    if post_promotion_window(spec, status) is None or analysis is None or analysis.verdict != Verdict.FAILED:
        return None
    return f"post-promotion analysis of {status.stable_version} failed: {analysis.message}"


def _abandon_post_promotion(d: _Decision, why: str) -> None:
    """A running analysis after a promotion ends before its time (a new rollout, an undo asked)."""
    record = d.status.post_promotion
    if record is None or record.state != PostPromotionState.RUNNING:
        return
    message = f"post-promotion analysis of {record.version} abandoned: {why}"
    _end_post_promotion(d, PostPromotionState.ABANDONED, message)
    d.event(EventType.NORMAL, "PostPromotionAbandoned", message)


def _watch_after_promotion(d: _Decision, spec: ModelRolloutSpec) -> None:
    """While the analysis after a promotion runs: its looks are kept in status.postPromotion; once
    spec.postPromotion.duration is over, it passed (no guardrail shown broken), or it is
    Inconclusive when its last look could not judge (nothing is undone: a person decides). A
    broken guardrail is the undo's (`_start_undo`)."""
    record = _post_promotion_running(d.status)
    if record is None:
        return
    if post_promotion_window(spec, d.status) is None:
        _abandon_post_promotion(d, "spec.postPromotion was removed")
        return
    outcome = d.observed.analysis
    looks = _looks(outcome)
    if looks is not None:
        record = replace(record, analysis=looks)
        d.update(post_promotion=record)
    ends = parse_time(record.ends_at)
    assert ends is not None  # post_promotion_window read it
    left = (ends - d.now).total_seconds()
    verdict = outcome.verdict if outcome is not None else Verdict.RUNNING
    said = outcome.message if outcome is not None and outcome.message else "no look yet"
    if left <= 0 and verdict == Verdict.SUCCESSFUL:
        message = f"post-promotion analysis of {record.version} passed: {said}"
        _end_post_promotion(d, PostPromotionState.PASSED, message)
        d.update(message=f"{record.version} promoted; {message}")
        d.event(EventType.NORMAL, "PostPromotionPassed", message)
        return
    if (left <= 0 and verdict == Verdict.INCONCLUSIVE) or left <= -LAST_LOOK_GRACE_SECONDS:
        message = (
            f"post-promotion analysis of {record.version} inconclusive: {said}; nothing undone, "
            "decide yourself (kubectl modelrollout undo)"
        )
        _end_post_promotion(d, PostPromotionState.INCONCLUSIVE, message)
        d.update(message=f"{record.version} promoted; {message}")
        d.event(EventType.WARNING, "PostPromotionInconclusive", message)
        return
    message = f"{record.version} promoted; post-promotion analysis until {record.ends_at}: {said}"
    d.update(post_promotion=replace(record, message=said), message=message)
    d.condition(POST_PROMOTION_CONDITION, True, "Running", message)
    if outcome is not None and outcome.requeue_after is not None:
        d.after(outcome.requeue_after)
    d.after(left if left > 0 else LAST_LOOK_GRACE_SECONDS + left)


def _return_to_stable(
    d: _Decision, spec: ModelRolloutSpec, stable: str, phase: Phase, reason: str, message: str
) -> None:
    d.traffic = TrafficSplit.all_to(stable)
    d.update(phase=phase, message=message, paused_by_user=False)
    d.event(EventType.WARNING, reason, f"{message}; all traffic returned to {stable}")
    d.condition("Progressing", False, reason, message)
    _schedule_scale_down(d, spec, spec.candidate)


def _schedule_scale_down(
    d: _Decision, spec: ModelRolloutSpec, version: str, *, not_before_seconds: float = 0.0
) -> None:
    """`version`'s Deployment goes to zero after spec.scaleDown.delay, and not before
    `not_before_seconds` (the rollback window after a promotion); never a version that must stay
    ready. status.scaleDownTarget holds one version: another still pending there is scaled down
    now rather than never, unless the rollback window keeps it, and then `version` goes now."""
    if spec.scale_down is None or not _may_scale_down(d.status, spec, version):
        return
    pending = d.status.scale_down_target
    if pending is not None and pending != version and _may_scale_down(d.status, spec, pending):
        if _window_left(d, spec, pending) > 0:
            # The window promised the replaced version its replicas; what lost since has no undo to wait for.
            d.scale_down_version = version
            return
        # Overwritten, it would keep its replicas for ever.
        d.scale_down_version = pending
    delay = max(spec.scale_down.delay_seconds, not_before_seconds)
    due = d.now + timedelta(seconds=min(delay, MAX_TIMER_SECONDS))
    d.update(scale_down_at=format_time(due), scale_down_target=version)
    d.after(delay)


def _may_scale_down(status: ModelRolloutStatus, spec: ModelRolloutSpec, version: str) -> bool:
    """Whether `version` has a Deployment the controller may scale to zero: not the stable
    version, not one spec.rollbackRevisions keeps (status.keptVersions), not the candidate of a
    rollout in flight."""
    known = spec.find_version(version)
    deployment = None if known is None else known.deployment
    in_flight = version == status.candidate_version and status.phase not in TERMINAL_PHASES
    return deployment is not None and not in_flight and not _kept_ready(status, version)


def _kept_ready(status: ModelRolloutStatus, version: str) -> bool:
    """The stable version and the versions spec.rollbackRevisions keeps: never scaled down."""
    return version == status.stable_version or version in status.kept_versions


def _window_left(d: _Decision, spec: ModelRolloutSpec, version: str) -> float:
    """Seconds of spec.rollbackWindow left for `version`: the window keeps the version the last
    promotion replaced (status.previousStableVersion) ready; 0 for any other."""
    promoted_at = parse_time(d.status.promoted_at)
    window = spec.rollback_window_seconds
    if window is None or promoted_at is None or version != d.status.previous_stable_version:
        return 0.0
    return max(window - (d.now - promoted_at).total_seconds(), 0.0)


def _release_kept_beyond_limit(d: _Decision, spec: ModelRolloutSpec) -> None:
    """The oldest version kept beyond spec.rollbackRevisions (pushed out by a promotion, or the
    limit lowered or removed) leaves status.keptVersions and is scheduled for scale-down (after
    what is left of the rollback window, if it keeps it). One per decision, as a plan scales one
    Deployment down: the next one in the next pass."""
    kept = d.status.kept_versions
    limit = spec.rollback_revisions or 0
    if len(kept) <= limit:
        return
    if d.scale_down_version is not None:
        d.after(0)
        return
    oldest = kept[-1]
    d.update(kept_versions=kept[:-1])
    _schedule_scale_down(d, spec, oldest, not_before_seconds=_window_left(d, spec, oldest))
    if len(kept) - 1 > limit:
        d.after(0)


def _scale_down_when_due(d: _Decision, spec: ModelRolloutSpec) -> None:
    """Releases a version kept beyond spec.rollbackRevisions, then scales status.scaleDownTarget
    down once due: not while it is the candidate of a rollout in flight, and never the stable
    version or a kept one (going back to it made it one: it is no target any more)."""
    _release_kept_beyond_limit(d, spec)
    due = parse_time(d.status.scale_down_at)
    target = d.status.scale_down_target
    if due is None or target is None:
        return
    if _kept_ready(d.status, target):
        d.update(scale_down_at=None, scale_down_target=None)
        return
    if target == d.status.candidate_version and d.status.phase not in TERMINAL_PHASES:
        return
    if d.now < due:
        d.after((due - d.now).total_seconds())
    elif spec.find_version(target) is None:
        # Its entry, and with it the name of its Deployment, left spec.versions while it waited.
        d.update(scale_down_at=None, scale_down_target=None)
        d.event(
            EventType.NORMAL,
            "ScaleDownDropped",
            f"{target} was removed from spec.versions before its scale-down; its Deployment is left as it is "
            "(scale it down by hand, or add the version back to spec.versions before its scale-down is due)",
        )
    elif d.scale_down_version is None:
        d.scale_down_version = target
    else:
        # One Deployment per plan: this decision scales down the one it replaced; this one next.
        d.after(0)


def _waited(d: _Decision, *, not_before: str | None) -> float | None:
    """Seconds waited since status.progressAt (or `not_before`, when later); None without either."""
    since = max((t for t in (parse_time(d.status.progress_at), parse_time(not_before)) if t is not None), default=None)
    return None if since is None else (d.now - since).total_seconds()


def _deadline_message(waited: float, limit: float, what: str) -> str:
    return f"progress deadline exceeded: waited {waited:.0f}s (limit {limit:.0f}s, spec.progressDeadlineSeconds) {what}"


def _check_deadline(
    d: _Decision, spec: ModelRolloutSpec, stable: str, *, waiting_for: str, not_before: str | None = None
) -> None:
    """Fails the rollout once it has waited longer than its progress deadline, counted from
    status.progressAt (or `not_before`, when later)."""
    waited = _waited(d, not_before=not_before)
    if waited is None:
        return
    if waited > spec.progress_deadline_seconds:
        where = f"at step {d.status.current_step_index} for {waiting_for}"
        message = _deadline_message(waited, spec.progress_deadline_seconds, where)
        _return_to_stable(d, spec, stable, Phase.FAILED, "ProgressDeadlineExceeded", message)
    else:
        d.after(spec.progress_deadline_seconds - waited + 0.5)


# Alerts from Alertmanager (spec.incidents) ------------------------------------------------------


def describe_alert(record: IncidentRecord) -> str:
    """`alert ModelErrorRate {alertname="ModelErrorRate", model="iris"} firing since 2026-...Z`."""
    name = record.alertname or record.fingerprint
    return f"alert {name} {labels_text(record.labels)} firing since {record.starts_at}"


def incident_record(alert: Alert, *, response: IncidentResponse, now: datetime, holding: bool) -> IncidentRecord:
    """What status.incident says about `alert` once the controller responded to it at `now`."""
    annotations = alert.annotations
    return IncidentRecord(
        alertname=alert.name,
        labels=dict(alert.labels),
        starts_at=format_time(alert.starts_at),
        fingerprint=alert.fingerprint,
        summary=annotations.get("summary") or annotations.get("description", ""),
        generator_url=alert.generator_url,
        response=response,
        time=format_time(now),
        holding=holding,
    )


def _alert_in_force(
    d: _Decision, spec: ModelRolloutSpec, *, response: IncidentResponse, holding: bool
) -> IncidentRecord | None:
    """The alert that acts on the rollout now, as the record `response` would leave: the earliest
    matching firing alert, unless spec.incidents.action is ignore; or else the alert whose hold is
    recorded, for as long as this process cannot tell that it stopped (`_hold_can_end`)."""
    if spec.incidents.action == IncidentAction.IGNORE:
        return None
    if d.observed.alerts:
        return incident_record(d.observed.alerts[0], response=response, now=d.now, holding=holding)
    recorded = d.status.incident
    if recorded is not None and recorded.holding and not _hold_can_end(d, recorded):
        return replace(recorded, response=response, holding=holding)
    return None


def _hold_can_end(d: _Decision, recorded: IncidentRecord) -> bool:
    """Whether the absence of the recorded alert from the alerts heard means it no longer fires.

    It does when this process heard alerts when the hold began, or hears none at all, or heard
    that alert resolved; a process that started since (a restart, a new leader) knows only the
    alerts sent to it, and Alertmanager sends a firing alert again only every repeat_interval:
    until then, the hold stays."""
    since = d.observed.alerts_since
    held_at = parse_time(recorded.time)
    if since is None or d.observed.held_alert_resolved or (held_at is not None and held_at >= since):
        return True
    complete = d.observed.alerts_complete_at
    if complete is None or d.now >= complete:
        return True
    d.after((complete - d.now).total_seconds())
    return False


def _note_incident(d: _Decision, record: IncidentRecord, *, reason: str, message: str, warning: bool = True) -> None:
    """Records `record` in status.incident, with an Event, when it is news (another firing of an
    alert, or another response to it); Alertmanager repeats a firing alert, which is no news. The
    IncidentAlert condition says the same meanwhile."""
    previous = d.status.incident
    news = (
        previous is None
        or not previous.same_firing(record)
        or (previous.response, previous.holding) != (record.response, record.holding)
    )
    if news:
        d.update(incident=record)
        d.event(EventType.WARNING if warning else EventType.NORMAL, reason, message)
    d.condition(INCIDENT_CONDITION, True, reason, message)


def _settle_incident(d: _Decision, spec: ModelRolloutSpec) -> None:
    """Keeps status.incident and the IncidentAlert condition true to the alerts heard: an alert the
    rollout ignores (spec.incidents.action) is recorded once per firing; a hold ends once its alert
    no longer fires (or the rollout ended otherwise); the condition turns False once no alert names
    the rollout."""
    alert = d.observed.alerts[0] if d.observed.alerts else None
    ignored = spec.incidents.action == IncidentAction.IGNORE
    recorded = d.status.incident
    if recorded is not None and recorded.holding and d.status.phase in TERMINAL_PHASES:
        # Aborted, failed or promoted by a person meanwhile: nothing is held any more.
        d.update(incident=replace(recorded, holding=False))
    elif recorded is not None and recorded.holding and (alert is None or ignored):
        if not _hold_can_end(d, recorded):
            return
        _lift_hold(d, spec, recorded)
    if alert is not None and ignored:
        record = incident_record(alert, response=IncidentResponse.IGNORED, now=d.now, holding=False)
        message = f"{describe_alert(record)} names this rollout; nothing done (spec.incidents.action: ignore)"
        _note_incident(d, record, reason="IncidentIgnored", message=message, warning=False)
        return
    recorded = d.status.incident
    condition = next((c for c in d.status.conditions if c.type == INCIDENT_CONDITION), None)
    if alert is None and recorded is not None and condition is not None and condition.status == "True":
        d.condition(INCIDENT_CONDITION, False, "AlertResolved", f"{describe_alert(recorded)} no longer fires")


def _lift_hold(d: _Decision, spec: ModelRolloutSpec, recorded: IncidentRecord) -> None:
    """The alert that froze or paused the rollout is over: it goes on. The progress deadline counts
    from now (the hold was no lack of progress), and a paused step starts over, as after a
    person's resume, so that a timed step is watched for its whole time."""
    d.update(incident=replace(recorded, holding=False), progress_at=format_time(d.now))
    d.event(EventType.NORMAL, "IncidentResolved", f"{describe_alert(recorded)} no longer fires: the rollout goes on")
    if recorded.response == IncidentResponse.PAUSED and d.status.phase in (Phase.PROGRESSING, Phase.PAUSED):
        _enter_step(d, spec, d.status.current_step_index, phase=Phase.PROGRESSING)


def _rolled_back_for_alert(d: _Decision, spec: ModelRolloutSpec, stable: str) -> bool:
    """A canary (traffic shared) that a firing alert names, with spec.incidents.action rollback:
    all traffic back to the stable version at once, as for a failed analysis."""
    if spec.incidents.action != IncidentAction.ROLLBACK or d.status.phase not in (Phase.PROGRESSING, Phase.PAUSED):
        return False
    firing = _alert_in_force(d, spec, response=IncidentResponse.ROLLED_BACK, holding=False)
    if firing is None:
        return False
    message = f"{describe_alert(firing)} names this rollout (spec.incidents.action: rollback)"
    d.update(incident=firing)
    d.condition(INCIDENT_CONDITION, True, "IncidentRollback", message)
    _return_to_stable(d, spec, stable, Phase.ROLLED_BACK, "IncidentRollback", message)
    return True


def _paused_by_alert(d: _Decision, spec: ModelRolloutSpec) -> bool:
    """A canary that a firing alert names, with spec.incidents.action pause: it holds the weight
    the route shows (never less: no flap), the analysis still measures, no step moves on."""
    if spec.incidents.action != IncidentAction.PAUSE:
        return False
    firing = _alert_in_force(d, spec, response=IncidentResponse.PAUSED, holding=True)
    if firing is None:
        return False
    index = d.status.current_step_index
    message = f"{describe_alert(firing)} names this rollout: held at step {index} until it no longer fires"
    _note_incident(d, firing, reason="IncidentPause", message=f"{message} (spec.incidents.action: pause)")
    d.update(phase=Phase.PAUSED, message=f"paused: {message}")
    d.after(ALERT_RECHECK_SECONDS)
    return True


def _frozen_by_alert(d: _Decision, spec: ModelRolloutSpec) -> bool:
    """A rollout before any traffic that a firing alert names (any action but ignore): frozen, no
    traffic to the candidate, until the alert no longer fires. Its gates still run."""
    firing = _alert_in_force(d, spec, response=IncidentResponse.FROZEN, holding=True)
    if firing is None:
        return False
    message = f"{describe_alert(firing)} names model {spec.model}: {spec.candidate} gets no traffic until it resolves"
    _note_incident(d, firing, reason="IncidentFreeze", message=message)
    d.update(message=f"frozen: {message}")
    d.after(ALERT_RECHECK_SECONDS)
    return True


def _record_alert_after_promotion(d: _Decision, spec: ModelRolloutSpec) -> None:
    """A promoted rollout that a firing alert names and `_undo` did not act on (outside
    spec.rollbackWindow, or spec.incidents.action is not rollback): recorded (status.incident, an
    Event), nothing undone."""
    alert = d.observed.alerts[0] if d.observed.alerts else None
    if alert is None or spec.incidents.action == IncidentAction.IGNORE or d.status.phase != Phase.PROMOTED:
        return
    record = incident_record(alert, response=IncidentResponse.RECORDED, now=d.now, holding=False)
    why = (
        "spec.incidents.action is not rollback"
        if spec.incidents.action != IncidentAction.ROLLBACK
        else "outside spec.rollbackWindow"
        if spec.rollback_window_seconds
        else "no spec.rollbackWindow; spec.rollbackRevisions sets no time within which an alert may undo"
        if spec.rollback_revisions
        else "no spec.rollbackWindow"
    )
    message = (
        f"{describe_alert(record)} names this rollout after {d.status.stable_version} was promoted: recorded "
        f"only, nothing undone ({why}); to go back, undo: kubectl modelrollout undo"
    )
    _note_incident(d, record, reason="IncidentAfterPromotion", message=message)


# Undoing a promotion (spec.rollbackWindow, the undo annotation) -----------------------------------


def _new_undo_request(status: ModelRolloutStatus, observed: Observed) -> UndoRequest | None:
    """The undo annotation, when its value was not handled before (status.undoToken)."""
    request = observed.undo_request
    if request is None or request.token == status.undo_token:
        return None
    return request


def _alert_within_window(spec: ModelRolloutSpec, status: ModelRolloutStatus, observed: Observed) -> Alert | None:
    """The firing alert that undoes the promotion: spec.incidents.action is rollback, and it fires
    less than spec.rollbackWindow after the promotion (status.promotedAt)."""
    promoted_at = parse_time(status.promoted_at)
    window = spec.rollback_window_seconds
    if not observed.alerts or spec.incidents.action != IncidentAction.ROLLBACK or window is None:
        return None
    if promoted_at is None or (observed.now - promoted_at).total_seconds() >= window:
        return None
    tried = parse_time(status.undo.requested_at) if status.undo is not None else None
    if tried is not None and tried >= promoted_at:
        # This promotion was already undone, or an undo of it failed: an alert does not retry it
        # every pass (a person can, with a new undo token).
        return None
    return observed.alerts[0]


def undo_target(*, spec: ModelRolloutSpec, status: ModelRolloutStatus, observed: Observed) -> str | None:
    """The version an undo goes back to in this pass, whose Deployment's readiness `decide` needs
    (`Observed.undo_target_ready`); None when no undo is pending or wanted."""
    pending = status.undo
    if pending is not None and pending.state == UndoState.PENDING:
        return pending.to_version
    if status.phase != Phase.PROMOTED or status.stable_version != spec.candidate:
        return None
    request = _new_undo_request(status, observed)
    if request is not None:
        return request.to_version or status.previous_stable_version
    if _alert_within_window(spec, status, observed) is not None:
        return status.previous_stable_version
    if broken_guardrail(spec=spec, status=status, observed=observed) is not None:
        return status.previous_stable_version
    return None


def _undo_refusal(spec: ModelRolloutSpec, status: ModelRolloutStatus, target: str | None) -> str | None:
    """Why an undo to `target` cannot be done (None: it can)."""
    if status.phase != Phase.PROMOTED or status.stable_version != spec.candidate:
        phase = status.phase.value if status.phase else "none"
        return f"nothing to undo in phase {phase}: only a promotion is undone"
    if spec.versions_from_route:
        return "undo is not built for routers that read the versions from the routed object (kserve)"
    if target is None:
        return "no previous stable version is known (status.previousStableVersion); name one with undo-to-version"
    if target == status.stable_version:
        return f"{target} already serves all traffic"
    if target not in {version.version for version in spec.versions}:
        return f"{target} is not one of spec.versions[].version; add it back to undo to it"
    return None


def _ignore_undo_request(d: _Decision) -> None:
    """An undo asked while a rollout is in flight: nothing to undo (abort returns traffic); the
    value is handled, so it never acts later."""
    request = _new_undo_request(d.status, d.observed)
    if request is None:
        return
    phase = d.status.phase.value if d.status.phase else "none"
    d.update(undo_token=request.token)
    d.event(EventType.NORMAL, "UndoIgnored", f"undo {request.token!r} does nothing in phase {phase}")


def _undo(d: _Decision, spec: ModelRolloutSpec) -> bool:
    """Undoes the last promotion when asked (the undo annotation, any time) or when an alert names
    the rollout within spec.rollbackWindow: the version it replaced gets its replicas back and,
    once ready, all traffic at once (never a share of it: the promoted version is the suspect).
    Returns whether an undo is under way or done in this decision (the route is then its)."""
    pending = d.status.undo if d.status.undo is not None and d.status.undo.state == UndoState.PENDING else None
    request = _new_undo_request(d.status, d.observed)
    if request is not None:
        d.update(undo_token=request.token)
    if pending is None:
        pending = _start_undo(d, spec, request)
        if pending is None:
            return False
    target = pending.to_version
    if not d.observed.undo_target_ready:
        return _wait_for_undo_target(d, spec, pending)
    d.traffic = TrafficSplit.all_to(target)
    if not d.shown(d.traffic):
        d.update(message=f"undoing {pending.from_version}: sending all traffic to {target}")
        d.after(WAIT_FOR_ROUTE_SECONDS)
        return True
    message = f"promotion of {pending.from_version} undone ({pending.cause}); all traffic back on {target}"
    d.update(
        phase=Phase.ROLLED_BACK,
        stable_version=target,
        previous_stable_version=None,
        kept_versions=tuple(version for version in d.status.kept_versions if version != target),
        undo=replace(pending, state=UndoState.DONE, time=format_time(d.now)),
        message=message,
    )
    d.event(EventType.WARNING, "Undo", message)
    d.condition(UNDO_CONDITION, True, "Undo", message)
    _schedule_scale_down(d, spec, pending.from_version)
    return True


def _start_undo(d: _Decision, spec: ModelRolloutSpec, request: UndoRequest | None) -> UndoRecord | None:
    """The undo a new request or an alert within the window starts (None: none, or refused with
    an UndoRefused Event)."""
    status = d.status
    alert = None if request is not None else _alert_within_window(spec, status, d.observed)
    broken = (
        None
        if request is not None or alert is not None
        else broken_guardrail(spec=spec, status=status, observed=d.observed)
    )
    if request is None and alert is None and broken is None:
        return None
    if broken is not None:
        # Recorded first, so that a refused undo is not asked again at every look.
        _end_post_promotion(d, PostPromotionState.FAILED, broken, looks=_looks(d.observed.analysis))
        d.event(EventType.WARNING, "PostPromotionFailed", f"{broken}; undoing the promotion")
    target = request.to_version if request is not None and request.to_version else status.previous_stable_version
    problem = _undo_refusal(spec, status, target)
    if problem is not None:
        asked = f"undo {request.token!r}" if request is not None else "undo by alert" if alert else "undo by guardrail"
        d.event(EventType.WARNING, "UndoRefused", f"{asked} refused: {problem}")
        return None
    assert target is not None and status.stable_version is not None
    if alert is not None:
        record = incident_record(alert, response=IncidentResponse.UNDONE, now=d.now, holding=False)
        cause = f"{describe_alert(record)} fired within spec.rollbackWindow of the promotion"
        d.update(incident=record)
        d.condition(INCIDENT_CONDITION, True, "Undo", f"{describe_alert(record)} names this rollout: undoing")
    elif broken is not None:
        cause = broken
    else:
        assert request is not None
        cause = f"annotation {request.token!r}"
    if broken is None:
        _abandon_post_promotion(d, f"undo asked ({cause})")
    pending = UndoRecord(
        from_version=status.stable_version,
        to_version=target,
        requested_at=format_time(d.now),
        state=UndoState.PENDING,
        cause=cause,
    )
    d.update(undo=pending)
    if status.scale_down_target == target:
        # Going back to it: it must keep (or get back) its replicas, not lose them now.
        d.update(scale_down_at=None, scale_down_target=None)
    return pending


def _wait_for_undo_target(d: _Decision, spec: ModelRolloutSpec, pending: UndoRecord) -> bool:
    """The version undone to is not ready: it is scaled up and traffic stays where it is, until it
    is ready or spec.progressDeadlineSeconds (from the request) passes; then the undo failed."""
    target = pending.to_version
    asked = parse_time(pending.requested_at) or d.now
    waited = (d.now - asked).total_seconds()
    if waited > spec.progress_deadline_seconds:
        message = (
            f"undo of {pending.from_version} failed: {target} was not ready after {waited:.0f}s "
            f"(spec.progressDeadlineSeconds); all traffic stays on {pending.from_version}"
        )
        d.update(undo=replace(pending, state=UndoState.FAILED, time=format_time(d.now)), message=message)
        d.event(EventType.WARNING, "UndoFailed", message)
        d.condition(UNDO_CONDITION, False, "UndoFailed", message)
        return False
    d.scale_up_version = target
    message = f"undoing {pending.from_version}: waiting for {target} to be ready ({pending.cause})"
    if d.status.message != message:
        d.event(EventType.NORMAL, "UndoPending", message)
    d.update(message=message)
    d.condition(UNDO_CONDITION, False, "UndoPending", message)
    d.after(min(UNDO_READY_RECHECK_SECONDS, spec.progress_deadline_seconds - waited + 0.5))
    return True
