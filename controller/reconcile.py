"""One reconcile pass of one ModelRollout: a flat list of small steps.

    fetch -> ensure finalizer -> parse spec -> observe route and references -> while Pending,
    let every checker validate its part of the spec -> run the checker of the current stage ->
    decide (pure) and move traffic until the plan holds -> scale down -> emit Events -> write
    status once -> clear the handled action -> release the finalizer

Every step that talks to the API server is idempotent, so a pass cut short anywhere (crash,
conflict, lost leadership) is simply run again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from kubernetes.client.exceptions import ApiException

from controller import telemetry
from controller.api import (
    ACTION_ANNOTATION,
    FINALIZER,
    ModelRolloutSpec,
    ModelRolloutStatus,
    SpecError,
    now_utc,
    parse_spec,
    set_condition,
)
from controller.checks import CheckContext, Checker, CheckOutcome, Verdict
from controller.errors import ReconcileError, ReferenceProblem
from controller.kube import SCALED_DOWN_FROM_ANNOTATION, Kube, ObjectRef
from controller.plan import Event, EventType, Observed, Plan, TrafficSplit, analyze_window, decide, stage_to_check
from controller.routers import ROUTERS, Router, RouterFactory
from controller.routers.safety import refuse_unsafe_split

log = logging.getLogger(__name__)

JSON = dict[str, Any]

RECONCILED_CONDITION = "Reconciled"
"""False while passes fail (the reason and message say why); True again after the next pass that
completes. Absent on a rollout whose passes never failed."""
FAILURE_REASON = "ReconcileFailed"
"""Reason of a failure that is not a ReconcileError, i.e. a bug or an unexpected fault."""
FAILURE_MESSAGE_LIMIT = 1024
"""Characters of an error kept in the condition (an Event keeps as many)."""


def failure_message(error: Exception) -> str:
    """What a person reads about a failed pass: the error, named by type when it is unexpected."""
    text = str(error) if isinstance(error, ReconcileError) else f"{type(error).__name__}: {error}"
    return f"{text}; retried with backoff"[:FAILURE_MESSAGE_LIMIT]


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
        routers: Mapping[str, RouterFactory] = ROUTERS,
        clock: Callable[[], datetime] = now_utc,
    ) -> None:
        self.kube = kube
        self.checkers = checkers
        self.routers = {name: factory(kube) for name, factory in routers.items()}
        self.clock = clock

    def reconcile(self, *, namespace: str, name: str) -> float | None:
        """Runs one pass; returns seconds until the rollout wants another look, if any."""
        rollout = self.kube.get_rollout(namespace=namespace, name=name)
        if rollout is None:
            telemetry.forget_rollout(namespace=namespace, name=name)
            return None
        meta = rollout["metadata"]
        deleting = bool(meta.get("deletionTimestamp"))
        if deleting and FINALIZER not in meta.get("finalizers", []):
            return None
        if not deleting and FINALIZER not in meta.get("finalizers", []):
            rollout = self._add_finalizer(rollout)

        status = ModelRolloutStatus.from_json(rollout.get("status"))
        spec, spec_error, router = self._parse(rollout)
        observed = self._observe(rollout, spec, router, deleting=deleting)
        if spec is not None and not deleting:
            try:
                observed = self._run_checker(namespace, name, spec, status, observed)
            except SpecError as error:
                # Only a checker can tell that (say) a query names an unknown variable.
                spec, spec_error = None, str(error)
            except ReferenceProblem as error:
                # Only a checker can tell that (say) an AnalysisTemplate is missing.
                observed = replace(observed, reference_problem=str(error))

        plan = self._decide_and_route(namespace, spec, spec_error, status, observed, router)
        final_status = with_reconciled(
            self._scale_down(namespace, spec, plan), generation=observed.generation, now=observed.now
        )
        if final_status.to_json() != ModelRolloutStatus.from_json(rollout.get("status")).to_json():
            rollout = self.kube.replace_rollout_status(rollout=rollout, status=final_status.to_json())
        # After the status write: a conflict re-runs the pass, which would repeat the Events.
        self._emit(rollout, plan)
        if plan.action_handled:
            self._clear_action(rollout, observed.action)
        if plan.remove_finalizer:
            self._remove_finalizer(rollout)
            telemetry.forget_rollout(namespace=namespace, name=name)
        else:
            telemetry.record_rollout(namespace=namespace, name=name, status=final_status)
        return plan.requeue_after

    def report_failure(self, *, namespace: str, name: str, error: Exception) -> None:
        """Reconciled=False quoting the error, and a Warning Event when that is news (a failure
        retried with backoff repeats the same message, which is reported once)."""
        rollout = self.kube.get_rollout(namespace=namespace, name=name)
        if rollout is None:
            return
        status = ModelRolloutStatus.from_json(rollout.get("status"))
        reason = error.reason if isinstance(error, ReconcileError) else FAILURE_REASON
        message = failure_message(error)
        previous = next((c for c in status.conditions if c.type == RECONCILED_CONDITION), None)
        if previous is not None and (previous.status, previous.reason, previous.message) == ("False", reason, message):
            return
        now = self.clock()
        conditions = set_condition(
            status.conditions,
            type=RECONCILED_CONDITION,
            status=False,
            reason=reason,
            message=message,
            generation=int(rollout["metadata"].get("generation", 0)),
            now=now,
        )
        rollout = self.kube.replace_rollout_status(
            rollout=rollout, status=replace(status, conditions=conditions).to_json()
        )
        self.kube.emit_event(
            about=self._about(rollout), type=EventType.WARNING.value, reason=reason, message=message, now=now
        )

    # Steps ---------------------------------------------------------------------------------------

    def _add_finalizer(self, rollout: JSON) -> JSON:
        finalizers = rollout["metadata"].get("finalizers")
        patch: list[JSON] = (
            [{"op": "add", "path": "/metadata/finalizers/-", "value": FINALIZER}]
            if finalizers
            else [{"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]}]
        )
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
        try:
            spec = parse_spec(rollout.get("spec") or {})
        except SpecError as error:
            return None, str(error), None
        router = self.routers.get(spec.traffic_routing.router)
        if router is None:
            known = ", ".join(sorted(self.routers))
            message = f"spec.trafficRouting.{spec.traffic_routing.router}: unknown router; use one of {known}"
            return None, message, None
        return spec, None, router

    def _observe(
        self, rollout: JSON, spec: ModelRolloutSpec | None, router: Router | None, *, deleting: bool
    ) -> Observed:
        meta = rollout["metadata"]
        namespace = meta["namespace"]
        observed = Observed(
            now=self.clock(),
            generation=int(meta.get("generation", 0)),
            deleting=deleting,
            action=(meta.get("annotations") or {}).get(ACTION_ANNOTATION),
        )
        if spec is None or router is None:
            return observed
        try:
            weights = router.read_weights(namespace=namespace, spec=spec)
            stable = (rollout.get("status") or {}).get("stableVersion") or spec.baseline
            problem = None if deleting else self._backend_problem(namespace, spec, stable)
        except ReferenceProblem as error:
            return replace(observed, reference_problem=str(error))
        return replace(observed, route_weights=weights, reference_problem=problem)

    def _backend_problem(self, namespace: str, spec: ModelRolloutSpec, stable: str) -> str | None:
        if stable not in {v.version for v in spec.versions}:
            return (
                f"the stable version {stable} (status.stableVersion) is not in spec.versions; "
                "keep it listed until its successor is promoted"
            )
        for version_name in dict.fromkeys((stable, spec.candidate)):
            version = spec.version(version_name)
            service = self.kube.get_service(namespace=namespace, name=version.backend.service)
            if service is None:
                return (
                    f"Service {namespace}/{version.backend.service} of version {version_name} not found; "
                    "create it or fix spec.versions[].backend.service"
                )
            ports = {p.port for p in (service.spec.ports or [])}
            if version.backend.port not in ports:
                return (
                    f"Service {namespace}/{version.backend.service} has no port {version.backend.port} "
                    f"(it has {sorted(ports)}); fix spec.versions[].backend.port"
                )
            if version.deployment and self.kube.get_deployment(namespace=namespace, name=version.deployment) is None:
                return (
                    f"Deployment {namespace}/{version.deployment} of version {version_name} not found; "
                    "create it or fix spec.versions[].deployment"
                )
        return None

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
        namespace: str,
        spec: ModelRolloutSpec | None,
        spec_error: str | None,
        status: ModelRolloutStatus,
        observed: Observed,
        router: Router | None,
    ) -> Plan:
        """Decide, move traffic if the plan asks, and decide again on the new weights.

        Only the first decision sees the action annotation, so that it acts once; it counts as
        handled (and is removed) whichever decision comes last."""
        action = observed.action
        events: list[Event] = []
        max_rounds = (len(spec.steps) if spec else 0) + 3
        for _ in range(max_rounds):
            plan = decide(spec=spec, spec_error=spec_error, status=status, observed=observed)
            events.extend(plan.events)
            if not self._needs_route_write(plan.traffic, observed) or spec is None or router is None:
                break
            assert plan.traffic is not None
            refuse_unsafe_split(
                spec=spec, weights=plan.traffic.weights, route=f"spec.trafficRouting.{spec.traffic_routing.router}"
            )
            weights = router.write_weights(namespace=namespace, spec=spec, weights=plan.traffic.weights)
            log.info("traffic moved", extra={"namespace": namespace, "weights": dict(plan.traffic.weights)})
            status, observed = plan.status, replace(observed, route_weights=weights, action=None)
        return replace(plan, events=tuple(events), action_handled=action is not None)

    @staticmethod
    def _needs_route_write(traffic: TrafficSplit | None, observed: Observed) -> bool:
        return (
            traffic is not None
            and observed.route_weights is not None
            and not traffic.satisfied_by(observed.route_weights)
        )

    def _scale_down(self, namespace: str, spec: ModelRolloutSpec | None, plan: Plan) -> ModelRolloutStatus:
        version = plan.scale_down_version
        if version is None or spec is None:
            return plan.status
        deployment_name = spec.version(version).deployment
        if deployment_name:
            deployment = self.kube.get_deployment(namespace=namespace, name=deployment_name)
            if deployment is not None and deployment.spec.replicas:
                self.kube.scale_deployment(
                    namespace=namespace,
                    name=deployment_name,
                    replicas=0,
                    annotations={SCALED_DOWN_FROM_ANNOTATION: str(deployment.spec.replicas)},
                )
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

    def _emit(self, rollout: JSON, plan: Plan) -> None:
        about = self._about(rollout)
        for event in plan.events:
            self.kube.emit_event(
                about=about, type=event.type.value, reason=event.reason, message=event.message, now=self.clock()
            )
            telemetry.TRANSITIONS.labels(reason=event.reason).inc()
