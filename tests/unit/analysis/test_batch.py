"""Batched count queries: one query per counter, window and moment serves every rollout.

The Prometheus here is a stand-in that answers the batched queries from counters defined as
functions of time, evaluating each query as written (the growth of each series over the window,
a series that went down or appeared counting from 0), and refuses anything else.
"""

from __future__ import annotations

import itertools
import re
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from controller.analysis.batch import (
    Index,
    batch_query,
    counts_of,
    grid_ms,
    index_series,
    latest_on_phase,
    tick_at_or_after,
    tick_at_or_before,
)
from controller.analysis.checker import AnalysisChecker
from controller.analysis.measurements import MeasurementPool, PoolSettings
from controller.analysis.presets import BATCHABLE, PRESETS, Counter, CounterSum
from controller.analysis.spec import MetricSource, PrometheusSource, SequentialSpec, parse_metric
from controller.api import ModelRolloutStatus, parse_spec
from controller.checks import CheckContext, CheckOutcome, StepWindow, Verdict

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
STEP_START = T0 + timedelta(seconds=2)
"""Off the 5 s grid: the first look's counts begin at the next grid moment, T0 + 5 s."""
RPS = {"v1": 100.0, "v2": 20.0}
ERROR_SHARE = {"v1": 0.01, "v2": 0.05}
BATCH = re.compile(
    r"sum by \((?P<labels>[\w, ]+)\) "
    r"\(\((?P<selector>(?P<name>\w+)\{model=~\"(?P<models>[\w|]+)\"\}) - (?P=selector) "
    r"offset (?P<window>\d+)(?P<unit>ms|s)\) >= 0 or (?P=selector)\)"
)

Series = dict[tuple[tuple[str, str], ...], float]


class Counters:
    """Prometheus over counters of the `models` (namespace `ml`), versions v1 and v2: each counter
    is a function of time (seconds since T0) giving its series' values, and `at` is when it is."""

    def __init__(self, models: tuple[str, ...] = ("iris",)) -> None:
        self.models = models
        self.asked: list[str] = []
        self.answered: list[set[str]] = []
        """The models each answer held series of."""
        self.lock = threading.Lock()
        self.restarts: dict[str, float] = {}
        """version -> seconds since T0 when its server restarted (its counters start from 0)."""

    def series(self, name: str, seconds: float, models: set[str]) -> Series:
        found: Series = {}
        for model, version in itertools.product(sorted(models & set(self.models)), ("v1", "v2")):
            since = self.restarts.get(version, -600.0) if seconds >= self.restarts.get(version, 1e9) else -600.0
            served = RPS[version] * max(seconds - since, 0.0)
            labels = (("model", model), ("namespace", "ml"), ("version", version))
            if name == "model_requests_total":
                found[labels] = served
            elif name == "model_request_errors_total":
                found[labels] = served * ERROR_SHARE[version]
            elif name == "model_request_duration_seconds_bucket":
                for le, share in (("0.1", 0.9), ("0.5", 0.99), ("+Inf", 1.0)):
                    found[(*labels, ("le", le))] = served * share
        return found

    def measure(self, *, source: MetricSource, namespace: str) -> float | None:
        raise AssertionError(f"a query read per rollout: {source}")

    def measure_series(self, *, source: PrometheusSource, labels: tuple[str, ...]) -> dict[tuple[str, ...], float]:
        with self.lock:
            self.asked.append(source.query)
        match = BATCH.fullmatch(source.query)
        assert match is not None, source.query
        assert source.at is not None
        window = int(match["window"]) / (1000 if match["unit"] == "ms" else 1)
        now = source.at - T0.timestamp()
        models = set(match["models"].split("|"))
        before, after = self.series(match["name"], now - window, models), self.series(match["name"], now, models)
        with self.lock:
            self.answered.append({dict(key)["model"] for key in after})
        grouping = [name.strip() for name in match["labels"].split(",")]
        assert tuple(grouping) == labels
        answer: dict[tuple[str, ...], float] = {}
        for key, value in after.items():
            growth = value - before[key] if key in before and value >= before[key] else value
            named = dict(key)
            group = tuple(named.get(label, "") for label in labels)
            answer[group] = answer.get(group, 0.0) + growth
        return answer


def context(
    *,
    now: datetime,
    status: ModelRolloutStatus | None = None,
    name: str = "iris",
    model: str = "iris",
    metrics: Any = None,
) -> CheckContext:
    spec = parse_spec(
        {
            "model": model,
            "versions": [{"version": v, "backend": {"service": f"iris-{v}", "port": 8080}} for v in ("v1", "v2")],
            "baseline": "v1",
            "candidate": "v2",
            "trafficRouting": {"gatewayAPI": {"httpRoute": name}},
            "steps": [{"setWeight": 20}, {"analyze": {"duration": "10m"}}],
            "analysis": {"interval": "30s", "metrics": metrics or [{"name": "errors", "preset": "error-rate"}]},
        }
    )
    return CheckContext(
        namespace="ml",
        name=name,
        spec=spec,
        status=status or ModelRolloutStatus(current_step_index=1),
        stable_version="v1",
        now=now,
        current_weight=20,
        step=StepWindow(index=1, started_at=STEP_START, seconds=600),
    )


def checker(prometheus: Counters, **kw: Any) -> AnalysisChecker:
    return AnalysisChecker(
        providers={"prometheus": prometheus},
        template_lookup=lambda *, namespace, name: None,
        batch_period_seconds=5.0,
        **kw,
    )


def then(outcome: CheckOutcome | None) -> ModelRolloutStatus:
    assert outcome is not None
    return ModelRolloutStatus(current_step_index=1, extra=outcome.status_fields)


def segment(outcome: CheckOutcome | None, metric: str = "errors") -> dict[str, Any]:
    assert outcome is not None
    (entry,) = [e for e in outcome.status_fields["analysis"]["evidence"] if e["metric"] == metric]
    found: dict[str, Any] = entry["segments"][-1]
    return found


# ---------------------------------------------------------------------------------------------
# The pieces


@pytest.mark.parametrize(
    ("interval", "period"), [(30, 5000), (60, 5000), (45, 5000), (7, 3500), (12, 4000), (2, 2000), (1, 1000)]
)
def test_the_grid_divides_the_interval_into_periods_of_at_most_five_seconds(interval: float, period: int) -> None:
    assert grid_ms(interval, 5.0) == period


def test_ticks_round_to_the_grid() -> None:
    moment = T0 + timedelta(seconds=7.25)
    assert tick_at_or_after(moment, 5000) == T0 + timedelta(seconds=10)
    assert tick_at_or_before(moment, 5000) == T0 + timedelta(seconds=5)
    assert tick_at_or_after(T0, 5000) == tick_at_or_before(T0, 5000) == T0


def test_a_late_look_keeps_its_phase_on_the_grid() -> None:
    due = T0 + timedelta(seconds=35)
    for late, taken in ((0, 35), (4.9, 35), (29.9, 35), (30, 65), (62, 95)):
        moment = latest_on_phase(due, due + timedelta(seconds=late), interval_seconds=30, period_ms=5000)
        assert moment == T0 + timedelta(seconds=taken), late


def test_a_batched_query_asks_the_growth_per_series_of_every_version_of_its_models_only() -> None:
    requests = 'model_requests_total{model=~"fraud|iris"}'
    assert batch_query(Counter(name="model_requests_total"), by=(), window_seconds=30, models={"iris", "fraud"}) == (
        f"sum by (namespace, model, version) (({requests} - {requests} offset 30s) >= 0 or {requests})"
    )
    assert batch_query(Counter(name="b"), by=("feature", "le"), window_seconds=2.5, models=["iris"]).startswith(
        'sum by (namespace, model, version, feature, le) ((b{model=~"iris"} - b{model=~"iris"} offset 2500ms)'
    )


def test_a_model_name_is_matched_literally_in_the_batched_selector() -> None:
    # A model name is any string: regex characters match themselves, quotes stay inside the string
    query = batch_query(Counter(name="c"), by=(), window_seconds=1, models=["a.b", 'q"x', "b\\c"])
    assert 'c{model=~"a\\\\.b|b\\\\\\\\c|q\\"x"}' in query


def test_an_answer_is_summed_over_namespaces_and_keyed_by_version_and_label() -> None:
    answer: dict[tuple[str, ...], float] = {
        ("a", "iris", "v1", "0.5"): 3.0,
        ("", "iris", "v1", "0.5"): 2.0,
        ("a", "iris", "v2", "+Inf"): 1.0,
    }
    assert index_series(answer, by=("le",)) == {("iris", "v1"): {"0.5": 5.0}, ("iris", "v2"): {"+Inf": 1.0}}
    assert index_series({("a", "iris", "v1", "f", "1"): 4.0}, by=("feature", "le")) == {("iris", "v1"): {"f|1": 4.0}}


def test_a_counter_that_may_be_missing_counts_zero_and_one_that_must_exist_leaves_no_data() -> None:
    rows = CounterSum(counters=(Counter(name="a"), Counter(name="b", or_zero=True)))
    a: Index = {("m", "v1"): {None: 5.0}}
    b: Index = {("m", "v2"): {None: 1.0}}
    both: Index = {("m", "v2"): {None: 2.0}}
    assert counts_of(rows, [a, b], model="m", version="v1") == {None: 5.0}
    assert counts_of(rows, [a, b], model="m", version="v2") == {}
    assert counts_of(rows, [both, b], model="m", version="v2") == {None: 3.0}


def test_every_count_query_of_the_presets_and_of_the_checks_defaults_is_batched() -> None:
    # Not container-memory (one number), nor the gateway presets (keyed by Envoy's cluster, not by
    # model and version: tests/unit/analysis/test_gateway_presets.py).
    metrics: list[dict[str, Any]] = [
        {"name": name, "preset": name}
        for name in PRESETS
        if name != "container-memory" and not name.startswith("gateway-")
    ]
    metrics += [
        {"name": "drift", "predictionDrift": {}},
        {"name": "slices", "importantSlices": {"slices": ["a"]}},
        {"name": "offline", "offlineVsOnline": {"offline": 0.9}},
        {"name": "skew", "trainingSkew": {"profile": {"configMap": "p"}}},
    ]
    for raw in metrics:
        metric = parse_metric(raw, path="m")
        assert isinstance(metric, SequentialSpec)
        for query in metric.test.queries:
            assert BATCHABLE.get(query.query) is not None, (raw, query)
            assert BATCHABLE[query.query].label == query.by
    counts = parse_metric({"name": "own", "counts": {"events": "sum(x)", "trials": "sum(y)"}}, path="m")
    assert isinstance(counts, SequentialSpec)
    assert not any(query.query in BATCHABLE for query in counts.test.queries)


# ---------------------------------------------------------------------------------------------
# The checker, batched


def test_looks_are_on_the_grid_and_count_from_the_first_grid_moment_of_the_segment() -> None:
    prometheus = Counters()
    run = checker(prometheus)
    # Due one interval into the step (12:00:32), taken at the next grid moment.
    early = run(context=context(now=T0 + timedelta(seconds=32)))
    assert early is not None and early.verdict is Verdict.RUNNING and prometheus.asked == []
    assert early.requeue_after == pytest.approx(3.0)
    first = run(context=context(now=T0 + timedelta(seconds=35.4)))
    seg = segment(first)
    # (T0 + 5 s, T0 + 35 s]: 30 s of traffic.
    assert seg["candidate"] == {"events": pytest.approx(30.0), "trials": pytest.approx(600.0)}
    assert seg["baseline"] == {"events": pytest.approx(30.0), "trials": pytest.approx(3000.0)}
    assert seg["seconds"] == 33.0
    measured = first.status_fields["analysis"]["measurements"][0]  # type: ignore[union-attr]
    assert measured["time"] == "2024-05-01T12:00:35.000Z"
    assert first.requeue_after == pytest.approx(30 - 0.4)  # type: ignore[union-attr]


def test_each_look_adds_what_is_new_since_the_previous_one() -> None:
    prometheus = Counters()
    run = checker(prometheus)
    status = then(run(context=context(now=T0 + timedelta(seconds=35))))
    status = then(run(context=context(now=T0 + timedelta(seconds=65), status=status)))
    # A late pass (a restarted controller, a queue backlog): one look over the whole gap.
    late = run(context=context(now=T0 + timedelta(seconds=157), status=status))
    assert segment(late)["candidate"]["trials"] == pytest.approx(20.0 * 150)
    windows = [re.search(r"offset (\w+)\)", q)[1] for q in prometheus.asked]  # type: ignore[index]
    assert windows == ["30s", "30s", "30s", "30s", "90s", "90s"], "taken at 12:02:35, in phase with 12:01:05"
    assert late is not None
    looks = late.status_fields["analysis"]["evidence"][0]["looks"]
    assert looks == 3


def test_a_restarted_server_s_counters_keep_the_evidence_growing() -> None:
    prometheus = Counters()
    run = checker(prometheus)
    status = then(run(context=context(now=T0 + timedelta(seconds=35))))
    prometheus.restarts["v2"] = 50.0
    outcome = run(context=context(now=T0 + timedelta(seconds=65), status=status))
    # The look after the restart counts the growth since it (15 s), never a drop.
    assert segment(outcome)["candidate"]["trials"] == pytest.approx(20.0 * 30 + 20.0 * 15)
    assert segment(outcome)["baseline"]["trials"] == pytest.approx(100.0 * 60)


def test_a_segment_an_unbatched_look_began_goes_on_from_that_look() -> None:
    prometheus = Counters()
    stored = then(run_unbatched_look_at(T0 + timedelta(seconds=32)))
    outcome = checker(prometheus)(context=context(now=T0 + timedelta(seconds=65), status=stored))
    # 900 from the unbatched look over (12:00:02, 12:00:32], then (12:00:32, 12:01:05].
    assert segment(outcome)["candidate"]["trials"] == pytest.approx(600.0 + 20.0 * 33)


def run_unbatched_look_at(now: datetime) -> CheckOutcome | None:
    class Unbatched:
        def measure(self, *, source: MetricSource, namespace: str) -> float | None:
            assert isinstance(source, PrometheusSource)
            version = "v2" if 'version="v2"' in source.query else "v1"
            trials = RPS[version] * (now - STEP_START).total_seconds()
            return trials * ERROR_SHARE[version] if "errors" in source.query else trials

    return AnalysisChecker(providers={"prometheus": Unbatched()}, template_lookup=lambda *, namespace, name: None)(
        context=context(now=now)
    )


def test_twenty_rollouts_looking_at_once_share_one_query_per_counter_that_returns_only_their_models() -> None:
    # Given a Prometheus holding the series of 30 models, 20 of whose rollouts look at once
    prometheus = Counters(models=tuple(f"m{i}" for i in range(30)))
    pool = MeasurementPool(settings=PoolSettings(gather_seconds=1.0))  # ample for 20 asks in a row
    run = checker(prometheus, measurements=pool)
    metrics = [{"name": "errors", "preset": "error-rate"}, {"name": "p99", "preset": "latency-p99"}]
    now = T0 + timedelta(seconds=35.2)
    for i in range(20):
        # Every rollout asks before the gathered reads are sent
        assert run(context=context(now=now, name=f"r{i}", model=f"m{i}", metrics=metrics)) is not None
    outcomes = []
    for i in range(20):
        deadline = time.monotonic() + 5
        while True:
            outcome = run(context=context(now=now, name=f"r{i}", model=f"m{i}", metrics=metrics))
            assert outcome is not None
            if outcome.status_fields["analysis"]["measurements"]:
                break
            assert time.monotonic() < deadline
            time.sleep(0.01)
        outcomes.append(outcome)
    # Then errors, requests, latency buckets, and the latency bound's baseline hour: 4 queries in all,
    # each answering for the 20 models that asked, not for the 10 others
    assert len(prometheus.asked) == 4, prometheus.asked
    assert prometheus.answered == [{f"m{i}" for i in range(20)}] * 4
    for outcome in outcomes:
        assert segment(outcome)["candidate"]["trials"] == pytest.approx(600.0)
        assert segment(outcome, "p99")["candidate"]["bucket:+Inf"] == pytest.approx(600.0)


def test_a_rollout_s_own_counts_are_read_for_it_alone_beside_the_batched_presets() -> None:
    asked: list[str] = []

    class Both(Counters):
        def measure(self, *, source: MetricSource, namespace: str) -> float | None:
            assert isinstance(source, PrometheusSource)
            asked.append(source.query)
            return 10.0

    own = {"name": "own", "counts": {"events": "sum(bad{version='{{version}}'}[{{window}}])", "trials": "sum(all)"}}
    outcome = checker(Both())(
        context=context(now=T0 + timedelta(seconds=35), metrics=[{"name": "errors", "preset": "error-rate"}, own])
    )
    assert sorted(asked) == sorted(
        ["sum(bad{version='v2'}[33s])", "sum(all)", "sum(bad{version='v1'}[33s])", "sum(all)"]
    )
    assert segment(outcome, "own")["candidate"] == {"events": 10.0, "trials": 10.0}
    assert segment(outcome)["candidate"]["trials"] == pytest.approx(600.0)
