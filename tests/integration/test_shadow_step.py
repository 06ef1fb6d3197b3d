"""The mirror (shadow) step end to end, through a real gateway: Contour + Envoy on 127.0.0.1.

The real controller process moves a real HTTPRoute; Envoy serves the route's split to a client
and copies requests to the candidate while the route carries the controller's RequestMirror
filter; real Open Inference Protocol model servers answer (the baseline v1 is the `good`
breast-cancer model) and export their metrics for every request they answer, copies included;
a real Prometheus scrapes them, and the controller's analysis judges the candidate on what it
did with the copies. Every answer names the version that gave it (`model_version`), so the
client can tell whether a candidate ever answered it.

Contour (v1.33) copies every request whatever the filter's `percent` says (contour #7021): the
steps here mirror 100 %, so the assertions hold on any gateway.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from kubernetes import client

from localenv.controlplane import ControlPlane
from localenv.gateway import LocalGateway, expose_loopback_server
from localenv.modelserver import RunningServer, Variant
from localenv.modelserver.dataset import load_dataset
from localenv.modelserver.variants import STANDARD_INPUT
from localenv.prometheus import LocalPrometheus
from tests.integration.rollout_world import World, model_servers, wait_for

pytestmark = pytest.mark.integration

MODEL = "breast-cancer"
PORT = 8080
ROUTE = "cancer"
VARIANTS = {"v1": Variant.GOOD, "v2": Variant.BETTER, "v3": Variant.UNSCALED}
"""v3 skips the scaler its model was trained behind (a broken preprocessing step): every row it
reads breaks the input invariants."""
ANALYSIS: dict[str, Any] = {
    "interval": "2s",
    "metrics": [
        {"name": "errors", "preset": "error-rate"},
        {"name": "invariants", "preset": "input-invariant-violations"},
        {"name": "nonfinite", "preset": "nonfinite-outputs"},
    ],
}
SHADOW_SECONDS = 12
PAIRED: dict[str, Any] = {
    "interval": "2s",
    "metrics": [{"name": "agreement", "pairedPredictions": {"minAgreement": 0.95}}],
}
"""The candidate's answers to the mirrored copies against the baseline's answers to the same
requests, joined by request id from both model servers' prediction logs (docs/model-metrics.md)."""


# ---------------------------------------------------------------------------------------------
# The gateway, the model servers and Prometheus, once per module


@pytest.fixture(scope="module")
def gateway(control_plane: ControlPlane) -> Iterator[LocalGateway]:
    with LocalGateway.start(control_plane.kubeconfig, kubectl=control_plane.bin_dir / "kubectl") as running:
        yield running


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, RunningServer]]:
    with model_servers(VARIANTS, model=MODEL) as started:
        yield started


@pytest.fixture(scope="module")
def prometheus(servers: dict[str, RunningServer]) -> Iterator[LocalPrometheus]:
    """Scrapes every model server; each version's series exist (at 0 or more) before a rollout."""
    with LocalPrometheus(scrape_targets=[f"127.0.0.1:{s.port}" for s in servers.values()]) as server:
        for version, running in servers.items():
            with Client(base_url=running.url, host=None) as direct:
                direct.ask_many(5)
            server.wait_for_value(f'sum(model_requests_total{{model="{MODEL}",version="{version}"}})', at_least=5)
        yield server


# ---------------------------------------------------------------------------------------------
# A client of the gateway that remembers which version answered, and when


@dataclass
class Client:
    """Sends the test split's rows one after another; keeps (time, version) of every answer."""

    base_url: str
    host: str | None
    answers: list[tuple[float, str]] = field(default_factory=list)
    failed: list[tuple[float, str]] = field(default_factory=list)
    """(time, what) of every request that got no 200."""
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __post_init__(self) -> None:
        headers = {"Host": self.host} if self.host else {}
        self.http = httpx.Client(base_url=self.base_url, headers=headers, timeout=5.0)
        self.rows = load_dataset().test_features

    def ask_many(self, count: int) -> None:
        for i in range(count):
            self.ask(i)

    def ask(self, i: int) -> None:
        row = self.rows[i % len(self.rows)].tolist()
        tensor = {**STANDARD_INPUT.as_json(), "shape": [1, len(row)], "data": row}
        try:
            answer = self.http.post(f"/v2/models/{MODEL}/infer", json={"id": f"shadow-{i}", "inputs": [tensor]})
        except httpx.HTTPError as error:
            self.failed.append((time.monotonic(), repr(error)))
            return
        if answer.status_code != 200:
            self.failed.append((time.monotonic(), f"HTTP {answer.status_code}: {answer.text[:200]}"))
            return
        self.answers.append((time.monotonic(), str(answer.json()["model_version"])))

    def start(self) -> None:
        def send() -> None:
            i = 0
            while not self._stop.wait(0.005):
                self.ask(i)
                i += 1

        self._thread = threading.Thread(target=send, daemon=True)
        self._thread.start()

    @property
    def failures(self) -> int:
        return len(self.failed)

    def failed_between(self, start: float, end: float) -> list[str]:
        return [what for at, what in self.failed if start <= at <= end]

    def versions_between(self, start: float, end: float) -> set[str]:
        return {version for at, version in list(self.answers) if start <= at <= end}

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


# ---------------------------------------------------------------------------------------------
# One namespace: a Service per version on its loopback server, an HTTPRoute on the gateway


@dataclass
class Shadow:
    world: World
    gateway: LocalGateway
    servers: dict[str, RunningServer]

    @property
    def host(self) -> str:
        return f"{self.world.namespace}.shadow.test"

    def route(self) -> dict[str, Any]:
        return self.world.custom("gateway.networking.k8s.io", "httproutes", ROUTE, version="v1")

    def weights(self) -> dict[str, int]:
        refs = self.route()["spec"]["rules"][0]["backendRefs"]
        return {ref["name"].removeprefix(f"{ROUTE}-"): int(ref.get("weight", 1)) for ref in refs}

    def mirror_filters(self) -> list[dict[str, Any]]:
        return [
            f
            for rule in self.route()["spec"]["rules"]
            for f in rule.get("filters") or []
            if f["type"] == "RequestMirror"
        ]

    def requests_answered(self, version: str) -> float:
        text = httpx.get(self.servers[version].metrics_url, timeout=5.0).text
        return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith("model_requests_total{"))

    def roll_out(
        self, candidate: str, *, shadow: str = f"{SHADOW_SECONDS}s", analysis: dict[str, Any] = ANALYSIS
    ) -> None:
        """Each version names its model server as its `endpoint`, where a paired check reads its
        prediction log."""
        self.world.apply(
            {
                "apiVersion": "rollouts.mlops.dev/v1alpha1",
                "kind": "ModelRollout",
                "metadata": {"name": ROUTE},
                "spec": {
                    "model": MODEL,
                    "versions": [
                        {
                            "version": v,
                            "backend": {"service": f"{ROUTE}-{v}", "port": PORT},
                            "endpoint": self.servers[v].url,
                        }
                        for v in ("v1", candidate)
                    ],
                    "baseline": "v1",
                    "candidate": candidate,
                    "trafficRouting": {"gatewayAPI": {"httpRoute": ROUTE}},
                    "steps": [{"setWeight": 0}, {"mirror": {"duration": shadow}}],
                    "analysis": analysis,
                },
            }
        )

    def wait_for_mirror_step(self) -> float:
        """time.monotonic() once the rollout is in its mirror step with the filter on the route."""
        wait_for(lambda: self.world.status(ROUTE).get("currentStepIndex") == 1, what="the mirror step", timeout=30,
                 last=lambda: self.world.status(ROUTE))  # fmt: skip
        wait_for(lambda: self.mirror_filters(), what="the RequestMirror filter", timeout=10, last=self.route)
        return time.monotonic()


@pytest.fixture
def shadow(
    gateway: LocalGateway, servers: dict[str, RunningServer], control_plane: ControlPlane, kube_api: client.ApiClient,
    namespace: str,
) -> Iterator[Shadow]:  # fmt: skip
    world = World(plane=control_plane, api=kube_api, namespace=namespace)
    for version, running in servers.items():
        expose_loopback_server(kube_api, namespace=namespace, service=f"{ROUTE}-{version}", port=running.port,
                               service_port=PORT)  # fmt: skip
    setup = Shadow(world=world, gateway=gateway, servers=servers)
    world.apply(
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": {"name": ROUTE},
            "spec": {
                "parentRefs": [gateway.parent_ref()],
                "hostnames": [setup.host],
                "rules": [{"backendRefs": [{"name": f"{ROUTE}-v1", "port": PORT, "weight": 100}]}],
            },
        }
    )
    with Client(base_url=gateway.url, host=setup.host) as probe:

        def served() -> bool:
            probe.ask(0)
            return bool(probe.answers)

        wait_for(served, what="Envoy serving the route", timeout=30, last=gateway.log_tail)
    yield setup
    # The namespace only turns Terminating (no namespace controller): take the route off the Gateway.
    with contextlib.suppress(client.ApiException):
        client.CustomObjectsApi(kube_api).delete_namespaced_custom_object(
            "gateway.networking.k8s.io", "v1", namespace, "httproutes", ROUTE
        )


# ---------------------------------------------------------------------------------------------
# The tests


@pytest.mark.usefixtures("prometheus", "analysis_controller")
def test_a_good_candidate_is_shadowed_then_promoted_and_no_client_saw_it_during_the_shadow(shadow: Shadow) -> None:
    # given clients asking the gateway all along, and v2 (a better model) to roll out
    before = shadow.requests_answered("v2")
    with Client(base_url=shadow.gateway.url, host=shadow.host) as clients:
        clients.start()
        # when the rollout starts with setWeight 0 and a mirror step analysed on the copies
        shadow.roll_out("v2")
        mirrored_at = shadow.wait_for_mirror_step()
        during = shadow.requests_answered("v2")
        status = wait_for(
            lambda: found if (found := shadow.world.status(ROUTE)).get("currentStepIndex", 0) >= 2 else None,
            what="the end of the mirror step", timeout=60, last=lambda: shadow.world.status(ROUTE),
        )  # fmt: skip
        ended_at = time.monotonic()
        after = shadow.requests_answered("v2")
        promoted = shadow.world.wait_for_phase("Promoted", timeout=30, name=ROUTE)
        wait_for(lambda: clients.versions_between(time.monotonic() - 1, time.monotonic()) == {"v2"},
                 what="clients answered by v2 after the promotion", timeout=10)  # fmt: skip

    # then v2 answered copies during the step (its own counter grew) while every client answer
    # of the step came from v1
    print(f"v2 answered {during - before:.0f} requests before the step, {after - during:.0f} during it")
    assert after - during > 100, (before, during, after)
    assert clients.versions_between(mirrored_at, ended_at) == {"v1"}
    assert clients.failed_between(mirrored_at, ended_at) == []
    # (a failure outside the shadow, e.g. as the route swaps the mirror for weights, is printed:
    # CI once saw one under load, not yet explained)
    print(f"requests that failed outside the shadow step: {clients.failed}")
    # and the analysis judged the copies, and passed
    assert status["currentStepIndex"] >= 2
    judged = [m for m in promoted["analysis"]["measurements"] if m["run"] == "step-1"]
    assert {m["verdict"] for m in judged} == {"Successful"}
    assert max(m["candidateSamples"] for m in judged) > 100
    # and the filter is gone, v2 serving everything
    assert shadow.mirror_filters() == []
    assert shadow.weights()["v2"] == 100
    assert "routeMirror" not in promoted


@pytest.mark.usefixtures("prometheus", "analysis_controller")
def test_a_candidate_with_broken_preprocessing_is_rolled_back_during_the_shadow_before_any_client_saw_it(
    shadow: Shadow,
) -> None:
    # given clients asking the gateway all along, and v3 which skips its scaler
    with Client(base_url=shadow.gateway.url, host=shadow.host) as clients:
        clients.start()
        # when it is rolled out with a long shadow step
        shadow.roll_out("v3", shadow="5m")
        shadow.wait_for_mirror_step()
        status = shadow.world.wait_for_phase("RolledBack", timeout=60, name=ROUTE)
        wait_for(lambda: not shadow.mirror_filters(), what="the filter removed", timeout=10, last=shadow.route)

    # then the invariants failed on the copies, long before the step's end
    assert status["message"].startswith("invariants failed"), status["message"]
    assert status["currentStepIndex"] == 1
    # and no client ever got an answer from v3
    versions = {version for _, version in clients.answers}
    assert versions == {"v1"}, versions
    assert len(clients.answers) > 100 and clients.failures == 0
    # and the route is back to v1 alone, without the filter
    assert shadow.weights()["v1"] == 100 and shadow.weights().get("v3", 0) == 0
    assert shadow.mirror_filters() == []


@pytest.mark.usefixtures("prometheus", "analysis_controller")
def test_deleting_a_rollout_during_its_shadow_removes_the_filter_and_leaves_all_traffic_on_stable(
    shadow: Shadow,
) -> None:
    # given a rollout in a long mirror step
    shadow.roll_out("v2", shadow="5m")
    shadow.wait_for_mirror_step()
    assert shadow.world.status(ROUTE)["routeMirror"] == {"version": "v2", "percent": 100}

    # when it is deleted
    shadow.world.kubectl("delete", "modelrollout", ROUTE, "--wait=false")
    wait_for(lambda: ROUTE not in shadow.world.kubectl("get", "modelrollouts", "-o", "name"),
             what="the rollout gone", timeout=30)  # fmt: skip

    # then the route copies nothing, sends everything to v1 and is no longer claimed
    assert shadow.mirror_filters() == []
    assert shadow.weights()["v1"] == 100 and shadow.weights().get("v2", 0) == 0
    annotations = shadow.route()["metadata"].get("annotations") or {}
    assert not any(key.startswith("rollouts.mlops.dev/") for key in annotations), annotations
    # and Envoy answers from v1 only, without copying to v2
    time.sleep(1)
    before = shadow.requests_answered("v2")
    with Client(base_url=shadow.gateway.url, host=shadow.host) as clients:
        clients.ask_many(50)
    assert {version for _, version in clients.answers} == {"v1"}
    assert shadow.requests_answered("v2") == before


@pytest.mark.usefixtures("prometheus", "analysis_controller")
def test_a_good_candidate_agreeing_with_the_baseline_on_the_mirrored_requests_passes_the_paired_check(
    shadow: Shadow,
) -> None:
    # given v2, which predicts what v1 predicts for about 96 % of the test rows (docs/checks/paired-predictions.md)
    with Client(base_url=shadow.gateway.url, host=shadow.host) as clients:
        clients.start()
        # when it is shadowed, judged on the pairs against a floor of 90 %
        paired = {**PAIRED, "metrics": [{"name": "agreement", "pairedPredictions": {"minAgreement": 0.9}}]}
        shadow.roll_out("v2", analysis=paired)
        shadow.wait_for_mirror_step()
        promoted = shadow.world.wait_for_phase("Promoted", timeout=60, name=ROUTE)

    # then every look of the shadow step passed, on hundreds of pairs
    looks = [m for m in promoted["analysis"]["measurements"] if m["run"] == "step-1"]
    assert looks and {m["verdict"] for m in looks} == {"Successful"}
    (evidence,) = [e["latest"] for e in promoted["analysis"]["evidence"] if e["metric"] == "agreement"]
    print(f"paired check: {evidence['agreed']:.0f} of {evidence['pairs']:.0f} pairs agreed ({evidence['agreement']})")
    assert evidence["pairs"] > 300 and evidence["agreement"] >= 0.9
    assert shadow.mirror_filters() == []


@pytest.mark.usefixtures("prometheus", "analysis_controller")
def test_a_candidate_disagreeing_with_the_baseline_on_the_mirrored_requests_fails_the_paired_check_in_the_shadow(
    shadow: Shadow,
) -> None:
    # given clients asking the gateway all along, and v3 (which skips its scaler) judged only on
    # whether it predicts what v1 predicts for the very same requests
    with Client(base_url=shadow.gateway.url, host=shadow.host) as clients:
        clients.start()
        # when it is rolled out with a long shadow step
        shadow.roll_out("v3", shadow="5m", analysis=PAIRED)
        shadow.wait_for_mirror_step()
        status = shadow.world.wait_for_phase("RolledBack", timeout=60, name=ROUTE)
        wait_for(lambda: not shadow.mirror_filters(), what="the filter removed", timeout=10, last=shadow.route)

    # then the paired check failed during the shadow step, naming the agreement and the floor
    message = status["message"]
    assert message.startswith("agreement failed"), message
    assert "paired requests" in message and "at least 95% required" in message
    assert status["currentStepIndex"] == 1
    # on many pairs joined from both servers' logs, with the requests whose scores differ most
    (evidence,) = [e["latest"] for e in status["analysis"]["evidence"] if e["metric"] == "agreement"]
    print(f"paired check: {evidence['agreed']:.0f} of {evidence['pairs']:.0f} pairs agreed, "
          f"interval {evidence['interval']}; largest differences {evidence['largestDifferences'][:2]}")  # fmt: skip
    assert evidence["pairs"] >= 50 and evidence["interval"][1] < 0.95
    largest = evidence["largestDifferences"]
    assert len(largest) == 5 and largest[0]["difference"] >= largest[-1]["difference"] > 0
    # joined on the gateway's x-request-id, which Envoy set on each request and kept on its copy:
    # not the clients' own body ids
    assert not any(entry["requestId"].startswith("shadow-") for entry in largest), largest
    # and no client ever got an answer from v3
    assert {version for _, version in clients.answers} == {"v1"}
    assert len(clients.answers) > 100 and clients.failures == 0
    assert shadow.mirror_filters() == []
