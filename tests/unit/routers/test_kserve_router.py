"""The KServe router: the canary share of an InferenceService's predictor, verified on its status.

The real `Kube` runs over the in-memory API server of tests/unit/test_cheaper_passes.py, which
keeps resourceVersions and refuses a write based on an old one with 409 Conflict; the claim Leases
live in a small in-memory coordination API below. No KServe runs: where KServe would report what
it did, the tests write the status fields KServe v0.17 writes (`InferenceServiceStatus.
PropagateStatus`), with the traffic Knative serves for the canaryTrafficPercent asked.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
from types import SimpleNamespace
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from controller.api import SpecError, parse_spec
from controller.errors import ReferenceProblem, TemporaryError, UnsafeTrafficSplit
from controller.kube import Kube
from controller.routers import kserve
from controller.routers.kserve import (
    GROUP,
    PLURAL,
    Claims,
    KServeRouter,
    KServeRouting,
    Revisions,
    lease_name,
    parse_config,
    revisions,
    versions_of,
)
from controller.routers.ownership import OWNER_ANNOTATION, RouteOwnedElsewhere
from controller.watch import ObjectCache
from tests.unit.test_cheaper_passes import FakeServer

JSON = dict[str, Any]
NS = "ns"
R1, R2, R3 = "iris-predictor-00001", "iris-predictor-00002", "iris-predictor-00003"
LEASE = lease_name("iris")


def rollout_spec(
    config: object = None, *, versions: tuple[str, ...] = (R1, R2), baseline: str = R1, candidate: str = R2
) -> Any:
    """A rollout whose versions are revision names (the backends are placeholders: the router
    never reads them)."""
    return parse_spec(
        {
            "model": "iris",
            "versions": [
                {"version": v, "backend": {"service": f"unused-{i}", "port": 80}} for i, v in enumerate(versions)
            ],
            "candidate": candidate,
            "baseline": baseline,
            "trafficRouting": {"kserve": {"inferenceService": "iris"} if config is None else config},
            "steps": [{"setWeight": 10}],
        }
    )


SPEC = rollout_spec()


def latest(revision: str, percent: int) -> JSON:
    """The traffic entry of the latest ready revision, as Knative's route status resolves it."""
    return {"latestRevision": True, "percent": percent, "revisionName": revision}


def prev(revision: str, percent: int) -> JSON:
    """The traffic entry KServe adds for the rolled-out revision while a canary runs."""
    return {"latestRevision": False, "percent": percent, "revisionName": revision, "tag": "prev"}


def status(
    *traffic: JSON,
    rolled_out: str | None,
    created: str | None,
    ready: str | None,
    previous: str | None = None,
    mode: str | None = "Knative",
) -> JSON:
    predictor: JSON = {"traffic": list(traffic)}
    for key, value in (
        ("latestCreatedRevision", created),
        ("latestReadyRevision", ready),
        ("latestRolledoutRevision", rolled_out),
        ("previousRolledoutRevision", previous),
    ):
        if value is not None:
            predictor[key] = value
    found: JSON = {"components": {"predictor": predictor}, "observedGeneration": 1}
    if mode is not None:
        found["deploymentMode"] = mode
    return found


# The states of a canary in Serverless mode, as KServe reports them.
FIRST_DEPLOY = status(latest(R1, 100), rolled_out=R1, created=R1, ready=R1)
NEW_REVISION_STARTING = status(latest(R1, 0), prev(R1, 100), rolled_out=R1, created=R2, ready=R1)
"""storageUri changed with canaryTrafficPercent 0: R2 created, not ready; `latest` still resolves to R1."""
AT_0 = status(latest(R2, 0), prev(R1, 100), rolled_out=R1, created=R2, ready=R2)
AT_10 = status(latest(R2, 10), prev(R1, 90), rolled_out=R1, created=R2, ready=R2)
AT_50 = status(latest(R2, 50), prev(R1, 50), rolled_out=R1, created=R2, ready=R2)
PROMOTED = status(latest(R2, 100), rolled_out=R2, created=R2, ready=R2, previous=R1)


def inference_service(
    state: JSON | None = None, *, canary: int | None = 0, annotations: dict[str, str] | None = None
) -> JSON:
    predictor: JSON = {"model": {"modelFormat": {"name": "sklearn"}, "storageUri": "gs://models/iris/2"}}
    if canary is not None:
        predictor["canaryTrafficPercent"] = canary
    isvc: JSON = {
        "apiVersion": f"{GROUP}/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": "iris", "namespace": NS, "uid": "uid-1", "annotations": dict(annotations or {})},
        "spec": {"predictor": predictor},
    }
    if state is not None:
        isvc["status"] = state
    return isvc


class FakeLeases:
    """The coordination API calls of `Claims`, over Leases held in memory, answering raw JSON."""

    def __init__(self, server: FakeServer) -> None:
        self.server = server
        self.leases: dict[str, JSON] = {}
        self._versions = itertools.count(1)

    def _stored(self, body: JSON) -> Any:
        lease = copy.deepcopy(body)
        lease["metadata"]["resourceVersion"] = str(next(self._versions))
        self.leases[lease["metadata"]["name"]] = lease
        return SimpleNamespace(data=json.dumps(lease).encode())

    def read_namespaced_lease(self, name: str, namespace: str, **_: Any) -> Any:
        self.server.calls["get leases"] += 1
        if name not in self.leases:
            raise ApiException(status=404, reason="Not Found")
        return SimpleNamespace(data=json.dumps(self.leases[name]).encode())

    def create_namespaced_lease(self, namespace: str, body: JSON, **_: Any) -> Any:
        self.server.calls["create leases"] += 1
        if body["metadata"]["name"] in self.leases:
            raise ApiException(status=409, reason="AlreadyExists")
        return self._stored(body)

    def replace_namespaced_lease(self, name: str, namespace: str, body: JSON, **_: Any) -> Any:
        self.server.calls["update leases"] += 1
        if self.leases[name]["metadata"]["resourceVersion"] != body["metadata"].get("resourceVersion"):
            raise ApiException(status=409, reason="Conflict")
        return self._stored(body)

    def delete_namespaced_lease(self, name: str, namespace: str, body: JSON, **_: Any) -> Any:
        self.server.calls["delete leases"] += 1
        if self.leases[name]["metadata"]["resourceVersion"] != body["preconditions"]["resourceVersion"]:
            raise ApiException(status=409, reason="Conflict")
        del self.leases[name]
        return SimpleNamespace(data=b"{}")


class World:
    """An in-memory API server holding one InferenceService, the real Kube over it, and the router."""

    def __init__(self, isvc: JSON | None) -> None:
        self.server = FakeServer()
        kube = Kube(api_client=client.ApiClient())
        kube.custom = self.server  # type: ignore[assignment]
        self.kube = kube
        if isvc is not None:
            self.server.create(PLURAL, isvc)
        self.leases = FakeLeases(self.server)
        router = KServeRouter(kube)
        router.claims = Claims(self.leases)
        self.router = router

    @property
    def stored(self) -> JSON:
        return copy.deepcopy(self.server.objects[(PLURAL, "iris")])

    @property
    def canary(self) -> int | None:
        value = self.stored["spec"]["predictor"].get("canaryTrafficPercent")
        return None if value is None else int(value)

    @property
    def writes(self) -> int:
        return self.server.calls[f"update {PLURAL}"]

    @property
    def holder(self) -> str | None:
        lease = self.leases.leases.get(LEASE)
        return None if lease is None else str(lease["spec"]["holderIdentity"])

    def kserve_reports(self, state: JSON) -> None:
        """KServe (and Knative) applied the spec: the status it writes, as a new resourceVersion."""
        self.server.create(PLURAL, {**self.stored, "status": state})

    def read(self, spec: Any = SPEC, owner: str = "iris", replacing: str | None = None) -> dict[str, int]:
        return self.router.read_weights(namespace=NS, spec=spec, owner=owner, replacing=replacing)

    def write(self, weights: dict[str, int], spec: Any = SPEC, owner: str = "iris") -> dict[str, int]:
        return self.router.write_weights(namespace=NS, spec=spec, weights=weights, owner=owner)


# ---------------------------------------------------------------------------------------------
# Configuration


def test_the_configuration_parses_into_a_typed_value_and_errors_name_the_field() -> None:
    assert parse_config({"inferenceService": "iris"}) == KServeRouting(inference_service="iris")

    with pytest.raises(SpecError, match=r"^spec.trafficRouting.kserve: must be an object"):
        parse_config("iris")
    with pytest.raises(SpecError, match=r"^spec.trafficRouting.kserve.inferenceService: must be the name"):
        parse_config({})
    with pytest.raises(SpecError, match=r"^spec.trafficRouting.kserve.inferenceService: "):
        parse_config({"inferenceService": ""})
    with pytest.raises(SpecError, match=r"^spec.trafficRouting.kserve.inferenceService: "):
        parse_config({"inferenceService": ["iris"]})


def test_a_broken_configuration_is_a_reference_problem_and_nothing_is_touched() -> None:
    # given a rollout whose kserve section names no InferenceService
    world = World(inference_service(AT_10))
    broken = rollout_spec({"inferencService": "iris"})

    # when it reads or writes, then it is told which field to fix, and nothing was written
    with pytest.raises(ReferenceProblem, match=r"spec\.trafficRouting\.kserve\.inferenceService"):
        world.read(broken)
    with pytest.raises(ReferenceProblem, match=r"spec\.trafficRouting\.kserve\.inferenceService"):
        world.write({R1: 90, R2: 10}, broken)
    assert world.writes == 0
    assert world.leases.leases == {}
    assert kserve.PLUGIN.routed_object(broken.traffic_routing.config) is None


# ---------------------------------------------------------------------------------------------
# The status, in Serverless mode


def test_a_first_deploy_has_its_one_revision_rolled_out_and_nothing_to_roll_out() -> None:
    isvc = inference_service(FIRST_DEPLOY, canary=None)

    assert revisions(isvc) == Revisions(stable=R1, candidate=None, weights={R1: 100}, latest_ready=R1)
    assert versions_of(isvc) == (R1, None)
    assert revisions(isvc).guarded


def test_a_new_revision_is_the_candidate_from_its_creation_and_serves_nothing_until_ready() -> None:
    # given storageUri changed with canaryTrafficPercent 0, the new revision not ready yet
    isvc = inference_service(NEW_REVISION_STARTING, canary=0)

    # then the candidate is the created revision, and all traffic is on the rolled-out one
    current = revisions(isvc)
    assert versions_of(isvc) == (R1, R2)
    assert current.weights == {R1: 100}
    assert current.latest_ready == R1
    assert current.guarded


def test_a_canary_at_10_percent_is_read_per_revision_from_the_traffic_entries() -> None:
    isvc = inference_service(AT_10, canary=10)

    assert revisions(isvc) == Revisions(
        stable=R1, candidate=R2, weights={R2: 10, R1: 90}, latest_ready=R2, canary_traffic_percent=10
    )
    assert versions_of(isvc) == (R1, R2)


def test_once_promoted_the_candidate_is_the_rolled_out_revision_and_the_old_one_is_previous() -> None:
    isvc = inference_service(PROMOTED, canary=None)

    current = revisions(isvc)
    assert (current.stable, current.candidate, current.previous) == (R2, None, R1)
    assert current.weights == {R2: 100}
    assert versions_of(isvc) == (R2, None)


def test_a_rolled_back_canary_keeps_its_revision_as_candidate_at_zero() -> None:
    isvc = inference_service(AT_0, canary=0)

    assert revisions(isvc).weights == {R2: 0, R1: 100}
    assert versions_of(isvc) == (R1, R2)


def test_a_candidate_without_canary_traffic_percent_is_not_guarded() -> None:
    # given a new revision shipped without canaryTrafficPercent: KServe gives it 100 % once ready
    isvc = inference_service(NEW_REVISION_STARTING, canary=None)

    assert not revisions(isvc).guarded


def test_a_status_without_a_rolled_out_revision_or_traffic_is_waited_for() -> None:
    with pytest.raises(ReferenceProblem, match=r"no rolled-out revision yet .*waiting for KServe"):
        revisions(inference_service(None))
    with pytest.raises(ReferenceProblem, match="latestRolledoutRevision is empty"):
        revisions(inference_service(status(latest(R1, 0), rolled_out=None, created=R1, ready=None)))
    with pytest.raises(ReferenceProblem, match=r"traffic is empty\); waiting"):
        revisions(inference_service(status(rolled_out=R1, created=R1, ready=R1)))


@pytest.mark.parametrize(
    ("annotation", "mode", "shown"),
    [
        ("RawDeployment", None, "RawDeployment mode"),
        (None, "Standard", "Standard (RawDeployment) mode"),
        ("Serverless", "RawDeployment", "RawDeployment mode"),
    ],
)
def test_raw_deployment_mode_is_refused_and_says_what_to_do_instead(
    annotation: str | None, mode: str | None, shown: str
) -> None:
    # given an InferenceService that KServe runs (or will run) as a plain Deployment
    annotations = {} if annotation is None else {"serving.kserve.io/deploymentMode": annotation}
    state = status(latest(R1, 100), rolled_out=R1, created=R1, ready=R1, mode=mode)
    world = World(inference_service(state, annotations=annotations))

    # when the rollout reads or writes, then it is refused with what is and is not possible
    with pytest.raises(ReferenceProblem, match=re.escape(f"runs in {shown}")) as refused:
        world.read()
    assert "no share of traffic can go to a new model" in str(refused.value)
    assert "spec.trafficRouting.gatewayAPI or istio" in str(refused.value)
    with pytest.raises(ReferenceProblem, match=re.escape(f"runs in {shown}")):
        world.write({R1: 90, R2: 10})
    assert world.writes == 0
    assert world.leases.leases == {}


def test_the_mode_kserve_recorded_in_the_status_wins_over_the_annotation() -> None:
    # given an annotation changed to RawDeployment after KServe chose Knative (which it keeps)
    isvc = inference_service(AT_10, annotations={"serving.kserve.io/deploymentMode": "RawDeployment"})

    assert versions_of(isvc) == (R1, R2)
    with pytest.raises(ReferenceProblem, match="ModelMesh mode"):
        revisions(inference_service(status(latest(R1, 100), rolled_out=R1, created=R1, ready=R1, mode="ModelMesh")))


# ---------------------------------------------------------------------------------------------
# Reading


def test_reading_reports_the_split_the_status_shows_served_not_the_spec() -> None:
    # given a spec asking for 50 % while KServe still serves 10 %
    world = World(inference_service(AT_10, canary=50))

    # when the rollout reads, then it sees what is served, per revision name, and writes nothing
    assert world.read() == {R1: 90, R2: 10}
    assert world.writes == 0
    assert world.leases.leases == {}  # a read alone claims nothing


def test_a_revision_outside_the_versions_with_traffic_is_a_reference_problem() -> None:
    # given a rollout of R2 while R3, not in its versions, serves the canary share
    state = status(latest(R3, 10), prev(R1, 90), rolled_out=R1, created=R3, ready=R3)
    world = World(inference_service(state, canary=10))

    with pytest.raises(ReferenceProblem, match=f"serves 10 % from revision {R3}.*not in spec.versions"):
        world.read()


def test_a_missing_inference_service_is_a_reference_problem_and_release_is_quiet() -> None:
    world = World(None)

    with pytest.raises(ReferenceProblem, match=r"InferenceService ns/iris not found; create it or fix"):
        world.read()
    world.router.release(namespace=NS, spec=SPEC, owner="iris")
    assert world.server.calls["delete leases"] == 0


# ---------------------------------------------------------------------------------------------
# Writing


def test_a_step_writes_the_candidates_share_and_completes_only_when_kserve_serves_it() -> None:
    # given a new revision held at 0 %
    world = World(inference_service(AT_0, canary=0))
    before = copy.deepcopy(world.stored)

    # when the rollout sends 10 % to the candidate
    returned = world.write({R1: 90, R2: 10})

    # then only canaryTrafficPercent changed, and what comes back is still the served split
    after = world.stored
    assert world.canary == 10
    assert returned == {R1: 100, R2: 0}
    after["spec"]["predictor"]["canaryTrafficPercent"] = 0
    assert after["spec"] == before["spec"]
    assert after["metadata"]["annotations"] == {}  # no annotation: it would start a Knative revision

    # when KServe has applied it, then the rollout reads 10 %
    world.kserve_reports(AT_10)
    assert world.read() == {R1: 90, R2: 10}


def test_writing_again_what_the_spec_already_asks_for_sends_nothing() -> None:
    world = World(inference_service(AT_10, canary=10))
    world.write({R1: 90, R2: 10})
    world.write({R1: 90, R2: 10})

    assert world.writes == 0
    assert world.server.calls["create leases"] == 1


def test_fifty_then_promotion_removes_the_field_and_kserve_rolls_the_candidate_out() -> None:
    world = World(inference_service(AT_10, canary=10))

    world.write({R1: 50, R2: 50})
    assert world.canary == 50
    world.kserve_reports(AT_50)

    # when the candidate gets everything, then the field goes: the latest revision serves 100 %
    world.write({R2: 100})
    assert "canaryTrafficPercent" not in world.stored["spec"]["predictor"]
    world.kserve_reports(PROMOTED)
    assert world.read() == {R1: 0, R2: 100}
    assert world.writes == 2

    # and the promoted rollout writing 100 again changes nothing
    world.write({R2: 100})
    assert world.writes == 2


def test_rollback_writes_zero_and_the_rolled_out_revision_serves_everything() -> None:
    world = World(inference_service(AT_50, canary=50))

    assert world.write({R1: 100}) == {R1: 50, R2: 50}
    assert world.canary == 0

    world.kserve_reports(AT_0)
    assert world.read() == {R1: 100, R2: 0}


def test_a_split_kserve_cannot_make_is_refused_before_anything_is_sent() -> None:
    # given a canary of R2 at 10 %, and a rollout that also lists R3
    world = World(inference_service(AT_10, canary=10))
    three = rollout_spec(versions=(R1, R2, R3), candidate=R2)

    # then weights that do not sum to 100, name an unknown version, or give traffic to a revision
    # that is neither the newest nor the rolled-out one are refused, naming the reason
    with pytest.raises(UnsafeTrafficSplit, match=r"InferenceService ns/iris: the weights sum to 90"):
        world.write({R1: 80, R2: 10})
    with pytest.raises(UnsafeTrafficSplit, match=f"{R3} not in spec.versions"):
        world.write({R1: 90, R3: 10})
    with pytest.raises(UnsafeTrafficSplit, match=f"so {R3} cannot get any"):
        world.write({R1: 80, R2: 10, R3: 10}, three)
    assert world.writes == 0
    assert world.leases.leases == {}


def test_canary_traffic_is_refused_while_it_would_reach_another_revision_than_the_candidate() -> None:
    # given R3 created (not ready) while R2, a newer revision than the rolled-out R1, is the latest ready
    state = status(latest(R2, 0), prev(R1, 100), rolled_out=R1, created=R3, ready=R2)
    world = World(inference_service(state, canary=0))
    spec = rollout_spec(versions=(R1, R3), candidate=R3)

    # when the rollout of R3 wants 10 %, then it is refused: KServe would send it to R2
    with pytest.raises(UnsafeTrafficSplit, match=f"until {R3} is ready KServe sends canaryTrafficPercent to {R2}"):
        world.write({R1: 90, R3: 10}, spec)

    # and all traffic on the rolled-out revision is always possible
    world.write({R1: 100}, spec)
    assert world.canary == 0


def test_a_write_based_on_a_stale_copy_is_refused_by_its_resource_version_and_changes_nothing() -> None:
    # given a router reading InferenceServices from an informer's cache that missed an edit
    world = World(inference_service(AT_10, canary=10))
    cache = ObjectCache()
    cache.apply("ADDED", world.stored)
    world.kube.use_cache(group=GROUP, plural=PLURAL, cache=cache)
    world.server.deliver = False
    edited = world.stored
    edited["spec"]["predictor"]["minReplicas"] = 2
    world.server.create(PLURAL, edited)

    # when the rollout writes, then the API server refuses the stale body and the pass will retry
    with pytest.raises(TemporaryError, match="409"):
        world.write({R1: 50, R2: 50})
    assert world.canary == 10

    # and the retry, reading fresh (the conflict dropped the cached copy), keeps the edit
    world.write({R1: 50, R2: 50})
    assert world.stored["spec"]["predictor"]["minReplicas"] == 2
    assert world.canary == 50


# ---------------------------------------------------------------------------------------------
# Ownership


def test_the_first_write_claims_the_inference_service_with_a_lease_beside_it() -> None:
    world = World(inference_service(AT_0, canary=0))

    world.write({R1: 90, R2: 10})

    lease = world.leases.leases[LEASE]
    assert lease["spec"]["holderIdentity"] == "iris"
    assert lease["metadata"]["ownerReferences"] == [
        {"apiVersion": f"{GROUP}/v1beta1", "kind": "InferenceService", "name": "iris", "uid": "uid-1"}
    ]
    assert OWNER_ANNOTATION not in world.stored["metadata"]["annotations"]


def test_a_second_rollout_is_told_the_owner_and_writes_nothing() -> None:
    # given an InferenceService claimed by rollout iris-a
    world = World(inference_service(AT_10, canary=10))
    world.write({R1: 90, R2: 10}, owner="iris-a")

    # when rollout iris-b reads it, or tries to write it
    with pytest.raises(RouteOwnedElsewhere, match="InferenceService ns/iris is managed by ModelRollout iris-a") as seen:
        world.read(owner="iris-b")
    with pytest.raises(RouteOwnedElsewhere, match=f"Lease ns/{LEASE}"):
        world.write({R1: 100}, owner="iris-b")

    # then nothing was written, and the error names the owner
    assert seen.value.owner == "iris-a"
    assert world.canary == 10
    assert world.holder == "iris-a"


def test_an_owner_that_is_gone_is_replaced_and_only_the_owner_releases() -> None:
    world = World(inference_service(AT_10, canary=10))
    world.write({R1: 90, R2: 10}, owner="iris-gone")

    assert world.read(owner="iris-b", replacing="iris-gone") == {R1: 90, R2: 10}
    assert world.holder == "iris-b"

    world.router.release(namespace=NS, spec=SPEC, owner="someone-else")
    assert world.holder == "iris-b"
    world.router.release(namespace=NS, spec=SPEC, owner="iris-b")
    assert world.leases.leases == {}
    assert world.writes == 0


def test_a_lease_left_by_an_earlier_inference_service_of_that_name_does_not_hold_it() -> None:
    # given a claim of an InferenceService since deleted and created again (a new uid)
    world = World(inference_service(AT_10, canary=10))
    world.write({R1: 90, R2: 10}, owner="iris-old")
    world.leases.leases[LEASE]["metadata"]["ownerReferences"][0]["uid"] = "uid-0"

    # when another rollout writes, then it takes the claim
    world.write({R1: 50, R2: 50}, owner="iris-new")
    assert world.holder == "iris-new"


def test_what_must_exist_before_traffic_moves_is_the_revision_and_the_newest_one_ready() -> None:
    # given a new revision created but not ready
    world = World(inference_service(NEW_REVISION_STARTING))

    def problem(*versions: str, spec: Any = SPEC) -> str | None:
        return world.router.reference_problem(namespace=NS, spec=spec, versions=versions)

    # then the rolled-out revision may get traffic, the candidate not yet, another revision never
    assert problem(R1) is None
    assert problem(R1, R2) == (
        f"revision {R2} of InferenceService ns/iris is not ready yet "
        f"(status.components.predictor.latestReadyRevision is {R1}); waiting for KServe"
    )
    assert f"revision {R3} is neither the rolled-out revision {R1} nor the newest one ({R2})" in str(problem(R3))

    # and once KServe reports it ready, nothing is missing
    world.kserve_reports(AT_0)
    assert problem(R1, R2) is None

    # and a missing InferenceService, or one in RawDeployment mode, is said the same way
    assert "InferenceService ns/gone not found" in str(problem(R1, spec=rollout_spec({"inferenceService": "gone"})))
    world.server.create(
        PLURAL, inference_service(status(latest(R1, 100), rolled_out=R1, created=R1, ready=R1, mode="Standard"))
    )
    assert "runs in Standard (RawDeployment) mode" in str(problem(R1))


def test_the_routed_object_is_the_inference_service() -> None:
    assert kserve.PLUGIN.kind.plural == "inferenceservices"
    assert kserve.PLUGIN.routed_object(SPEC.traffic_routing.config) == "iris"
