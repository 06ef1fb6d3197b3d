"""Built-in metrics, so a short manifest gets a sound comparison.

Each preset is PromQL over the model-metrics convention (docs/model-metrics.md), templated with
`{{model}}`, `{{version}}`, `{{namespace}}` and `{{window}}`, or over the gateway's own metrics
(the `gateway-` presets, below, also with `{{service}}` and `{{port}}`); docs/analysis.md lists
the queries.

Most presets are **counts**: how many bad (or good) events and how many trials a version had in
`{{window}}`, which the controller sets to the time since the evidence began, so the judge sees
every request since then (docs/statistics.md). `latency-p99` counts requests slower than the
baseline's 99th percentile from the latency histogram. `container-memory` is a gauge, not a
sample: it is read and bounded as one number. The model-aware checks (prediction drift, important
slices, offline vs online) default to the queries at the end of this module.

Every count query over the convention is also known as a `CounterSum` (`BATCHABLE`, by its text):
the counters it adds up and the labels it is keyed by. The controller reads those batched, one
query per counter for every rollout at once (controller.analysis.batch), instead of one query per
rollout.

The `gateway-` presets read the same counts from the gateway instead of the model server: Envoy's
per-cluster upstream counters and latency histogram (as Contour exposes them), so that a model
server exporting nothing of the convention is judged the same way. They select a version by its
gateway cluster, `{{namespace}}_{{service}}_{{port}}` (the version's backend), not by `model` and
`version` labels, so they are not batched: a batched query is keyed by (namespace, model, version)
and selects `model=~...`, labels Envoy's series do not carry. They are read per rollout.
"""

from __future__ import annotations

from dataclasses import dataclass

from controller.analysis.comparison import Comparison, Direction, Tolerance

_SELECTOR = 'model="{{model}}",version="{{version}}"'


def _increase(counter: str, *, by: str | None = None, selector: str = _SELECTOR) -> str:
    """PromQL: how much `counter` grew in the window for the version, summed (by `by`).

    increase() adds a counter's value after a reset (a restarted server) instead of reading the
    drop as negative, and extrapolates to the window's edges (docs/statistics.md)."""
    grouping = f" by ({by}) " if by else ""
    return f"sum{grouping}(increase({counter}{{{selector}}}[{{{{window}}}}]))"


def _or_zero(query: str) -> str:
    # A counter that never moved (no error yet) may have no series at all: that is 0, not "no data".
    return f"({query} or vector(0))"


@dataclass(frozen=True, kw_only=True)
class Counter:
    """One counter a count query adds up."""

    name: str
    """The counter's series name, e.g. `model_requests_total`."""
    or_zero: bool = False
    """A version without a series of it counts 0 (`or vector(0)`), not "no data"."""


@dataclass(frozen=True, kw_only=True)
class CounterSum:
    """A count query as the controller can batch it: per version, the increase of `counters`
    added up, keyed by the labels `by` (none: one number). Its PromQL for one rollout is `query`."""

    counters: tuple[Counter, ...]
    by: tuple[str, ...] = ()

    @property
    def query(self) -> str:
        """The per-rollout PromQL, templated with `{{model}}`, `{{version}}` and `{{window}}`."""
        grouping = ", ".join(self.by) or None
        terms = [
            _or_zero(_increase(c.name, by=grouping)) if c.or_zero else _increase(c.name, by=grouping)
            for c in self.counters
        ]
        return " + ".join(terms)

    @property
    def label(self) -> str | None:
        """The labels keying its numbers, as `CountQuery.by` names them (`le`, `feature,le`)."""
        return ",".join(self.by) or None


def _sum(*counters: Counter, by: tuple[str, ...] = ()) -> CounterSum:
    if len(counters) > 1 and by:
        raise ValueError("a sum of several counters is one number per version")
    return CounterSum(counters=counters, by=by)


@dataclass(frozen=True, kw_only=True)
class CountsPreset:
    """Events out of trials, per version: judged by the sequential test of their rates."""

    events_query: str
    trials_query: str
    events_are_bad: bool
    """True: errors, NaN outputs (higher is worse); False: right answers (lower is worse)."""
    tolerance: Tolerance
    rubric_items: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class SlowRequestsPreset:
    """Requests slower than the baseline's quantile, per version, from a latency histogram."""

    buckets_query: str
    quantile: float
    tolerance: Tolerance
    rubric_items: tuple[str, ...]
    le_per_second: float = 1.0
    """How many units of the histogram's `le` make a second: 1 for the convention's seconds, 1000
    for Envoy's milliseconds."""


@dataclass(frozen=True, kw_only=True)
class GaugePreset:
    """One number per version that is not a sample estimate (memory in use): bounded as read."""

    query: str
    samples_query: str
    comparison: Comparison
    rubric_items: tuple[str, ...]
    min_samples: float = 1


Preset = CountsPreset | SlowRequestsPreset | GaugePreset

_REQUESTS = _sum(Counter(name="model_requests_total"))
_ERRORS = _sum(Counter(name="model_request_errors_total", or_zero=True))
_LATENCY_BUCKETS = _sum(Counter(name="model_request_duration_seconds_bucket"), by=("le",))
_FEEDBACK_CORRECT = _sum(Counter(name="model_feedback_correct_total", or_zero=True))
_FEEDBACK_TOTAL = _sum(Counter(name="model_feedback_total"))
_NONFINITE = _sum(Counter(name="model_nonfinite_outputs_total", or_zero=True))
_INVARIANT_VIOLATIONS = _sum(Counter(name="model_input_invariant_violations_total", or_zero=True))
_PREDICTED_ROWS_SUM = _sum(
    Counter(name="model_predictions_count"), Counter(name="model_nonfinite_outputs_total", or_zero=True)
)
"""Every predicted row is either observed in the prediction histogram or counted as non-finite."""
_PREDICTION_BUCKETS = _sum(Counter(name="model_predictions_bucket"), by=("le",))
_SLICE_CORRECT = _sum(Counter(name="model_feedback_correct_total"), by=("slice",))
_SLICE_TOTAL = _sum(Counter(name="model_feedback_total"), by=("slice",))
_INPUT_FEATURES = _sum(Counter(name="model_input_feature_bucket"), by=("feature", "le"))

REQUESTS_QUERY = _REQUESTS.query

_GATEWAY_CLUSTER = 'envoy_cluster_name="{{namespace}}_{{service}}_{{port}}"'
"""The version's upstream cluster in Envoy's stats, as Contour names it (its `alt_stat_name`): the
namespace, Service and port of the version's backend joined by `_`, which no Kubernetes name
holds, so one version's cluster never matches another's. Matched exactly (`=`, not a regex), and
the values are DNS labels and a number: nothing in them needs escaping beyond what `{{service}}`
already is (a PromQL string)."""
GATEWAY_ERRORS_QUERY = _or_zero(
    _increase("envoy_cluster_upstream_rq_xx", selector=f'{_GATEWAY_CLUSTER},envoy_response_code_class="5"')
)
"""Answers of the version's cluster with a 5xx code. Envoy creates the series at the first such
answer: none yet is 0."""
GATEWAY_REQUESTS_QUERY = _increase("envoy_cluster_upstream_rq_completed", selector=_GATEWAY_CLUSTER)
"""Answers of the version's cluster, whatever their code: Envoy counts them where it counts the
codes, so the errors are always a part of them."""
GATEWAY_LATENCY_BUCKETS_QUERY = _increase("envoy_cluster_upstream_rq_time_bucket", by="le", selector=_GATEWAY_CLUSTER)
"""Time from the request's start to the upstream's whole answer, in milliseconds. Envoy merges
its histograms every stats flush (5 s by default), so they lag the counters by up to that."""
_CONTAINER_MEMORY = (
    f'container_memory_working_set_bytes{{namespace="{{{{namespace}}}}",{_SELECTOR},container!="",container!="POD"}}'
)

PRESETS: dict[str, Preset] = {
    "error-rate": CountsPreset(
        events_query=_ERRORS.query,
        trials_query=REQUESTS_QUERY,
        events_are_bad=True,
        # No worse than the baseline: the test's null is exactly "as good as the baseline".
        tolerance=Tolerance(),
        rubric_items=("Monitor 6",),
    ),
    "latency-p99": SlowRequestsPreset(
        buckets_query=_LATENCY_BUCKETS.query,
        quantile=0.99,
        # Up to 20 % more requests slower than the baseline's p99 than the baseline has.
        tolerance=Tolerance(relative=0.2),
        rubric_items=("Monitor 6",),
    ),
    "feedback-accuracy": CountsPreset(
        events_query=_FEEDBACK_CORRECT.query,
        trials_query=_FEEDBACK_TOTAL.query,
        events_are_bad=False,
        tolerance=Tolerance(absolute=0.02),
        rubric_items=("Monitor 7", "Model 5"),
    ),
    "container-memory": GaugePreset(
        # cAdvisor's series carry namespace, pod and container; model and version must be copied
        # from the pod's labels by the scrape configuration (docs/checks/computing-performance.md).
        # The largest container: memory runs out per container, not on average.
        query=f"max({_CONTAINER_MEMORY})",
        # The samples are the containers reporting: one is enough.
        samples_query=f"count({_CONTAINER_MEMORY})",
        comparison=Comparison(direction=Direction.HIGHER_IS_WORSE, max_ratio=1.2),
        rubric_items=("Monitor 6",),
    ),
    "nonfinite-outputs": CountsPreset(
        events_query=_NONFINITE.query,
        trials_query=_PREDICTED_ROWS_SUM.query,
        events_are_bad=True,
        # A model should never answer NaN: any increase over the baseline is harm.
        tolerance=Tolerance(),
        rubric_items=("Monitor 5",),
    ),
    "input-invariant-violations": CountsPreset(
        events_query=_INVARIANT_VIOLATIONS.query,
        trials_query=_PREDICTED_ROWS_SUM.query,
        events_are_bad=True,
        # Both versions see the same kind of inputs: a higher share means the candidate reads them
        # differently (a skipped scaler, another feature order).
        tolerance=Tolerance(absolute=0.01),
        rubric_items=("Monitor 2",),
    ),
    "gateway-error-rate": CountsPreset(
        events_query=GATEWAY_ERRORS_QUERY,
        trials_query=GATEWAY_REQUESTS_QUERY,
        events_are_bad=True,
        tolerance=Tolerance(),
        rubric_items=("Monitor 6",),
    ),
    "gateway-latency-p99": SlowRequestsPreset(
        buckets_query=GATEWAY_LATENCY_BUCKETS_QUERY,
        quantile=0.99,
        tolerance=Tolerance(relative=0.2),
        rubric_items=("Monitor 6",),
        le_per_second=1000.0,
    ),
}

PREDICTION_HISTOGRAM_QUERY = _PREDICTION_BUCKETS.query
"""Prediction drift: each bucket's count in the window (cumulative, one series per `le`)."""
SLICE_CORRECT_QUERY = _SLICE_CORRECT.query
"""A slice without a right answer yet may have no series: the judge counts it 0."""
SLICE_TOTAL_QUERY = _SLICE_TOTAL.query
"""Important slices: correct and all labelled predictions in the window, one series per `slice`."""
INPUT_FEATURE_QUERY = _INPUT_FEATURES.query
"""Training skew: each input feature's bucket counts in the window (cumulative, one series per
`feature` and `le`), binned at the edges of the training profile."""
FEEDBACK_CORRECT_QUERY = _FEEDBACK_CORRECT.query
FEEDBACK_TOTAL_QUERY = _FEEDBACK_TOTAL.query
"""Offline vs online: correct and all labelled predictions of a version in the window."""

BATCHABLE: dict[str, CounterSum] = {
    counts.query: counts
    for counts in (
        _REQUESTS,
        _ERRORS,
        _LATENCY_BUCKETS,
        _FEEDBACK_CORRECT,
        _FEEDBACK_TOTAL,
        _NONFINITE,
        _INVARIANT_VIOLATIONS,
        _PREDICTED_ROWS_SUM,
        _PREDICTION_BUCKETS,
        _SLICE_CORRECT,
        _SLICE_TOTAL,
        _INPUT_FEATURES,
    )
}
"""The count queries the controller reads batched, by their PromQL text: every preset's and every
model-aware check's default, and the same text written by hand. Any other query is read for each
rollout on its own."""
