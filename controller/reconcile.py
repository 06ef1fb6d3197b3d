"""One reconcile pass of one ModelRollout: a flat list of small steps.

    fetch -> ensure finalizer -> parse spec -> observe route and references -> while Pending,
    let every checker validate its part of the spec -> run the checker of the current stage ->
    decide (pure) and move traffic until the plan holds -> scale down -> record Events in the
    status -> write status once -> hand the Events to the sender (controller.events) -> clear the
    handled action -> release the finalizer

Every step that talks to the API server is idempotent, so a pass cut short anywhere (crash,
conflict, lost leadership) is simply run again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from functools import partial
from typing import Any

from kubernetes.client.exceptions import ApiException

from controller import telemetry
from controller.api import (
    ACTION_ANNOTATION,
    DEFAULT_PROGRESS_DEADLINE_SECONDS,
    FINALIZER,
    UNDO_ANNOTATION,
    UNDO_TO_VERSION_ANNOTATION,
    MirrorStep,
    ModelRolloutSpec,
    ModelRolloutStatus,
    ModelVersion,
    Phase,
    RecordedEvent,
    SpecError,
    format_time,
    now_utc,
    parse_spec,
    parse_time,
    set_condition,
)
from controller.checks import CheckContext, Checker, CheckOutcome, Verdict
from controller.errors import ReconcileError, ReferenceProblem, TemporaryError
from controller.events import DirectSender, Outgoing, SendsEvents
from controller.incidents.feed import AlertFeed
from controller.kube import SCALED_DOWN_FROM_ANNOTATION, Kube, ObjectRef
from controller.notify.dispatch import Notifications, Transition
from controller.plan import (
    FULL_SHARE,
    Event,
    EventType,
    Observed,
    Plan,
    RouteWrite,
    TrafficSplit,
    UndoRequest,
    analyze_window,
    decide,
    describe_split,
    describe_weights,
    entered_measured_step,
    next_route_write,
    route_spec,
    stage_to_check,
    undo_target,
    wait_for_versions,
)
from controller.routers import ROUTERS, RoutedVersions, Router, RouterPlugin
from controller.routers.ownership import RouteOwnedElsewhere
from controller.routers.plugin import Mirrorer
from controller.routers.safety import RouteWriteBudget, refuse_unsafe_split
from controller.watch import LabelSelector

log = logging.getLogger(__name__)

JSON = dict[str, Any]

RECONCILED_CONDITION = "Reconciled"
"""False while passes fail (the reason and message say why); True again after the next pass that
completes. Absent on a rollout whose passes never failed."""
FAILURE_REASON = "ReconcileFailed"
"""Reason of a failure that is not a ReconcileError, i.e. a bug or an unexpected fault."""
RECORDED_EVENTS_LIMIT = 10
"""Events of one pass kept in status.recentEvents (a pass rarely has more than three)."""
EVENT_TTL_SECONDS = 3600.0
"""How long the API server keeps an Event (its --event-ttl, an hour by default). A recorded Event
older than that is not created any more: created before, it is gone by now, and creating it again
would bring an expired Event back with every restart of the controller."""
EVENT_NAME_PREFIX_LIMIT = 200
"""Characters of the rollout's name that start its Events' names (a name has at most 253)."""
FAILURE_MESSAGE_LIMIT = 1024
ROUTE_WRITE_REFUSED = "RouteWriteRefused"
"""Reason of the condition and Event when the API server refuses a route write."""
REFUSED_WRITE_RETRY_SECONDS = 10.0
"""Look again this soon after a refused route write (the progress deadline still runs)."""
"""Characters of an error kept in the condition (an Event keeps as many)."""


READS_VERSIONS = " (only spec.trafficRouting.kserve reads the versions from the routed object)"


def with_routed_versions(spec: ModelRolloutSpec, found: RoutedVersions, status: ModelRolloutStatus) -> ModelRolloutSpec:
    """`spec` with the versions the routed object shows: the stable one and the candidate (the
    stable one again when there is no newer one). While this rollout's promotion lands, the object
    may show the candidate as its stable version before the status does: the pair stays the one
    the status records, so that the promotion completes as asked."""
    stable, candidate = found.stable, found.candidate or found.stable
    if landing(spec, found, status):
        assert status.stable_version is not None
        stable = status.stable_version
    labels = tuple(dict.fromkeys((stable, candidate)))
    return replace(
        spec, versions=tuple(ModelVersion(version=label) for label in labels), baseline=stable, candidate=candidate
    )


def landing(spec: ModelRolloutSpec, found: RoutedVersions, status: ModelRolloutStatus) -> bool:
    """Whether the routed object already shows as stable the candidate this rollout is promoting."""
    return (
        found.candidate is None
        and status.phase == Phase.PROGRESSING
        and status.current_step_index >= len(spec.steps)
        and status.candidate_version == found.stable
        and status.stable_version not in (None, found.stable)
    )


def adopted_stable(spec: ModelRolloutSpec, found: RoutedVersions, status: ModelRolloutStatus) -> ModelRolloutStatus:
    """The status this pass decides on: the stable version is the one the routed object shows (KServe's
    rolled-out revision), also when something else than this rollout rolled it out, except while
    this rollout's own promotion lands (see `with_routed_versions`)."""
    if status.stable_version in (None, found.stable) or landing(spec, found, status):
        return status
    return replace(status, stable_version=found.stable)


def failure_message(error: Exception) -> str:
    """What a person reads about a failed pass: the error, named by type when it is unexpected."""
    text = str(error) if isinstance(error, ReconcileError) else f"{type(error).__name__}: {error}"
    return f"{text}; retried with backoff"[:FAILURE_MESSAGE_LIMIT]


def event_name(*, rollout: JSON, index: int, event: Event, time: str) -> str:
    """A name that is the same whenever the same pass's Event is created again."""
    meta = rollout["metadata"]
    identity = "\x00".join((meta.get("uid", ""), time, str(index), event.reason, event.message))
    return f"{meta['name'][:EVENT_NAME_PREFIX_LIMIT]}.{hashlib.sha256(identity.encode()).hexdigest()[:16]}"


def outlived(event: RecordedEvent, *, now: datetime) -> bool:
    """Whether `event` was recorded longer ago than the API server keeps Events."""
    recorded_at = parse_time(event.time)
    return recorded_at is not None and (now - recorded_at).total_seconds() > EVENT_TTL_SECONDS


def with_recorded_events(
    status: ModelRolloutStatus,
    events: tuple[Event, ...],
    *,
    rollout: JSON,
    now: datetime,
    created: frozenset[str],
) -> ModelRolloutStatus:
    """`status` recording this pass's Events, each under its name, after those recorded before
    and not known to be `created` yet (a failed create is tried again); a pass without Events
    keeps the previous record, so that the status does not change for nothing."""
    if not events:
        return status
    pending = tuple(event for event in status.recent_events if event.name not in created)
    time = format_time(now)
    recorded = tuple(
        RecordedEvent(
            name=event_name(rollout=rollout, index=index, event=event, time=time),
            type=event.type.value,
            reason=event.reason,
            message=event.message,
            time=time,
        )
        for index, event in enumerate(events)
    )
    return replace(status, recent_events=(pending + recorded)[-RECORDED_EVENTS_LIMIT:])


def refusal_text(error: ApiException) -> str:
    """The API server's own words (the Status message), never the whole response."""
    try:
        body = json.loads(error.body or "")
    except ValueError:
        body = None
    message = body.get("message") if isinstance(body, dict) else None
    return str(message or error.reason or "no reason given")[:FAILURE_MESSAGE_LIMIT]


def with_refused_write(
    status: ModelRolloutStatus, plan: Plan, *, refusal: str, now: datetime
) -> tuple[ModelRolloutStatus, Plan]:
    """Reconciled=False quoting a refused route write, with a Warning Event when that is news.

    The rest of the plan stands (its status is still true: the route kept its weights), so the
    progress deadline runs on, and a rollout whose route cannot take the next weight fails and
    returns to the stable version instead of retrying for ever."""
    status, news = with_reconcile_failure(
        status, reason=ROUTE_WRITE_REFUSED, message=refusal, generation=status.observed_generation, now=now
    )
    retry = min(
        plan.requeue_after if plan.requeue_after is not None else REFUSED_WRITE_RETRY_SECONDS,
        REFUSED_WRITE_RETRY_SECONDS,
    )
    events = plan.events + (
        (Event(type=EventType.WARNING, reason=ROUTE_WRITE_REFUSED, message=refusal),) if news else ()
    )
    return status, replace(plan, events=events, requeue_after=retry)


def with_reconcile_failure(
    status: ModelRolloutStatus, *, reason: str, message: str, generation: int, now: datetime
) -> tuple[ModelRolloutStatus, bool]:
    """`status` with Reconciled=False for `reason` and `message`, and whether that is news (a
    failure repeated with backoff keeps the same message, and is reported once)."""
    previous = next((c for c in status.conditions if c.type == RECONCILED_CONDITION), None)
    news = previous is None or (previous.status, previous.reason, previous.message) != ("False", reason, message)
    conditions = set_condition(
        status.conditions,
        type=RECONCILED_CONDITION,
        status=False,
        reason=reason,
        message=message,
        generation=generation,
        now=now,
    )
    return replace(status, conditions=conditions), news


def status_changed(new: ModelRolloutStatus, stored: ModelRolloutStatus) -> bool:
    """Whether `new` says anything `stored` does not: conditions are compared by type, not by
    their order in the list (which a pass may change without changing any of them)."""

    def comparable(status: ModelRolloutStatus) -> JSON:
        raw = status.to_json()
        raw["conditions"] = sorted(raw.get("conditions") or [], key=lambda condition: str(condition.get("type")))
        return raw

    return comparable(new) != comparable(stored)


def with_reconciled(status: ModelRolloutStatus, *, generation: int, now: datetime) -> ModelRolloutStatus:
    """`status` with a Reconciled=False condition turned True: the pass that writes it completed."""
    previous = next((c for c in status.conditions if c.type == RECONCILED_CONDITION), None)
    if previous is None or previous.status == "True":
        return status
    conditions = set_condition(
        status.conditions,
        type=RECONCILED_CONDITION,
        status=True,
        reason="Reconciled",
        message="",
        generation=generation,
        now=now,
    )
    return replace(status, conditions=conditions)


@dataclass(frozen=True, kw_only=True)
class Checkers:
    gates: Checker | None = None
    analysis: Checker | None = None


class Reconciler:
    def __init__(
        self,
        *,
        kube: Kube,
        checkers: Checkers = Checkers(),
        routers: Mapping[str, RouterPlugin] = ROUTERS,
        clock: Callable[[], datetime] = now_utc,
        route_writes: RouteWriteBudget | None = None,
        selector: LabelSelector | None = None,
        events: SendsEvents | None = None,
        notifications: Notifications | None = None,
        alerts: AlertFeed | None = None,
    ) -> None:
        self.kube = kube
        self.alerts = alerts
        """The firing alerts the Alertmanager receiver heard (None: no receiver, no alert acts)."""
        self.events = events or DirectSender(kube)
        """Creates the Events passes record (an EventSender: on its own threads)."""
        self.notifications = notifications
        """Tells people about the transitions those Events record, once each Event exists."""
        self.selector = selector or LabelSelector()
        """The rollouts this process owns (its shard); it never acts on any other."""
        self.route_writes = route_writes or RouteWriteBudget()
        self.checkers = checkers
        self.plugins = routers
        self.routers = {key: plugin.build(kube) for key, plugin in routers.items()}
        self.mirrors: dict[str, Mirrorer] = {
            key: plugin.mirror(kube) for key, plugin in routers.items() if plugin.mirror is not None
        }
        """The routers that can copy requests to a version (mirror steps), by key."""
        self.clock = clock
        self.started_at = clock()
        """Events recorded before were recorded by a predecessor (which may have sent their notifications)."""
        self._events_lock = threading.Lock()
        self._created_events: dict[tuple[str, str], set[str]] = {}
        """Per rollout, the names of its recorded Events this process created (the sender's
        threads add to it)."""
        self._unrecorded_writes: dict[tuple[str, str], TrafficSplit] = {}
        """Per rollout, the route as a pass wrote it and has not recorded in status yet."""
        self._sending: set[tuple[str, str, str]] = set()
        """(namespace, name, Event name) handed to the sender and not done yet: not sent twice."""

    def reconcile(self, *, namespace: str, name: str) -> float | None:
        """Runs one pass; returns seconds until the rollout wants another look, if any."""
        rollout = self.kube.read_rollout(namespace=namespace, name=name)
        if rollout is None or not self.selector.matches_object(rollout):
            # Gone, or moved to another shard (whose controller now owns it, finalizer included):
            # nothing to do here, not even the deletion path.
            self._forget(namespace, name)
            return None
        meta = rollout["metadata"]
        deleting = bool(meta.get("deletionTimestamp"))
        if deleting and FINALIZER not in meta.get("finalizers", []):
            return None
        if not deleting and FINALIZER not in meta.get("finalizers", []):
            rollout = self._add_finalizer(rollout)

        status = ModelRolloutStatus.from_json(rollout.get("status"))
        if not self._known(namespace, name):
            # This process's first pass on the rollout: first the Events a predecessor recorded
            # and may have died before creating (those it did create are refused, and skipped).
            self._emit(rollout, status.recent_events, after=status, inherited=True)
        spec, spec_error, router = self._parse(rollout)
        spec, status, routed, unknown = self._fill_versions(namespace, spec, status, router)
        if unknown is not None:
            # The router reads the versions from an object it cannot read, and none is known yet.
            observed = replace(self._observe(rollout, None, status, None, deleting=deleting), reference_problem=unknown)
            deadline = spec.progress_deadline_seconds if spec is not None else DEFAULT_PROGRESS_DEADLINE_SECONDS
            plan, refusal = wait_for_versions(status=status, observed=observed, deadline_seconds=deadline), None
            spec = None
        else:
            observed = self._observe(rollout, spec, status, router, deleting=deleting)
            spec, spec_error, observed = self._check(namespace, name, spec, spec_error, status, observed)
            if spec is not None and observed.undo_target_ready is None:
                # The analysis after a promotion may have just shown a guardrail broken: the undo
                # it starts reads its target's readiness in this pass, not the next.
                observed = self._observe_undo(meta, spec, status, observed)
            plan, refusal = self._decide_and_route(rollout, spec, spec_error, status, observed, router, routed)
        self._scale_up(namespace, spec, plan)
        final_status = self._scale_down(namespace, spec, plan)
        if refusal is None:
            final_status = with_reconciled(final_status, generation=observed.generation, now=observed.now)
        else:
            final_status, plan = with_refused_write(final_status, plan, refusal=refusal, now=observed.now)
        final_status = with_recorded_events(
            final_status,
            plan.events,
            rollout=rollout,
            now=self.clock(),
            created=self._created(namespace, name),
        )
        if status_changed(final_status, ModelRolloutStatus.from_json(rollout.get("status"))):
            rollout = self.kube.replace_rollout_status(rollout=rollout, status=final_status.to_json())
        self._unrecorded_writes.pop((namespace, name), None)
        # After the status write: a conflict re-runs the pass, which would repeat the Events.
        self._emit(rollout, final_status.recent_events, after=final_status, before=status)
        if plan.action_handled:
            self._clear_action(rollout, observed.action)
        if plan.remove_finalizer:
            if spec is not None and router is not None:
                router.release(namespace=namespace, spec=spec, owner=name)
            self._remove_finalizer(rollout)
            self._forget(namespace, name)
        else:
            telemetry.record_rollout(namespace=namespace, name=name, status=final_status)
        return plan.requeue_after

    def report_failure(self, *, namespace: str, name: str, error: Exception) -> None:
        """Reconciled=False quoting the error, and a Warning Event when that is news (a failure
        retried with backoff repeats the same message, which is reported once)."""
        rollout = self.kube.read_rollout(namespace=namespace, name=name)
        if rollout is None or not self.selector.matches_object(rollout):
            return
        status = ModelRolloutStatus.from_json(rollout.get("status"))
        reason = error.reason if isinstance(error, ReconcileError) else FAILURE_REASON
        message = failure_message(error)
        now = self.clock()
        generation = int(rollout["metadata"].get("generation", 0))
        failed, news = with_reconcile_failure(status, reason=reason, message=message, generation=generation, now=now)
        if not news:
            return
        rollout = self.kube.replace_rollout_status(rollout=rollout, status=failed.to_json())
        self.kube.emit_event(
            about=self._about(rollout), type=EventType.WARNING.value, reason=reason, message=message, now=now
        )

    # Steps ---------------------------------------------------------------------------------------

    def _add_finalizer(self, rollout: JSON) -> JSON:
        finalizers = rollout["metadata"].get("finalizers")
        patch: list[JSON] = [
            # A JSON patch that sets the resourceVersion read is refused with a conflict when the
            # rollout changed since (another finalizer added meanwhile is never overwritten).
            {"op": "replace", "path": "/metadata/resourceVersion", "value": rollout["metadata"]["resourceVersion"]},
            {"op": "add", "path": "/metadata/finalizers/-", "value": FINALIZER}
            if finalizers
            else {"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]},
        ]
        return self.kube.patch_rollout_metadata(rollout=rollout, patch=patch)

    def _remove_finalizer(self, rollout: JSON) -> None:
        finalizers: list[str] = rollout["metadata"].get("finalizers", [])
        if FINALIZER not in finalizers:
            return
        index = finalizers.index(FINALIZER)
        self.kube.patch_rollout_metadata(
            rollout=rollout,
            patch=[
                {"op": "test", "path": f"/metadata/finalizers/{index}", "value": FINALIZER},
                {"op": "remove", "path": f"/metadata/finalizers/{index}"},
            ],
        )

    def _clear_action(self, rollout: JSON, value: str | None) -> None:
        # The test op keeps an action set again meanwhile from being lost.
        path = "/metadata/annotations/" + ACTION_ANNOTATION.replace("~", "~0").replace("/", "~1")
        try:
            self.kube.patch_rollout_metadata(
                rollout=rollout,
                patch=[{"op": "test", "path": path, "value": value}, {"op": "remove", "path": path}],
            )
        except ApiException as error:
            if error.status != 422:
                raise
            log.info("action annotation changed meanwhile; it is handled on the next pass")

    def _parse(self, rollout: JSON) -> tuple[ModelRolloutSpec | None, str | None, Router | None]:
        """The spec with its router's configuration parsed by the router, or the first mistake."""
        try:
            spec = parse_spec(rollout.get("spec") or {})
            routing = spec.traffic_routing
            plugin = self.plugins.get(routing.router)
            if plugin is None:
                known = ", ".join(sorted(self.plugins))
                return None, f"spec.trafficRouting.{routing.router}: unknown router; use one of {known}", None
            spec = replace(spec, traffic_routing=replace(routing, parsed=plugin.parse_config(routing.config)))
        except SpecError as error:
            return None, str(error), None
        unmirrored = self._mirror_problem(spec)
        if unmirrored is not None:
            return None, unmirrored, None
        if spec.versions_from_route and plugin.versions is None:
            return None, f"spec.versions: is required, with spec.baseline and spec.candidate{READS_VERSIONS}", None
        if plugin.versions is not None and not spec.versions_from_route:
            return (
                None,
                f"spec.versions: spec.trafficRouting.{routing.router} reads the versions from the "
                f"{plugin.kind.plural} it names; remove spec.versions, spec.baseline and spec.candidate",
                None,
            )
        return spec, None, self.routers[routing.router]

    def _mirror_problem(self, spec: ModelRolloutSpec) -> str | None:
        """Why the spec's first mirror step cannot run on its router (it cannot copy requests)."""
        router = spec.traffic_routing.router
        index = next((i for i, step in enumerate(spec.steps) if isinstance(step, MirrorStep)), None)
        if index is None or router in self.mirrors:
            return None
        able = ", ".join(f"spec.trafficRouting.{key}" for key in sorted(self.mirrors)) or "none"
        return (
            f"spec.steps[{index}].mirror: the {router} router (spec.trafficRouting.{router}) cannot copy requests "
            f"to the candidate; mirror steps need a router that can ({able}): route with one of those, or "
            "replace the step (setWeight with a small weight and an analyze step)"
        )

    def _fill_versions(
        self, namespace: str, spec: ModelRolloutSpec | None, status: ModelRolloutStatus, router: Router | None
    ) -> tuple[ModelRolloutSpec | None, ModelRolloutStatus, RoutedVersions | None, str | None]:
        """For a router that reads the versions from its routed object (KServe): the spec with
        them filled in, the status this pass decides on, what the object showed, and, when the
        object cannot be read and the status knows no versions either, why (None otherwise)."""
        if spec is None or router is None or not spec.versions_from_route:
            return spec, status, None, None
        read = self.plugins[spec.traffic_routing.router].versions
        assert read is not None
        try:
            found = read(router, namespace, spec.traffic_routing.parsed)
        except ReferenceProblem as error:
            if status.stable_version is None or status.candidate_version is None:
                return spec, status, None, str(error)
            # Decided on the versions recorded; reading the route reports the problem again.
            known = RoutedVersions(stable=status.stable_version, candidate=status.candidate_version)
            return with_routed_versions(spec, known, status), status, None, None
        status = adopted_stable(spec, found, status)
        return with_routed_versions(spec, found, status), status, found, None

    def _observe(
        self,
        rollout: JSON,
        spec: ModelRolloutSpec | None,
        status: ModelRolloutStatus,
        router: Router | None,
        *,
        deleting: bool,
    ) -> Observed:
        meta = rollout["metadata"]
        namespace = meta["namespace"]
        observed = Observed(
            now=self.clock(),
            unrecorded_write=self._unrecorded_writes.get((namespace, meta["name"])),
            generation=int(meta.get("generation", 0)),
            deleting=deleting,
            deletion_requested_at=parse_time(meta.get("deletionTimestamp")),
            action=(meta.get("annotations") or {}).get(ACTION_ANNOTATION),
        )
        if spec is not None and self.alerts is not None:
            observed = replace(
                observed,
                alerts=self.alerts.matching(
                    namespace=namespace,
                    model=spec.model,
                    rollout=meta["name"],
                    selector=spec.incidents.alert_selector,
                    now=observed.now,
                ),
                alerts_since=self.alerts.since,
                alerts_complete_at=self.alerts.complete_at,
                held_alert_resolved=self._held_alert_resolved(status),
            )
        if spec is not None:
            observed = self._observe_undo(meta, spec, status, observed)
        if spec is None or router is None:
            return observed
        try:
            routed = route_spec(spec, status)
            weights = self._read_route(router, namespace, meta["name"], routed)
            mirrorer = self.mirrors.get(spec.traffic_routing.router)
            owner = meta["name"]
            mirror = None if mirrorer is None else mirrorer.read_mirror(namespace=namespace, spec=routed, owner=owner)
            stable = status.stable_version or spec.baseline
            problem = None if deleting else self._backend_problem(namespace, spec, stable, router)
        except ReferenceProblem as error:
            return replace(observed, reference_problem=str(error))
        return replace(observed, route_weights=weights, route_mirror=mirror, reference_problem=problem)

    def _observe_undo(
        self, meta: JSON, spec: ModelRolloutSpec, status: ModelRolloutStatus, observed: Observed
    ) -> Observed:
        """The undo annotation, and, when an undo is pending or wanted, whether the version it goes
        back to is ready (one Deployment read, only then)."""
        annotations = meta.get("annotations") or {}
        token = annotations.get(UNDO_ANNOTATION)
        if token is not None:
            to_version = (annotations.get(UNDO_TO_VERSION_ANNOTATION) or "").strip() or None
            observed = replace(observed, undo_request=UndoRequest(token=token, to_version=to_version))
        target = undo_target(spec=spec, status=status, observed=observed)
        if target is None:
            return observed
        return replace(observed, undo_target_ready=self._version_ready(meta["namespace"], spec, target))

    def _version_ready(self, namespace: str, spec: ModelRolloutSpec, version: str) -> bool:
        """Whether `version` can take all traffic: its Deployment (if it names one) has replicas, all
        available, as observed by the Deployment controller after its latest change (a status from
        before a scale-up says nothing about the pods it asked for)."""
        known = spec.find_version(version)
        if known is None:
            return False
        if known.deployment is None:
            return True
        deployment = self.kube.get_deployment(namespace=namespace, name=known.deployment)
        if deployment is None or not deployment.spec.replicas or deployment.status is None:
            return False
        current = (deployment.status.observed_generation or 0) >= (deployment.metadata.generation or 0)
        return current and (deployment.status.available_replicas or 0) >= deployment.spec.replicas

    def _scale_up(self, namespace: str, spec: ModelRolloutSpec | None, plan: Plan) -> None:
        """Gives the version an undo goes back to its replicas back (those it had before the
        controller scaled it down, else 1); a Deployment with replicas is left as it is."""
        version = plan.scale_up_version
        if version is None or spec is None:
            return
        known = spec.find_version(version)
        name = None if known is None else known.deployment
        deployment = None if name is None else self.kube.get_deployment(namespace=namespace, name=name)
        if name is None or deployment is None or deployment.spec.replicas:
            return
        restore = (deployment.metadata.annotations or {}).get(SCALED_DOWN_FROM_ANNOTATION)
        replicas = int(restore) if restore is not None and restore.isdigit() and int(restore) > 0 else 1
        self.kube.scale_deployment(
            namespace=namespace, name=name, replicas=replicas, annotations={SCALED_DOWN_FROM_ANNOTATION: None}
        )
        log.info("scaled up for an undo", extra={"namespace": namespace, "deployment": name, "replicas": replicas})

    def _held_alert_resolved(self, status: ModelRolloutStatus) -> bool:
        """Whether this process heard resolved the alert whose hold the status records."""
        held = status.incident
        starts_at = None if held is None or not held.holding else parse_time(held.starts_at)
        if self.alerts is None or held is None or starts_at is None:
            return False
        return self.alerts.resolved(fingerprint=held.fingerprint, starts_at=starts_at)

    def _read_route(self, router: Router, namespace: str, name: str, spec: ModelRolloutSpec) -> dict[str, int]:
        """The route's weights; a route claimed by a rollout that no longer exists is taken over."""
        try:
            return router.read_weights(namespace=namespace, spec=spec, owner=name)
        except RouteOwnedElsewhere as error:
            if self.kube.get_rollout(namespace=namespace, name=error.owner) is not None:
                raise
            log.info("taking over a route whose owner is gone", extra={"namespace": namespace, "owner": error.owner})
            return router.read_weights(namespace=namespace, spec=spec, owner=name, replacing=error.owner)

    def _backend_problem(self, namespace: str, spec: ModelRolloutSpec, stable: str, router: Router) -> str | None:
        if stable not in {v.version for v in spec.versions}:
            return (
                f"the stable version {stable} (status.stableVersion) is not in spec.versions; "
                "keep it listed until its successor is promoted"
            )
        serving = tuple(dict.fromkeys((stable, spec.candidate)))
        problem = router.reference_problem(namespace=namespace, spec=spec, versions=serving)
        if problem is not None:
            return problem
        for version_name in serving:
            deployment = spec.version(version_name).deployment
            if deployment and self.kube.get_deployment(namespace=namespace, name=deployment) is None:
                return (
                    f"Deployment {namespace}/{deployment} of version {version_name} not found; "
                    "create it or fix spec.versions[].deployment"
                )
        return None

    def _check(
        self,
        namespace: str,
        name: str,
        spec: ModelRolloutSpec | None,
        spec_error: str | None,
        status: ModelRolloutStatus,
        observed: Observed,
    ) -> tuple[ModelRolloutSpec | None, str | None, Observed]:
        """Runs the checker of `status`'s stage; returns the spec (None with the error when a
        checker found it invalid) and what was observed."""
        if spec is None or observed.deleting:
            return spec, spec_error, observed
        try:
            return spec, spec_error, self._run_checker(namespace, name, spec, status, observed)
        except SpecError as error:
            # Only a checker can tell that (say) a query names an unknown variable.
            return None, str(error), observed
        except ReferenceProblem as error:
            # Only a checker can tell that (say) an AnalysisTemplate is missing.
            return spec, spec_error, replace(observed, reference_problem=str(error))

    def _run_checker(
        self,
        namespace: str,
        name: str,
        spec: ModelRolloutSpec,
        status: ModelRolloutStatus,
        observed: Observed,
    ) -> Observed:
        stage = stage_to_check(status)
        if stage is None or observed.reference_problem is not None:
            return observed
        context = CheckContext(
            namespace=namespace,
            name=name,
            spec=spec,
            status=status,
            stable_version=status.stable_version or spec.baseline,
            now=observed.now,
            current_weight=status.current_weight,
            step=analyze_window(spec, status),
        )
        if stage == "gates":
            self._validate(context)
            waiting = self._candidate_not_ready(namespace, spec)
            gates = waiting or (self.checkers.gates(context=context) if self.checkers.gates else None)
            return replace(observed, gates=gates)
        analysis = self.checkers.analysis(context=context) if self.checkers.analysis else None
        return replace(observed, analysis=analysis)

    def _validate(self, context: CheckContext) -> None:
        """Every checker's part of the spec, before the gates and before any traffic moves."""
        for checker in (self.checkers.gates, self.checkers.analysis):
            if checker is not None:
                checker.validate(context=context)

    def _candidate_not_ready(self, namespace: str, spec: ModelRolloutSpec) -> CheckOutcome | None:
        """The candidate's Deployment (restored if we scaled it down) must be Available first."""
        name = spec.version(spec.candidate).deployment
        if name is None:
            return None
        deployment = self.kube.get_deployment(namespace=namespace, name=name)
        if deployment is None:
            return None
        annotations = deployment.metadata.annotations or {}
        restore = annotations.get(SCALED_DOWN_FROM_ANNOTATION)
        if restore is not None and not deployment.spec.replicas:
            self.kube.scale_deployment(
                namespace=namespace,
                name=name,
                replicas=int(restore),
                annotations={SCALED_DOWN_FROM_ANNOTATION: None},
            )
            return CheckOutcome(
                verdict=Verdict.RUNNING,
                message=f"scaling Deployment {name} back to {restore}",
                requeue_after=2,
            )
        if deployment.spec.replicas and not (deployment.status and deployment.status.available_replicas):
            return CheckOutcome(
                verdict=Verdict.RUNNING,
                message=f"waiting for Deployment {name} to become Available",
                requeue_after=2,
            )
        return None

    def _decide_and_route(
        self,
        rollout: JSON,
        spec: ModelRolloutSpec | None,
        spec_error: str | None,
        status: ModelRolloutStatus,
        observed: Observed,
        router: Router | None,
        routed: RoutedVersions | None = None,
    ) -> tuple[Plan, str | None]:
        """Decide, move traffic if the plan asks, and decide once more on the weights now stored;
        returns the plan, and what the API server said if it refused the write.

        At most one route write per pass: the second decision records what the write achieved
        (a step done, the next step entered) but the next write waits for the next pass, after
        that status is stored. So the route never runs ahead of the stored status by more than
        the one write the stored status asks for, and a crash anywhere cannot make a restarted
        controller move traffic back. The clock is read again after the write: a step entered
        then starts when the route shows its weight, not when a slow pass began.

        Only the first decision sees the action annotation, so that it acts once; it counts as
        handled (and is removed) whichever decision comes last."""
        namespace, name = rollout["metadata"]["namespace"], rollout["metadata"]["name"]
        action = observed.action
        plan = replace(
            decide(spec=spec, spec_error=spec_error, status=status, observed=observed),
            action_handled=action is not None,
        )
        if stage_to_check(plan.status) == "gates" != stage_to_check(status):
            # Just started: the gates (and the validation of the whole spec) run now rather than
            # in a pass of their own, so a rollout whose gates pass at once moves its first
            # weight in this pass, and Pending is stored only while gates are still running.
            spec, spec_error, checked = self._check(namespace, name, spec, spec_error, plan.status, observed)
            checked = replace(checked, action=None)
            started = decide(spec=spec, spec_error=spec_error, status=plan.status, observed=checked)
            plan = replace(started, events=plan.events + started.events, action_handled=plan.action_handled)
        if spec is None or router is None:
            return plan, None
        traffic = plan.traffic
        guard = self._guard_split(spec, plan, observed, routed)
        write = RouteWrite.WEIGHTS if guard is not None else self._route_write(traffic, observed)
        if guard is not None:
            traffic = guard
        if write is None:
            plan = self._start_entered_step(rollout, spec, spec_error, checked=status, plan=plan, observed=observed)
            return plan, None
        assert traffic is not None
        writing = route_spec(spec, status)
        route = f"spec.trafficRouting.{spec.traffic_routing.router}"
        if write == RouteWrite.WEIGHTS:
            refuse_unsafe_split(spec=writing, weights=traffic.weights, route=route)
        self._confirm_unchanged(rollout)
        plugin = self.plugins[spec.traffic_routing.router]
        self.route_writes.spend(
            (plugin.key, namespace, plugin.kind.plural, plugin.object_name(spec.traffic_routing.parsed)),
            label=f"{route} in namespace {namespace}",
        )
        try:
            if write == RouteWrite.MIRROR:
                # Only a spec whose router can mirror asks for one (`_mirror_problem`).
                mirror = self.mirrors[plugin.key].write_mirror(
                    namespace=namespace, spec=writing, mirror=traffic.mirror, owner=name
                )
                observed = replace(observed, route_mirror=mirror)
            else:
                weights = router.write_weights(namespace=namespace, spec=writing, weights=traffic.weights, owner=name)
                observed = replace(observed, route_weights=weights)
        except ApiException as error:
            # Transient failures were retried below as TemporaryError: this is a refusal.
            asked = describe_split(traffic) if write == RouteWrite.MIRROR else describe_weights(traffic.weights)
            refusal = f"the API server refused {asked} on {route}: HTTP {error.status}: {refusal_text(error)}"
            log.warning("route write refused", extra={"namespace": namespace, "error": refusal})
            return plan, refusal
        log.info("traffic moved", extra={"namespace": namespace, "wrote": write.value, "to": describe_split(traffic)})
        if guard is not None:
            # The split served is unchanged (the candidate had none): the plan stands as decided.
            return plan, None
        assert observed.route_weights is not None
        stored = TrafficSplit(weights=observed.route_weights, mirror=observed.route_mirror)
        self._unrecorded_writes[(namespace, name)] = stored
        observed = replace(observed, action=None, now=self.clock())
        # status.routeMirror stays as recorded before the write: a mirror step ends on a route
        # without its copies only once the route had shown them (plan._walk_steps).
        written = replace(plan.status, route_weights=stored.weights)
        after = decide(spec=spec, spec_error=spec_error, status=written, observed=observed)
        after = replace(after, events=plan.events + after.events, action_handled=plan.action_handled)
        after = self._start_entered_step(rollout, spec, spec_error, checked=status, plan=after, observed=observed)
        # A route that shows a write at once and does not show it yet needs another write now; one
        # that shows it only once another controller applied it (KServe) brings the rollout back
        # through its watch when it does, so the pass does not write again meanwhile.
        again = self._route_write(after.traffic, observed) is not None and not plugin.applied_later
        return replace(after, requeue_after=0.0 if again else after.requeue_after), None

    def _start_entered_step(
        self,
        rollout: JSON,
        spec: ModelRolloutSpec,
        spec_error: str | None,
        *,
        checked: ModelRolloutStatus,
        plan: Plan,
        observed: Observed,
    ) -> Plan:
        """`plan`, or, when it entered a step where the analysis measures, the plan decided once the
        checker started that step's run. Done in this pass rather than the next, so that entering
        the step and starting its run are one pass and one status write (issue 14: every pass and
        write of a rollout counts when thousands run)."""
        if not entered_measured_step(spec, checked=checked, decided=plan.status):
            return plan
        namespace, name = rollout["metadata"]["namespace"], rollout["metadata"]["name"]
        looking = replace(observed, action=None)
        try:
            checked_spec, checked_error, looked = self._check(namespace, name, spec, spec_error, plan.status, looking)
        except ReconcileError:
            # The route may be written already: this pass must still store the status recording
            # it. The next pass, which `plan` asks for at once, runs the checker again.
            return plan
        started = decide(spec=checked_spec, spec_error=checked_error, status=plan.status, observed=looked)
        return replace(started, events=plan.events + started.events, action_handled=plan.action_handled)

    def _confirm_unchanged(self, rollout: JSON) -> None:
        """Raises TemporaryError (the pass runs again) unless the rollout is stored as this pass
        read it and still belongs to this shard.

        The route write is guarded by the route's resourceVersion, the status write by the
        rollout's; this ties the route write to the rollout's too, so that traffic moves only on a
        decision made from the stored status. A rollout relabelled into another shard meanwhile (or
        changed in any other way: an action, a spec edit) is not acted on by a pass that read it
        before; the new owner continues from the stored status.

        Only a sharded controller (one with a label selector) asks. Unsharded, no other process
        writes the status this pass decided from (the cache never goes back behind this process's
        own writes), and what a person changes while a pass runs (an action, a spec edit) is acted
        on by the next pass, as soon as the watch brings it: this pass's status write is refused
        as a conflict and the pass runs again. The GET would cost one API call, as much as a
        write on a busy API server, per traffic step of every rollout."""
        if not self.selector.text:
            return
        meta = rollout["metadata"]
        fresh = self.kube.get_rollout(namespace=meta["namespace"], name=meta["name"])
        if fresh is None or not self.selector.matches_object(fresh):
            raise TemporaryError(
                f"ModelRollout {meta['namespace']}/{meta['name']} is gone or left this shard; traffic not moved",
                delay=0.2,
            )
        if fresh["metadata"].get("resourceVersion") != meta.get("resourceVersion"):
            raise TemporaryError(
                f"ModelRollout {meta['namespace']}/{meta['name']} changed during the pass; traffic not moved, "
                "the pass runs again",
                delay=0.2,
            )

    @staticmethod
    def _guard_split(
        spec: ModelRolloutSpec, plan: Plan, observed: Observed, routed: RoutedVersions | None
    ) -> TrafficSplit | None:
        """The stable split to write at once when the routed object would send a new candidate all
        traffic on its own (KServe without canaryTrafficPercent) and the rollout has not moved any
        traffic yet (Pending, where it may wait for gates or for the candidate to be ready, and
        asks nothing of the route meanwhile); None otherwise."""
        if routed is None or routed.guarded or routed.candidate is None or observed.route_weights is None:
            return None
        if plan.status.phase != Phase.PENDING or observed.deleting:
            return None
        stable = plan.status.stable_version or spec.baseline
        return TrafficSplit(weights={stable: FULL_SHARE, routed.candidate: 0})

    @staticmethod
    def _route_write(traffic: TrafficSplit | None, observed: Observed) -> RouteWrite | None:
        """What the next route write must change (None: nothing, or a route it cannot read)."""
        if traffic is None or observed.route_weights is None:
            return None
        return next_route_write(traffic, weights=observed.route_weights, mirror=observed.route_mirror)

    def _scale_down(self, namespace: str, spec: ModelRolloutSpec | None, plan: Plan) -> ModelRolloutStatus:
        version = plan.scale_down_version
        if version is None or spec is None:
            return plan.status
        # The plan scales down only versions in spec.versions; a lookup that cannot raise all the same,
        # since this runs after the route write and before the status write that records it.
        known = spec.find_version(version)
        deployment_name = None if known is None else known.deployment
        if deployment_name:
            deployment = self.kube.get_deployment(namespace=namespace, name=deployment_name)
            if deployment is not None and deployment.spec.replicas:
                self.kube.scale_deployment(
                    namespace=namespace,
                    name=deployment_name,
                    replicas=0,
                    annotations={SCALED_DOWN_FROM_ANNOTATION: str(deployment.spec.replicas)},
                )
        if plan.status.scale_down_target != version:
            # The decision scheduled another version in its place: that one is still to come.
            return plan.status
        return replace(plan.status, scale_down_at=None, scale_down_target=None)

    @staticmethod
    def _about(rollout: JSON) -> ObjectRef:
        meta = rollout["metadata"]
        return ObjectRef(
            api_version=rollout["apiVersion"],
            kind=rollout["kind"],
            namespace=meta["namespace"],
            name=meta["name"],
            uid=meta["uid"],
        )

    def _known(self, namespace: str, name: str) -> bool:
        with self._events_lock:
            return (namespace, name) in self._created_events

    def _created(self, namespace: str, name: str) -> frozenset[str]:
        with self._events_lock:
            return frozenset(self._created_events.get((namespace, name), ()))

    def _emit(
        self,
        rollout: JSON,
        events: tuple[RecordedEvent, ...],
        *,
        after: ModelRolloutStatus,
        before: ModelRolloutStatus | None = None,
        inherited: bool = False,
    ) -> None:
        """Hands the sender the recorded Events this process has not created yet: after a restart,
        all of them (those created before the crash are refused as duplicates, and count as
        created), as `inherited` ones, which wait behind the Events of this process's own passes.
        One not created stays recorded, and is handed over again by a later pass, until it
        `outlived` the API server's time to live for Events. Each carries the notification of its
        transition, if any, sent once the Event exists; `before` and `after` are the status the
        pass started from and the one it stored (no `before` for the Events handed over at a
        first pass)."""
        about = self._about(rollout)
        key = (about.namespace, about.name)
        now = self.clock()
        with self._events_lock:
            created = self._created_events.setdefault(key, set())
            created &= {event.name for event in events}
            # Counted as created: the record lets it go at the rollout's next pass with Events.
            created |= {event.name for event in events if outlived(event, now=now)}
            outgoing = [e for e in events if e.name not in created and (*key, e.name) not in self._sending]
            self._sending.update((*key, e.name) for e in outgoing)
        for event in outgoing:
            transition = (
                None
                if self.notifications is None
                else self.notifications.prepare(
                    rollout=rollout, event=event, before=before, after=after, since=self.started_at
                )
            )
            self.events.send(
                Outgoing(
                    about=about, event=event, on_done=partial(self._sent, key, event, transition), inherited=inherited
                )
            )

    def _sent(self, key: tuple[str, str], event: RecordedEvent, transition: Transition | None, created: bool) -> None:
        with self._events_lock:
            self._sending.discard((*key, event.name))
            if not created or key not in self._created_events:
                return
            self._created_events[key].add(event.name)
        telemetry.TRANSITIONS.labels(reason=event.reason).inc()
        if transition is not None and self.notifications is not None:
            # On the sender's thread, never a worker's: send() only queues.
            self.notifications.send(transition)

    def _forget(self, namespace: str, name: str) -> None:
        self._unrecorded_writes.pop((namespace, name), None)
        with self._events_lock:
            self._created_events.pop((namespace, name), None)
        telemetry.forget_rollout(namespace=namespace, name=name)
