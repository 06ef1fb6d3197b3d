"""The KServe router against the real API server with KServe's InferenceService CRD (KServe v0.17.0)
installed, acting with exactly the RBAC docs/routers/kserve.md lists.

No KServe controller (nor Knative) runs here. The tests play its part: after each change of the
spec they write the status fields KServe v0.17 writes for it (`InferenceServiceStatus.
PropagateStatus`: status.components.predictor.latestCreatedRevision, latestReadyRevision,
latestRolledoutRevision, previousRolledoutRevision, and traffic[] as Knative serves the
canaryTrafficPercent asked), through the status subresource as KServe does. What is checked is
what the router reads from, and writes to, the stored InferenceService and its claim Lease. The
person shipping models applies the InferenceService server-side, as `kubectl apply --server-side`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, cast

import kubernetes
import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from controller.api import parse_spec
from controller.errors import ReferenceProblem
from controller.kube import Kube
from controller.routers.kserve import GROUP, PLURAL, VERSION, KServeRouter, lease_name, versions_of
from controller.routers.ownership import RouteOwnedElsewhere
from localenv.controlplane import ControlPlane
from localenv.router_crds import KSERVE, install_router_crds

pytestmark = pytest.mark.integration

JSON = dict[str, Any]
R1, R2 = "iris-predictor-00001", "iris-predictor-00002"
ROUTER_USER = "kserve-router"

# The official client leaves this function unannotated.
_new_client_from_config: Any = kubernetes.config.new_client_from_config


@pytest.fixture(scope="module")
def kserve_crd(control_plane: ControlPlane) -> None:
    """InferenceService served by the session's API server (installing again changes nothing)."""
    install_router_crds(control_plane, KSERVE)


class KServe:
    """The namespace's InferenceService: applied by a person, its status written as KServe would."""

    def __init__(self, plane: ControlPlane, api: client.ApiClient, namespace: str) -> None:
        self.plane = plane
        self.custom = client.CustomObjectsApi(api)
        self.coordination = client.CoordinationV1Api(api)
        self.namespace = namespace

    def person_applies(
        self, storage_uri: str, *, canary: int | None = None, annotations: dict[str, str] | None = None
    ) -> None:
        """`kubectl apply --server-side` of the person's manifest (field manager `person`)."""
        self.plane.kubectl(*self._apply_args(), input=self._manifest(storage_uri, canary, annotations))

    def person_applies_again(self, storage_uri: str, *, canary: int | None = None) -> str:
        """The same, returning kubectl's error instead of raising it."""
        result = self.plane.kubectl(*self._apply_args(), input=self._manifest(storage_uri, canary, None), check=False)
        return "" if result.returncode == 0 else result.stderr

    def _apply_args(self) -> list[str]:
        return ["apply", "--server-side", "--field-manager=person", f"--namespace={self.namespace}", "--filename=-"]

    @staticmethod
    def _manifest(storage_uri: str, canary: int | None, annotations: dict[str, str] | None) -> str:
        predictor: JSON = {"model": {"modelFormat": {"name": "sklearn"}, "storageUri": storage_uri}}
        if canary is not None:
            predictor["canaryTrafficPercent"] = canary
        metadata: JSON = {"name": "iris", "annotations": {"team": "ml"} | (annotations or {})}
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "InferenceService", "metadata": metadata}
        return yaml.safe_dump(body | {"spec": {"predictor": predictor}})

    def get(self) -> JSON:
        return cast(JSON, self.custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, "iris"))

    def reports(self, *traffic: JSON, rolled_out: str, created: str, ready: str, previous: str | None = None) -> None:
        """KServe's status for what it (and Knative) now serve, written through the status subresource."""
        predictor: JSON = {
            "latestCreatedRevision": created,
            "latestReadyRevision": ready,
            "latestRolledoutRevision": rolled_out,
            "traffic": list(traffic),
        }
        if previous is not None:
            predictor["previousRolledoutRevision"] = previous
        isvc = self.get()
        isvc["status"] = {"deploymentMode": "Knative", "components": {"predictor": predictor}, "observedGeneration": 1}
        self.custom.replace_namespaced_custom_object_status(GROUP, VERSION, self.namespace, PLURAL, "iris", isvc)

    def canary(self) -> object:
        return self.get()["spec"]["predictor"].get("canaryTrafficPercent", "absent")

    def lease_holder(self) -> str | None:
        """The holder of the claim Lease beside the InferenceService; None when there is no Lease."""
        try:
            lease = self.coordination.read_namespaced_lease(lease_name("iris"), self.namespace)
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return lease.spec.holder_identity if lease.spec else None


def latest(revision: str, percent: int) -> JSON:
    return {"latestRevision": True, "percent": percent, "revisionName": revision}


def prev(revision: str, percent: int) -> JSON:
    return {"latestRevision": False, "percent": percent, "revisionName": revision, "tag": "prev"}


@pytest.fixture
def kserve(kserve_crd: None, control_plane: ControlPlane, kube_api: client.ApiClient, namespace: str) -> KServe:
    return KServe(control_plane, kube_api, namespace)


@pytest.fixture
def router(kserve_crd: None, control_plane: ControlPlane, namespace: str) -> Iterator[KServeRouter]:
    """The router acting as a user granted only what docs/routers/kserve.md lists."""
    run = control_plane.kubectl
    ns = f"--namespace={namespace}"
    run("create", "role", "kserve-router", "--verb=get,list,watch,update", "--resource=inferenceservices", ns)
    run("create", "role", "kserve-claims", "--verb=get,create,update,delete", "--resource=leases", ns)
    for role in ("kserve-router", "kserve-claims"):
        run("create", "rolebinding", role, f"--role={role}", f"--user={ROUTER_USER}", ns)
    identity = control_plane.mint_identity(user=ROUTER_USER)
    api = _new_client_from_config(config_file=str(identity))
    with api:
        yield KServeRouter(Kube(api_client=api))


def rollout_spec(baseline: str, candidate: str) -> Any:
    """A rollout of the InferenceService's revisions (backends are placeholders the router never reads)."""
    return parse_spec(
        {
            "model": "iris",
            "versions": [
                {"version": v, "backend": {"service": f"unused-{i}", "port": 80}}
                for i, v in enumerate((baseline, candidate))
            ],
            "baseline": baseline,
            "candidate": candidate,
            "trafficRouting": {"kserve": {"inferenceService": "iris"}},
            "steps": [{"setWeight": 10}],
        }
    )


def test_a_new_model_goes_from_its_first_revision_to_promotion_by_canary_traffic_percent(
    kserve: KServe, router: KServeRouter, namespace: str
) -> None:
    # given a model deployed and rolled out by KServe
    kserve.person_applies("gs://models/iris/1")
    kserve.reports(latest(R1, 100), rolled_out=R1, created=R1, ready=R1)
    assert versions_of(kserve.get()) == (R1, None)

    # when the person ships the next model, held at 0 % by canaryTrafficPercent in the same apply
    kserve.person_applies("gs://models/iris/2", canary=0)
    kserve.reports(latest(R1, 0), prev(R1, 100), rolled_out=R1, created=R2, ready=R1)

    # then its revision is the candidate, which cannot get traffic until KServe reports it ready
    baseline, candidate = versions_of(kserve.get())
    assert (baseline, candidate) == (R1, R2)
    assert candidate is not None
    spec = rollout_spec(baseline, candidate)
    assert "not ready yet" in str(router.reference_problem(namespace=namespace, spec=spec, versions=(R1, R2)))
    kserve.reports(latest(R2, 0), prev(R1, 100), rolled_out=R1, created=R2, ready=R2)
    assert router.reference_problem(namespace=namespace, spec=spec, versions=(R1, R2)) is None
    assert router.read_weights(namespace=namespace, spec=spec, owner="iris") == {R1: 100, R2: 0}
    assert kserve.lease_holder() is None  # reading claims nothing
    annotations = kserve.get()["metadata"]["annotations"]

    # when the rollout's first step sends 10 %
    returned = router.write_weights(namespace=namespace, spec=spec, weights={R1: 90, R2: 10}, owner="iris")

    # then the stored spec asks for 10, the InferenceService is claimed by a Lease (its annotations,
    # which KServe copies onto the Knative revision, are untouched), and the split returned is the
    # one still served: the step is not done until KServe shows it
    assert kserve.canary() == 10
    assert kserve.lease_holder() == "iris"
    assert kserve.get()["metadata"]["annotations"] == annotations
    assert returned == {R1: 100, R2: 0}

    # and a person re-applying the old manifest mid-rollout is stopped by a conflict on the field
    assert "canaryTrafficPercent" in kserve.person_applies_again("gs://models/iris/2", canary=0)
    assert kserve.canary() == 10

    # when KServe serves 10 %, then the rollout reads it
    kserve.reports(latest(R2, 10), prev(R1, 90), rolled_out=R1, created=R2, ready=R2)
    assert router.read_weights(namespace=namespace, spec=spec, owner="iris") == {R1: 90, R2: 10}

    # when it goes to 50 % and then promotes, then promotion removes the field
    router.write_weights(namespace=namespace, spec=spec, weights={R1: 50, R2: 50}, owner="iris")
    assert kserve.canary() == 50
    kserve.reports(latest(R2, 50), prev(R1, 50), rolled_out=R1, created=R2, ready=R2)
    router.write_weights(namespace=namespace, spec=spec, weights={R2: 100}, owner="iris")
    assert kserve.canary() == "absent"

    # and once KServe has rolled the revision out, it is the baseline of the next model
    kserve.reports(latest(R2, 100), rolled_out=R2, created=R2, ready=R2, previous=R1)
    assert router.read_weights(namespace=namespace, spec=spec, owner="iris") == {R1: 0, R2: 100}
    assert versions_of(kserve.get()) == (R2, None)

    # when the rollout is deleted, then its claim goes and the InferenceService is not written
    version = kserve.get()["metadata"]["resourceVersion"]
    router.release(namespace=namespace, spec=spec, owner="iris")
    assert kserve.lease_holder() is None
    assert kserve.get()["metadata"]["resourceVersion"] == version


def test_a_rollback_writes_zero_and_a_second_rollout_is_refused(
    kserve: KServe, router: KServeRouter, namespace: str
) -> None:
    # given a canary at 10 %, applied by the person, claimed by rollout iris
    kserve.person_applies("gs://models/iris/2", canary=10)
    kserve.reports(latest(R2, 10), prev(R1, 90), rolled_out=R1, created=R2, ready=R2)
    spec = rollout_spec(R1, R2)
    router.write_weights(namespace=namespace, spec=spec, weights={R1: 90, R2: 10}, owner="iris")
    version = kserve.get()["metadata"]["resourceVersion"]

    # when rollout iris-b reads or writes it, then it is refused and nothing changes
    with pytest.raises(RouteOwnedElsewhere, match="managed by ModelRollout iris"):
        router.read_weights(namespace=namespace, spec=spec, owner="iris-b")
    with pytest.raises(RouteOwnedElsewhere):
        router.write_weights(namespace=namespace, spec=spec, weights={R2: 100}, owner="iris-b")
    router.release(namespace=namespace, spec=spec, owner="iris-b")
    assert kserve.get()["metadata"]["resourceVersion"] == version
    assert kserve.lease_holder() == "iris"

    # when rollout iris rolls back, then canaryTrafficPercent is 0 and, once KServe serves it, the
    # rolled-out revision has everything
    router.write_weights(namespace=namespace, spec=spec, weights={R1: 100}, owner="iris")
    assert kserve.canary() == 0
    kserve.reports(latest(R2, 0), prev(R1, 100), rolled_out=R1, created=R2, ready=R2)
    assert router.read_weights(namespace=namespace, spec=spec, owner="iris") == {R1: 100, R2: 0}


def test_raw_deployment_mode_and_a_missing_inference_service_are_reference_problems(
    kserve: KServe, router: KServeRouter, namespace: str
) -> None:
    spec = rollout_spec(R1, R2)

    # given no InferenceService, then the rollout is told to create it, and release is quiet
    with pytest.raises(ReferenceProblem, match=f"InferenceService {namespace}/iris not found"):
        router.read_weights(namespace=namespace, spec=spec, owner="iris")
    router.release(namespace=namespace, spec=spec, owner="iris")

    # given one in RawDeployment mode, then reads and writes are refused and nothing is written
    kserve.person_applies(
        "gs://models/iris/2", canary=10, annotations={"serving.kserve.io/deploymentMode": "RawDeployment"}
    )
    version = kserve.get()["metadata"]["resourceVersion"]
    with pytest.raises(
        ReferenceProblem, match=r"runs in RawDeployment mode \(annotation serving.kserve.io/deploymentMode\)"
    ):
        router.read_weights(namespace=namespace, spec=spec, owner="iris")
    with pytest.raises(ReferenceProblem, match="no share of traffic can go to a new model"):
        router.write_weights(namespace=namespace, spec=spec, weights={R1: 90, R2: 10}, owner="iris")
    assert kserve.get()["metadata"]["resourceVersion"] == version
    assert kserve.lease_holder() is None
