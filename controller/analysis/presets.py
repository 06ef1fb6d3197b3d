"""Built-in metrics, so a short manifest gets a sound comparison.

Each preset is PromQL over the model-metrics convention (docs/model-metrics.md), templated with
`{{model}}`, `{{version}}` and `{{window}}`; docs/analysis.md lists the queries. A metric naming a
preset may override its query, its sample-count query and its comparison.
"""

from __future__ import annotations

from dataclasses import dataclass

from controller.analysis.comparison import Comparison, Direction

_SELECTOR = 'model="{{model}}",version="{{version}}"'
_REQUESTS_IN_WINDOW = f"sum(increase(model_requests_total{{{_SELECTOR}}}[{{{{window}}}}]))"
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
    min_samples: float = DEFAULT_MIN_SAMPLES


def _ratio_of_rates(numerator: str, denominator: str) -> str:
    # `or vector(0)`: a counter that never moved (no errors, no correct answer) has no series at
    # all, which would otherwise make the whole ratio "no data" instead of 0.
    return (
        f"(sum(rate({numerator}{{{_SELECTOR}}}[{{{{window}}}}])) or vector(0))"
        f" / sum(rate({denominator}{{{_SELECTOR}}}[{{{{window}}}}]))"
    )


PRESETS: dict[str, Preset] = {
    "error-rate": Preset(
        query=_ratio_of_rates("model_request_errors_total", "model_requests_total"),
        samples_query=_REQUESTS_IN_WINDOW,
        comparison=Comparison(direction=Direction.HIGHER_IS_WORSE, max_difference=0.01),
    ),
    "latency-p99": Preset(
        query=(
            "histogram_quantile(0.99, sum by (le) "
            f"(rate(model_request_duration_seconds_bucket{{{_SELECTOR}}}[{{{{window}}}}])))"
        ),
        samples_query=_REQUESTS_IN_WINDOW,
        comparison=Comparison(direction=Direction.HIGHER_IS_WORSE, max_ratio=1.2),
    ),
    "feedback-accuracy": Preset(
        query=_ratio_of_rates("model_feedback_correct_total", "model_feedback_total"),
        samples_query=f"sum(increase(model_feedback_total{{{_SELECTOR}}}[{{{{window}}}}]))",
        comparison=Comparison(direction=Direction.LOWER_IS_WORSE, max_difference=0.02),
    ),
}
