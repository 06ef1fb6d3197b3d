"""KServe: the canary share of an InferenceService's predictor, in Serverless (Knative) mode.

Configuration, under spec.trafficRouting.kserve (in the rollout's namespace):

    kserve:
      inferenceService: iris          # required

Versions are revisions. A ModelRollout on KServe names no Services: its versions are the
InferenceService's predictor revisions, labelled by their Knative revision names
(`iris-predictor-00002`), and the caller passes those names as the version labels (spec.versions[]
.version, spec.baseline, spec.candidate, the keys of the weights). `versions_of` gives the pair to
roll out, read from the InferenceService's status: the baseline is the revision KServe last rolled
out to 100 % (status.components.predictor.latestRolledoutRevision), the candidate the newest
revision that is not that one (latestCreatedRevision, else latestReadyRevision); so a person ships
a model by changing spec.predictor.model.storageUri, and the new revision is the candidate. In
metric queries `{{version}}` is the revision name; the revision's pods carry the label
`serving.knative.dev/revision` with that name.

What the router writes: spec.predictor.canaryTrafficPercent, and nothing else on the
InferenceService. KServe v0.17 (`reconcilers/knative/ksvc_reconciler.go`, createKnativeService)
turns it into the Knative Service's traffic: the latest ready revision gets canaryTrafficPercent,
the rolled-out revision (tag `prev`) the rest; without the field the latest ready revision gets
100 %. So a step of weight P writes P; promotion (100) removes the field; rollback (0) writes 0.

What the router reads: the split actually served, from status.components.predictor.traffic[]
(percent per revisionName, which Knative's route status always resolves, also for the
`latestRevision: true` entry), not the spec: a write returns the split the stored object's status
shows, which changes only when KServe has applied it, so a step completes only when the
InferenceService shows its weight ("verified weights"). Writing what the spec already asks for
sends nothing, so a caller that writes again while it waits costs no API write. The status'
observedGeneration is not used: KServe copies the Knative Service's generation into it, which is
not the InferenceService's.

Serverless and RawDeployment. KServe splits traffic between revisions only in Serverless mode
(`Knative` in v0.17, `Serverless` before). In RawDeployment mode (`Standard` in v0.17) there is
one Deployment per component and no revisions: canaryTrafficPercent is ignored, and a change of the
predictor replaces every pod in a rolling update, so no share of traffic can go to the new model.
The router refuses such an InferenceService (annotation `serving.kserve.io/deploymentMode` or
status.deploymentMode RawDeployment or Standard; ModelMesh likewise) with a ReferenceProblem.
What is possible there: one InferenceService per model version, each with its predictor Service
(`NAME-predictor`), and a split between those Services by the Gateway API or Istio router; and
gates against a new InferenceService before it gets traffic. Not possible: a canary inside one
InferenceService, or taking back an in-place update other than by reverting it.

Ownership. The other routers record their rollout in an annotation on the object they write.
KServe copies every annotation and label of an InferenceService (but five it lists) onto the
Knative revision template (`components/predictor.go`, ServiceAnnotationDisallowedList), and a
changed template is a new revision: an owner annotation would start a revision of its own when
claimed and another when released, which then takes the canary share. So the claim is a Lease
(coordination.k8s.io) beside the InferenceService, `kserve-NAME.rollouts.mlops.dev`, whose
holderIdentity is the rollout; it is created by the rollout's first weight write, taken over by a
read that names a gone owner (`replacing`), deleted on release, and owned by the InferenceService,
so that it goes with it. A second rollout is refused with RouteOwnedElsewhere, as elsewhere.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from controller.api import GROUP as ROLLOUTS_GROUP
from controller.api import ModelRolloutSpec, SpecError
from controller.errors import ReferenceProblem, TemporaryError, UnsafeTrafficSplit
from controller.kube import Kube
from controller.routers.ownership import RouteOwnedElsewhere
from controller.routers.plugin import RoutedKind, RoutedVersions, RouterPlugin
from controller.routers.safety import FULL_SHARE, percentages_problem

GROUP = "serving.kserve.io"
VERSION = "v1beta1"
"""The only version of the InferenceService CRD in KServe v0.17.0 (served and stored)."""
PLURAL = "inferenceservices"
KIND = "InferenceService"
CONFIG_PATH = "spec.trafficRouting.kserve"
STATUS_PATH = "status.components.predictor"
DEPLOYMENT_MODE_ANNOTATION = "serving.kserve.io/deploymentMode"
SERVERLESS_MODES = ("Knative", "Serverless")
"""Deployment modes with Knative revisions: v0.17's name and the one before (still accepted)."""
RAW_MODES = ("Standard", "RawDeployment")
"""Deployment modes with one Deployment per component and no revisions."""
MODEL_MESH_MODE = "ModelMesh"

LEASE_GROUP = "coordination.k8s.io"
LEASE_SUFFIX = f".{ROLLOUTS_GROUP}"
INFERENCE_SERVICE_LABEL = f"{ROLLOUTS_GROUP}/inference-service"
"""On the claim's Lease: the InferenceService it claims."""

JSON = dict[str, Any]
T = TypeVar("T")


# ---------------------------------------------------------------------------------------------
# Configuration


@dataclass(frozen=True, kw_only=True)
class KServeRouting:
    inference_service: str
    """Name of the InferenceService, in the rollout's namespace."""


def parse_config(raw: object) -> KServeRouting:
    """The typed value of spec.trafficRouting.kserve; raises SpecError naming the field."""
    if not isinstance(raw, Mapping):
        raise SpecError(CONFIG_PATH, "must be an object, e.g. {inferenceService: iris}")
    name = raw.get("inferenceService")
    if not isinstance(name, str) or not name:
        raise SpecError(
            f"{CONFIG_PATH}.inferenceService", "must be the name of the InferenceService, a non-empty string"
        )
    return KServeRouting(inference_service=name)


def _config(spec: ModelRolloutSpec) -> KServeRouting:
    """The typed configuration: the one parsed with the spec when there is one, or parsed now; one
    that does not parse is a reference problem here (the reconciler refuses it as a spec error)."""
    parsed = getattr(spec.traffic_routing, "parsed", None)
    if isinstance(parsed, KServeRouting):
        return parsed
    try:
        return parse_config(spec.traffic_routing.config)
    except SpecError as error:
        raise ReferenceProblem(str(error)) from error


# ---------------------------------------------------------------------------------------------
# What the InferenceService shows


@dataclass(frozen=True, kw_only=True)
class Revisions:
    """The predictor's revisions and the traffic they serve, as the InferenceService's status
    shows them (KServe v0.17, `ComponentStatusSpec` and `InferenceServiceStatus.PropagateStatus`)."""

    stable: str
    """status.components.predictor.latestRolledoutRevision: the last revision KServe saw serving
    100 %, and the one it sends the rest of the traffic to while a canary runs."""
    candidate: str | None
    """The newest revision that is not `stable` (latestCreatedRevision, else latestReadyRevision);
    None when the newest revision is the rolled-out one: nothing to roll out."""
    weights: Mapping[str, int] = field(default_factory=dict)
    """Percent served per revision name, summed over status.components.predictor.traffic[]."""
    latest_ready: str | None = None
    """latestReadyRevision: the revision the `latestRevision: true` traffic entry resolves to, so
    the one that gets canaryTrafficPercent (the candidate once it is ready)."""
    previous: str | None = None
    """previousRolledoutRevision: the revision rolled out before `stable`."""
    canary_traffic_percent: int | None = None
    """spec.predictor.canaryTrafficPercent as stored. None while a candidate exists means nothing
    holds it back: KServe gives it all traffic as soon as it is ready (see `guarded`)."""

    @property
    def guarded(self) -> bool:
        """Whether KServe holds the candidate at a share rather than sending it everything once
        ready: canaryTrafficPercent is set below 100, or there is no candidate."""
        return self.candidate is None or (
            self.canary_traffic_percent is not None and self.canary_traffic_percent < FULL_SHARE
        )


def _label(namespace: str, name: str) -> str:
    return f"{KIND} {namespace}/{name}"


def _object_label(isvc: Mapping[str, Any]) -> str:
    meta = isvc.get("metadata") or {}
    return _label(str(meta.get("namespace", "")), str(meta.get("name", "")))


def deployment_mode(isvc: Mapping[str, Any]) -> tuple[str, str] | None:
    """(mode, where it was read) as KServe decides it: status.deploymentMode (recorded by KServe,
    and what it keeps using) before the annotation; None when neither is set (the cluster's
    default applies: Serverless in KServe's shipped configuration)."""
    status_mode = (isvc.get("status") or {}).get("deploymentMode")
    if status_mode:
        return str(status_mode), "status.deploymentMode"
    annotated = ((isvc.get("metadata") or {}).get("annotations") or {}).get(DEPLOYMENT_MODE_ANNOTATION)
    if annotated:
        return str(annotated), f"annotation {DEPLOYMENT_MODE_ANNOTATION}"
    return None


def _refuse_other_modes(isvc: Mapping[str, Any]) -> None:
    found = deployment_mode(isvc)
    if found is None or found[0] in SERVERLESS_MODES:
        return
    mode, source = found
    label = _object_label(isvc)
    if mode in RAW_MODES:
        named = mode if mode == "RawDeployment" else f"{mode} (RawDeployment)"
        raise ReferenceProblem(
            f"{label} runs in {named} mode ({source}): there KServe runs one Deployment and no "
            "revisions, ignores canaryTrafficPercent and replaces every pod on an update, so no share of traffic "
            "can go to a new model. Use Serverless (Knative) mode, or serve each model version from an "
            f"InferenceService of its own and split between their predictor Services with "
            "spec.trafficRouting.gatewayAPI or istio (docs/routers/kserve.md)"
        )
    if mode == MODEL_MESH_MODE:
        raise ReferenceProblem(
            f"{label} runs in ModelMesh mode ({source}), which has no revisions to split traffic between; "
            "use Serverless (Knative) mode"
        )
    raise ReferenceProblem(
        f"{label} has deployment mode {mode!r} ({source}), which this router does not know; "
        f"it drives {' or '.join(SERVERLESS_MODES)} mode"
    )


def _revision_weights(entries: Sequence[Mapping[str, Any]], label: str) -> dict[str, int]:
    weights: dict[str, int] = {}
    for index, entry in enumerate(entries):
        percent = int(entry.get("percent") or 0)
        revision = entry.get("revisionName")
        if not revision:
            if percent:
                raise ReferenceProblem(
                    f"{label} serves {percent} % through {STATUS_PATH}.traffic[{index}], which names no "
                    "revisionName; waiting for KServe to report the revision"
                )
            continue
        weights[str(revision)] = weights.get(str(revision), 0) + percent
    return weights


def revisions(isvc: Mapping[str, Any]) -> Revisions:
    """The predictor's revisions and served traffic; raises ReferenceProblem for an InferenceService
    in another mode than Serverless, or whose status shows no rolled-out revision yet (waiting:
    KServe has not reported one)."""
    _refuse_other_modes(isvc)
    label = _object_label(isvc)
    components = (isvc.get("status") or {}).get("components") or {}
    predictor: Mapping[str, Any] = components.get("predictor") or {}
    stable = predictor.get("latestRolledoutRevision")
    if not stable:
        raise ReferenceProblem(
            f"{label} has no rolled-out revision yet ({STATUS_PATH}.latestRolledoutRevision is empty): KServe "
            "records it once a revision of the predictor serves 100 % of the traffic; waiting for KServe. If it never "
            f"does, check that KServe runs it in Serverless (Knative) mode (annotation {DEPLOYMENT_MODE_ANNOTATION})"
        )
    entries = predictor.get("traffic") or []
    if not entries:
        raise ReferenceProblem(
            f"{label} shows no traffic yet ({STATUS_PATH}.traffic is empty); waiting for KServe to report it"
        )
    stable = str(stable)
    latest_created = predictor.get("latestCreatedRevision")
    latest_ready = predictor.get("latestReadyRevision")
    newest = [str(r) for r in (latest_created, latest_ready) if r and str(r) != stable]
    canary = ((isvc.get("spec") or {}).get("predictor") or {}).get("canaryTrafficPercent")
    return Revisions(
        stable=stable,
        candidate=newest[0] if newest else None,
        weights=_revision_weights(entries, label),
        latest_ready=str(latest_ready) if latest_ready else None,
        previous=str(predictor["previousRolledoutRevision"]) if predictor.get("previousRolledoutRevision") else None,
        canary_traffic_percent=None if canary is None else int(canary),
    )


def versions_of(isvc: Mapping[str, Any]) -> tuple[str, str | None]:
    """(baseline, candidate) revision names for spec.versions: the rolled-out revision and the
    newest one that is not it, None when there is none. Raises ReferenceProblem as `revisions`."""
    current = revisions(isvc)
    return current.stable, current.candidate


def served_weights(isvc: Mapping[str, Any], versions: Sequence[str]) -> dict[str, int]:
    """Percent served per version (revision name) of `versions`, from the status; a revision
    outside them that serves traffic is a ReferenceProblem: the split is not the rollout's."""
    current = revisions(isvc)
    found = dict.fromkeys(versions, 0)
    for revision, percent in current.weights.items():
        if revision in found:
            found[revision] = percent
        elif percent:
            raise ReferenceProblem(
                f"{_object_label(isvc)} serves {percent} % from revision {revision} ({STATUS_PATH}.traffic), which "
                f"is not in spec.versions ({', '.join(versions)}); a rollout on KServe rolls out the newest revision "
                f"(now {current.candidate or current.stable}) against the rolled-out one ({current.stable})"
            )
    return found


def revision_problem(isvc: Mapping[str, Any], versions: Sequence[str]) -> str | None:
    """Why KServe cannot give traffic to each of `versions` now, or None: each must be the
    rolled-out revision or the newest one, and the newest must be ready (until it is, KServe sends
    its share to the latest ready revision). Raises ReferenceProblem as `revisions`."""
    current = revisions(isvc)
    label = _object_label(isvc)
    for version in versions:
        if version == current.stable:
            continue
        if version == current.previous and current.candidate is None:
            # KServe rolled out past it (a promotion landing before the rollout records it): the
            # rollout asks it for no traffic any more.
            continue
        if version != current.candidate:
            return (
                f"revision {version} is neither the rolled-out revision {current.stable} nor the newest one "
                f"({current.candidate or current.stable}) of {label}, the only two KServe splits traffic between"
            )
        if current.latest_ready != version:
            return (
                f"revision {version} of {label} is not ready yet ({STATUS_PATH}.latestReadyRevision is "
                f"{current.latest_ready}); waiting for KServe"
            )
    return None


def _split_problem(versions: Sequence[str], weights: Mapping[str, int]) -> str | None:
    return percentages_problem(labels=versions, weights=weights)


def canary_traffic_percent(current: Revisions, weights: Mapping[str, int], *, versions: Sequence[str]) -> int | None:
    """The spec.predictor.canaryTrafficPercent that gives `weights` (percent per revision name),
    None to remove the field (the newest revision gets everything). KServe splits between the
    newest revision and the rolled-out one only, so raises UnsafeTrafficSplit (with the reason,
    without the object's name) for any other split."""
    problem = _split_problem(versions, weights)
    if problem is not None:
        raise UnsafeTrafficSplit(problem)
    newest = current.candidate or current.stable
    others = sorted(v for v, weight in weights.items() if weight > 0 and v not in (newest, current.stable))
    if others:
        raise UnsafeTrafficSplit(
            f"KServe splits traffic between the newest revision {newest} (canaryTrafficPercent) and the rolled-out "
            f"revision {current.stable} (the rest), so {', '.join(others)} cannot get any"
        )
    share = weights.get(newest, 0) if newest != current.stable else FULL_SHARE
    ready = current.latest_ready
    if share > 0 and current.candidate is not None and ready not in (current.candidate, current.stable):
        raise UnsafeTrafficSplit(
            f"until {current.candidate} is ready KServe sends canaryTrafficPercent to {ready}, the latest ready "
            "revision, which is not a version of this split"
        )
    return None if share == FULL_SHARE else share


# ---------------------------------------------------------------------------------------------
# The claim: a Lease beside the InferenceService


class InferenceServiceClaimed(RouteOwnedElsewhere):
    """The InferenceService is managed by another rollout: this one waits and writes nothing."""

    def __init__(self, *, route: str, owner: str, lease: str) -> None:
        ReferenceProblem.__init__(
            self,
            f"{route} is managed by ModelRollout {owner} (Lease {lease}); an InferenceService has one rollout: point "
            f"spec.trafficRouting at another one, or delete ModelRollout {owner}",
        )
        self.owner = owner


def lease_name(inference_service: str) -> str:
    return f"kserve-{inference_service}{LEASE_SUFFIX}"


def _api(operation: str, call: Callable[[], T]) -> T:
    """One API call; transient failures and conflicts become TemporaryError (the pass runs again)."""
    try:
        return call()
    except ApiException as error:
        if error.status in (409, 429) or error.status >= 500:
            delay = 0.2 if error.status == 409 else 2.0
            raise TemporaryError(f"{operation}: HTTP {error.status} {error.reason}", delay=delay) from error
        raise
    except (HTTPError, OSError) as error:
        raise TemporaryError(f"{operation}: {error}") from error


def _body(response: Any) -> JSON:
    return dict(json.loads(response.data))


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Claims:
    """Reads and writes the claim Leases through the coordination API (responses as JSON)."""

    def __init__(self, coordination: Any) -> None:
        self.coordination = coordination

    def get(self, namespace: str, name: str) -> JSON | None:
        try:
            return _api(
                f"get leases.{LEASE_GROUP} {namespace}/{name}",
                lambda: _body(self.coordination.read_namespaced_lease(name, namespace, _preload_content=False)),
            )
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    @staticmethod
    def holder(lease: JSON | None, isvc: Mapping[str, Any] | None) -> str | None:
        """The rollout holding the claim; None when there is no Lease, it names no holder, or it
        belongs to an earlier InferenceService of that name (deleted and created again)."""
        if lease is None:
            return None
        uid = (isvc or {}).get("metadata", {}).get("uid")
        owners = lease.get("metadata", {}).get("ownerReferences") or []
        if uid and owners and all(ref.get("uid") != uid for ref in owners):
            return None
        holder = (lease.get("spec") or {}).get("holderIdentity")
        return str(holder) if holder else None

    def claim(self, namespace: str, isvc: Mapping[str, Any], lease: JSON | None, *, owner: str) -> None:
        """Makes `owner` the holder: creates the Lease, or takes over the one read (`lease`), the
        write guarded by its resourceVersion. A Lease created meanwhile is a conflict."""
        meta = isvc["metadata"]
        name = lease_name(str(meta["name"]))
        body: JSON = {
            "apiVersion": f"{LEASE_GROUP}/v1",
            "kind": "Lease",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": {INFERENCE_SERVICE_LABEL: str(meta["name"])},
            },
            "spec": {"holderIdentity": owner, "acquireTime": _now()},
        }
        if meta.get("uid"):
            body["metadata"]["ownerReferences"] = [
                {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, "name": meta["name"], "uid": meta["uid"]}
            ]
        operation = f"claim leases.{LEASE_GROUP} {namespace}/{name}"
        if lease is None:
            _api(operation, lambda: self.coordination.create_namespaced_lease(namespace, body, _preload_content=False))
            return
        body["metadata"]["resourceVersion"] = lease["metadata"]["resourceVersion"]
        _api(
            operation,
            lambda: self.coordination.replace_namespaced_lease(name, namespace, body, _preload_content=False),
        )

    def release(self, namespace: str, lease: JSON) -> None:
        """Deletes the Lease read, if it is still that version."""
        meta = lease["metadata"]
        preconditions = {"preconditions": {"resourceVersion": meta["resourceVersion"]}}
        try:
            _api(
                f"delete leases.{LEASE_GROUP} {namespace}/{meta['name']}",
                lambda: self.coordination.delete_namespaced_lease(
                    meta["name"], namespace, body=preconditions, _preload_content=False
                ),
            )
        except ApiException as error:
            if error.status != 404:
                raise


# ---------------------------------------------------------------------------------------------
# The router


class KServeRouter:
    def __init__(self, kube: Kube) -> None:
        self.kube = kube
        self._claims: Claims | None = None

    @property
    def claims(self) -> Claims:
        """Made on first use, so that building the router needs no API client (every registered
        router is built with the reconciler, also over a test's fake Kube)."""
        if self._claims is None:
            self._claims = Claims(client.CoordinationV1Api(self.kube.api_client))
        return self._claims

    @claims.setter
    def claims(self, claims: Claims) -> None:
        self._claims = claims

    def _get(self, namespace: str, config: KServeRouting) -> JSON:
        name = config.inference_service
        found = self.kube.get_custom(group=GROUP, version=VERSION, plural=PLURAL, namespace=namespace, name=name)
        if found is None:
            raise ReferenceProblem(
                f"{_label(namespace, name)} not found; create it or fix {CONFIG_PATH}.inferenceService"
            )
        return found

    def _check_owner(
        self, namespace: str, isvc: JSON, *, owner: str, replacing: str | None = None
    ) -> tuple[JSON | None, str | None]:
        """The claim's Lease and holder; raises InferenceServiceClaimed unless the holder is nobody,
        `owner`, or `replacing` (an owner found to be gone)."""
        name = lease_name(isvc["metadata"]["name"])
        lease = self.claims.get(namespace, name)
        holder = self.claims.holder(lease, isvc)
        if holder not in (None, owner, replacing):
            assert holder is not None
            raise InferenceServiceClaimed(route=_object_label(isvc), owner=holder, lease=f"{namespace}/{name}")
        return lease, holder

    def read_weights(
        self, *, namespace: str, spec: ModelRolloutSpec, owner: str, replacing: str | None = None
    ) -> dict[str, int]:
        """Percent per version (revision name) as the status shows it served."""
        isvc = self._get(namespace, _config(spec))
        lease, holder = self._check_owner(namespace, isvc, owner=owner, replacing=replacing)
        weights = served_weights(isvc, [version.version for version in spec.versions])
        if replacing is not None and holder != owner:
            self.claims.claim(namespace, isvc, lease, owner=owner)
        return weights

    def write_weights(
        self, *, namespace: str, spec: ModelRolloutSpec, weights: Mapping[str, int], owner: str
    ) -> dict[str, int]:
        """Sets canaryTrafficPercent for `weights` (claiming the InferenceService for `owner` first)
        and returns the split the stored object's status shows served; that changes only once
        KServe has applied the write. Sends nothing when the spec already asks for it."""
        isvc = self._get(namespace, _config(spec))
        label = _object_label(isvc)
        lease, holder = self._check_owner(namespace, isvc, owner=owner)
        versions = [version.version for version in spec.versions]
        try:
            percent = canary_traffic_percent(revisions(isvc), weights, versions=versions)
        except UnsafeTrafficSplit as refused:
            raise UnsafeTrafficSplit(f"refused to write weights {dict(weights)} to {label}: {refused}") from refused
        predictor = (isvc.get("spec") or {}).get("predictor")
        if not isinstance(predictor, dict):
            raise ReferenceProblem(f"{label} has no spec.predictor")
        if holder != owner:
            self.claims.claim(namespace, isvc, lease, owner=owner)
        if predictor.get("canaryTrafficPercent") == percent:
            return served_weights(isvc, versions)
        if percent is None:
            del predictor["canaryTrafficPercent"]
        else:
            predictor["canaryTrafficPercent"] = percent
        stored = self.kube.replace_custom(group=GROUP, version=VERSION, plural=PLURAL, body=isvc)
        return served_weights(stored, versions)

    def release(self, *, namespace: str, spec: ModelRolloutSpec, owner: str) -> None:
        """Deletes `owner`'s claim, if it holds one; the InferenceService is not read or written."""
        try:
            config = _config(spec)
        except ReferenceProblem:
            return
        lease = self.claims.get(namespace, lease_name(config.inference_service))
        if lease is not None and self.claims.holder(lease, None) == owner:
            self.claims.release(namespace, lease)

    def reference_problem(self, *, namespace: str, spec: ModelRolloutSpec, versions: tuple[str, ...]) -> str | None:
        """What must exist before `versions` get traffic and does not: the InferenceService, in
        Serverless mode, with those revisions, the newest one ready; None when nothing is missing."""
        try:
            return revision_problem(self._get(namespace, _config(spec)), versions)
        except ReferenceProblem as error:
            return str(error)

    def versions(self, namespace: str, config: KServeRouting) -> RoutedVersions:
        """The rollout's versions as the InferenceService shows them: the rolled-out revision, the
        newest one, and whether canaryTrafficPercent holds that one back; ReferenceProblem when the
        InferenceService is missing, not in Serverless mode or shows no rolled-out revision yet."""
        current = revisions(self._get(namespace, config))
        return RoutedVersions(stable=current.stable, candidate=current.candidate, guarded=current.guarded)


def _versions(router: Any, namespace: str, config: Any) -> RoutedVersions:
    assert isinstance(router, KServeRouter) and isinstance(config, KServeRouting)
    return router.versions(namespace, config)


PLUGIN = RouterPlugin(
    key="kserve",
    kind=RoutedKind(group=GROUP, version=VERSION, plural=PLURAL),
    parse_config=parse_config,
    object_name=lambda config: config.inference_service,
    build=KServeRouter,
    versions=_versions,
    applied_later=True,
)
