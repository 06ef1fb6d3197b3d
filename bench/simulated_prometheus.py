"""Simulated model traffic and a simulated Prometheus answering PromQL over it, for bench/judge.py.

The simulator serves a baseline and a candidate version of one model, second by second: Poisson
arrivals split by the route's weight, then per version its errors, latencies (bucketed into the
convention's histogram) and one labelled feedback per request on a slice. It keeps cumulative
counters per version at 1-second resolution, the series docs/model-metrics.md names.

The Prometheus is an evaluator for the PromQL the presets and model-aware checks send: `sum`
(optionally `by`), `rate`, `increase`, `histogram_quantile`, `vector(N)`, `or`, arithmetic, and
what the controller's batched queries add (controller.analysis.batch): instant selectors with
`offset` and a comparison with a number as a filter (`>= 0`). It
parses a query (cached by text) and evaluates it on the simulator's counters at a settable `now`,
so a changed preset query is answered as written, or refused with `UnsupportedQuery` when it uses
something this evaluator does not know: the benchmark must never measure a query it cannot answer.

Simplifications, chosen so that the figures depend on the judge and not on scrape artefacts:
`increase` is the exact growth of the counter over the window (no extrapolation; a window
reaching before the simulation start is cut there), `rate` is that over the window's length, and
a version's series exist once it has answered a request (feedback and status-code series once
they have counted something).
"""

from __future__ import annotations

import functools
import itertools
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Protocol

import numpy as np
import numpy.typing as npt

from controller.analysis.spec import MetricSource, PrometheusSource

Counts = npt.NDArray[np.int64]
Matrix = npt.NDArray[np.float64]

LATENCY_BUCKETS: tuple[float, ...] = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, math.inf)
"""Upper bounds (seconds) of model_request_duration_seconds_bucket, as the convention sets them."""
PREDICTION_BUCKETS: tuple[float, ...] = (*(round(i / 10, 1) for i in range(1, 11)), math.inf)
LATENCY_MEDIAN_SECONDS = 0.05
LATENCY_SIGMA = 0.5
"""Latency is lognormal: median 50 ms, sigma 0.5 (the baseline's p99 is then about 160 ms)."""
BASELINE_P99_SECONDS = LATENCY_MEDIAN_SECONDS * math.exp(LATENCY_SIGMA * NormalDist().inv_cdf(0.99))
"""The baseline's true p99: a candidate request slower than this counts as a bad answer."""
BORDERLINE = "borderline"
SLICES = (BORDERLINE, "rest")
BORDERLINE_SHARE = 0.1
"""Share of requests (and so of labelled feedback) on the borderline slice."""

# Counter columns of one version. The latency histogram is kept in cells: the convention's buckets
# with the one holding the baseline's true p99 cut there, so both the buckets and "slower than
# the baseline's p99" are sums of cells.
_LATENCY_EDGES: tuple[float, ...] = tuple(sorted({*LATENCY_BUCKETS, BASELINE_P99_SECONDS}))
REQUESTS = 0
ERRORS = 1
LATENCY_CELLS = range(2, 2 + len(_LATENCY_EDGES))
FEEDBACK_TOTAL = {name: LATENCY_CELLS.stop + i for i, name in enumerate(SLICES)}
FEEDBACK_CORRECT = {name: LATENCY_CELLS.stop + len(SLICES) + i for i, name in enumerate(SLICES)}
COLUMNS = LATENCY_CELLS.stop + 2 * len(SLICES)
SLOW_CELLS = [LATENCY_CELLS[i] for i, edge in enumerate(_LATENCY_EDGES) if edge > BASELINE_P99_SECONDS]
"""Cells of requests slower than the baseline's true p99."""


class UnsupportedQuery(ValueError):
    """A query this simulated Prometheus cannot answer. Deliberately not an InvalidQuery: the
    checker would record that as a measurement error, and the benchmark would quietly measure a
    rollout holding on errors instead of the judge."""


# ---------------------------------------------------------------------------------------------
# Traffic


@dataclass(frozen=True, kw_only=True)
class Behaviour:
    """How one version answers."""

    error_rate: float
    latency_factor: float = 1.0
    """Every request's latency is multiplied by this."""
    borderline_accuracy: float = 0.85
    rest_accuracy: float = 0.93

    def latency_cell_shares(self) -> list[float]:
        """Probability of a request's latency falling in each latency cell."""
        scale = math.log(LATENCY_MEDIAN_SECONDS * self.latency_factor)
        below = [
            1.0 if math.isinf(edge) else NormalDist().cdf((math.log(edge) - scale) / LATENCY_SIGMA)
            for edge in _LATENCY_EDGES
        ]
        return [upper - lower for lower, upper in zip([0.0, *below[:-1]], below, strict=True)]


@dataclass(frozen=True, kw_only=True)
class Traffic:
    model: str
    requests_per_second: float
    baseline_version: str
    candidate_version: str
    baseline: Behaviour
    candidate: Behaviour


@dataclass(frozen=True, kw_only=True)
class Served:
    """What one version served in a period."""

    requests: int
    errors: int
    latency_buckets: tuple[tuple[float, int], ...]
    """Cumulative (upper bound, requests at most that slow), like the `le` buckets."""
    slow: int
    """Requests slower than the baseline's true p99."""
    feedback: Mapping[str, int]
    correct: Mapping[str, int]

    @staticmethod
    def of(counts: Counts) -> Served:
        cells = np.cumsum(counts[LATENCY_CELLS.start : LATENCY_CELLS.stop])
        return Served(
            requests=int(counts[REQUESTS]),
            errors=int(counts[ERRORS]),
            latency_buckets=tuple((le, int(cells[_LATENCY_EDGES.index(le)])) for le in LATENCY_BUCKETS),
            slow=int(counts[SLOW_CELLS].sum()),
            feedback={name: int(counts[column]) for name, column in FEEDBACK_TOTAL.items()},
            correct={name: int(counts[column]) for name, column in FEEDBACK_CORRECT.items()},
        )


class _Server:
    """One version's answers to the requests it gets, each kind of draw from its own stream, so
    that two simulators with the same seed and the same weights draw exactly the same traffic
    however their calls to `advance` fall."""

    STREAMS = 3 + len(SLICES)

    def __init__(self, behaviour: Behaviour, seeds: Sequence[np.random.SeedSequence]) -> None:
        self._behaviour = behaviour
        self._cell_shares = behaviour.latency_cell_shares()
        self._errors, self._latency, self._slices = (np.random.default_rng(s) for s in seeds[:3])
        self._correct = {name: np.random.default_rng(s) for name, s in zip(SLICES, seeds[3:], strict=True)}

    def serve(self, requests: Counts) -> Counts:
        """Per-second counter increments (one row per second) for `requests` per second."""
        counts = np.zeros((len(requests), COLUMNS), dtype=np.int64)
        counts[:, REQUESTS] = requests
        counts[:, ERRORS] = self._errors.binomial(requests, self._behaviour.error_rate)
        counts[:, LATENCY_CELLS.start : LATENCY_CELLS.stop] = self._latency.multinomial(requests, self._cell_shares)
        borderline = self._slices.binomial(requests, BORDERLINE_SHARE)
        accuracy = {BORDERLINE: self._behaviour.borderline_accuracy, "rest": self._behaviour.rest_accuracy}
        for name, labelled in ((BORDERLINE, borderline), ("rest", requests - borderline)):
            counts[:, FEEDBACK_TOTAL[name]] = labelled
            counts[:, FEEDBACK_CORRECT[name]] = self._correct[name].binomial(labelled, accuracy[name])
        return counts


BASELINE_ROLE, CANDIDATE_ROLE = 0, 1
"""How the simulator indexes the two versions."""


class Simulator:
    """Both versions' cumulative counters, one row per simulated second from time 0.

    Time only moves forward: `advance` serves the seconds up to a moment at the weight the route
    had since the last call; counters can then be read at any moment up to there.
    """

    def __init__(self, traffic: Traffic, *, seed: np.random.SeedSequence, seconds: int) -> None:
        self.traffic = traffic
        self.versions = (traffic.baseline_version, traffic.candidate_version)
        arrivals, split, *per_version = seed.spawn(2 + 2 * _Server.STREAMS)
        self._arrivals = np.random.default_rng(arrivals)
        self._split = np.random.default_rng(split)
        self._servers = (
            _Server(traffic.baseline, per_version[: _Server.STREAMS]),
            _Server(traffic.candidate, per_version[_Server.STREAMS :]),
        )
        self._cumulative = np.zeros((2, seconds + 1, COLUMNS), dtype=np.int64)
        self._served_seconds = 0

    def advance(self, *, to: float, candidate_weight: int) -> None:
        """Serve every whole second before `to` not served yet, `candidate_weight` % to the candidate."""
        start, end = self._served_seconds, math.floor(to)
        if end <= start:
            return
        if end >= self._cumulative.shape[1]:
            raise ValueError(f"the simulation was sized for {self._cumulative.shape[1] - 1} s, not {end} s")
        arrivals = self._arrivals.poisson(self.traffic.requests_per_second, end - start)
        to_candidate = self._split.binomial(arrivals, candidate_weight / 100)
        for role, requests in ((BASELINE_ROLE, arrivals - to_candidate), (CANDIDATE_ROLE, to_candidate)):
            block = self._cumulative[role, start + 1 : end + 1]
            np.cumsum(self._servers[role].serve(requests), axis=0, out=block)
            block += self._cumulative[role, start]
        self._served_seconds = end

    def counters(self, role: int, at: float) -> Counts:
        """Cumulative counters of version `role` (BASELINE_ROLE, CANDIDATE_ROLE) at moment `at`."""
        second = max(math.floor(at), 0)
        if second > self._served_seconds:
            raise ValueError(f"counters at {at} s asked for; the simulation has reached {self._served_seconds} s")
        row: Counts = self._cumulative[role, second]
        return row

    def served(self, role: int, *, start: float, end: float) -> Served:
        return Served.of(self.counters(role, end) - self.counters(role, start))


# ---------------------------------------------------------------------------------------------
# The series the simulated servers export


@dataclass(frozen=True, kw_only=True)
class _Series:
    labels: tuple[tuple[str, str], ...]
    """Labels besides model and version."""
    value: Mapping[int, float]
    """Counter column -> coefficient: the series' value is this combination of columns."""
    exists: Mapping[int, float]
    """The series exists once this combination of columns is above 0."""


def _le(bound: float) -> str:
    """`le` as Prometheus' client libraries write it: 0.25, 1.0, +Inf."""
    return "+Inf" if math.isinf(bound) else repr(float(bound))


def _cells_up_to(bound: float) -> dict[int, float]:
    return {LATENCY_CELLS[i]: 1.0 for i, edge in enumerate(_LATENCY_EDGES) if edge <= bound}


_SERVED = {REQUESTS: 1.0}
"""Series without extra labels exist from a version's first request (the convention creates them
at start-up); a status code's or a slice's series from its first count, a `_correct_` series with
its `_total` twin."""
_SERIES: dict[str, list[_Series]] = {
    "model_requests_total": [
        _Series(labels=(("code", "200"),), value={REQUESTS: 1.0, ERRORS: -1.0}, exists={REQUESTS: 1.0, ERRORS: -1.0}),
        _Series(labels=(("code", "500"),), value={ERRORS: 1.0}, exists={ERRORS: 1.0}),
    ],
    "model_request_errors_total": [_Series(labels=(), value={ERRORS: 1.0}, exists=_SERVED)],
    "model_request_duration_seconds_bucket": [
        _Series(labels=(("le", _le(bound)),), value=_cells_up_to(bound), exists=_SERVED) for bound in LATENCY_BUCKETS
    ],
    "model_request_duration_seconds_count": [_Series(labels=(), value=_SERVED, exists=_SERVED)],
    "model_feedback_total": [
        _Series(labels=(("slice", name),), value={column: 1.0}, exists={column: 1.0})
        for name, column in FEEDBACK_TOTAL.items()
    ],
    "model_feedback_correct_total": [
        _Series(labels=(("slice", name),), value={FEEDBACK_CORRECT[name]: 1.0}, exists={FEEDBACK_TOTAL[name]: 1.0})
        for name in SLICES
    ],
    # Predictions are not simulated: each request predicts one row, scored at most 0.1, finite and
    # within the input invariants, by both versions alike.
    "model_predictions_bucket": [
        _Series(labels=(("le", _le(bound)),), value=_SERVED, exists=_SERVED) for bound in PREDICTION_BUCKETS
    ],
    "model_predictions_count": [_Series(labels=(), value=_SERVED, exists=_SERVED)],
    "model_nonfinite_outputs_total": [_Series(labels=(), value={}, exists=_SERVED)],
    "model_input_invariant_violations_total": [_Series(labels=(), value={}, exists=_SERVED)],
}
_IDENTITY_LABELS = ("model", "version")
_MODELLED_LABELS = frozenset({*_IDENTITY_LABELS, "code", "le", "slice"})
"""Matchers on other labels (instance, pod, namespace, ...) match every simulated series."""


# ---------------------------------------------------------------------------------------------
# Evaluating PromQL

Labels = tuple[tuple[str, str], ...]
"""A series' labels, sorted by name."""
Vector = dict[Labels, float]
"""An instant vector: labels -> value; empty when there is no series."""


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float:
    """Prometheus' histogram_quantile over cumulative (upper bound, count) buckets: linear
    interpolation inside the bucket holding the rank, NaN without observations."""
    if math.isnan(q):
        return math.nan
    if q < 0 or q > 1:
        return -math.inf if q < 0 else math.inf
    ordered: list[list[float]] = []
    for bound, count in sorted(buckets):
        if ordered and ordered[-1][0] == bound:
            ordered[-1][1] += count
        else:
            ordered.append([bound, count])
    if len(ordered) < 2 or not math.isinf(ordered[-1][0]):
        return math.nan
    for previous, bucket in itertools.pairwise(ordered):
        bucket[1] = max(bucket[1], previous[1])  # rate() noise can break monotonicity; Prometheus mends it
    observations = ordered[-1][1]
    if observations == 0:
        return math.nan
    rank = q * observations
    index = next(i for i, (_, count) in enumerate(ordered) if count >= rank)
    if index == len(ordered) - 1:
        return ordered[-2][0]
    if index == 0 and ordered[0][0] <= 0:
        return ordered[0][0]
    start, below = (0.0, 0.0) if index == 0 else (ordered[index - 1][0], ordered[index - 1][1])
    end, count = ordered[index]
    return start + (end - start) * (rank - below) / (count - below)


class _Node(Protocol):
    def evaluate(self, simulator: Simulator, now: float) -> Vector: ...


@dataclass(frozen=True, kw_only=True)
class _Matcher:
    label: str
    op: str
    value: str

    def matches(self, labels: Mapping[str, str]) -> bool:
        actual = labels.get(self.label, "")  # a missing label matches as the empty string
        if self.op in ("=", "!="):
            return (actual == self.value) == (self.op == "=")
        return (re.fullmatch(self.value, actual) is not None) == (self.op == "=~")


@dataclass(frozen=True, kw_only=True, eq=False)
class _RangeFunction:
    """rate() or increase() of the series a selector picks."""

    per_second: bool
    seconds: float
    identity: tuple[_Matcher, ...]
    """Matchers on model and version, checked against the simulator."""
    labels: tuple[Labels, ...]
    """Each picked series' own labels."""
    value: Matrix
    """Counter columns -> series values (one column per picked series)."""
    exists: Matrix

    def evaluate(self, simulator: Simulator, now: float) -> Vector:
        vector: Vector = {}
        for role, version in enumerate(simulator.versions):
            identity = {"model": simulator.traffic.model, "version": version}
            if not all(matcher.matches(identity) for matcher in self.identity):
                continue
            current = simulator.counters(role, now)
            alive = current @ self.exists > 0
            growth = (current - simulator.counters(role, now - self.seconds)) @ self.value
            for own, is_alive, value in zip(self.labels, alive, growth, strict=True):
                if is_alive:
                    labels = tuple(sorted((*own, *identity.items())))
                    vector[labels] = float(value) / self.seconds if self.per_second else float(value)
        return vector


@dataclass(frozen=True, kw_only=True, eq=False)
class _Instant:
    """A selector's series at `now - offset` (a counter's value then); a series that does not exist
    yet at that moment is absent."""

    offset: float
    identity: tuple[_Matcher, ...]
    labels: tuple[Labels, ...]
    value: Matrix
    exists: Matrix

    def evaluate(self, simulator: Simulator, now: float) -> Vector:
        at = now - self.offset
        vector: Vector = {}
        if at < 0:
            return vector
        for role, version in enumerate(simulator.versions):
            identity = {"model": simulator.traffic.model, "version": version}
            if not all(matcher.matches(identity) for matcher in self.identity):
                continue
            current = simulator.counters(role, at)
            alive = current @ self.exists > 0
            values = current @ self.value
            for own, is_alive, value in zip(self.labels, alive, values, strict=True):
                if is_alive:
                    vector[tuple(sorted((*own, *identity.items())))] = float(value)
        return vector


_COMPARISONS: dict[str, Callable[[float, float], bool]] = {
    ">=": lambda a, b: a >= b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    "<": lambda a, b: a < b,
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
}


@dataclass(frozen=True, kw_only=True)
class _Filter:
    """`A op N`: the series of A whose value compares true with the number N (no `bool`)."""

    op: str
    operand: _Node
    number: float

    def evaluate(self, simulator: Simulator, now: float) -> Vector:
        compare = _COMPARISONS[self.op]
        return {
            labels: value
            for labels, value in self.operand.evaluate(simulator, now).items()
            if compare(value, self.number)
        }


@dataclass(frozen=True, kw_only=True)
class _Sum:
    by: tuple[str, ...]
    operand: _Node

    def evaluate(self, simulator: Simulator, now: float) -> Vector:
        vector: Vector = {}
        for labels, value in self.operand.evaluate(simulator, now).items():
            kept = tuple(label for label in labels if label[0] in self.by)
            vector[kept] = vector.get(kept, 0.0) + value
        return vector


def _divide(numerator: float, denominator: float) -> float:
    """Float division as Prometheus does it: x/0 is +-Inf, 0/0 is NaN."""
    if denominator == 0:
        return math.nan if numerator == 0 or math.isnan(numerator) else math.copysign(math.inf, numerator)
    return numerator / denominator


_ARITHMETIC: dict[str, Callable[[float, float], float]] = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
    "/": _divide,
}


@dataclass(frozen=True, kw_only=True)
class _Arithmetic:
    """`A op B`, series matched one-to-one on all their labels."""

    op: str
    left: _Node
    right: _Node

    def evaluate(self, simulator: Simulator, now: float) -> Vector:
        left, right = self.left.evaluate(simulator, now), self.right.evaluate(simulator, now)
        apply = _ARITHMETIC[self.op]
        return {labels: apply(value, right[labels]) for labels, value in left.items() if labels in right}


@dataclass(frozen=True, kw_only=True)
class _Or:
    left: _Node
    right: _Node

    def evaluate(self, simulator: Simulator, now: float) -> Vector:
        left = self.left.evaluate(simulator, now)
        right = self.right.evaluate(simulator, now)
        return {**{labels: value for labels, value in right.items() if labels not in left}, **left}


@dataclass(frozen=True, kw_only=True)
class _Constant:
    """vector(N): one series without labels."""

    value: float

    def evaluate(self, simulator: Simulator, now: float) -> Vector:
        return {(): self.value}


@dataclass(frozen=True, kw_only=True)
class _Quantile:
    q: float
    operand: _Node

    def evaluate(self, simulator: Simulator, now: float) -> Vector:
        histograms: dict[Labels, list[tuple[float, float]]] = {}
        for labels, value in self.operand.evaluate(simulator, now).items():
            le = dict(labels).get("le")
            if le is not None:  # Prometheus ignores series without `le`
                rest = tuple(label for label in labels if label[0] != "le")
                histograms.setdefault(rest, []).append((float(le), value))
        return {labels: histogram_quantile(self.q, buckets) for labels, buckets in histograms.items()}


_TOKEN = re.compile(
    r'\s*(\[[^\]]*\]|"(?:[^"\\]|\\.)*"|\d+(?:\.\d+)?(?:[eE][-+]?\d+)?|[A-Za-z_:][\w:]*|=~|!~|!=|>=|<=|==|[-+*/(){},=<>])'
)
_NAME = re.compile(r"[A-Za-z_:][\w:]*")
_DURATION_PART = re.compile(r"(\d+)(ms|s|m|h|d|w|y)")
_DURATION_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0, "y": 31536000.0}


def _tokens(query: str) -> list[str]:
    tokens: list[str] = []
    position = 0
    while query[position:].strip():
        match = _TOKEN.match(query, position)
        if match is None:
            raise UnsupportedQuery(f"cannot read {query[position:].strip()[:20]!r} in: {query}")
        tokens.append(match.group(1))
        position = match.end()
    return tokens


class _Parser:
    """Recursive descent over the PromQL subset above; anything else raises UnsupportedQuery."""

    def __init__(self, query: str) -> None:
        self._query = query
        self._tokens = _tokens(query)
        self._position = 0

    def parse(self) -> _Node:
        node = self._or()
        if self._peek() is not None:
            raise self._error(f"unexpected {self._peek()!r}")
        return node

    def _error(self, problem: str) -> UnsupportedQuery:
        return UnsupportedQuery(f"the simulated Prometheus does not support this query ({problem}): {self._query}")

    def _peek(self) -> str | None:
        return self._tokens[self._position] if self._position < len(self._tokens) else None

    def _take(self, expected: str | None = None) -> str:
        token = self._peek()
        if token is None or (expected is not None and token != expected):
            raise self._error(f"expected {expected or 'more'}, found {token or 'the end'}")
        self._position += 1
        return token

    def _or(self) -> _Node:
        node = self._comparison()
        while self._peek() == "or":
            self._take()
            node = _Or(left=node, right=self._comparison())
        return node

    def _comparison(self) -> _Node:
        node = self._additive()
        while self._peek() in _COMPARISONS:
            op = self._take()
            node = _Filter(op=op, operand=node, number=self._number())
        return node

    def _additive(self) -> _Node:
        node = self._multiplicative()
        while self._peek() in ("+", "-"):
            op = self._take()
            node = _Arithmetic(op=op, left=node, right=self._multiplicative())
        return node

    def _multiplicative(self) -> _Node:
        node = self._atom()
        while self._peek() in ("*", "/"):
            op = self._take()
            node = _Arithmetic(op=op, left=node, right=self._atom())
        return node

    def _atom(self) -> _Node:
        token = self._take()
        if token == "(":
            node = self._or()
            self._take(")")
            return node
        if token == "sum":
            return self._sum()
        if token in ("rate", "increase"):
            self._take("(")
            node = self._range_function(per_second=token == "rate")
            self._take(")")
            return node
        if token == "histogram_quantile":
            self._take("(")
            q = self._number()
            self._take(",")
            operand = self._or()
            self._take(")")
            return _Quantile(q=q, operand=operand)
        if token == "vector":
            self._take("(")
            value = self._number()
            self._take(")")
            return _Constant(value=value)
        if token in _SERIES:
            self._position -= 1
            return self._instant()
        raise self._error(f"{token!r} where a function, sum, a metric or parentheses were expected")

    def _number(self) -> float:
        token = self._take()
        try:
            return float(token)
        except ValueError:
            raise self._error(f"{token!r} is not a number") from None

    def _sum(self) -> _Sum:
        by = self._grouping() if self._peek() in ("by", "without") else None
        self._take("(")
        operand = self._or()
        self._take(")")
        if by is None:
            by = self._grouping() if self._peek() in ("by", "without") else ()
        return _Sum(by=by, operand=operand)

    def _grouping(self) -> tuple[str, ...]:
        if self._take() != "by":
            raise self._error("`without` is not supported")
        self._take("(")
        names = [self._name()]
        while self._peek() == ",":
            self._take()
            names.append(self._name())
        self._take(")")
        return tuple(names)

    def _name(self) -> str:
        token = self._take()
        if not _NAME.fullmatch(token):
            raise self._error(f"{token!r} is not a name")
        return token

    def _range_function(self, *, per_second: bool) -> _RangeFunction:
        metric = self._name()
        series = _SERIES.get(metric)
        if series is None:
            raise self._error(f"no simulated metric {metric}")
        matchers = self._matchers() if self._peek() == "{" else []
        seconds = self._range()
        identity = tuple(m for m in matchers if m.label in _IDENTITY_LABELS)
        own = [m for m in matchers if m.label in _MODELLED_LABELS and m.label not in _IDENTITY_LABELS]
        picked = [s for s in series if all(m.matches(dict(s.labels)) for m in own)]
        return _RangeFunction(
            per_second=per_second,
            seconds=seconds,
            identity=identity,
            labels=tuple(s.labels for s in picked),
            value=_matrix([s.value for s in picked]),
            exists=_matrix([s.exists for s in picked]),
        )

    def _selected(self, metric: str, matchers: list[_Matcher]) -> tuple[tuple[_Matcher, ...], list[_Series]]:
        """Matchers on model and version (checked against the simulator) and the series picked."""
        identity = tuple(m for m in matchers if m.label in _IDENTITY_LABELS)
        own = [m for m in matchers if m.label in _MODELLED_LABELS and m.label not in _IDENTITY_LABELS]
        return identity, [s for s in _SERIES[metric] if all(m.matches(dict(s.labels)) for m in own)]

    def _instant(self) -> _Instant:
        metric = self._name()
        matchers = self._matchers() if self._peek() == "{" else []
        offset = 0.0
        if self._peek() == "offset":
            self._take()
            amount, unit = self._number(), self._take()
            if unit not in _DURATION_SECONDS:
                raise self._error(f"{unit!r} is not a duration unit (an offset like 30s or 1500ms)")
            offset = amount * _DURATION_SECONDS[unit]
        identity, picked = self._selected(metric, matchers)
        return _Instant(
            offset=offset,
            identity=identity,
            labels=tuple(s.labels for s in picked),
            value=_matrix([s.value for s in picked]),
            exists=_matrix([s.exists for s in picked]),
        )

    def _matchers(self) -> list[_Matcher]:
        self._take("{")
        matchers: list[_Matcher] = []
        while self._peek() != "}":
            label = self._name()
            op = self._take()
            if op not in ("=", "!=", "=~", "!~"):
                raise self._error(f"{op!r} is not a label matcher")
            text = self._take()
            if not text.startswith('"'):
                raise self._error(f"{text!r} is not a double-quoted string")
            matchers.append(_Matcher(label=label, op=op, value=text[1:-1].replace('\\"', '"').replace("\\\\", "\\")))
            if self._peek() == ",":
                self._take()
        self._take("}")
        return matchers

    def _range(self) -> float:
        token = self._take()
        text = token[1:-1].strip() if token.startswith("[") else ""
        parts = list(_DURATION_PART.finditer(text))
        if not text or "".join(p.group(0) for p in parts) != text:
            raise self._error(f"{token!r} is not a range like [30s], [5m] or [1500ms]")
        return sum(int(p.group(1)) * _DURATION_SECONDS[p.group(2)] for p in parts)


def _matrix(combinations: Sequence[Mapping[int, float]]) -> Matrix:
    """Counter columns x series: column j holds series j's coefficients."""
    matrix = np.zeros((COLUMNS, len(combinations)), dtype=np.float64)
    for j, combination in enumerate(combinations):
        for column, coefficient in combination.items():
            matrix[column, j] = coefficient
    return matrix


@functools.lru_cache(maxsize=4096)
def parse_query(query: str) -> _Node:
    """The query, parsed once per text (the analysis asks the same few queries over and over)."""
    return _Parser(query).parse()


class SimulatedPrometheus:
    """A MetricProvider and VectorProvider (controller.analysis.providers) over a Simulator."""

    def __init__(self, simulator: Simulator, *, epoch: float | None = None) -> None:
        self.simulator = simulator
        self.now = 0.0
        """Seconds since the simulation start: the moment queries are evaluated at."""
        self.epoch = epoch
        """Unix time of the simulation start: a query carrying its evaluation time (`at`) is
        evaluated then, as Prometheus does with `time=`; None: always at `now`."""

    def measure(self, *, source: MetricSource, namespace: str) -> float | None:
        if not isinstance(source, PrometheusSource):
            raise TypeError(f"the simulated Prometheus cannot read a {source.provider} source")
        vector = self._evaluate(source)
        if len(vector) > 1:
            raise UnsupportedQuery(f"query returns {len(vector)} series, not one number: {source.query}")
        return next(iter(vector.values()), None)

    def measure_by(self, *, source: PrometheusSource, label: str) -> dict[str, float]:
        numbers: dict[str, float] = {}
        for labels, value in self._evaluate(source).items():
            key = dict(labels).get(label)
            if key is None or key in numbers:
                raise UnsupportedQuery(f"query does not return one series per {label}: {source.query}")
            numbers[key] = value
        return numbers

    def measure_series(self, *, source: PrometheusSource, labels: tuple[str, ...]) -> dict[tuple[str, ...], float]:
        """A batched query's answer (controller.analysis.batch): a label a series lacks is "" (the
        simulated series have no namespace)."""
        numbers: dict[tuple[str, ...], float] = {}
        for found, value in self._evaluate(source).items():
            named = dict(found)
            key = tuple(named.get(label, "") for label in labels)
            numbers[key] = numbers.get(key, 0.0) + value
        return numbers

    def _evaluate(self, source: PrometheusSource) -> Vector:
        at = self.now if source.at is None or self.epoch is None else source.at - self.epoch
        if at > self.now + 1e-6:
            raise ValueError(f"a query evaluated at {at} s, after the simulated now {self.now} s")
        return parse_query(source.query).evaluate(self.simulator, at)
