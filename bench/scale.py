"""How the controller scales (issue 14): many ModelRollouts in one controller process, on a real
local API server and a real Prometheus, all on 127.0.0.1. Prints one table, with the targets.

Scenarios (`--scenario`, default all), each on a fresh control plane:

* **lockstep**: N rollouts (`--lockstep-rollouts`, a comma list such as 1000,5000) created first,
  then moving together through `setWeight 10, pause 3s, setWeight 50` to Promoted, weights only.
  FLOOR first, on the same objects with the controller not running: `--floor-threads` threads
  making only the writes the steps need, one JSON merge patch each (route weights 90/10 and a
  status; after the pause, 50/50 and a status; 0/100 and status Promoted), each rollout's pause
  timed from its own first write. Objects are then put back as created (route 100 % v1, no
  status) and the controller is started. Figures: time to all Promoted (from the controller
  answering /readyz; the floor from its first write), its ratio to the floor (target at most 2),
  the pause's real length (p50/p99 of the time from the route at 10 to the route at 50, as a
  watch of the routes sees them, for both), API calls per rollout
  (`model_rollouts_api_calls_total`), passes per second (`model_rollouts_reconcile_total`).
* **staggered**: N rollouts (`--staggered-rollouts`, a comma list: two sizes tell whether the load
  on Prometheus depends on N) created evenly over `--staggered-period`, each
  `setWeight 10, analyze D, setWeight 50, analyze D` (D `--analyze-seconds`) with the presets
  error-rate and latency-p99 at `--interval`. Prometheus scrapes every `--scrape-interval` a
  loopback exporter (localenv/fleet_metrics.py) holding healthy series of every
  (namespace, model, version). Figures: lateness p99 of analyze steps (left at, from status
  history, minus started at plus D) and of measurements (taken at, from status.analysis, minus
  due: one interval after the previous look, at most the window's end), target at most 2 s;
  any `model_rollouts_*lateness*` histogram the controller exports, its p99 per label set;
  peak RSS (target at most 500 MB); Prometheus queries per interval (its own
  `prometheus_http_requests_total` for /api/v1/query and /api/v1/query_range, sampled every
  interval: the busiest interval and the mean), target: the busiest interval at the largest N
  at most 1.5 times that at the smallest.
* **isolation**: `--isolation-rollouts` rollouts in a 10-minute analyze step measuring both
  presets every `--interval`, behind a proxy answering `--isolation-delay` s late
  (localenv/delaying_proxy.py); once their first looks' queries reach the proxy, 10 weights-only rollouts
  (as in lockstep) are created and one analysis rollout is aborted. Figure: the time until all
  10 are Promoted and the abort is Aborted, run once with a delay of 0 and once slow; target:
  slow at most 1.2 times healthy. Gives up after `--isolation-timeout`.
* **restart**: `--restart-rollouts` rollouts taken to Promoted as in lockstep by one controller,
  which is then stopped; a new controller process is started and, once ready, one more rollout is
  created. The new process re-sends the Events its predecessor recorded (status.recentEvents) at
  its first pass of each rollout, which the API server refuses as existing. Figures: the Events
  recorded, the time from the new rollout's creation to its first Event existing (the news a
  person or a notification waits for; target at most 2 s beyond its first pass, whatever the
  backlog), and how long the re-sends took (`model_rollouts_api_calls_total{operation="emit"}`).

Memory: a thread reads the controller's /proc/PID/status every 0.2 s; the peak is VmHWM (the
kernel's high-water mark, which no sampling can miss). The controller runs with `--workers`
workers and `--log-level WARNING`; the control plane, Prometheus and this script share the
machine with it.

    .venv/bin/python bench/scale.py           # modest sizes: lockstep 1000, staggered 100 and 500
                                              # over 3 min, isolation 200, restart 1000; about 31 min
    .venv/bin/python bench/scale.py --scenario lockstep --lockstep-rollouts 100       # about 1 min
    .venv/bin/python bench/scale.py --lockstep-rollouts 1000,5000 --staggered-rollouts 1000,5000 \\
        --staggered-period 600                # the issue's sizes

Times are of a 2-core machine that other work kept at a load of 5 to 12; docs/scale.md has the
figures of such a run.

Exit status 0 whether or not targets are met: it is a measurement (1 only on a crash).
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import math
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import kubernetes
import urllib3
from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from controller.api import parse_time
from localenv.controller import RunningController, start_controller
from localenv.controlplane import ControlPlane
from localenv.delaying_proxy import DelayingProxy
from localenv.fleet_metrics import FleetMetricsExporter
from localenv.prometheus import LocalPrometheus

JSON = dict[str, Any]
NAMESPACE = "bench"
GROUP, VERSION, PLURAL = "rollouts.mlops.dev", "v1alpha1", "modelrollouts"
ROUTE_GROUP, ROUTE_VERSION, ROUTE_PLURAL = "gateway.networking.k8s.io", "v1", "httproutes"
ACTION_ANNOTATION = f"{GROUP}/action"
TERMINAL = frozenset({"Promoted", "RolledBack", "Aborted", "Failed"})

PAUSE_SECONDS = 3.0
WEIGHT_STEPS: list[JSON] = [{"setWeight": 10}, {"pause": {"duration": "3s"}}, {"setWeight": 50}]
"""Lockstep's steps, and isolation's weights-only rollouts."""
TRAFFIC_STEPS = 3
"""Route changes of one of those rollouts: to 10, to 50, and to 100 at the promotion."""
PRESETS: list[JSON] = [{"name": "errors", "preset": "error-rate"}, {"name": "latency", "preset": "latency-p99"}]

CREATE_THREADS = 16
MEMORY_SAMPLE_SECONDS = 0.2
PROGRESS_SECONDS = 5.0
ISOLATION_ANALYZE = "10m"

LOCKSTEP_RATIO_TARGET = 2.0
LATENESS_TARGET_SECONDS = 2.0
RSS_TARGET_BYTES = 500e6
QUERIES_GROWTH_TARGET = 1.5
ISOLATION_RATIO_TARGET = 1.2
RESTART_NEWS_TARGET_SECONDS = 2.0
ISOLATION_LOOK_EARLY_SECONDS = 2.0
"""Start watching for the first looks' queries this long before they are due (the phase watcher sees a
step start a little after it began)."""


# Output --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    scenario: str
    figure: str
    value: str
    target: str = ""
    verdict: str = ""
    """"pass", "FAIL" or "" (no target)."""


def verdict(ok: bool | None) -> str:
    return "" if ok is None else ("pass" if ok else "FAIL")


def progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def seconds(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.1f} s"


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank percentile; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def mib(kib: int) -> str:
    return f"{kib / 1024:.0f} MiB"


# Memory --------------------------------------------------------------------------------------


class MemorySampler:
    """Reads VmRSS and VmHWM of a process every 0.2 s from a thread; VmHWM is the true peak."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.rss_kib = 0
        self.peak_rss_kib = 0
        """The largest VmRSS sampled."""
        self.hwm_kib = 0
        """The kernel's high-water mark of the resident set, as last read."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="memory", daemon=True)
        self._read()
        self._thread.start()

    def _read(self) -> None:
        try:
            text = Path(f"/proc/{self.pid}/status").read_text()
        except OSError:
            return
        for line in text.splitlines():
            if line.startswith("VmRSS:"):
                self.rss_kib = int(line.split()[1])
                self.peak_rss_kib = max(self.peak_rss_kib, self.rss_kib)
            elif line.startswith("VmHWM:"):
                self.hwm_kib = int(line.split()[1])

    def _run(self) -> None:
        while not self._stop.wait(MEMORY_SAMPLE_SECONDS):
            self._read()

    def stop(self) -> None:
        self._read()
        self._stop.set()
        self._thread.join()


# Prometheus text -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    name: str
    labels: Mapping[str, str]
    value: float


def samples(text: str) -> list[Sample]:
    return [
        Sample(s.name, dict(s.labels), float(s.value))
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]


def total(found: Iterable[Sample], name: str, **labels: str) -> float:
    return sum(s.value for s in found if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def by_label(found: Iterable[Sample], name: str, *labels: str) -> dict[str, float]:
    """Sums of `name` by the values of `labels` (joined by a space), largest first."""
    counts: dict[str, float] = {}
    for s in found:
        if s.name == name:
            key = " ".join(s.labels.get(label, "") for label in labels)
            counts[key] = counts.get(key, 0.0) + s.value
    return dict(sorted(counts.items(), key=lambda item: -item[1]))


def calls_per_rollout(found: Iterable[Sample], n: int, *labels: str) -> str:
    """API calls per rollout, in all and by `labels` (e.g. `update ModelRollout/status 7.1`)."""
    calls = by_label(found, "model_rollouts_api_calls_total", *labels)
    breakdown = ", ".join(f"{key} {count / n:.1f}" for key, count in calls.items())
    return f"{sum(calls.values()) / n:.1f} ({breakdown})"


def mean_call_ms(found: Iterable[Sample], operation: str) -> float:
    name = "model_rollouts_api_call_duration_seconds"
    count = total(found, f"{name}_count", operation=operation)
    return 1000 * total(found, f"{name}_sum", operation=operation) / count if count else math.nan


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float:
    """As PromQL's histogram_quantile over cumulative (le, count) buckets: linear within a bucket,
    the highest finite bound when the rank falls in +Inf."""
    ordered = sorted(buckets)
    if not ordered or ordered[-1][1] <= 0:
        return math.nan
    rank = q * ordered[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in ordered:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = bound, count
    return ordered[-1][0]


def lateness_histograms(found: Iterable[Sample]) -> dict[str, tuple[float, float]]:
    """p99 and count of every histogram named like `model_rollouts_*lateness*`: over all its
    label sets (keyed by its name), and per label set with observations (name{labels})."""
    per_set: dict[str, dict[float, float]] = {}
    for s in found:
        if s.name.startswith("model_rollouts_") and "lateness" in s.name and s.name.endswith("_bucket"):
            family = s.name.removesuffix("_bucket")
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()) if k != "le")
            bound = float(s.labels["le"])
            for key in (family, f"{family}{{{labels}}}"):
                per_set.setdefault(key, {})
                per_set[key][bound] = per_set[key].get(bound, 0.0) + s.value
    return {
        key: (histogram_quantile(0.99, list(b.items())), max(b.values()))
        for key, b in sorted(per_set.items())
        if max(b.values()) > 0 or "{" not in key
    }


def passes_total(found: Sequence[Sample]) -> float:
    passes = total(found, "model_rollouts_reconcile_total")
    return passes or total(found, "model_rollouts_passes_total")


def prometheus_queries(prometheus_url: str) -> float:
    """Instant and range queries Prometheus has answered, by its own counters."""
    found = samples(httpx.get(f"{prometheus_url}/metrics", timeout=10).text)
    return sum(
        s.value
        for s in found
        if s.name == "prometheus_http_requests_total"
        and s.labels.get("handler") in ("/api/v1/query", "/api/v1/query_range")
    )


# The cluster ---------------------------------------------------------------------------------


def api_client(kubeconfig: Path) -> client.ApiClient:
    configuration = client.Configuration()
    kubernetes.config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)  # type: ignore[no-untyped-call]
    configuration.connection_pool_maxsize = 64
    return client.ApiClient(configuration)


def in_parallel(function: Callable[[int], object], indexes: Iterable[int], *, threads: int = CREATE_THREADS) -> None:
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(function, indexes))


def route_body(name: str, weights: Mapping[str, int]) -> JSON:
    return {"rules": [{"backendRefs": [{"name": f"{name}-{v}", "port": 80, "weight": w} for v, w in weights.items()]}]}


def create_backends(api: client.ApiClient, i: int) -> None:
    """Two headless Services and an HTTPRoute sending all to v1, for model-i."""
    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    name = f"model-{i}"
    for version in ("v1", "v2"):
        core.create_namespaced_service(
            NAMESPACE,
            client.V1Service(
                metadata=client.V1ObjectMeta(name=f"{name}-{version}"),
                # Headless: the local API server has only 254 cluster IPs to hand out.
                spec=client.V1ServiceSpec(cluster_ip="None", ports=[client.V1ServicePort(port=80)]),
            ),
        )
    custom.create_namespaced_custom_object(
        ROUTE_GROUP, ROUTE_VERSION, NAMESPACE, ROUTE_PLURAL,
        {"apiVersion": f"{ROUTE_GROUP}/{ROUTE_VERSION}", "kind": "HTTPRoute", "metadata": {"name": name},
         "spec": route_body(name, {"v1": 100})},
    )  # fmt: skip


def create_rollout(api: client.ApiClient, i: int, *, steps: list[JSON], analysis: JSON | None = None) -> None:
    name = f"model-{i}"
    spec: JSON = {
        "model": name,
        "versions": [{"version": v, "backend": {"service": f"{name}-{v}", "port": 80}} for v in ("v1", "v2")],
        "baseline": "v1",
        "candidate": "v2",
        "trafficRouting": {"gatewayAPI": {"httpRoute": name}},
        "steps": steps,
    }
    if analysis is not None:
        spec["analysis"] = analysis
    client.CustomObjectsApi(api).create_namespaced_custom_object(
        GROUP, VERSION, NAMESPACE, PLURAL,
        {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ModelRollout", "metadata": {"name": name}, "spec": spec},
    )  # fmt: skip


def list_rollouts(api: client.ApiClient) -> list[JSON]:
    listed: JSON = client.CustomObjectsApi(api).list_namespaced_custom_object(  # type: ignore[assignment]
        GROUP, VERSION, NAMESPACE, PLURAL
    )
    items: list[JSON] = listed["items"]
    return items


def candidate_weight(route: JSON) -> int | None:
    rules = route.get("spec", {}).get("rules") or [{}]
    for ref in rules[0].get("backendRefs") or []:
        if str(ref.get("name", "")).endswith("-v2"):
            return int(ref.get("weight", 1))
    return None


@contextlib.contextmanager
def cluster() -> Iterator[tuple[ControlPlane, client.ApiClient, Path]]:
    """A fresh control plane with the bench namespace, an admin client and a temporary directory."""
    with ControlPlane.start() as plane, tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        api = api_client(plane.kubeconfig)
        client.CoreV1Api(api).create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=NAMESPACE)))
        try:
            yield plane, api, Path(tmp)
        finally:
            api.close()  # type: ignore[no-untyped-call]


@contextlib.contextmanager
def controller_running(
    plane: ControlPlane, tmp: Path, *, workers: int, prometheus: str | None = None
) -> Iterator[tuple[RunningController, MemorySampler]]:
    extra = ["--workers", str(workers), "--log-level", "WARNING"]
    if prometheus is not None:
        extra += ["--prometheus-address", prometheus]
    controller = start_controller(
        kubeconfig=plane.kubeconfig, namespace=NAMESPACE, log_file=tmp / "controller.log", extra_args=extra
    )
    memory = MemorySampler(controller.process.pid)
    try:
        yield controller, memory
    finally:
        memory.stop()
        controller.stop()
        log = controller.log()
        if "Traceback" in log:
            progress(f"controller log holds a traceback; its end:\n{log[-3000:]}")


# Watches -------------------------------------------------------------------------------------


class Watcher:
    """Lists, then watches, one kind in the bench namespace from a thread, handing each object
    to `seen` with the time.monotonic() it arrived; lists again when the watch expires."""

    def __init__(self, api: client.ApiClient, *, group: str, version: str, plural: str) -> None:
        self._api = api
        self._resource = (group, version, NAMESPACE, plural)
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._watch = watch.Watch()  # type: ignore[no-untyped-call]
        self.ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"watch-{plural}", daemon=True)
        self._thread.start()
        if not self.ready.wait(60):
            raise TimeoutError(f"could not list {plural}")

    def seen(self, item: JSON, at: float) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        custom = client.CustomObjectsApi(self._api)
        while not self._stopped.is_set():
            try:
                listed: JSON = custom.list_namespaced_custom_object(*self._resource)  # type: ignore[assignment]
                now = time.monotonic()
                with self._lock:
                    for item in listed["items"]:
                        self.seen(item, now)
                self.ready.set()
                version = listed["metadata"]["resourceVersion"]
                while not self._stopped.is_set():
                    for event in self._watch.stream(  # type: ignore[no-untyped-call]
                        custom.list_namespaced_custom_object, *self._resource,
                        resource_version=version, timeout_seconds=60,
                    ):  # fmt: skip
                        if event["type"] in ("ADDED", "MODIFIED"):
                            with self._lock:
                                self.seen(event["object"], time.monotonic())
                    version = self._watch.resource_version
            except (ApiException, urllib3.exceptions.HTTPError, OSError, ValueError):
                if not self._stopped.wait(0.5):
                    continue

    def stop(self) -> None:
        self._stopped.set()
        self._watch.stop()  # type: ignore[no-untyped-call]


class RouteWatcher(Watcher):
    """When each route first showed each candidate weight."""

    def __init__(self, api: client.ApiClient) -> None:
        self.weight_seen: dict[str, dict[int, float]] = {}
        super().__init__(api, group=ROUTE_GROUP, version=ROUTE_VERSION, plural=ROUTE_PLURAL)

    def seen(self, item: JSON, at: float) -> None:
        weight = candidate_weight(item)
        if weight is not None:
            self.weight_seen.setdefault(item["metadata"]["name"], {}).setdefault(weight, at)

    def pauses(self, start: int, end: int) -> list[float]:
        with self._lock:
            return [w[end] - w[start] for w in self.weight_seen.values() if start in w and end in w]


class PhaseWatcher(Watcher):
    """The phase of every rollout, and when each first reached each phase."""

    def __init__(self, api: client.ApiClient) -> None:
        self.phase: dict[str, str] = {}
        self.step: dict[str, int] = {}
        self.reached: dict[tuple[str, str], float] = {}
        self.reached_step: dict[tuple[str, int], float] = {}
        super().__init__(api, group=GROUP, version=VERSION, plural=PLURAL)

    def seen(self, item: JSON, at: float) -> None:
        name, status = item["metadata"]["name"], item.get("status") or {}
        phase = status.get("phase", "")
        self.phase[name] = phase
        self.step[name] = int(status.get("currentStepIndex", 0))
        self.reached.setdefault((name, phase), at)
        self.reached_step.setdefault((name, self.step[name]), at)

    def count(self, phases: Iterable[str], names: Iterable[str] | None = None) -> int:
        wanted = set(phases)
        with self._lock:
            if names is None:
                return sum(1 for p in self.phase.values() if p in wanted)
            return sum(1 for n in names if self.phase.get(n) in wanted)

    def counts(self) -> Counter[str]:
        with self._lock:
            return Counter(p or "(none)" for p in self.phase.values())

    def at_step(self, step: int, names: Iterable[str]) -> int:
        with self._lock:
            return sum(1 for n in names if self.phase.get(n) == "Progressing" and self.step.get(n) == step)

    def first_at_step(self, step: int) -> float | None:
        with self._lock:
            return min((t for (_, s), t in self.reached_step.items() if s == step), default=None)

    def reached_at(self, name: str, phase: str) -> float | None:
        with self._lock:
            return self.reached.get((name, phase))


def wait_for(
    done: Callable[[], bool], *, timeout: float, what: Callable[[], str], memory: MemorySampler | None = None
) -> bool:
    """Until `done()` or `timeout` seconds; progress on stderr every few seconds."""
    started = time.monotonic()
    next_note = started + PROGRESS_SECONDS
    while not done():
        now = time.monotonic()
        if now - started > timeout:
            return False
        if now >= next_note:
            rss = f"  rss {memory.rss_kib / 1024:.0f} MiB" if memory else ""
            progress(f"    {now - started:6.1f}s  {what()}{rss}")
            next_note += PROGRESS_SECONDS
        time.sleep(0.1)
    return True


# Lockstep ------------------------------------------------------------------------------------


@dataclass
class FloorClient:
    """The minimal client: only the writes the steps need, one JSON merge patch each."""

    api: client.ApiClient
    rollouts: int
    threads: int
    _heap: list[tuple[float, int, int]] = field(default_factory=list)
    _history: dict[int, list[JSON]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _left: int = 0
    call_seconds: list[float] = field(default_factory=list)
    """How long each of its API calls took."""

    def _timed(self, call: Callable[[], object]) -> None:
        started = time.monotonic()
        call()
        self.call_seconds.append(time.monotonic() - started)

    def _write(self, i: int, *, weight: int, step: int, phase: str) -> None:
        custom = client.CustomObjectsApi(self.api)
        name = f"model-{i}"
        merge = "application/merge-patch+json"
        weights = {"v1": 100 - weight, "v2": weight}
        self._timed(lambda: custom.patch_namespaced_custom_object(
            ROUTE_GROUP, ROUTE_VERSION, NAMESPACE, ROUTE_PLURAL, name, {"spec": route_body(name, weights)},
            _content_type=merge,
        ))  # fmt: skip
        now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        history = self._history.setdefault(i, [])
        history.append({"time": now, "phase": phase, "step": step, "weight": weight, "reason": "Floor"})
        status = {
            "phase": phase, "currentStepIndex": step, "currentWeight": weight, "stepStartedAt": now,
            "stableVersion": "v2" if phase == "Promoted" else "v1", "candidateVersion": "v2",
            "message": f"candidate at {weight}%", "routeWeights": weights, "history": history,
        }  # fmt: skip
        self._timed(lambda: custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, NAMESPACE, PLURAL, name, {"status": status}, _content_type=merge
        ))  # fmt: skip

    def _work(self) -> None:
        while True:
            with self._lock:
                if not self._heap:
                    return
                due, i, stage = heapq.heappop(self._heap)
            time.sleep(max(0.0, due - time.monotonic()))
            if stage == 0:
                # setWeight 10 done, the pause begins: one route write and one status write.
                self._write(i, weight=10, step=1, phase="Paused")
                with self._lock:
                    heapq.heappush(self._heap, (time.monotonic() + PAUSE_SECONDS, i, 1))
            else:
                # The pause is over: setWeight 50, then the promotion.
                self._write(i, weight=50, step=2, phase="Progressing")
                self._write(i, weight=100, step=3, phase="Promoted")

    def run(self) -> float:
        """Seconds from the first write until every rollout is written Promoted."""
        started = time.monotonic()
        self._heap = [(started, i, 0) for i in range(self.rollouts)]
        workers = [threading.Thread(target=self._work, daemon=True) for _ in range(self.threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        return time.monotonic() - started


def reset(api: client.ApiClient, i: int) -> None:
    """Route and status as created: all on v1, no status."""
    custom = client.CustomObjectsApi(api)
    merge = "application/merge-patch+json"
    name = f"model-{i}"
    custom.patch_namespaced_custom_object(
        ROUTE_GROUP, ROUTE_VERSION, NAMESPACE, ROUTE_PLURAL, name, {"spec": route_body(name, {"v1": 100})},
        _content_type=merge,
    )  # fmt: skip
    custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, NAMESPACE, PLURAL, name, {"status": None}, _content_type=merge
    )


def lockstep(n: int, args: argparse.Namespace) -> list[Row]:
    scenario = f"lockstep {n:,}"
    rows: list[Row] = []
    with cluster() as (plane, api, tmp):
        started = time.monotonic()
        in_parallel(lambda i: create_backends(api, i), range(n))
        in_parallel(lambda i: create_rollout(api, i, steps=WEIGHT_STEPS), range(n))
        progress(
            f"  {scenario}: created {n} rollouts, routes and {2 * n} Services in {time.monotonic() - started:.0f}s"
        )

        floor_routes = RouteWatcher(api)
        floor = FloorClient(api=api, rollouts=n, threads=args.floor_threads)
        floor_seconds = floor.run()
        time.sleep(1)
        floor_routes.stop()
        floor_pauses = floor_routes.pauses(10, 50)
        progress(f"  {scenario}: floor {floor_seconds:.1f}s with {args.floor_threads} threads")
        in_parallel(lambda i: reset(api, i), range(n))
        left = [r for r in list_rollouts(api) if r.get("status")]
        if left:
            raise RuntimeError(f"{len(left)} rollouts kept a status after the reset")

        routes, phases = RouteWatcher(api), PhaseWatcher(api)
        with controller_running(plane, tmp, workers=args.workers) as (controller, memory):
            idle_kib = memory.rss_kib
            started = time.monotonic()
            done = wait_for(
                lambda: phases.count(["Promoted"]) >= n, timeout=args.timeout, memory=memory,
                what=lambda: f"promoted {phases.count(['Promoted'])}/{n}",
            )  # fmt: skip
            elapsed = time.monotonic() - started
            found = samples(controller.metrics())
        routes.stop()
        phases.stop()

    promoted = phases.count(["Promoted"])
    pauses = routes.pauses(10, 50)
    operations = by_label(found, "model_rollouts_api_calls_total", "operation")
    ratio = elapsed / floor_seconds
    finished = f"{seconds(elapsed)}" if done else f"> {seconds(elapsed)} ({promoted}/{n} Promoted)"
    per_rollout = total(found, "model_rollouts_api_calls_total") / n
    rows += [
        Row(scenario, "time to all Promoted", finished),
        Row(scenario, f"floor: the writes alone, {args.floor_threads} threads", seconds(floor_seconds)),
        Row(scenario, "ratio to the floor", f"{ratio:.2f}", f"≤ {LOCKSTEP_RATIO_TARGET:g}",
            verdict(done and ratio <= LOCKSTEP_RATIO_TARGET)),
        Row(scenario, "pause 3s real length p50 / p99 (route 10 → 50)",
            f"{seconds(percentile(pauses, 50))} / {seconds(percentile(pauses, 99))}; floor "
            f"{seconds(percentile(floor_pauses, 50))} / {seconds(percentile(floor_pauses, 99))}"),
        Row(scenario, "API calls per rollout", f"{per_rollout / TRAFFIC_STEPS:.1f} per traffic step; "
            f"{calls_per_rollout(found, n, 'operation')}"),
        Row(scenario, "mean time of an API call: controller by operation; floor",
            ", ".join(f"{op} {mean_call_ms(found, op):.0f} ms" for op in operations)
            + f"; floor {1000 * statistics.fmean(floor.call_seconds):.0f} ms"),
        Row(scenario, "passes/s", f"{passes_total(found) / elapsed:.0f}"),
        Row(scenario, "controller RSS: idle / peak (VmHWM)", f"{mib(idle_kib)} / {mib(memory.hwm_kib)}"),
    ]  # fmt: skip
    return rows


# Staggered -----------------------------------------------------------------------------------


def analysis_spec(interval: float) -> JSON:
    return {"interval": f"{interval:g}s", "metrics": PRESETS}


def staggered_steps(analyze_seconds: float) -> list[JSON]:
    duration = f"{analyze_seconds:g}s"
    return [
        {"setWeight": 10},
        {"analyze": {"duration": duration}},
        {"setWeight": 50},
        {"analyze": {"duration": duration}},
    ]


@contextlib.contextmanager
def prometheus_for(n: int, *, scrape_interval: float) -> Iterator[LocalPrometheus]:
    """A real Prometheus scraping healthy series of model-0 .. model-(n-1), once it has enough of
    them for the slow-request bound (1000 baseline requests in the last hour)."""
    with FleetMetricsExporter() as exporter:
        for i in range(n):
            exporter.add(namespace=NAMESPACE, model=f"model-{i}")
        with LocalPrometheus(scrape_targets=[exporter.target], scrape_interval_seconds=scrape_interval) as prometheus:
            prometheus.wait_for_value(
                f'count(model_requests_total{{namespace="{NAMESPACE}"}})', at_least=4 * n, timeout=120
            )
            selector = f'model_requests_total{{model="model-{n - 1}",version="v1"}}'
            prometheus.wait_for_value(f"sum(increase({selector}[1h]))", at_least=1200, timeout=120)
            yield prometheus


class QuerySampler:
    """Prometheus' count of queries answered, read every `interval` s from a thread."""

    def __init__(self, prometheus_url: str, interval: float) -> None:
        self._url = prometheus_url
        self.readings: list[float] = [prometheus_queries(prometheus_url)]
        self._stop = threading.Event()
        self._interval = interval
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            with contextlib.suppress(httpx.HTTPError):
                self.readings.append(prometheus_queries(self._url))

    def stop(self) -> tuple[float, float, float]:
        """Busiest interval, mean per interval, and all queries."""
        self._stop.set()
        self._thread.join()
        per_interval = [b - a for a, b in zip(self.readings, self.readings[1:], strict=False)]
        if not per_interval:
            return math.nan, math.nan, 0.0
        return max(per_interval), statistics.fmean(per_interval), self.readings[-1] - self.readings[0]


@dataclass
class Lateness:
    steps: list[float] = field(default_factory=list)
    measurements: list[float] = field(default_factory=list)
    looks: int = 0


def lateness_from_status(
    rollouts: Iterable[JSON], *, analyze_steps: Sequence[int], analyze_seconds: float, interval: float
) -> Lateness:
    """Each analyze step: left (status history) minus started plus its duration. Each look of a
    run: taken at (status.analysis.measurements) minus due (one interval after the previous look
    or the run's start, at most the window's end)."""
    found = Lateness()
    for rollout in rollouts:
        status = rollout.get("status") or {}
        entered: dict[int, datetime] = {}
        left: dict[int, datetime] = {}
        for entry in status.get("history", []):
            moment, step, phase = parse_time(entry.get("time")), int(entry.get("step", 0)), entry.get("phase", "")
            if moment is None:
                continue
            for earlier in entered:
                if earlier not in left and (earlier < step or phase in TERMINAL):
                    left[earlier] = moment
            if phase in ("Progressing", "Paused"):
                entered.setdefault(step, moment)
        found.steps.extend(
            (left[j] - entered[j]).total_seconds() - analyze_seconds
            for j in analyze_steps
            if j in entered and j in left
        )
        looks: dict[str, set[datetime]] = {}
        for record in (status.get("analysis") or {}).get("measurements", []):
            moment = parse_time(record.get("time"))
            if moment is not None:
                looks.setdefault(str(record.get("run", "")), set()).add(moment)
        for run, times in looks.items():
            step = int(run.removeprefix("step-")) if run.startswith("step-") else -1
            if step not in entered:
                continue
            start = previous = entered[step].timestamp()
            for moment in sorted(times):
                due = min(previous + interval, start + analyze_seconds)
                found.measurements.append(moment.timestamp() - due)
                previous = moment.timestamp()
                found.looks += 1
    return found


def staggered(n: int, args: argparse.Namespace) -> tuple[list[Row], float]:
    scenario = f"staggered {n:,} over {args.staggered_period:g}s"
    rows: list[Row] = []
    with cluster() as (plane, api, tmp), prometheus_for(n, scrape_interval=args.scrape_interval) as prometheus:
        in_parallel(lambda i: create_backends(api, i), range(n))
        phases = PhaseWatcher(api)
        with controller_running(plane, tmp, workers=args.workers, prometheus=prometheus.url) as (controller, memory):
            queries = QuerySampler(prometheus.url, args.interval)
            started = time.monotonic()
            spacing = args.staggered_period / max(n - 1, 1)
            steps, analysis = staggered_steps(args.analyze_seconds), analysis_spec(args.interval)

            def start(i: int) -> None:
                time.sleep(max(0.0, started + i * spacing - time.monotonic()))
                create_rollout(api, i, steps=steps, analysis=analysis)

            creator = threading.Thread(target=in_parallel, args=(start, range(n)), daemon=True)
            creator.start()
            done = wait_for(
                lambda: phases.count(TERMINAL) >= n,
                timeout=args.staggered_period + 4 * args.analyze_seconds + args.timeout, memory=memory,
                what=lambda: f"created {len(phases.phase)}/{n}, {dict(phases.counts())}",
            )  # fmt: skip
            elapsed = time.monotonic() - started
            busiest, mean, all_queries = queries.stop()
            found = samples(controller.metrics())
            creator.join()
        phases.stop()
        rollouts = list_rollouts(api)

    late = lateness_from_status(
        rollouts, analyze_steps=(1, 3), analyze_seconds=args.analyze_seconds, interval=args.interval
    )
    step_p99, look_p99 = percentile(late.steps, 99), percentile(late.measurements, 99)
    outcome = ", ".join(f"{phase} {count}" for phase, count in phases.counts().most_common())
    rows += [
        Row(scenario, "run length (first created to all finished)",
            seconds(elapsed) if done else f"> {seconds(elapsed)}: {outcome}"),
        Row(scenario, "phases at the end", outcome),
        Row(scenario, f"step lateness p99 (p50) of {len(late.steps)} analyze steps",
            f"{seconds(step_p99)} ({seconds(percentile(late.steps, 50))})",
            f"≤ {LATENESS_TARGET_SECONDS:g} s", verdict(bool(late.steps) and step_p99 <= LATENESS_TARGET_SECONDS)),
        Row(scenario, f"measurement lateness p99 (p50) of {late.looks} looks",
            f"{seconds(look_p99)} ({seconds(percentile(late.measurements, 50))})",
            f"≤ {LATENESS_TARGET_SECONDS:g} s",
            verdict(bool(late.measurements) and look_p99 <= LATENESS_TARGET_SECONDS)),
    ]  # fmt: skip
    histograms = lateness_histograms(found)
    for key, (p99, count) in histograms.items():
        whole = "{" not in key  # the target applies to all label sets together
        target = f"≤ {LATENESS_TARGET_SECONDS:g} s" if whole else ""
        ok = p99 <= LATENESS_TARGET_SECONDS if whole else None
        rows.append(
            Row(scenario, f"controller's {key} p99 ({count:.0f} observations)", seconds(p99), target, verdict(ok))
        )
    if not histograms:
        rows.append(Row(scenario, "controller's lateness histogram", "not exported"))
    looks_per_interval = late.looks / max(elapsed / args.interval, 1)
    rows += [
        Row(scenario, "controller RSS peak (VmHWM)", mib(memory.hwm_kib), "≤ 500 MB",
            verdict(memory.hwm_kib * 1024 <= RSS_TARGET_BYTES)),
        Row(scenario, f"Prometheus queries per {args.interval:g}s interval: busiest / mean",
            f"{busiest:.0f} / {mean:.0f} ({all_queries / max(late.looks, 1):.1f} per look, "
            f"{looks_per_interval:.0f} looks per interval)"),
        Row(scenario, "API calls per rollout", calls_per_rollout(found, n, "operation", "resource")),
        Row(scenario, "passes per rollout", f"{passes_total(found) / n:.1f}"),
    ]  # fmt: skip
    return rows, busiest


# Restart -------------------------------------------------------------------------------------


def first_event_at(api: client.ApiClient, name: str) -> bool:
    """Whether any Event about the rollout `name` exists."""
    listed = client.CoreV1Api(api).list_namespaced_event(
        NAMESPACE, field_selector=f"involvedObject.kind=ModelRollout,involvedObject.name={name}", limit=1
    )
    return bool(listed.items)


def restart(n: int, args: argparse.Namespace) -> list[Row]:
    scenario = f"restart {n:,}"
    news = f"model-{n}"
    with cluster() as (plane, api, tmp):
        in_parallel(lambda i: create_backends(api, i), range(n + 1))
        in_parallel(lambda i: create_rollout(api, i, steps=WEIGHT_STEPS), range(n))
        phases = PhaseWatcher(api)
        with controller_running(plane, tmp, workers=args.workers) as (_, memory):
            promoted = wait_for(
                lambda: phases.count(["Promoted"]) >= n, timeout=args.timeout, memory=memory,
                what=lambda: f"promoted {phases.count(['Promoted'])}/{n}",
            )  # fmt: skip
        # Stopped with SIGTERM: what its sender did not create in 10 s of draining stays recorded.
        recorded = sum(len((r.get("status") or {}).get("recentEvents") or []) for r in list_rollouts(api))
        progress(f"  {scenario}: {phases.count(['Promoted'])}/{n} Promoted, {recorded} Events recorded; restarting")
        with controller_running(plane, tmp, workers=args.workers) as (controller, memory):
            created = time.monotonic()
            create_rollout(api, n, steps=WEIGHT_STEPS)
            news_done = wait_for(
                lambda: first_event_at(api, news), timeout=args.timeout, what=lambda: f"waiting for {news}'s Event"
            )
            news_seconds = time.monotonic() - created
            first_pass = phases.reached_at(news, "Progressing")
            resent = wait_for(
                lambda: total(samples(controller.metrics()), "model_rollouts_api_calls_total", operation="emit")
                >= recorded,
                timeout=args.timeout, what=lambda: "waiting for the re-sends",
            )  # fmt: skip
            resend_seconds = time.monotonic() - created
        phases.stop()
    beyond_pass = news_seconds - (first_pass - created) if first_pass is not None else math.inf
    news_ok = news_done and beyond_pass <= RESTART_NEWS_TARGET_SECONDS
    return [
        Row(scenario, "Promoted before the restart; Events recorded in their statuses",
            f"{n if promoted else 'not all'}; {recorded}"),
        Row(scenario, "new rollout: created to its first Event; beyond its first status write",
            f"{seconds(news_seconds) if news_done else 'not in time'}; {seconds(beyond_pass)}",
            f"≤ {RESTART_NEWS_TARGET_SECONDS:g} s beyond", verdict(news_ok)),
        Row(scenario, "Event creates as many as recorded (the re-sends done) after",
            seconds(resend_seconds) if resent else f"> {seconds(resend_seconds)}"),
    ]  # fmt: skip


# Isolation -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class IsolationRun:
    finished: float | None
    """Seconds until all weights-only rollouts were Promoted and the abort Aborted; None: not in time."""
    weights_only: list[float]
    abort: float | None
    promoted: int
    queries: int
    rss_kib: int


def isolation_run(n: int, args: argparse.Namespace, *, delay: float) -> IsolationRun:
    quick = [n + k for k in range(args.isolation_weights_only)]
    aborted = "model-0"
    with (
        cluster() as (plane, api, tmp),
        prometheus_for(n, scrape_interval=args.scrape_interval) as prometheus,
        DelayingProxy(upstream=prometheus.url, delay_seconds=delay) as proxy,
    ):
        in_parallel(lambda i: create_backends(api, i), [*range(n), *quick])
        analysis = analysis_spec(args.interval)
        steps: list[JSON] = [{"setWeight": 10}, {"analyze": {"duration": ISOLATION_ANALYZE}}, {"setWeight": 50}]
        in_parallel(lambda i: create_rollout(api, i, steps=steps, analysis=analysis), range(n))
        phases = PhaseWatcher(api)
        with controller_running(plane, tmp, workers=args.workers, prometheus=proxy.url) as (_, memory):
            names = [f"model-{i}" for i in range(n)]
            in_analysis = wait_for(
                lambda: phases.at_step(1, names) >= n, timeout=args.isolation_timeout, memory=memory,
                what=lambda: f"in analysis {phases.at_step(1, names)}/{n}",
            )  # fmt: skip
            if not in_analysis:
                progress(f"  only {phases.at_step(1, names)}/{n} reached their analyze step; going on")
            # The weights-only rollouts and the abort come as the first looks' queries reach the
            # proxy (about one interval into the step), healthy or slow alike: while the slow
            # proxy holds them, they hold the measurement pool, and nothing else may wait on them.
            first = phases.first_at_step(1) or time.monotonic()
            time.sleep(max(0.0, first + args.interval - ISOLATION_LOOK_EARLY_SECONDS - time.monotonic()))
            asked = sum(proxy.requests.values())
            wait_for(
                lambda: sum(proxy.requests.values()) > asked, timeout=2 * args.interval, memory=memory,
                what=lambda: f"first looks' queries: {sum(proxy.requests.values()) - asked}",
            )  # fmt: skip
            queries_before = asked
            started = time.monotonic()
            in_parallel(lambda i: create_rollout(api, i, steps=WEIGHT_STEPS), quick)
            client.CustomObjectsApi(api).patch_namespaced_custom_object(
                GROUP, VERSION, NAMESPACE, PLURAL, aborted, {"metadata": {"annotations": {ACTION_ANNOTATION: "abort"}}},
                _content_type="application/merge-patch+json",
            )  # fmt: skip
            quick_names = [f"model-{i}" for i in quick]

            def finished() -> bool:
                return (
                    phases.count(["Promoted"], quick_names) == len(quick)
                    and phases.reached_at(aborted, "Aborted") is not None
                )

            done = wait_for(
                finished, timeout=args.isolation_timeout, memory=memory,
                what=lambda: f"weights-only promoted {phases.count(['Promoted'], quick_names)}/{len(quick)}, "
                f"abort {'done' if phases.reached_at(aborted, 'Aborted') else 'waiting'}",
            )  # fmt: skip
            elapsed = time.monotonic() - started
            queries = sum(proxy.requests.values()) - queries_before
        phases.stop()
    times = [t - started for name in quick_names if (t := phases.reached_at(name, "Promoted")) is not None]
    abort_at = phases.reached_at(aborted, "Aborted")
    return IsolationRun(
        finished=elapsed if done else None,
        weights_only=times,
        abort=None if abort_at is None else abort_at - started,
        promoted=len(times),
        queries=queries,
        rss_kib=memory.hwm_kib,
    )


def isolation(n: int, args: argparse.Namespace) -> list[Row]:
    scenario = f"isolation {n:,}"
    runs: dict[str, IsolationRun] = {}
    for label, delay in (("healthy", 0.0), (f"answering after {args.isolation_delay:g}s", args.isolation_delay)):
        progress(f"  {scenario}: Prometheus {label}")
        runs[label] = isolation_run(n, args, delay=delay)
    rows: list[Row] = []
    for label, run in runs.items():
        quick = args.isolation_weights_only
        value = (
            seconds(run.finished) if run.finished is not None
            else f"> {seconds(args.isolation_timeout)}: {run.promoted}/{quick} Promoted, "
                 f"abort {'done' if run.abort is not None else 'not done'}"
        )  # fmt: skip
        rows.append(Row(scenario, f"Prometheus {label}: {quick} weights-only Promoted and the abort Aborted", value))
        rows.append(Row(
            scenario, f"Prometheus {label}: weights-only p50 / last; abort; queries in that time; RSS peak",
            f"{seconds(percentile(run.weights_only, 50))} / {seconds(max(run.weights_only, default=math.nan))}; "
            f"{seconds(run.abort)}; {run.queries}; {mib(run.rss_kib)}",
        ))  # fmt: skip
    healthy, slow = runs.values()
    if healthy.finished is None:
        rows.append(Row(scenario, "ratio slow / healthy", "n/a (healthy run did not finish)", "≤ 1.2", "FAIL"))
    else:
        slow_time = slow.finished if slow.finished is not None else args.isolation_timeout
        ratio = slow_time / healthy.finished
        shown = f"{ratio:.2f}" if slow.finished is not None else f"> {ratio:.0f}"
        rows.append(Row(scenario, "ratio slow / healthy", shown, f"≤ {ISOLATION_RATIO_TARGET:g}",
                        verdict(slow.finished is not None and ratio <= ISOLATION_RATIO_TARGET)))  # fmt: skip
    return rows


# Main ----------------------------------------------------------------------------------------


def sizes(text: str) -> list[int]:
    return [int(part.replace("_", "")) for part in text.split(",") if part.strip()]


def describe_source() -> str:
    root = Path(__file__).resolve().parent.parent

    def git(*argv: str) -> str:
        return subprocess.run(["git", *argv], cwd=root, capture_output=True, text=True, check=False).stdout.strip()

    changed = git("status", "--porcelain", "--", "controller")
    note = f" + uncommitted changes in {len(changed.splitlines())} file(s) of controller/" if changed else ""
    return f"commit {git('rev-parse', '--short', 'HEAD')}{note}"


def print_table(rows: Sequence[Row], *, header: str) -> None:
    print()
    print(header)
    print()
    print("| scenario | figure | value | target | |")
    print("|---|---|---|---|---|")
    for row in rows:
        print(f"| {row.scenario} | {row.figure} | {row.value} | {row.target} | {row.verdict} |")
    failed = sum(1 for row in rows if row.verdict == "FAIL")
    passed = sum(1 for row in rows if row.verdict == "pass")
    print(f"\ntargets: {passed} met, {failed} missed")


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The module's text as written, and each option's default."""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=_HelpFormatter)
    parser.add_argument("--scenario", choices=["lockstep", "staggered", "isolation", "restart", "all"], default=None)
    parser.add_argument("--workers", type=int, default=8, help="the controller's --workers")
    parser.add_argument("--lockstep-rollouts", type=sizes, default=[1000], help="comma list, e.g. 1000,5000")
    parser.add_argument("--floor-threads", type=int, default=None, help="threads of the floor client (--workers)")
    parser.add_argument("--staggered-rollouts", type=sizes, default=[100, 500], help="comma list, e.g. 1000,5000")
    parser.add_argument("--staggered-period", type=float, default=180.0, help="seconds over which rollouts start")
    parser.add_argument("--analyze-seconds", type=float, default=60.0, help="each of staggered's 2 analyze steps")
    parser.add_argument("--interval", type=float, default=30.0, help="analysis interval, seconds")
    parser.add_argument("--scrape-interval", type=float, default=5.0, help="Prometheus scrape interval, seconds")
    parser.add_argument("--isolation-rollouts", type=int, default=200)
    parser.add_argument("--isolation-weights-only", type=int, default=10)
    parser.add_argument("--isolation-delay", type=float, default=4.0, help="seconds the slow Prometheus takes")
    parser.add_argument("--isolation-timeout", type=float, default=300.0)
    parser.add_argument("--restart-rollouts", type=int, default=1000)
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for rollouts to finish")
    parser.add_argument("--label", default="", help="what was measured, for the table's heading")
    parser.add_argument("--rollouts", type=int, help="the older spelling of --scenario lockstep --lockstep-rollouts N")
    args = parser.parse_args()
    args.floor_threads = args.floor_threads or args.workers
    if args.rollouts is not None:
        args.lockstep_rollouts = [args.rollouts]
        args.scenario = args.scenario or "lockstep"
    args.scenario = args.scenario or "all"

    chosen = ["lockstep", "staggered", "isolation", "restart"] if args.scenario == "all" else [args.scenario]
    header = (
        f"bench/scale.py on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {args.label or describe_source()}; "
        f"{len(os.sched_getaffinity(0))} cores, controller --workers {args.workers}"
    )
    rows: list[Row] = []
    took: list[str] = []
    # The machine's 1-minute load average every 10 s: other work on it slows everything measured.
    loads: list[float] = []

    def sample_load() -> None:
        while True:
            loads.append(os.getloadavg()[0])
            time.sleep(10)

    threading.Thread(target=sample_load, daemon=True).start()
    for name in chosen:
        started = time.monotonic()
        progress(f"{name}:")
        if name == "lockstep":
            for n in args.lockstep_rollouts:
                rows += lockstep(n, args)
        elif name == "staggered":
            busiest: dict[int, float] = {}
            for n in args.staggered_rollouts:
                found, busiest[n] = staggered(n, args)
                rows += found
            if len(busiest) >= 2:
                small, large = min(busiest), max(busiest)
                growth = busiest[large] / busiest[small] if busiest[small] else math.inf
                rows.append(Row(
                    f"staggered {small:,} vs {large:,}",
                    "busiest interval's Prometheus queries, ratio (independent of N?)",
                    f"{growth:.2f} for {large / small:.0f}x the rollouts",
                    f"≤ {QUERIES_GROWTH_TARGET:g}", verdict(growth <= QUERIES_GROWTH_TARGET),
                ))  # fmt: skip
        elif name == "isolation":
            rows += isolation(args.isolation_rollouts, args)
        else:
            rows += restart(args.restart_rollouts, args)
        took.append(f"{name} {time.monotonic() - started:.0f}s")
    loads.append(os.getloadavg()[0])
    print_table(
        rows,
        header=f"{header}; 1-min load average during the run: mean {statistics.fmean(loads):.1f}, max {max(loads):.1f}",
    )
    print(f"bench time: {', '.join(took)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
