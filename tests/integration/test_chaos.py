"""Chaos: the real controller killed at random moments, and its control plane faulted mid-rollout
(issue 13, "How it is checked").

Both tests run on a control plane of this module's own (etcd and kube-apiserver started for it),
so that killing the API server and pausing etcd disturbs no other test.

`test_fifty_rollouts_survive_repeated_sigkills`: 50 ModelRollouts run at once, each with its
own HTTPRoute and Services, through setWeight 10, pause, setWeight 30, pause, setWeight 60, pause.
The three pauses of a rollout last from 3s together (the first rollout) to 100s (the last), often
1s each (over before a restarted controller is ready), so that rollouts move and finish at
different moments all through the kills. For as long as any rollout is in flight, the controller
is killed with SIGKILL at seeded random moments (before it is ready, right after it wrote a route,
or some time after it is ready) and started again, at once or after a short delay; at least 30
kills must fall while rollouts are in flight (about 40 in 2 minutes on 2 idle cores).

`test_apiserver_killed_and_etcd_paused_mid_rollout`: 10 rollouts (pauses of 3s) and one
controller process. Once the first five move traffic, kube-apiserver is killed with SIGKILL right
after a route write (so most likely before the status write of that pass) and started again on the
same port and certificates; then the other five start, and right after a route write etcd is
stopped (SIGSTOP) for 20s and continued. The same controller process must reconnect by itself and
finish every rollout.

What every rollout must show in both tests:

* weights: every split stored on its route is a planned one (candidate at 0, 10, 30, 60 or 100,
  the stable version at the rest, nothing else), the candidate's weight never goes down (no flap),
  and every planned weight is visited, in order: [0, 10, 30, 60, 100];
* pauses: a pause step holds its weight for its full duration, counted from when the route is
  seen at that weight (issue 13, item 8), within PAUSE_TOLERANCE_SECONDS for the watch's delivery;
* Events: exactly one RolloutStarted, one StepCompleted per step ("step N completed", each N
  once) and one Promoted: none lost to a crash between the status write and the Event, none
  doubled (issue 13, item 8); no Warning Event at all, but ReconcileFailed in the second test (a
  pass failed while the API server or etcd was down);
* the phase is Promoted (v2 stable) within a deadline, with no Reconciled=False condition left.

How the weights are recorded: a watch on etcd itself (its gRPC-gateway JSON API) over the prefix
where kube-apiserver stores HTTPRoutes, from a revision read before any rollout exists. etcd
delivers every revision of every key, in order, so every split ever stored on a route is seen,
also across a kube-apiserver restart (an API watch would have to list again there and could miss
a split that lived briefly). Measured on a loaded machine, a split reaches the recorder within
0.1s of the writer's response.

Everything random is seeded: CHAOS_SEED=<int> in the environment replays another draw (default 13).
A failure lists every finding, with the controller's log lines around it (the test's own faults
are marked in that log with `=== chaos` lines).
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import random
import secrets
import signal
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import httpx
import kubernetes
import pytest
import urllib3
from kubernetes import client

from localenv.controller import RunningController, start_controller
from localenv.controlplane import ControlPlane

pytestmark = pytest.mark.integration

JSON = dict[str, Any]

SEED = int(os.environ.get("CHAOS_SEED", "13"))
PORT = 8080
ROUTES_PREFIX = "/registry/gateway.networking.k8s.io/httproutes/"
"""Where kube-apiserver keeps HTTPRoutes in etcd: PREFIX<namespace>/<name>."""
PLANNED_WEIGHTS = (0, 10, 30, 60, 100)
PAUSE_TOLERANCE_SECONDS = 0.35
"""How much shorter than its duration a pause may look: the watch sees each split a little after
it is stored, and not always equally late."""
ALLOWED_WARNINGS_WHILE_FAULTED = frozenset({"ReconcileFailed"})

# The new_client_from_config function of the official client is unannotated.
_new_client_from_config: Any = kubernetes.config.new_client_from_config


def steps_with_pauses(pauses: tuple[int, int, int]) -> list[JSON]:
    """setWeight 10, 30 and 60, each followed by a pause of so many seconds."""
    return [
        {"setWeight": 10}, {"pause": {"duration": f"{pauses[0]}s"}},
        {"setWeight": 30}, {"pause": {"duration": f"{pauses[1]}s"}},
        {"setWeight": 60}, {"pause": {"duration": f"{pauses[2]}s"}},
    ]  # fmt: skip


# --- recording every split stored on every route, from etcd ---------------------------------


@dataclass(frozen=True)
class StoredSplit:
    at: float
    """time.monotonic() when the watch delivered it."""
    wall: float
    """time.time() then, to compare with the controller's own times."""
    revision: int
    """etcd's mod_revision of the route."""
    weights: dict[str, int]
    """Weight per backendRef name, over every rule."""


def _clock(wall: float) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(wall)) + f"{wall % 1:.3f}"[1:] + "Z"


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _weights_of(route: JSON) -> dict[str, int]:
    weights: dict[str, int] = {}
    for rule in route.get("spec", {}).get("rules", []):
        for ref in rule.get("backendRefs", []):
            weights[ref["name"]] = weights.get(ref["name"], 0) + int(ref.get("weight", 1))
    return weights


class RouteRecorder:
    """Every split ever stored on each HTTPRoute of one namespace, read by a watch on etcd."""

    def __init__(self, *, etcd_url: str, namespace: str) -> None:
        self.etcd_url = etcd_url
        self.prefix = f"{ROUTES_PREFIX}{namespace}/".encode()
        self.range_end = self.prefix[:-1] + bytes([self.prefix[-1] + 1])
        self._splits: dict[str, list[StoredSplit]] = defaultdict(list)
        self._moves = 0
        """Splits recorded that differ from their route's previous one."""
        self._lock = threading.Condition()
        self._stopped = threading.Event()
        self.errors: list[str] = []
        listed = httpx.post(
            f"{etcd_url}/v3/kv/range", json={"key": _b64(self.prefix), "range_end": _b64(self.range_end)}, timeout=10
        ).json()
        for kv in listed.get("kvs", []):
            self._record(kv)
        self._revision = int(listed["header"]["revision"])
        self._thread = threading.Thread(target=self._run, name="route-recorder", daemon=True)
        self._thread.start()

    def _record(self, kv: JSON) -> None:
        name = base64.b64decode(kv["key"])[len(self.prefix) :].decode()
        split = StoredSplit(
            at=time.monotonic(),
            wall=time.time(),
            revision=int(kv["mod_revision"]),
            weights=_weights_of(json.loads(base64.b64decode(kv["value"]))),
        )
        with self._lock:
            previous = self._splits[name][-1].weights if self._splits[name] else None
            self._splits[name].append(split)
            if split.weights != previous:
                self._moves += 1
                self._lock.notify_all()

    def _run(self) -> None:
        while not self._stopped.is_set():
            request = {
                "create_request": {
                    "key": _b64(self.prefix),
                    "range_end": _b64(self.range_end),
                    "start_revision": self._revision + 1,
                }
            }
            try:
                with httpx.stream(
                    "POST", f"{self.etcd_url}/v3/watch", json=request, timeout=httpx.Timeout(10, read=None)
                ) as response:
                    for line in response.iter_lines():
                        if line.strip():
                            self._receive(json.loads(line))
            except Exception as error:  # any error fails the test, through `errors`
                if not self._stopped.is_set():
                    self.errors.append(f"{type(error).__name__}: {error}")
            self._stopped.wait(0.2)

    def _receive(self, message: JSON) -> None:
        if "error" in message:
            raise ValueError(f"etcd watch: {message['error']}")
        result = message.get("result", {})
        if result.get("compact_revision") and int(result["compact_revision"]) > self._revision:
            raise ValueError(f"etcd compacted revisions the recorder had not read: {result}")
        for event in result.get("events", []):
            if event.get("type", "PUT") == "PUT":
                self._record(event["kv"])
            self._revision = max(self._revision, int(event["kv"]["mod_revision"]))

    def splits(self, route: str) -> list[StoredSplit]:
        with self._lock:
            return list(self._splits[route])

    def candidate_weight(self, route: str, candidate_ref: str) -> int | None:
        with self._lock:
            splits = self._splits[route]
            return splits[-1].weights.get(candidate_ref, 0) if splits else None

    def wait_for_move(self, *, timeout: float) -> bool:
        """Waits until some route's weights change; False if none did within `timeout`. Returns
        right after the change is stored, typically before the controller has stored its status."""
        with self._lock:
            moves = self._moves
            return self._lock.wait_for(lambda: self._moves > moves, timeout=timeout)

    def stop(self) -> None:
        self._stopped.set()


# --- many rollouts in one namespace ---------------------------------------------------------


@dataclass
class Fleet:
    """Rollouts r00, r01, ... in one namespace, each with its own HTTPRoute rNN and Services
    rNN-v1 and rNN-v2, all on the chaos module's control plane."""

    plane: ControlPlane
    api: client.ApiClient
    namespace: str
    names: list[str] = field(default_factory=list)

    @staticmethod
    def name(index: int) -> str:
        return f"r{index:02d}"

    def create_backends(self, index: int) -> None:
        name = self.name(index)
        core = client.CoreV1Api(self.api)
        for version in ("v1", "v2"):
            core.create_namespaced_service(
                self.namespace,
                client.V1Service(
                    metadata=client.V1ObjectMeta(name=f"{name}-{version}"),
                    spec=client.V1ServiceSpec(
                        selector={"app": name, "version": version}, ports=[client.V1ServicePort(port=PORT)]
                    ),
                ),
            )
        route = {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": {"name": name},
            "spec": {
                "parentRefs": [{"name": "gateway"}],
                "rules": [
                    {
                        "backendRefs": [
                            {"name": f"{name}-v1", "port": PORT, "weight": 100},
                            {"name": f"{name}-v2", "port": PORT, "weight": 0},
                        ]
                    }
                ],
            },
        }
        client.CustomObjectsApi(self.api).create_namespaced_custom_object(
            "gateway.networking.k8s.io", "v1", self.namespace, "httproutes", route
        )

    def create_rollout(self, index: int, steps: list[JSON]) -> None:
        name = self.name(index)
        rollout = {
            "apiVersion": "rollouts.mlops.dev/v1alpha1",
            "kind": "ModelRollout",
            "metadata": {"name": name},
            "spec": {
                "model": f"model-{name}",
                "versions": [{"version": v, "backend": {"service": f"{name}-{v}", "port": PORT}} for v in ("v1", "v2")],
                "candidate": "v2",
                "baseline": "v1",
                "trafficRouting": {"gatewayAPI": {"httpRoute": name}},
                "steps": steps,
            },
        }
        client.CustomObjectsApi(self.api).create_namespaced_custom_object(
            "rollouts.mlops.dev", "v1alpha1", self.namespace, "modelrollouts", rollout
        )
        self.names.append(name)

    def statuses(self) -> dict[str, JSON]:
        listed = cast(
            JSON,
            client.CustomObjectsApi(self.api).list_namespaced_custom_object(
                "rollouts.mlops.dev", "v1alpha1", self.namespace, "modelrollouts"
            ),
        )
        return {item["metadata"]["name"]: dict(item.get("status") or {}) for item in listed["items"]}

    def events(self) -> list[client.CoreV1Event]:
        events: list[client.CoreV1Event] = client.CoreV1Api(self.api).list_namespaced_event(self.namespace).items
        return events

    def wait_until_promoted(self, *, timeout: float) -> dict[str, JSON]:
        """Every rollout's status once all are Promoted; the API may be briefly unreachable."""
        deadline = time.monotonic() + timeout
        statuses: dict[str, JSON] = {}
        while time.monotonic() < deadline:
            try:
                statuses = self.statuses()
            except (client.ApiException, OSError, urllib3.exceptions.HTTPError):
                time.sleep(0.5)
                continue
            if all(statuses.get(name, {}).get("phase") == "Promoted" for name in self.names):
                return statuses
            time.sleep(0.5)
        not_done = {
            name: (statuses.get(name, {}).get("phase"), statuses.get(name, {}).get("message"))
            for name in self.names
            if statuses.get(name, {}).get("phase") != "Promoted"
        }
        raise AssertionError(f"not Promoted within {timeout:.0f}s: {not_done}")

    def settled_event_findings(self, *, steps: int, allowed_warnings: frozenset[str], timeout: float) -> list[str]:
        """`event_findings` once there are none, or as they stand at `timeout`. A controller creates
        the Events its predecessors recorded and did not create in its first pass of each rollout, at
        a bounded rate: they may exist only some seconds after the rollouts are Promoted. A doubled
        or unexpected Event stays a finding however long this waits."""
        deadline = time.monotonic() + timeout
        while True:
            findings = event_findings(self.events(), self.names, steps=steps, allowed_warnings=allowed_warnings)
            if not findings or time.monotonic() > deadline:
                return findings
            time.sleep(0.5)


@pytest.fixture(scope="module")
def chaos_plane() -> Iterator[ControlPlane]:
    """etcd + kube-apiserver for this module alone: its tests kill and pause them."""
    with ControlPlane.start() as plane:
        yield plane


@pytest.fixture
def fleet(chaos_plane: ControlPlane) -> Iterator[Fleet]:
    api = _new_client_from_config(config_file=str(chaos_plane.kubeconfig))
    namespace = f"chaos-{secrets.token_hex(4)}"
    client.CoreV1Api(api).create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    with api:
        yield Fleet(plane=chaos_plane, api=api, namespace=namespace)


# --- what every rollout must show -----------------------------------------------------------


def weight_findings(
    recorder: RouteRecorder, name: str, *, pauses: tuple[int, int, int], status: JSON, margins: list[float]
) -> list[str]:
    """What is wrong with the splits stored on rollout `name`'s route (its own name); appends to
    `margins` how much longer than its duration each pause held."""
    stable, candidate = f"{name}-v1", f"{name}-v2"
    splits = recorder.splits(name)
    findings = []
    # Writes that leave the weights as they were (an annotation, say) are no move.
    moves = [s for i, s in enumerate(splits) if i == 0 or s.weights != splits[i - 1].weights]
    sequence = [s.weights.get(candidate, 0) for s in moves]
    shown = [f"{s.weights} (rev {s.revision})" for s in moves]
    for split in moves:
        share = split.weights.get(candidate, 0)
        if set(split.weights) != {stable, candidate} or share not in PLANNED_WEIGHTS:
            findings.append(f"{name}: unplanned split {split.weights} (rev {split.revision}); all: {shown}")
        elif split.weights[stable] != 100 - share:
            findings.append(f"{name}: split not summing to 100: {split.weights} (rev {split.revision})")
    if any(later < earlier for earlier, later in itertools.pairwise(sequence)):
        findings.append(f"{name}: candidate weight went down (flap): {sequence}; splits: {shown}")
        return findings
    if sequence != list(PLANNED_WEIGHTS):
        findings.append(f"{name}: candidate weights {sequence}, expected every planned one in order {PLANNED_WEIGHTS}")
        return findings
    # A pause follows each setWeight but the first move's (0 is where the route starts).
    for (before, after), pause in zip(itertools.pairwise(moves[1:]), pauses, strict=True):
        held = after.at - before.at
        margins.append(held - pause)
        if held < pause - PAUSE_TOLERANCE_SECONDS:
            history = [(h.get("time"), h.get("step"), h.get("weight")) for h in status.get("history", [])]
            findings.append(
                f"{name}: weight {before.weights.get(candidate)} held {held:.2f}s before "
                f"{after.weights.get(candidate)}; its pause is {pause}s (from when the route shows it); "
                f"the watch saw them at {_clock(before.wall)} and {_clock(after.wall)}; "
                f"status.history (time, step, weight): {history}"
            )
    return findings


def event_findings(
    events: list[client.CoreV1Event], names: list[str], *, steps: int, allowed_warnings: frozenset[str]
) -> list[str]:
    """Lost, doubled or unexpected Events of the rollouts `names`."""
    by_rollout: dict[str, list[client.CoreV1Event]] = defaultdict(list)
    for event in events:
        by_rollout[event.involved_object.name or ""].append(event)
    findings = []
    for name in names:
        mine = by_rollout[name]
        reasons = Counter(e.reason for e in mine)
        completed = Counter((e.message or "").split(" completed")[0] for e in mine if e.reason == "StepCompleted")
        expected_completed = Counter({f"step {index}": 1 for index in range(steps)})
        summary = sorted((str(e.event_time or e.first_timestamp), e.reason, e.message) for e in mine)
        if reasons["RolloutStarted"] != 1:
            findings.append(f"{name}: {reasons['RolloutStarted']} RolloutStarted Events, expected 1; {summary}")
        if completed != expected_completed:
            findings.append(
                f"{name}: StepCompleted Events {dict(sorted(completed.items()))}, expected one per step "
                f"{dict(sorted(expected_completed.items()))}; {summary}"
            )
        if reasons["Promoted"] != 1:
            findings.append(f"{name}: {reasons['Promoted']} Promoted Events, expected 1; {summary}")
        warnings = [(e.reason, e.message) for e in mine if e.type == "Warning" and e.reason not in allowed_warnings]
        if warnings:
            findings.append(f"{name}: unexpected Warning Events {warnings}")
    return findings


def status_findings(statuses: Mapping[str, JSON], names: list[str]) -> list[str]:
    findings = []
    for name in names:
        status = statuses.get(name, {})
        if status.get("phase") != "Promoted" or status.get("stableVersion") != "v2":
            findings.append(f"{name}: phase {status.get('phase')}, stableVersion {status.get('stableVersion')}")
        for condition in status.get("conditions", []):
            if condition.get("type") == "Reconciled" and condition.get("status") == "False":
                findings.append(f"{name}: left Reconciled=False: {condition.get('message')}")
    return findings


def log_excerpt(log_file: Path, findings: list[str], *, lines: int = 80) -> str:
    """Controller log lines naming the rollouts of the findings, and the test's own fault marks, to
    set the times in the findings against."""
    text = log_file.read_text(errors="replace").splitlines() if log_file.exists() else []
    named = {finding.split(":", 1)[0] for finding in findings}
    picked = [
        line
        for line in text
        if line.startswith("=== chaos") or any(f"/{name}" in line or f"{name} " in line for name in named)
    ]
    return "\n".join(picked[-lines:])


def report(findings: list[str], *, log_file: Path, context: str) -> str:
    return (
        f"{len(findings)} findings ({context}):\n"
        + "\n".join(findings[:40])
        + f"\n--- controller log ({log_file}):\n{log_excerpt(log_file, findings)}"
    )


def note(log_file: Path, line: str) -> None:
    """A line of the test's own in the controller's log, to place its faults among its lines."""
    with log_file.open("a") as log:
        log.write(f"=== chaos {time.strftime('%H:%M:%S')}: {line}\n")


def wait_until(condition: Callable[[], bool], *, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting until {what}")
        time.sleep(0.1)


# --- the tests ------------------------------------------------------------------------------

ROLLOUTS = 50
LONGEST_PAUSES_SECONDS = 100
"""The three pauses of the last rollout take this long together; those of the first, 3s."""
KILLS_IN_FLIGHT = 30
"""SIGKILLs that must fall while rollouts are in flight."""
CHAOS_LIMIT_SECONDS = 360.0
"""No kill after this long (the rollouts still in flight then are finished by one controller)."""


def planned_pauses(index: int, rng: random.Random) -> tuple[int, int, int]:
    """The three pauses of rollout `index`: together from 3s (the first rollout) to 100s (the
    last), so that rollouts finish at different moments all through the kills and the kills go on
    as long as any is in flight; each is 1s a third of the time (over before a restarted controller
    is ready), the others share the rest at random."""
    total = 3 + round(index * (LONGEST_PAUSES_SECONDS - 3) / (ROLLOUTS - 1))
    short = [rng.random() < 1 / 3 for _ in range(3)]
    if all(short) and total > 3:
        short[rng.randrange(3)] = False
    longs = 3 - sum(short)
    rest = total - sum(short)
    cuts = sorted(rng.sample(range(1, rest), longs - 1)) if longs > 1 else []
    shares = iter(b - a for a, b in itertools.pairwise([0, *cuts, rest]))
    first, second, third = (1 if is_short else next(shares) for is_short in short)
    return first, second, third


def test_fifty_rollouts_survive_repeated_sigkills(fleet: Fleet, tmp_path: Path) -> None:
    layout, schedule = random.Random(SEED), random.Random(SEED + 1)
    log_file = tmp_path / "controller.log"
    recorder = RouteRecorder(etcd_url=fleet.plane.etcd_client_url(), namespace=fleet.namespace)

    # Given 50 rollouts at once, each with its own route and Services
    pauses = {fleet.name(index): planned_pauses(index, layout) for index in range(ROLLOUTS)}
    for index in range(ROLLOUTS):
        fleet.create_backends(index)
    for index in range(ROLLOUTS):
        fleet.create_rollout(index, steps_with_pauses(pauses[fleet.name(index)]))

    def in_flight() -> int:
        return sum(recorder.candidate_weight(name, f"{name}-v2") != 100 for name in fleet.names)

    # When the controller is killed with SIGKILL at random moments, and started again each time,
    # for as long as any rollout is in flight
    began = time.monotonic()
    kills: list[int] = []  # rollouts in flight at each kill
    while in_flight() and time.monotonic() - began < CHAOS_LIMIT_SECONDS:
        before_ready = schedule.random() < 0.15
        running = start_controller(
            kubeconfig=fleet.plane.kubeconfig, namespace=fleet.namespace, log_file=log_file, wait_ready=not before_ready
        )
        on_move = not before_ready and schedule.random() < 0.35
        up = schedule.uniform(0.3, 2.0) if before_ready else schedule.uniform(0.0, 3.0)
        if on_move:
            # Right after a route write, most likely before the status write and the Events.
            moved = recorder.wait_for_move(timeout=up)
            when = "at a route write" if moved else f"{up:.2f}s after ready (no route write)"
        else:
            time.sleep(up)
            when = f"{up:.2f}s after {'start' if before_ready else 'ready'}"
        running.kill()
        kills.append(in_flight())
        note(log_file, f"SIGKILL {len(kills)}, {when}")
        if schedule.random() < 0.3:
            time.sleep(schedule.uniform(0.2, 2.0))
    chaos_seconds = time.monotonic() - began
    final = start_controller(kubeconfig=fleet.plane.kubeconfig, namespace=fleet.namespace, log_file=log_file)
    try:
        statuses = fleet.wait_until_promoted(timeout=150)
        # The rollouts may all be Promoted already when it starts: it is stopped only once it had
        # the time to create the Events its predecessors were killed before creating.
        lost_or_doubled = fleet.settled_event_findings(steps=6, allowed_warnings=frozenset(), timeout=60)
    finally:
        final.stop()
        recorder.stop()
    print(
        f"seed {SEED}: {len(kills)} SIGKILLs in {chaos_seconds:.0f}s, rollouts in flight at each: {kills}; "
        f"all Promoted {time.monotonic() - began:.0f}s after the first start"
    )

    # Then at least 30 kills fell mid-rollout, and every rollout shows only planned weights, in
    # order, each pause held, every Event once, and Promoted
    margins: list[float] = []
    findings = [
        finding
        for name in fleet.names
        for finding in weight_findings(
            recorder, name, pauses=pauses[name], status=statuses.get(name, {}), margins=margins
        )
    ]
    findings += lost_or_doubled
    findings += status_findings(statuses, fleet.names)
    print(f"shortest pause held {min(margins, default=0):+.2f}s against its duration")
    assert not recorder.errors, recorder.errors
    assert not findings, report(findings, log_file=log_file, context=f"seed {SEED}, {len(kills)} SIGKILLs")
    assert sum(flying > 0 for flying in kills) >= KILLS_IN_FLIGHT, f"rollouts in flight at each kill: {kills}"


def _signal(plane: ControlPlane, name: str, signum: signal.Signals) -> None:
    os.kill(plane.component(name).process.pid, signum)


def test_apiserver_killed_and_etcd_paused_mid_rollout(fleet: Fleet, tmp_path: Path) -> None:
    rng = random.Random(SEED)
    pauses = (3, 3, 3)
    steps = steps_with_pauses(pauses)
    plane = fleet.plane
    log_file = tmp_path / "controller.log"
    recorder = RouteRecorder(etcd_url=plane.etcd_client_url(), namespace=fleet.namespace)
    for index in range(10):
        fleet.create_backends(index)
    first, second = range(5), range(5, 10)

    def all_moving(indexes: range) -> bool:
        return all((recorder.candidate_weight(fleet.name(i), f"{fleet.name(i)}-v2") or 0) > 0 for i in indexes)

    def at_next_route_write() -> None:
        """Returns right after a route write, most likely before the controller writes the status."""
        assert recorder.wait_for_move(timeout=30), "no route write to fault on: the rollouts went too fast"
        time.sleep(rng.uniform(0.0, 0.02))

    running: RunningController = start_controller(
        kubeconfig=plane.kubeconfig, namespace=fleet.namespace, log_file=log_file
    )
    etcd_stopped = False
    try:
        # Given five rollouts that have started moving traffic
        for index in first:
            fleet.create_rollout(index, steps)
        wait_until(lambda: all_moving(first), what="the first five rollouts move traffic", timeout=60)

        # When kube-apiserver is killed with SIGKILL right after a route write, and started again
        at_next_route_write()
        apiserver = plane.component("kube-apiserver")
        _signal(plane, "kube-apiserver", signal.SIGKILL)
        note(log_file, "SIGKILL kube-apiserver")
        apiserver.process.wait()
        time.sleep(rng.uniform(2.0, 5.0))
        plane.restart_component("kube-apiserver")
        note(log_file, "kube-apiserver ready again")

        # And five more rollouts start, and etcd is stopped for 20s right after a route write
        for index in second:
            fleet.create_rollout(index, steps)
        wait_until(lambda: all_moving(second), what="the other five rollouts move traffic", timeout=60)
        at_next_route_write()
        _signal(plane, "etcd", signal.SIGSTOP)
        etcd_stopped = True
        note(log_file, "SIGSTOP etcd")
        time.sleep(20)
        _signal(plane, "etcd", signal.SIGCONT)
        etcd_stopped = False
        note(log_file, "SIGCONT etcd")

        # Then the same controller process finishes every rollout
        statuses = fleet.wait_until_promoted(timeout=120)
        assert running.process.poll() is None, f"the controller exited with {running.process.returncode}"
    finally:
        if etcd_stopped:
            _signal(plane, "etcd", signal.SIGCONT)
        running.stop()
        recorder.stop()

    # With only planned weights, in order, each pause held, every Event once
    margins: list[float] = []
    findings = [
        finding
        for name in fleet.names
        for finding in weight_findings(recorder, name, pauses=pauses, status=statuses[name], margins=margins)
    ]
    findings += event_findings(
        fleet.events(), fleet.names, steps=len(steps), allowed_warnings=ALLOWED_WARNINGS_WHILE_FAULTED
    )
    findings += status_findings(statuses, fleet.names)
    print(f"seed {SEED}: shortest pause held {min(margins, default=0):+.2f}s against its duration")
    assert not recorder.errors, recorder.errors
    assert not findings, report(findings, log_file=log_file, context=f"seed {SEED}")
