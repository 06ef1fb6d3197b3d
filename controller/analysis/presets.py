"""Built-in metrics, so a short manifest gets a sound comparison.

Each preset is PromQL over the model-metrics convention (docs/model-metrics.md), templated with
`{{model}}`, `{{version}}`, `{{namespace}}` and `{{window}}`; docs/analysis.md lists the queries. A
metric naming a preset may override its query, its sample-count query and its comparison. The
model-aware checks (prediction drift, important slices, offline vs online) default to the queries
at the end of this module.
"""

from __future__ import annotations

from dataclasses import dataclass

from controller.analysis.comparison import Comparison, Direction

_SELECTOR = 'model="{{model}}",version="{{version}}"'
DEFAULT_MIN_SAMPLES = 50.0
"""Requests (or labelled feedback events) a preset measurement needs in its window."""


@dataclass(frozen=True, kw_only=True)
class Preset:
    query: str
    """PromQL for the value, one number per version."""
    samples_query: str
    """PromQL counting the samples behind the value in the window, for minSamples."""
    comparison: Comparison
    """Bounds used unless the metric gives its own."""
    rubric_items: tuple[str, ...]
    """ML Test Score items a measurement verifies."""
    min_samples: float = DEFAULT_MIN_SAMPLES


def _increase(counter: str, *, by: str | None = None) -> str:
    """PromQL: how much `counter` grew in the window for the version, summed (by `by`)."""
    grouping = f" by ({by}) " if by else ""
    return f"sum{grouping}(increase({counter}{{{_SELECTOR}}}[{{{{window}}}}]))"


def _rate(counter: str) -> str:
    return f"sum(rate({counter}{{{_SELECTOR}}}[{{{{window}}}}]))"


# Every predicted row is either observed in the prediction histogram or counted as non-finite.
_PREDICTED_ROWS = f"({_rate('model_predictions_count')} + ({_rate('model_nonfinite_outputs_total')} or vector(0)))"


def _per_predicted_row(counter: str) -> str:
    return f"({_rate(counter)} or vector(0)) / {_PREDICTED_ROWS}"


_REQUESTS_IN_WINDOW = _increase("model_requests_total")
_CONTAINER_MEMORY = (
    f'container_memory_working_set_bytes{{namespace="{{{{namespace}}}}",{_SELECTOR},container!="",container!="POD"}}'
)


def _ratio_of_rates(numerator: str, denominator: str) -> str:
    # `or vector(0)`: a counter that never moved (no errors, no correct answer) has no series at
    # all, which would otherwise make the whole ratio "no data" instead of 0.
    return f"({_rate(numerator)} or vector(0)) / {_rate(denominator)}"


PRESETS: dict[str, Preset] = {
    "error-rate": Preset(
        query=_ratio_of_rates("model_request_errors_total", "model_requests_total"),
        samples_query=_REQUESTS_IN_WINDOW,
        comparison=Comparison(direction=Direction.HIGHER_IS_WORSE, max_difference=0.01),
        rubric_items=("Monitor 6",),
    ),
    "latency-p99": Preset(
        query=(
            "histogram_quantile(0.99, sum by (le) "
            f"(rate(model_request_duration_seconds_bucket{{{_SELECTOR}}}[{{{{window}}}}])))"
        ),
        samples_query=_REQUESTS_IN_WINDOW,
        comparison=Comparison(direction=Direction.HIGHER_IS_WORSE, max_ratio=1.2),
        rubric_items=("Monitor 6",),
    ),
    "feedback-accuracy": Preset(
        query=_ratio_of_rates("model_feedback_correct_total", "model_feedback_total"),
        samples_query=_increase("model_feedback_total"),
        comparison=Comparison(direction=Direction.LOWER_IS_WORSE, max_difference=0.02),
        rubric_items=("Monitor 7", "Model 5"),
    ),
    "container-memory": Preset(
        # cAdvisor's series carry namespace, pod and container; model and version must be copied
        # from the pod's labels by the scrape configuration (docs/checks/computing-performance.md).
        # The largest container: memory runs out per container, not on average.
        query=f"max({_CONTAINER_MEMORY})",
        # The samples are the containers reporting: one is enough.
        samples_query=f"count({_CONTAINER_MEMORY})",
        comparison=Comparison(direction=Direction.HIGHER_IS_WORSE, max_ratio=1.2),
        rubric_items=("Monitor 6",),
        min_samples=1,
    ),
    "nonfinite-outputs": Preset(
        query=_per_predicted_row("model_nonfinite_outputs_total"),
        samples_query=_REQUESTS_IN_WINDOW,
        # A model should never answer NaN: any increase over the baseline fails.
        comparison=Comparison(direction=Direction.HIGHER_IS_WORSE, max_difference=0.0),
        rubric_items=("Monitor 5",),
    ),
    "input-invariant-violations": Preset(
        query=_per_predicted_row("model_input_invariant_violations_total"),
        samples_query=_REQUESTS_IN_WINDOW,
        # Both versions see the same kind of inputs: a higher share means the candidate reads them
        # differently (a skipped scaler, another feature order). 0.01 absorbs sampling noise.
        comparison=Comparison(direction=Direction.HIGHER_IS_WORSE, max_difference=0.01),
        rubric_items=("Monitor 2",),
    ),
}

PREDICTION_HISTOGRAM_QUERY = _increase("model_predictions_bucket", by="le")
"""Prediction drift: each bucket's count in the window (cumulative, one series per `le`)."""
SLICE_CORRECT_QUERY = _increase("model_feedback_correct_total", by="slice")
SLICE_TOTAL_QUERY = _increase("model_feedback_total", by="slice")
"""Important slices: correct and all labelled predictions in the window, one series per `slice`."""
FEEDBACK_CORRECT_QUERY = _increase("model_feedback_correct_total")
FEEDBACK_TOTAL_QUERY = _increase("model_feedback_total")
"""Offline vs online: correct and all labelled predictions of a version in the window."""
