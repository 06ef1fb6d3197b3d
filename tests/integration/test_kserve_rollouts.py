"""Whole rollouts through the KServe router, with the real controller process, on the real API server
with KServe's InferenceService CRD (KServe v0.17.0) installed.

No KServe controller (nor Knative) runs here. `FakeKServe` plays its part: a thread that reads the
InferenceService every 100 ms and writes, through the status subresource as KServe does, the status
KServe v0.17 would write for its spec (`InferenceServiceStatus.PropagateStatus` over the traffic
`ksvc_reconciler.go` asks Knative for): a new predictor revision per storageUri
(latestCreatedRevision), ready when the test says so (latestReadyRevision), traffic[] giving the
latest ready revision canaryTrafficPercent and the rolled-out one (tag `prev`) the rest, or the
latest ready revision everything without the field, and latestRolledoutRevision /
previousRolledoutRevision moving once the latest ready revision serves 100 %; a test may hold it
(a slow or stopped KServe) so that the status stays as it is. What is checked is
what the controller reads from and writes to the stored InferenceService: the canaryTrafficPercent
it sets at each step (every value, from a watch), and the split served as the status shows it.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from controller.routers import ROUTERS
from controller.routers.kserve import GROUP, PLURAL, VERSION, lease_name
from localenv.controller import RunningController, start_controller
from localenv.controlplane import ControlPlane
from localenv.router_crds import KSERVE, install_router_crds
from tests.integration.rollout_world import MODEL, ObjectRecorder, World, wait_for

pytestmark = pytest.mark.integration

JSON = dict[str, Any]
R1, R2 = "iris-predictor-00001", "iris-predictor-00002"
ABSENT = "absent"
EXAMPLE = Path(__file__).resolve().parents[2] / "manifests" / "examples" / "canary-kserve.yaml"


@pytest.fixture(scope="module")
def kserve_crd(control_plane: ControlPlane) -> None:
    install_router_crds(control_plane, KSERVE)


class FakeKServe:
    """KServe's part for the namespace's InferenceService `iris` (see the module docstring)."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.custom = client.CustomObjectsApi(world.api)
        self.revisions: list[tuple[str, str]] = []
        """(revision, storageUri), oldest first."""
        self.ready: set[str] = set()
        self.auto_ready = True
        """A new revision is ready at once; otherwise when `make_ready` says so."""
        self.applying = True
        """KServe applies the spec; False holds it (a slow or stopped KServe): the status stays as it is."""
        self.rolled_out: str | None = None
        self.previous: str | None = None
        self._canaries = ObjectRecorder(world, group=GROUP, version=VERSION, plural=PLURAL, name=MODEL, read=canary_of)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    # The person's side --------------------------------------------------------------------------

    def person_applies(self, storage_uri: str, *, canary: int | None = None) -> None:
        """`kubectl apply --server-side` of the person's manifest (field manager `person`)."""
        predictor: JSON = {"model": {"modelFormat": {"name": "sklearn"}, "storageUri": storage_uri}}
        if canary is not None:
            predictor["canaryTrafficPercent"] = canary
        manifest = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "InferenceService",
            "metadata": {"name": MODEL},
            "spec": {"predictor": predictor},
        }
        self.world.kubectl(
            "apply", "--server-side", "--force-conflicts", "--field-manager=person", "-f", "-",
            input=yaml.safe_dump(manifest),
        )  # fmt: skip

    def make_ready(self, revision: str) -> None:
        with self._lock:
            self.ready.add(revision)

    # What is stored -----------------------------------------------------------------------------

    def get(self) -> JSON | None:
        try:
            found = self.custom.get_namespaced_custom_object(GROUP, VERSION, self.world.namespace, PLURAL, MODEL)
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return cast(JSON, found)

    def canary(self) -> object:
        isvc = self.get()
        assert isvc is not None
        return canary_of(isvc)

    @property
    def canaries(self) -> list[object]:
        """Every distinct spec.predictor.canaryTrafficPercent stored, in order (ABSENT without it)."""
        return self._canaries.values()

    def generation(self) -> int:
        """metadata.generation: how many times the spec was changed."""
        isvc = self.get()
        assert isvc is not None
        return int(isvc["metadata"]["generation"])

    def served(self) -> dict[str, int]:
        isvc = self.get()
        assert isvc is not None
        traffic = ((isvc.get("status") or {}).get("components") or {}).get("predictor", {}).get("traffic", [])
        served: dict[str, int] = {}
        for entry in traffic:
            served[entry["revisionName"]] = served.get(entry["revisionName"], 0) + entry["percent"]
        return {revision: percent for revision, percent in served.items() if percent}

    def rolled_out_revision(self) -> str | None:
        isvc = self.get()
        assert isvc is not None
        return cast(str | None, isvc["status"]["components"]["predictor"].get("latestRolledoutRevision"))

    # KServe's side ------------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            try:
                self._reconcile()
            except ApiException as error:
                if error.status not in (404, 409):
                    raise
            except Exception:
                if not self._stop.is_set():
                    raise

    def _reconcile(self) -> None:
        isvc = self.get() if self.applying else None
        if isvc is None:
            return
        predictor = isvc["spec"]["predictor"]
        canary = predictor.get("canaryTrafficPercent")
        with self._lock:
            uri = predictor["model"]["storageUri"]
            if not self.revisions or self.revisions[-1][1] != uri:
                revision = f"{MODEL}-predictor-{len(self.revisions) + 1:05d}"
                self.revisions.append((revision, uri))
                if self.auto_ready:
                    self.ready.add(revision)
            status = self._status(canary)
        if isvc.get("status") != status:
            isvc["status"] = status
            self.custom.replace_namespaced_custom_object_status(
                GROUP, VERSION, self.world.namespace, PLURAL, MODEL, isvc
            )

    def _status(self, canary: int | None) -> JSON:
        """KServe v0.17's status for this spec (called under the lock)."""
        created = self.revisions[-1][0]
        ready = next((revision for revision, _ in reversed(self.revisions) if revision in self.ready), None)
        predictor: JSON = {"latestCreatedRevision": created}
        if ready is not None:
            if canary is not None and self.rolled_out is not None:
                traffic = [
                    {"latestRevision": True, "percent": canary, "revisionName": ready, "tag": "latest"},
                    {"latestRevision": False, "percent": 100 - canary, "revisionName": self.rolled_out, "tag": "prev"},
                ]
            else:
                traffic = [{"latestRevision": True, "percent": 100, "revisionName": ready}]
            if traffic[0]["percent"] == 100 and self.rolled_out != ready:
                self.previous, self.rolled_out = self.rolled_out, ready
            predictor.update(latestReadyRevision=ready, traffic=traffic)
        if self.rolled_out is not None:
            predictor["latestRolledoutRevision"] = self.rolled_out
        if self.previous is not None:
            predictor["previousRolledoutRevision"] = self.previous
        return {"deploymentMode": "Knative", "components": {"predictor": predictor}}

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._canaries.stop()


def canary_of(isvc: JSON) -> object:
    return isvc["spec"]["predictor"].get("canaryTrafficPercent", ABSENT)


@pytest.fixture
def on_kserve(kserve_crd: None, world: World) -> World:
    """The test's world, the KServe CRD installed before its controller starts (ask for this first)."""
    return world


@pytest.fixture
def kserve(on_kserve: World) -> Iterator[FakeKServe]:
    fake = FakeKServe(on_kserve)
    yield fake
    fake.stop()


HELD_SECONDS = 4.0
MAX_HELD_PASSES = 6
"""Passes while KServe holds a write: the resume, the echoes of its writes, one look every 2 s
(a pass after pass would make a hundred, up to the route write budget)."""
STEPS: list[JSON] = [{"setWeight": 20}, {"pause": {"duration": "1s"}}, {"setWeight": 60}]


def kserve_rollout(steps: list[JSON] | None = None) -> JSON:
    return {
        "apiVersion": "rollouts.mlops.dev/v1alpha1",
        "kind": "ModelRollout",
        "metadata": {"name": MODEL},
        "spec": {
            "model": MODEL,
            "trafficRouting": {"kserve": {"inferenceService": MODEL}},
            "steps": steps if steps is not None else STEPS,
        },
    }


def serving_the_first_model(world: World, kserve: FakeKServe, steps: list[JSON] | None = None) -> None:
    """An InferenceService whose first revision KServe rolled out, and a rollout on it: nothing to roll out."""
    kserve.person_applies("gs://models/iris/1")
    wait_for(lambda: kserve.served() == {R1: 100}, what="the first revision serving")
    world.apply(kserve_rollout(steps))
    wait_for(lambda: world.status().get("candidateVersion") == R1, what="the rollout adopting revision 1")
    assert world.status()["phase"] == "Promoted"
    assert world.status()["stableVersion"] == R1


def passes(controller: RunningController) -> float:
    """The reconcile passes the controller made so far, whatever their result."""
    found = re.findall(r"^model_rollouts_reconcile_total\{[^}]*\} (\S+)$", controller.metrics(), re.M)
    return sum(float(count) for count in found)


def lease_holder(world: World) -> str | None:
    try:
        lease = client.CoordinationV1Api(world.api).read_namespaced_lease(lease_name(MODEL), world.namespace)
    except ApiException as error:
        if error.status == 404:
            return None
        raise
    return lease.spec.holder_identity if lease.spec else None


def test_a_new_storage_uri_rolls_out_step_by_step_to_promotion(
    on_kserve: World, kserve: FakeKServe, controller: RunningController
) -> None:
    # given a model served by its first revision, and a rollout on the InferenceService
    serving_the_first_model(on_kserve, kserve)

    # when the person ships the next model, held at 0 % in the same apply
    kserve.person_applies("gs://models/iris/2", canary=0)

    # then the rollout takes the new revision as candidate and walks it to promotion
    wait_for(lambda: on_kserve.status().get("stableVersion") == R2, what="revision 2 promoted", timeout=60,
             last=on_kserve.status)  # fmt: skip
    status = on_kserve.status()
    assert (status["phase"], status["candidateVersion"], status["currentWeight"]) == ("Promoted", R2, 100)
    # canaryTrafficPercent went 0 (the person), 20, 60, then was removed; KServe rolled revision 2 out
    assert kserve.canaries == [ABSENT, 0, 20, 60, ABSENT]
    assert kserve.served() == {R2: 100}
    assert kserve.rolled_out_revision() == R2
    assert lease_holder(on_kserve) == MODEL
    reasons = [event["reason"] for event in on_kserve.events()]
    assert {"RolloutStarted", "Promoted"} <= set(reasons)


def test_an_unguarded_revision_is_held_at_zero_at_once_and_an_abort_rolls_back_to_zero(
    on_kserve: World, kserve: FakeKServe, controller: RunningController
) -> None:
    # given a model served by its first revision, and a rollout holding at 20 % until resumed
    serving_the_first_model(on_kserve, kserve, steps=[{"setWeight": 20}, {"pause": {}}])
    kserve.auto_ready = False

    # when the person ships the next model without canaryTrafficPercent (KServe would send the new
    # revision everything as soon as it is ready)
    kserve.person_applies("gs://models/iris/2")

    # then the controller sets it to 0 before the revision is ready, and waits for it
    wait_for(lambda: kserve.canary() == 0, what="canaryTrafficPercent 0", last=kserve.canary)
    assert kserve.served() == {R1: 100}
    condition = wait_for(
        lambda: next((c for c in on_kserve.status().get("conditions", []) if c["type"] == "ReferencesValid"), None),
        what="ReferencesValid",
    )
    assert condition["status"] == "False" and "not ready yet" in condition["message"]

    # when KServe reports it ready, then it gets 20 %, and `kubectl get mro` names both revisions
    kserve.make_ready(R2)
    on_kserve.wait_for_phase("Paused")
    assert kserve.served() == {R1: 80, R2: 20}
    printed = on_kserve.printed()
    assert (printed["Phase"], printed["Weight"], printed["Baseline"], printed["Candidate"]) == ("Paused", 20, R1, R2)

    # when a person aborts, then canaryTrafficPercent is 0 and the rolled-out revision serves everything
    on_kserve.action("abort")
    on_kserve.wait_for_phase("Aborted")
    assert kserve.canary() == 0
    assert kserve.served() == {R1: 100}
    assert kserve.canaries == [ABSENT, 0, 20, 0]
    assert on_kserve.status()["stableVersion"] == R1


def test_deleting_a_kserve_rollout_mid_way_returns_the_traffic_and_releases_the_claim(
    on_kserve: World, kserve: FakeKServe, controller: RunningController
) -> None:
    # given a rollout holding revision 2 at 20 %
    serving_the_first_model(on_kserve, kserve, steps=[{"setWeight": 20}, {"pause": {}}])
    kserve.person_applies("gs://models/iris/2", canary=0)
    on_kserve.wait_for_phase("Paused")
    assert kserve.served() == {R1: 80, R2: 20}
    assert lease_holder(on_kserve) == MODEL

    # when it is deleted
    on_kserve.kubectl("delete", "modelrollout", MODEL, "--wait=false")

    # then it is gone only once the rolled-out revision serves everything again, and its claim is released
    wait_for(
        lambda: not on_kserve.kubectl("get", "modelrollouts", "-o", "name").strip(), what="the rollout gone", timeout=30
    )
    assert kserve.canary() == 0
    assert kserve.served() == {R1: 100}
    assert lease_holder(on_kserve) is None


def test_a_kserve_rollout_whose_inference_service_is_missing_waits_until_it_exists(
    on_kserve: World, kserve: FakeKServe, controller: RunningController
) -> None:
    # given a rollout naming an InferenceService that does not exist
    on_kserve.apply(kserve_rollout())

    # then it waits, Pending, naming the object and the field, with no version known
    condition = wait_for(
        lambda: next((c for c in on_kserve.status().get("conditions", []) if c["type"] == "ReferencesValid"), None),
        what="ReferencesValid",
    )
    assert condition["status"] == "False"
    assert f"InferenceService {on_kserve.namespace}/{MODEL} not found" in condition["message"]
    assert "spec.trafficRouting.kserve.inferenceService" in condition["message"]
    status = on_kserve.status()
    assert status["phase"] == "Pending" and "candidateVersion" not in status
    assert "InvalidReference" in [event["reason"] for event in on_kserve.events()]

    # when the InferenceService is created and KServe rolls out its first revision, then the rollout
    # adopts it (nothing to roll out), and ships the next one
    kserve.person_applies("gs://models/iris/1")
    wait_for(lambda: on_kserve.status().get("candidateVersion") == R1, what="revision 1 adopted", timeout=30,
             last=on_kserve.status)  # fmt: skip
    kserve.person_applies("gs://models/iris/2", canary=0)
    wait_for(lambda: on_kserve.status().get("stableVersion") == R2, what="revision 2 promoted", timeout=60,
             last=on_kserve.status)  # fmt: skip
    assert kserve.served() == {R2: 100}


def test_a_write_kserve_has_not_applied_is_not_sent_again_and_the_rollout_goes_on_once_it_is(
    on_kserve: World, kserve: FakeKServe, controller: RunningController
) -> None:
    # given a rollout paused at 20 % of revision 2, before a step to 60 %
    serving_the_first_model(on_kserve, kserve, steps=[{"setWeight": 20}, {"pause": {}}, {"setWeight": 60}])
    kserve.person_applies("gs://models/iris/2", canary=0)
    on_kserve.wait_for_phase("Paused")

    # when KServe holds (applies nothing), and a person resumes the rollout
    kserve.applying = False
    generation, passes_before = kserve.generation(), passes(controller)
    on_kserve.action("resume")
    wait_for(lambda: kserve.canary() == 60, what="canaryTrafficPercent 60", last=kserve.canary)
    time.sleep(HELD_SECONDS)

    # then the controller wrote 60 once and waited for the InferenceService to change: a pass for
    # the resume, for the watch events, and the look every 2 s, not a pass after pass
    held_passes = passes(controller) - passes_before
    print(f"{held_passes:.0f} passes in the {HELD_SECONDS:.0f} s KServe held")
    assert kserve.generation() == generation + 1
    assert kserve.served() == {R1: 80, R2: 20}
    assert on_kserve.status()["currentWeight"] == 20
    assert held_passes <= MAX_HELD_PASSES, held_passes

    # when KServe applies it, then its status' watch event moves the rollout on at once (to
    # promotion), well before the next 2 s look
    applying_at = time.monotonic()
    kserve.applying = True
    wait_for(lambda: kserve.canary() == ABSENT, what="canaryTrafficPercent removed", last=kserve.canary)
    went_on_after = time.monotonic() - applying_at
    print(f"promoted {went_on_after:.2f} s after KServe applied 60 %")
    assert went_on_after < 1.0
    assert kserve.canaries == [ABSENT, 0, 20, 60, ABSENT]


def test_a_kserve_rollout_survives_sigkills_mid_way_without_a_flap(
    on_kserve: World, kserve: FakeKServe, control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    def start(log: str) -> RunningController:
        return start_controller(kubeconfig=control_plane.kubeconfig, namespace=namespace, log_file=tmp_path / log)

    # given revision 2 being rolled out, a pause between its two weights
    running = start("c0.log")
    try:
        serving_the_first_model(
            on_kserve, kserve, steps=[{"setWeight": 20}, {"pause": {"duration": "5s"}}, {"setWeight": 60}]
        )
        kserve.person_applies("gs://models/iris/2", canary=0)

        # when the controller is killed with SIGKILL once it wrote 20 %, and again during the pause,
        # and started again each time
        kills: list[tuple[str, Callable[[], bool]]] = [
            ("canaryTrafficPercent 20", lambda: 20 in kserve.canaries),
            ("the pause", lambda: on_kserve.status().get("currentStepIndex") == 1),
        ]
        for round_, (what, reached) in enumerate(kills, start=1):
            wait_for(reached, what=what, last=on_kserve.status)
            running.kill()
            running = start(f"c{round_}.log")

        # then revision 2 is promoted
        wait_for(lambda: on_kserve.status().get("stableVersion") == R2, what="revision 2 promoted", timeout=60,
                 last=on_kserve.status)  # fmt: skip
    finally:
        running.stop()
    assert on_kserve.status()["phase"] == "Promoted"
    assert kserve.served() == {R2: 100}
    # and canaryTrafficPercent only ever went up, each step once: 0 (the person), 20, 60, removed
    assert kserve.canaries == [ABSENT, 0, 20, 60, ABSENT]


def test_the_kserve_example_is_accepted_and_parsed_by_the_kserve_plugin(on_kserve: World) -> None:
    # given the example manifest (InferenceService and ModelRollout)
    # when it is applied
    on_kserve.kubectl("apply", "--server-side", "-f", str(EXAMPLE))

    # then the rollout is stored as written (and the schema's defaults) and its router configuration parses
    stored = on_kserve.rollout()
    written = next(doc for doc in yaml.safe_load_all(EXAMPLE.read_text()) if doc["kind"] == "ModelRollout")
    assert stored["spec"] == {"progressDeadlineSeconds": 600, **written["spec"]}
    config = ROUTERS["kserve"].parse_config(stored["spec"]["trafficRouting"]["kserve"])
    assert ROUTERS["kserve"].object_name(config) == "iris"
