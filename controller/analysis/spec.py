"""spec.analysis and AnalysisTemplate metrics as typed, immutable values.

The CRD schema catches shapes; this module catches what a schema cannot (one provider or a
preset, at least one bound, unknown template variables) and raises `SpecError` naming the field
and the fix.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar

from controller.analysis.comparison import Comparison, Direction
from controller.analysis.jsonpath import JsonPathError, parse_json_path
from controller.analysis.presets import (
    FEEDBACK_CORRECT_QUERY,
    FEEDBACK_TOTAL_QUERY,
    PREDICTION_HISTOGRAM_QUERY,
    PRESETS,
    SLICE_CORRECT_QUERY,
    SLICE_TOTAL_QUERY,
    Preset,
)
from controller.api import SpecError, parse_duration
from controller.checks import InconclusivePolicy
from controller.stats import DriftThresholds, SliceThresholds

DEFAULT_INTERVAL_SECONDS = 30.0
DEFAULT_CONSECUTIVE_ERROR_LIMIT = 4
"""Provider errors in a row tolerated (holding) before onInconclusive applies."""
DEFAULT_MEASUREMENT_HISTORY_LIMIT = 20
"""Measurements kept in status.analysis.measurements; older ones are dropped."""
DEFAULT_WEB_TIMEOUT_SECONDS = 10.0

TEMPLATE_VARIABLES = frozenset({"model", "version", "namespace", "window"})
"""What `{{...}}` may name in a query, URL or body."""
_TEMPLATE_VARIABLE = re.compile(r"\{\{\s*([A-Za-z_]\w*)\s*\}\}")


def render_template(text: str, variables: Mapping[str, str]) -> str:
    """`text` with every `{{name}}` replaced by `variables[name]`."""
    return _TEMPLATE_VARIABLE.sub(lambda match: variables[match.group(1)], text)


def _check_template(text: str, field_path: str) -> str:
    unknown = sorted({m.group(1) for m in _TEMPLATE_VARIABLE.finditer(text)} - TEMPLATE_VARIABLES)
    if unknown:
        raise SpecError(
            field_path,
            f"unknown template variable(s) {', '.join(unknown)}; use only "
            + ", ".join(f"{{{{{name}}}}}" for name in sorted(TEMPLATE_VARIABLES)),
        )
    return text


def format_window(seconds: float) -> str:
    """A PromQL range duration: whole seconds as `30s`, anything finer in milliseconds."""
    if float(seconds).is_integer():
        return f"{int(seconds)}s"
    return f"{round(seconds * 1000)}ms"


# ---------------------------------------------------------------------------------------------
# Sources: where a value comes from


@dataclass(frozen=True, kw_only=True)
class PrometheusSource:
    provider: ClassVar[str] = "prometheus"
    query: str
    """PromQL returning one number (a scalar or a one-series vector), with template variables."""
    address: str | None = None
    """Base URL of Prometheus; None uses the controller's default."""

    def rendered(self, variables: Mapping[str, str]) -> PrometheusSource:
        return replace(self, query=render_template(self.query, variables))


@dataclass(frozen=True, kw_only=True)
class WebSource:
    provider: ClassVar[str] = "web"
    url: str
    """URL to call, with template variables."""
    json_path: str
    """Where the number is in the JSON answer, like `$.data.value` or `$.results[0].score`."""
    method: str = "GET"
    """GET or POST."""
    body: str | None = None
    """POST body (JSON text), with template variables."""
    headers_secret: str | None = None
    """Secret in the rollout's namespace whose keys and values are sent as request headers."""
    timeout_seconds: float = DEFAULT_WEB_TIMEOUT_SECONDS

    def rendered(self, variables: Mapping[str, str]) -> WebSource:
        body = None if self.body is None else render_template(self.body, variables)
        return replace(self, url=render_template(self.url, variables), body=body)


MetricSource = PrometheusSource | WebSource


# ---------------------------------------------------------------------------------------------
# Metrics


@dataclass(frozen=True, kw_only=True)
class MinSamples:
    count: float
    """Fewer samples than this (for either version judged) makes the measurement Inconclusive."""
    query: str
    """PromQL counting the samples behind a value (e.g. requests in the window), templated."""


@dataclass(frozen=True, kw_only=True)
class MeasuredSpec:
    """What every metric has, whatever it measures: a name, a window and its limits over time."""

    name: str
    """Unique within a rollout's analysis; names the metric in status, Events and /metrics."""
    window_seconds: float | None = None
    """What `{{window}}` stands for; None means the analysis interval."""
    count: int | None = None
    """Measurements after which the metric is complete; None: until the analyze step ends (or forever
    in background analysis)."""
    failure_limit: int = 0
    """Failed measurements tolerated; one more fails the rollout."""
    consecutive_error_limit: int = DEFAULT_CONSECUTIVE_ERROR_LIMIT
    """Provider errors in a row tolerated (holding); one more applies onInconclusive."""
    inconclusive_limit: int = 0
    """Inconclusive measurements (no data, too few samples) in a row tolerated (holding); one more
    applies onInconclusive."""
    rubric_items: tuple[str, ...] = ()
    """ML Test Score items (e.g. `Monitor 7`) a measurement of this metric verifies."""

    def window(self, interval_seconds: float) -> float:
        return self.window_seconds if self.window_seconds is not None else interval_seconds


@dataclass(frozen=True, kw_only=True)
class MetricSpec(MeasuredSpec):
    """A metric giving one number per version, judged by `comparison`."""

    source: MetricSource
    comparison: Comparison
    min_samples: MinSamples | None = None


# ---------------------------------------------------------------------------------------------
# Model-aware checks: several numbers per version, judged by controller.stats


@dataclass(frozen=True, kw_only=True)
class PredictionDrift:
    """The candidate's prediction histogram against the baseline's (Monitor 7)."""

    key: ClassVar[str] = "predictionDrift"
    rubric_items: ClassVar[tuple[str, ...]] = ("Monitor 7",)
    thresholds: DriftThresholds
    histogram_query: str
    """PromQL giving each bucket's count in the window, one series per `le` (cumulative buckets)."""
    address: str | None = None
    """Base URL of Prometheus; None uses the controller's default."""


@dataclass(frozen=True, kw_only=True)
class ImportantSlices:
    """Quality on each named data slice, each judged on its own (Model 6)."""

    key: ClassVar[str] = "importantSlices"
    rubric_items: ClassVar[tuple[str, ...]] = ("Model 6",)
    slices: tuple[str, ...]
    """The slices that matter, in the order reported."""
    thresholds: SliceThresholds
    correct_query: str
    """PromQL giving the correct labelled predictions in the window, one series per `slice`."""
    total_query: str
    """PromQL giving all labelled predictions in the window, one series per `slice`."""
    address: str | None = None


@dataclass(frozen=True, kw_only=True)
class OfflineVsOnline:
    """The candidate's declared offline quality against its quality measured online (Model 2)."""

    key: ClassVar[str] = "offlineVsOnline"
    rubric_items: ClassVar[tuple[str, ...]] = ("Model 2",)
    offline: float
    """The candidate's quality (correct / labelled) from offline evaluation, e.g. test-set accuracy."""
    max_gap: float
    """Largest |offline - online| that passes."""
    min_samples: float
    """Labelled predictions of the candidate needed before the gap is judged."""
    correct_query: str
    """PromQL giving the candidate's correct labelled predictions in the window (one number)."""
    total_query: str
    """PromQL giving the candidate's labelled predictions in the window (one number)."""
    address: str | None = None


ModelCheck = PredictionDrift | ImportantSlices | OfflineVsOnline


@dataclass(frozen=True, kw_only=True)
class ModelCheckSpec(MeasuredSpec):
    """A metric judged by a model-aware rule instead of a comparison of two numbers."""

    check: ModelCheck


AnalysisMetric = MetricSpec | ModelCheckSpec


@dataclass(frozen=True, kw_only=True)
class AnalysisSpec:
    interval_seconds: float = DEFAULT_INTERVAL_SECONDS
    """Time between two measurements of a metric."""
    metrics: tuple[AnalysisMetric, ...] = ()
    """Inline metrics; templates add more."""
    templates: tuple[str, ...] = ()
    """AnalysisTemplates (in the rollout's namespace) whose metrics run with the inline ones."""
    on_inconclusive: InconclusivePolicy = InconclusivePolicy.HOLD
    """What an Inconclusive result beyond its limit does to the rollout."""
    starting_step: int | None = None
    """Step index from which background analysis runs across all steps; None: only analyze steps."""
    measurement_history_limit: int = DEFAULT_MEASUREMENT_HISTORY_LIMIT


# ---------------------------------------------------------------------------------------------
# Parsing


def _number(raw: Mapping[str, Any], key: str, path: str, *, minimum: float | None = None) -> float | None:
    value = raw.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise SpecError(f"{path}.{key}", f"{value!r} is not a number")
    if minimum is not None and value < minimum:
        raise SpecError(f"{path}.{key}", f"{value!r} is below {minimum:g}; give {minimum:g} or more")
    return float(value)


def _whole(raw: Mapping[str, Any], key: str, path: str, *, minimum: int) -> int | None:
    value = raw.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SpecError(f"{path}.{key}", f"{value!r} is not a whole number of at least {minimum}")
    return value


def _whole_or(raw: Mapping[str, Any], key: str, path: str, *, default: int, minimum: int) -> int:
    value = _whole(raw, key, path, minimum=minimum)
    return default if value is None else value


def _text(raw: Mapping[str, Any], key: str, path: str) -> str:
    value = raw.get(key)
    if not isinstance(value, str) or not value.strip():
        raise SpecError(f"{path}.{key}", "is required (a non-empty string)")
    return value


def _duration(raw: Mapping[str, Any], key: str, path: str) -> float | None:
    value = raw.get(key)
    if value is None:
        return None
    seconds = parse_duration(str(value), field_path=f"{path}.{key}")
    if seconds <= 0:
        raise SpecError(f"{path}.{key}", "must be longer than 0s")
    return seconds


def _parse_comparison(raw: Mapping[str, Any], path: str, *, base: Comparison | None) -> Comparison:
    direction_text = raw.get("direction")
    if direction_text is not None and direction_text not in Direction._value2member_map_:
        raise SpecError(f"{path}.direction", f"{direction_text!r} is not one of higher-is-worse, lower-is-worse")
    bounds = {
        "max": _number(raw, "max", path),
        "min": _number(raw, "min", path),
        "max_ratio": _number(raw, "maxRatio", path, minimum=0.0),
        "max_difference": _number(raw, "maxDifference", path, minimum=0.0),
    }
    if base is not None and all(v is None for v in bounds.values()):
        # Only the direction (or nothing) given: the preset's bounds stay.
        bounds = {k: getattr(base, k) for k in bounds}
    direction = (
        Direction(direction_text)
        if direction_text is not None
        else (base.direction if base is not None else Direction.HIGHER_IS_WORSE)
    )
    comparison = Comparison(direction=direction, **bounds)
    if comparison.max_ratio == 0.0:
        raise SpecError(f"{path}.maxRatio", "must be above 0")
    if not comparison.has_bounds:
        raise SpecError(path, "give at least one of max, min, maxRatio or maxDifference")
    return comparison


def _parse_source(raw: Mapping[str, Any], path: str) -> MetricSource:
    kinds = [k for k in ("prometheus", "web") if k in raw]
    if len(kinds) != 1 or len(raw) != 1:
        raise SpecError(path, "name exactly one provider: prometheus or web")
    body = raw[kinds[0]] or {}
    sub = f"{path}.{kinds[0]}"
    if kinds[0] == "prometheus":
        return PrometheusSource(
            query=_check_template(_text(body, "query", sub), f"{sub}.query"), address=body.get("address")
        )
    method = str(body.get("method", "GET")).upper()
    if method not in ("GET", "POST"):
        raise SpecError(f"{sub}.method", f"{method!r} is not GET or POST")
    request_body = body.get("body")
    if request_body is not None and method != "POST":
        raise SpecError(f"{sub}.body", "only a POST sends a body; set method: POST or drop the body")
    headers_from = body.get("headersFrom") or {}
    json_path = _text(body, "jsonPath", sub)
    try:
        parse_json_path(json_path)
    except JsonPathError as error:
        raise SpecError(f"{sub}.jsonPath", f"{error}, like $.data.value") from error
    return WebSource(
        url=_check_template(_text(body, "url", sub), f"{sub}.url"),
        method=method,
        body=None if request_body is None else _check_template(str(request_body), f"{sub}.body"),
        json_path=json_path,
        headers_secret=headers_from.get("secretName"),
        timeout_seconds=_duration(body, "timeout", sub) or DEFAULT_WEB_TIMEOUT_SECONDS,
    )


DRIFT_DEFAULTS = DriftThresholds()
SLICE_DEFAULTS = SliceThresholds()
"""Important slices: labelled predictions each version needs on a slice."""
DEFAULT_MAX_OFFLINE_ONLINE_GAP = 0.05
DEFAULT_MIN_ONLINE_SAMPLES = 100.0
"""Offline vs online: labelled predictions of the candidate needed in the window."""
_SCALAR_KEYS = ("preset", "provider", "comparison", "minSamples")
"""Fields of a metric judged by comparing two numbers, meaningless for a model-aware check."""


def _query(raw: Mapping[str, Any], key: str, path: str, *, default: str) -> str:
    value = raw.get(key)
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise SpecError(f"{path}.{key}", "is a PromQL query (a non-empty string)")
    return _check_template(value or default, f"{path}.{key}")


def _fraction(raw: Mapping[str, Any], key: str, path: str, *, default: float | None) -> float | None:
    value = _number(raw, key, path, minimum=0.0)
    if value is not None and value > 1:
        raise SpecError(f"{path}.{key}", f"{value:g} is above 1; give a share between 0 and 1")
    return default if value is None else value


def _parse_prediction_drift(raw: Mapping[str, Any], path: str) -> PredictionDrift:
    max_psi = _number(raw, "maxPSI", path, minimum=0.0)
    max_js = _fraction(raw, "maxJSDistance", path, default=DRIFT_DEFAULTS.max_js_distance)
    min_count = _number(raw, "minCount", path, minimum=1.0)
    assert max_js is not None
    return PredictionDrift(
        thresholds=DriftThresholds(
            max_psi=DRIFT_DEFAULTS.max_psi if max_psi is None else max_psi,
            max_js_distance=max_js,
            min_count=DRIFT_DEFAULTS.min_count if min_count is None else min_count,
        ),
        histogram_query=_query(raw, "query", path, default=PREDICTION_HISTOGRAM_QUERY),
        address=raw.get("address"),
    )


def _parse_important_slices(raw: Mapping[str, Any], path: str) -> ImportantSlices:
    names = raw.get("slices")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n.strip() for n in names):
        raise SpecError(f"{path}.slices", "is required: the names of the slices that matter, e.g. [borderline]")
    if len(set(names)) != len(names):
        raise SpecError(f"{path}.slices", "names a slice twice")
    max_drop = _fraction(raw, "maxDrop", path, default=SLICE_DEFAULTS.max_drop)
    min_samples = _number(raw, "minSamples", path, minimum=1.0)
    assert max_drop is not None
    return ImportantSlices(
        slices=tuple(names),
        thresholds=SliceThresholds(
            max_drop=max_drop,
            min_samples=SLICE_DEFAULTS.min_samples if min_samples is None else min_samples,
            min_quality=_fraction(raw, "minQuality", path, default=None),
        ),
        correct_query=_query(raw, "correctQuery", path, default=SLICE_CORRECT_QUERY),
        total_query=_query(raw, "totalQuery", path, default=SLICE_TOTAL_QUERY),
        address=raw.get("address"),
    )


def _parse_offline_vs_online(raw: Mapping[str, Any], path: str) -> OfflineVsOnline:
    offline = _fraction(raw, "offline", path, default=None)
    if offline is None:
        raise SpecError(f"{path}.offline", "is required: the candidate's offline quality, e.g. 0.93")
    max_gap = _fraction(raw, "maxGap", path, default=DEFAULT_MAX_OFFLINE_ONLINE_GAP)
    min_samples = _number(raw, "minSamples", path, minimum=1.0)
    assert max_gap is not None
    return OfflineVsOnline(
        offline=offline,
        max_gap=max_gap,
        min_samples=DEFAULT_MIN_ONLINE_SAMPLES if min_samples is None else min_samples,
        correct_query=_query(raw, "correctQuery", path, default=FEEDBACK_CORRECT_QUERY),
        total_query=_query(raw, "totalQuery", path, default=FEEDBACK_TOTAL_QUERY),
        address=raw.get("address"),
    )


MODEL_CHECK_PARSERS: dict[str, Callable[[Mapping[str, Any], str], ModelCheck]] = {
    PredictionDrift.key: _parse_prediction_drift,
    ImportantSlices.key: _parse_important_slices,
    OfflineVsOnline.key: _parse_offline_vs_online,
}
"""Key in a metric -> parser of the model-aware check configured under it."""


def _history_fields(raw: Mapping[str, Any], path: str) -> dict[str, Any]:
    """The fields every metric has: window and limits over its measurements."""
    return {
        "name": _text(raw, "name", path),
        "window_seconds": _duration(raw, "window", path),
        "count": _whole(raw, "count", path, minimum=1),
        "failure_limit": _whole_or(raw, "failureLimit", path, default=0, minimum=0),
        "consecutive_error_limit": _whole_or(
            raw, "consecutiveErrorLimit", path, default=DEFAULT_CONSECUTIVE_ERROR_LIMIT, minimum=0
        ),
        "inconclusive_limit": _whole_or(raw, "inconclusiveLimit", path, default=0, minimum=0),
    }


def parse_metric(raw: Mapping[str, Any], *, path: str) -> AnalysisMetric:
    """One entry of spec.analysis.metrics or of an AnalysisTemplate's spec.metrics."""
    checks = [key for key in MODEL_CHECK_PARSERS if key in raw]
    if checks:
        return _parse_model_check(raw, path=path, checks=checks)
    return _parse_scalar_metric(raw, path=path)


def _parse_model_check(raw: Mapping[str, Any], *, path: str, checks: Sequence[str]) -> ModelCheckSpec:
    if len(checks) > 1:
        raise SpecError(path, f"give one check per metric, not {' and '.join(checks)}")
    key = checks[0]
    clashing = [k for k in _SCALAR_KEYS if k in raw]
    if clashing:
        raise SpecError(f"{path}.{clashing[0]}", f"does not apply to {key}, which has its own rule; drop it")
    check = MODEL_CHECK_PARSERS[key](raw[key] or {}, f"{path}.{key}")
    return ModelCheckSpec(**_history_fields(raw, path), check=check, rubric_items=check.rubric_items)


def _parse_scalar_metric(raw: Mapping[str, Any], *, path: str) -> MetricSpec:
    preset_name = raw.get("preset")
    provider_raw = raw.get("provider")
    preset = None
    if preset_name is not None:
        preset = PRESETS.get(preset_name)
        if preset is None:
            raise SpecError(f"{path}.preset", f"{preset_name!r} is not one of {', '.join(sorted(PRESETS))}")
    if preset is None and provider_raw is None:
        raise SpecError(
            path,
            "give a provider (prometheus or web), a preset ("
            + ", ".join(sorted(PRESETS))
            + ") or a check ("
            + ", ".join(MODEL_CHECK_PARSERS)
            + ")",
        )
    if preset is not None:
        prometheus = (provider_raw or {}).get("prometheus")
        if provider_raw is not None and (len(provider_raw) != 1 or prometheus is None):
            raise SpecError(f"{path}.provider", "a preset reads Prometheus; give only provider.prometheus")
        prometheus = prometheus or {}
        query = prometheus.get("query") or preset.query
        source: MetricSource = PrometheusSource(
            query=_check_template(query, f"{path}.provider.prometheus.query"),
            address=prometheus.get("address"),
        )
    else:
        assert provider_raw is not None
        source = _parse_source(provider_raw, f"{path}.provider")
    comparison_raw = raw.get("comparison")
    if comparison_raw is None and preset is not None:
        comparison = preset.comparison
    else:
        comparison = _parse_comparison(
            comparison_raw or {}, f"{path}.comparison", base=None if preset is None else preset.comparison
        )
    return MetricSpec(
        **_history_fields(raw, path),
        source=source,
        comparison=comparison,
        min_samples=_parse_min_samples(raw.get("minSamples"), f"{path}.minSamples", preset=preset),
        rubric_items=() if preset is None else preset.rubric_items,
    )


def _parse_min_samples(raw: Mapping[str, Any] | None, path: str, *, preset: Preset | None) -> MinSamples | None:
    if raw is None:
        return None if preset is None else MinSamples(count=preset.min_samples, query=preset.samples_query)
    count = _number(raw, "count", path, minimum=0.0)
    if count is None:
        raise SpecError(f"{path}.count", "is required: the fewest samples a measurement may rest on")
    query = raw.get("query") or (preset.samples_query if preset is not None else None)
    if not query:
        raise SpecError(f"{path}.query", "is required without a preset: PromQL counting the samples in {{window}}")
    return MinSamples(count=count, query=_check_template(query, f"{path}.query"))


def parse_metrics(raw: Sequence[Mapping[str, Any]] | None, *, path: str) -> tuple[AnalysisMetric, ...]:
    """A list of metrics; names must be unique."""
    metrics = tuple(parse_metric(item, path=f"{path}[{i}]") for i, item in enumerate(raw or []))
    check_unique_names(metrics, path=path)
    return metrics


def check_unique_names(metrics: Sequence[MeasuredSpec], *, path: str) -> None:
    seen: set[str] = set()
    for metric in metrics:
        if metric.name in seen:
            raise SpecError(path, f"metric name {metric.name!r} appears twice; give each metric its own name")
        seen.add(metric.name)


def parse_analysis(raw: Mapping[str, Any] | None) -> AnalysisSpec | None:
    """spec.analysis as a value; None when the rollout configures no analysis at all."""
    if not raw:
        return None
    path = "spec.analysis"
    policy_text = raw.get("onInconclusive", InconclusivePolicy.HOLD.value)
    if policy_text not in InconclusivePolicy._value2member_map_:
        raise SpecError(f"{path}.onInconclusive", f"{policy_text!r} is not one of hold, pause, rollback")
    templates = []
    for i, item in enumerate(raw.get("templates") or []):
        templates.append(_text(item, "name", f"{path}.templates[{i}]"))
    return AnalysisSpec(
        interval_seconds=_duration(raw, "interval", path) or DEFAULT_INTERVAL_SECONDS,
        metrics=parse_metrics(raw.get("metrics"), path=f"{path}.metrics"),
        templates=tuple(templates),
        on_inconclusive=InconclusivePolicy(policy_text),
        starting_step=_whole(raw, "startingStep", path, minimum=0),
        measurement_history_limit=_whole_or(
            raw, "measurementHistoryLimit", path, default=DEFAULT_MEASUREMENT_HISTORY_LIMIT, minimum=1
        ),
    )
