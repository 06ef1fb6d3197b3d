"""spec.analysis and AnalysisTemplate metrics as typed, immutable values.

The CRD schema catches shapes; this module catches what a schema cannot (one provider or a
preset, at least one bound, unknown template variables) and raises `SpecError` naming the field
and the fix.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar

from controller.analysis.comparison import Comparison, Direction
from controller.analysis.jsonpath import JsonPathError, parse_json_path
from controller.analysis.presets import PRESETS, Preset
from controller.api import SpecError, parse_duration
from controller.checks import InconclusivePolicy

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
class MetricSpec:
    name: str
    """Unique within a rollout's analysis; names the metric in status, Events and /metrics."""
    source: MetricSource
    comparison: Comparison
    min_samples: MinSamples | None = None
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

    def window(self, interval_seconds: float) -> float:
        return self.window_seconds if self.window_seconds is not None else interval_seconds


@dataclass(frozen=True, kw_only=True)
class AnalysisSpec:
    interval_seconds: float = DEFAULT_INTERVAL_SECONDS
    """Time between two measurements of a metric."""
    metrics: tuple[MetricSpec, ...] = ()
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


def parse_metric(raw: Mapping[str, Any], *, path: str) -> MetricSpec:
    """One entry of spec.analysis.metrics or of an AnalysisTemplate's spec.metrics."""
    name = _text(raw, "name", path)
    preset_name = raw.get("preset")
    provider_raw = raw.get("provider")
    preset = None
    if preset_name is not None:
        preset = PRESETS.get(preset_name)
        if preset is None:
            raise SpecError(f"{path}.preset", f"{preset_name!r} is not one of {', '.join(sorted(PRESETS))}")
    if preset is None and provider_raw is None:
        raise SpecError(path, "give a provider (prometheus or web) or a preset (" + ", ".join(sorted(PRESETS)) + ")")
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
        name=name,
        source=source,
        comparison=comparison,
        min_samples=_parse_min_samples(raw.get("minSamples"), f"{path}.minSamples", preset=preset),
        window_seconds=_duration(raw, "window", path),
        count=_whole(raw, "count", path, minimum=1),
        failure_limit=_whole_or(raw, "failureLimit", path, default=0, minimum=0),
        consecutive_error_limit=_whole_or(
            raw, "consecutiveErrorLimit", path, default=DEFAULT_CONSECUTIVE_ERROR_LIMIT, minimum=0
        ),
        inconclusive_limit=_whole_or(raw, "inconclusiveLimit", path, default=0, minimum=0),
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


def parse_metrics(raw: Sequence[Mapping[str, Any]] | None, *, path: str) -> tuple[MetricSpec, ...]:
    """A list of metrics; names must be unique."""
    metrics = tuple(parse_metric(item, path=f"{path}[{i}]") for i, item in enumerate(raw or []))
    check_unique_names(metrics, path=path)
    return metrics


def check_unique_names(metrics: Sequence[MetricSpec], *, path: str) -> None:
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
