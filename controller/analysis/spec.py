"""spec.analysis and AnalysisTemplate metrics as typed, immutable values.

The CRD schema catches shapes; this module catches what a schema cannot (one provider or a
preset, at least one bound, unknown template variables) and raises `SpecError` naming the field
and the fix.

Two kinds of metric:

* `SequentialSpec`: counts that accumulate (the presets but container-memory, `counts`, and the
  model-aware checks), judged on all the evidence since the run began by a test with a stated error
  rate (controller.analysis.judges, docs/statistics.md);
* `MetricSpec`: one number per version (a custom query, a web API, container memory), bounded as
  read at each measurement.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, ClassVar

from controller.analysis import fields
from controller.analysis.comparison import Comparison, Direction, Tolerance
from controller.analysis.evidence import CountQuery, Evidence, Numbers
from controller.analysis.fields import render_template as render_template  # read from here by bench/
from controller.analysis.judges import (
    Budget,
    JudgedOnCountsAlone,
    Look,
    SequentialTest,
    Versions,
    cumulative_buckets,
    judge_guardrails,
    judge_rate_test,
    judge_slow_requests,
)
from controller.analysis.plugins import DEFAULT_PLUGINS, AnalysisPlugins
from controller.analysis.presets import (
    PRESETS,
    CountsPreset,
    GaugePreset,
    Preset,
    SlowRequestsPreset,
)
from controller.analysis.providers import MetricSource as MetricSource
from controller.analysis.providers import PrometheusSource as PrometheusSource
from controller.api import SpecError, refusing_malformed
from controller.checks import InconclusivePolicy

DEFAULT_INTERVAL_SECONDS = 30.0
MIN_INTERVAL_SECONDS = 1.0
"""Faster than once a second writes status many times a second and measures nothing new."""
MAX_INTERVAL_SECONDS = 168 * 3600.0
"""A week, like the other timers: a longer interval is a typo."""
DEFAULT_CONSECUTIVE_ERROR_LIMIT = 4
"""Provider errors in a row tolerated (holding) before onInconclusive applies."""
DEFAULT_MEASUREMENT_HISTORY_LIMIT = 20
"""Measurements kept in status.analysis.measurements; older ones are dropped."""
DEFAULT_FALSE_ROLLBACK_RATE = 0.05
DEFAULT_FALSE_PROMOTION_RATE = 0.05
DEFAULT_THRESHOLD_LOOKBACK_SECONDS = 3600.0
"""Latency: the baseline's last hour gives the slow-request bound."""
THRESHOLD_TAIL_REQUESTS = 10
"""Latency: the baseline requests expected above its quantile before the bound is kept (1000 for
p99); with fewer the bucket holding the quantile is a guess, read again at the next look."""


def format_window(seconds: float) -> str:
    """A PromQL range duration: whole seconds as `30s`, anything finer in milliseconds."""
    if float(seconds).is_integer():
        return f"{int(seconds)}s"
    return f"{round(seconds * 1000)}ms"


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
# Sequential tests: counts that accumulate, judged by controller.analysis.judges with a stated
# error rate (docs/statistics.md)


@dataclass(frozen=True, kw_only=True)
class RateTest(JudgedOnCountsAlone):
    """Events out of trials per version (errors per request, right answers per label), compared by
    the ratio of the versions' bad-event rates (controller.analysis.sequential)."""

    key: ClassVar[str] = "counts"
    compares_baseline: ClassVar[bool] = True
    address_field: ClassVar[str] = "provider.prometheus.address"
    events_query: str
    trials_query: str
    events_are_bad: bool = True
    """True: the events are bad (higher is worse); False: good (right answers; lower is worse)."""
    tolerance: Tolerance = field(default_factory=Tolerance)
    max: float | None = None
    """Guardrail on the candidate's events per trial: fails once its confidence sequence is above."""
    min: float | None = None
    """Guardrail on the candidate's events per trial: fails once its confidence sequence is below."""
    min_trials: float | None = None
    """Trials the candidate needs before the metric may pass (a floor the user asked for)."""
    address: str | None = None

    @property
    def queries(self) -> tuple[CountQuery, ...]:
        return (CountQuery(name="events", query=self.events_query), CountQuery(name="trials", query=self.trials_query))

    @property
    def tests(self) -> int:
        """How many tests share the metric's error budget."""
        return 1 + (self.max is not None) + (self.min is not None)

    def judge(self, evidence: Evidence, *, budget: Budget, versions: Versions) -> Look:
        return judge_rate_test(self, evidence, budget, versions)


@dataclass(frozen=True, kw_only=True)
class GuardrailTest(JudgedOnCountsAlone):
    """A rate test's guardrails alone (max, min), on the promoted version's counts after its
    promotion: no baseline serves, so none is read and nothing is compared with one."""

    compares_baseline: ClassVar[bool] = False
    address_field: ClassVar[str] = "provider.prometheus.address"
    rate: RateTest
    """The metric as parsed: its counts, what they count, its guardrails and its floor."""

    @property
    def address(self) -> str | None:
        return self.rate.address

    @property
    def queries(self) -> tuple[CountQuery, ...]:
        return self.rate.queries

    @property
    def tests(self) -> int:
        """One per guardrail: they share the metric's error budget."""
        return (self.rate.max is not None) + (self.rate.min is not None)

    def judge(self, evidence: Evidence, *, budget: Budget, versions: Versions) -> Look:
        return judge_guardrails(self, evidence, budget, versions)


@dataclass(frozen=True, kw_only=True)
class SlowRequestsTest(JudgedOnCountsAlone):
    """Requests slower than the baseline's quantile, per version, from the latency histogram: the
    candidate's share of slow requests against the baseline's, like a rate of bad events."""

    compares_baseline: ClassVar[bool] = True
    address_field: ClassVar[str] = "provider.prometheus.address"
    tests: ClassVar[int] = 1
    buckets_query: str
    quantile: float
    tolerance: Tolerance
    lookback_seconds: float = DEFAULT_THRESHOLD_LOOKBACK_SECONDS
    """The baseline traffic the slow-request bound is read from, at the first look with enough."""
    address: str | None = None
    le_per_second: float = 1.0
    """How many units of the histogram's `le` make a second (1000 for Envoy's milliseconds)."""

    @property
    def queries(self) -> tuple[CountQuery, ...]:
        return (CountQuery(name="bucket", query=self.buckets_query, by="le"),)

    def buckets(self, numbers: Numbers) -> dict[float, float]:
        """Cumulative counts by upper bound in seconds, from the `bucket:<le>` numbers as read.
        The bounds are always divided the same way, so a bound kept in status finds its bucket."""
        return {le / self.le_per_second: count for le, count in cumulative_buckets(numbers).items()}

    @property
    def threshold_requests(self) -> float:
        """Baseline requests in the lookback the slow-request bound must rest on to be kept."""
        return THRESHOLD_TAIL_REQUESTS / (1 - self.quantile)

    def judge(self, evidence: Evidence, *, budget: Budget, versions: Versions) -> Look:
        return judge_slow_requests(self, evidence, budget, versions)


@dataclass(frozen=True, kw_only=True)
class SequentialSpec(MeasuredSpec):
    """A metric judged on all its evidence so far by a sequential test with a stated error rate."""

    test: SequentialTest


AnalysisMetric = MetricSpec | SequentialSpec


class PromoteWhen(StrEnum):
    """When an analyze step whose window is over may pass."""

    NO_EVIDENCE_OF_HARM = "noEvidenceOfHarm"
    """At the end of the window unless a test showed harm (the achieved power is recorded)."""
    EVIDENCE_OF_SAFETY = "evidenceOfSafety"
    """Once every test shows the candidate within tolerance; the step extends up to maxDuration."""


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
    false_rollback_rate: float = DEFAULT_FALSE_ROLLBACK_RATE
    """Largest chance of rolling back a candidate as good as the baseline, over the whole rollout:
    all sequential metrics, slices, steps and looks together."""
    false_promotion_rate: float = DEFAULT_FALSE_PROMOTION_RATE
    """With evidenceOfSafety: largest chance of calling a candidate beyond tolerance safe."""
    promote_when: PromoteWhen = PromoteWhen.NO_EVIDENCE_OF_HARM
    max_duration_seconds: float | None = None
    """With evidenceOfSafety: the longest an analyze step may extend to (from its start) waiting for
    evidence of safety; None: three times the step's duration."""


# ---------------------------------------------------------------------------------------------
# Parsing


def _interval(raw: Mapping[str, Any], path: str) -> float:
    seconds = fields.duration(raw, "interval", path)
    if seconds is None:
        return DEFAULT_INTERVAL_SECONDS
    if seconds < MIN_INTERVAL_SECONDS:
        raise SpecError(
            f"{path}.interval",
            f"{raw['interval']!r} is shorter than 1s; measure at most once a second, e.g. 30s (the default)",
        )
    if seconds > MAX_INTERVAL_SECONDS:
        raise SpecError(
            f"{path}.interval",
            f"{raw['interval']!r} is longer than 168h (one week); measure more often, e.g. 30s or 1h",
        )
    return seconds


def _check_min_not_above_max(minimum: float | None, maximum: float | None, path: str) -> None:
    """comparison.min above comparison.max: nothing is within both, so the metric could only fail."""
    if minimum is not None and maximum is not None and minimum > maximum:
        raise SpecError(
            f"{path}.min",
            f"{minimum:g} is above max {maximum:g}, so nothing can pass; swap them, or drop the bound you did not mean",
        )


def _parse_comparison(raw: Mapping[str, Any], path: str) -> Comparison:
    direction_text = raw.get("direction")
    if direction_text is not None and direction_text not in Direction._value2member_map_:
        raise SpecError(f"{path}.direction", f"{direction_text!r} is not one of higher-is-worse, lower-is-worse")
    comparison = Comparison(
        direction=Direction(direction_text) if direction_text is not None else Direction.HIGHER_IS_WORSE,
        max=fields.number(raw, "max", path),
        min=fields.number(raw, "min", path),
        max_ratio=fields.number(raw, "maxRatio", path, minimum=0.0),
        max_difference=fields.number(raw, "maxDifference", path, minimum=0.0),
    )
    if comparison.max_ratio == 0.0:
        raise SpecError(f"{path}.maxRatio", "must be above 0")
    if not comparison.has_bounds:
        raise SpecError(path, "give at least one of max, min, maxRatio or maxDifference")
    _check_min_not_above_max(comparison.min, comparison.max, path)
    return comparison


_TOLERANCE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(%?)\s*$")


def parse_tolerance(value: object, path: str) -> Tolerance:
    """`10%` (relative: the candidate's bad-event rate may be 1.1 times the baseline's) or a
    number such as `0.002` (absolute: that much higher)."""
    text = str(value) if isinstance(value, str | int | float) and not isinstance(value, bool) else ""
    match = _TOLERANCE.match(text)
    if match is None:
        raise SpecError(path, f"{value!r} is not a tolerance; give a share like 10% or an amount like 0.002")
    amount = float(match.group(1))
    if match.group(2):
        return Tolerance(relative=amount / 100)
    if amount > 1:
        raise SpecError(path, f"{amount:g} is an absolute difference of rates above 1; write it as a percent, e.g. 10%")
    return Tolerance(absolute=amount)


def _parse_source(raw: Mapping[str, Any], path: str, *, plugins: AnalysisPlugins) -> MetricSource:
    """provider.<key>: exactly one registered provider, which parses its own block."""
    keys = [key for key in plugins.providers if key in raw]
    if len(keys) != 1 or len(raw) != 1:
        raise SpecError(path, f"name exactly one provider: {' or '.join(plugins.providers)}")
    return plugins.providers[keys[0]].parse_source(raw[keys[0]] or {}, f"{path}.{keys[0]}")


_SCALAR_KEYS = ("preset", "provider", "comparison", "minSamples", "tolerance", RateTest.key)
"""Fields of a metric judged by comparing two rates or numbers, meaningless for a model-aware check."""


def _history_fields(raw: Mapping[str, Any], path: str) -> dict[str, Any]:
    """The fields every metric has: window and limits over its measurements."""
    return {
        "name": fields.text(raw, "name", path),
        "window_seconds": fields.duration(raw, "window", path),
        "count": fields.whole(raw, "count", path, minimum=1),
        "failure_limit": fields.whole_or(raw, "failureLimit", path, default=0, minimum=0),
        "consecutive_error_limit": fields.whole_or(
            raw, "consecutiveErrorLimit", path, default=DEFAULT_CONSECUTIVE_ERROR_LIMIT, minimum=0
        ),
        "inconclusive_limit": fields.whole_or(raw, "inconclusiveLimit", path, default=0, minimum=0),
    }


def parse_metric(raw: Mapping[str, Any], *, path: str, plugins: AnalysisPlugins = DEFAULT_PLUGINS) -> AnalysisMetric:
    """One entry of spec.analysis.metrics or of an AnalysisTemplate's spec.metrics."""
    checks = [key for key in plugins.checks if key in raw]
    if checks:
        return _parse_model_check(raw, path=path, checks=checks, plugins=plugins)
    preset = _preset(raw, path, plugins=plugins)
    if not isinstance(preset, GaugePreset | None) or RateTest.key in raw:
        return _parse_sequential_metric(raw, path=path, preset=preset)
    if "tolerance" in raw:
        raise SpecError(
            f"{path}.tolerance",
            "applies to counts (a preset other than container-memory, or counts: {events, trials}); "
            "bound this metric with comparison.maxRatio or comparison.maxDifference",
        )
    return _parse_scalar_metric(raw, path=path, preset=preset, plugins=plugins)


def _preset(raw: Mapping[str, Any], path: str, *, plugins: AnalysisPlugins) -> Preset | None:
    name = raw.get("preset")
    if name is None:
        if "provider" not in raw and RateTest.key not in raw:
            raise SpecError(
                path,
                f"give a provider ({plugins.provider_keys}), a preset ("
                + ", ".join(sorted(PRESETS))
                + "), counts, or a check ("
                + ", ".join(plugins.checks)
                + ")",
            )
        return None
    preset = PRESETS.get(name)
    if preset is None:
        raise SpecError(f"{path}.preset", f"{name!r} is not one of {', '.join(sorted(PRESETS))}")
    if RateTest.key in raw:
        raise SpecError(f"{path}.{RateTest.key}", "a preset brings its own counts; drop counts or the preset")
    return preset


def _parse_model_check(
    raw: Mapping[str, Any], *, path: str, checks: Sequence[str], plugins: AnalysisPlugins
) -> SequentialSpec:
    """metric.<key> of one registered model check, which parses its own block."""
    if len(checks) > 1:
        raise SpecError(path, f"give one check per metric, not {' and '.join(checks)}")
    key = checks[0]
    clashing = [k for k in _SCALAR_KEYS if k in raw]
    if clashing:
        raise SpecError(f"{path}.{clashing[0]}", f"does not apply to {key}, which has its own tolerances; drop it")
    check = plugins.checks[key].parse_config(raw[key] or {}, f"{path}.{key}")
    return SequentialSpec(**_history_fields(raw, path), test=check, rubric_items=check.rubric_items)


def _address(raw: Mapping[str, Any], path: str, *, preset: Preset | None) -> str | None:
    """provider.prometheus.address of a metric reading counts (its queries come from elsewhere)."""
    provider = raw.get("provider")
    if provider is None:
        return None
    prometheus = provider.get("prometheus") if isinstance(provider, Mapping) else None
    if len(provider) != 1 or prometheus is None:
        raise SpecError(f"{path}.provider", "counts are read from Prometheus; give only provider.prometheus.address")
    if prometheus.get("query") is not None:
        what = f"the {raw.get('preset')} preset" if preset is not None else "counts"
        raise SpecError(
            f"{path}.provider.prometheus.query",
            f"{what} reads counts, not one number; give your own queries as counts: "
            "{events: <PromQL>, trials: <PromQL>} (docs/analysis.md), or drop the preset to bound one number",
        )
    return fields.prometheus_address(prometheus, f"{path}.provider.prometheus")


def _tolerance_and_guardrails(
    raw: Mapping[str, Any], path: str, *, events_are_bad: bool, default: Tolerance
) -> tuple[Tolerance, float | None, float | None]:
    """The tolerance (`tolerance`, or the older comparison.maxRatio / maxDifference) and the
    guardrails comparison.max / min."""
    comparison = raw.get("comparison") or {}
    sub = f"{path}.comparison"
    direction = comparison.get("direction")
    expected = Direction.HIGHER_IS_WORSE if events_are_bad else Direction.LOWER_IS_WORSE
    if direction is not None and direction != expected.value:
        raise SpecError(f"{sub}.direction", f"these counts are {expected.value}; drop direction or set it so")
    max_ratio = fields.number(comparison, "maxRatio", sub, minimum=1.0)
    max_difference = fields.number(comparison, "maxDifference", sub, minimum=0.0)
    older = [key for key, value in (("maxRatio", max_ratio), ("maxDifference", max_difference)) if value is not None]
    if "tolerance" in raw:
        if older:
            raise SpecError(f"{sub}.{older[0]}", "and tolerance say the same thing; keep only tolerance")
        tolerance = parse_tolerance(raw["tolerance"], f"{path}.tolerance")
    elif older:
        tolerance = Tolerance(relative=round((max_ratio or 1.0) - 1.0, 12), absolute=max_difference or 0.0)
    else:
        tolerance = default
    return tolerance, fields.number(comparison, "max", sub), fields.number(comparison, "min", sub)


def _parse_sequential_metric(raw: Mapping[str, Any], *, path: str, preset: Preset | None) -> SequentialSpec:
    address = _address(raw, path, preset=preset)
    min_samples = raw.get("minSamples")
    min_trials = None
    if min_samples is not None:
        if min_samples.get("query") is not None:
            raise SpecError(
                f"{path}.minSamples.query", "counts are their own samples (the trials); give only minSamples.count"
            )
        min_trials = fields.number(min_samples, "count", f"{path}.minSamples", minimum=0.0)
    if isinstance(preset, SlowRequestsPreset):
        tolerance, maximum, minimum = _tolerance_and_guardrails(
            raw, path, events_are_bad=True, default=preset.tolerance
        )
        if maximum is not None or minimum is not None or min_trials is not None:
            raise SpecError(
                f"{path}.comparison" if min_trials is None else f"{path}.minSamples",
                f"{raw.get('preset')} compares the share of slow requests with the baseline's; "
                "bound it with tolerance only",
            )
        test: SequentialTest = SlowRequestsTest(
            buckets_query=preset.buckets_query,
            quantile=preset.quantile,
            tolerance=tolerance,
            address=address,
            le_per_second=preset.le_per_second,
        )
        return SequentialSpec(**_history_fields(raw, path), test=test, rubric_items=preset.rubric_items)
    if isinstance(preset, CountsPreset):
        events_query, trials_query, events_are_bad = preset.events_query, preset.trials_query, preset.events_are_bad
        default, rubric_items = preset.tolerance, preset.rubric_items
    else:
        counts = raw.get(RateTest.key) or {}
        sub = f"{path}.{RateTest.key}"
        events_query = fields.query(counts, "events", sub, default="") if counts.get("events") else ""
        trials_query = fields.query(counts, "trials", sub, default="") if counts.get("trials") else ""
        if not events_query or not trials_query:
            missing = "events" if not events_query else "trials"
            raise SpecError(
                f"{sub}.{missing}", "is required: PromQL counting them in {{window}}, e.g. sum(increase(...))"
            )
        events_are = counts.get("eventsAre", "bad")
        if events_are not in ("bad", "good"):
            raise SpecError(f"{sub}.eventsAre", f"{events_are!r} is not bad or good")
        events_are_bad, default, rubric_items = events_are == "bad", Tolerance(), ()
    tolerance, maximum, minimum = _tolerance_and_guardrails(raw, path, events_are_bad=events_are_bad, default=default)
    for key, bound in (("max", maximum), ("min", minimum)):
        if bound is not None and not 0 <= bound <= 1:
            raise SpecError(f"{path}.comparison.{key}", f"{bound:g} is not a share of trials between 0 and 1")
    _check_min_not_above_max(minimum, maximum, f"{path}.comparison")
    test = RateTest(
        events_query=events_query,
        trials_query=trials_query,
        events_are_bad=events_are_bad,
        tolerance=tolerance,
        max=maximum,
        min=minimum,
        min_trials=min_trials,
        address=address,
    )
    return SequentialSpec(**_history_fields(raw, path), test=test, rubric_items=rubric_items)


def _parse_scalar_metric(
    raw: Mapping[str, Any], *, path: str, preset: GaugePreset | None, plugins: AnalysisPlugins
) -> MetricSpec:
    provider_raw = raw.get("provider")
    if isinstance(preset, GaugePreset):
        prometheus = (provider_raw or {}).get("prometheus")
        if provider_raw is not None and (len(provider_raw) != 1 or prometheus is None):
            raise SpecError(f"{path}.provider", "a preset reads Prometheus; give only provider.prometheus")
        prometheus = prometheus or {}
        source: MetricSource = PrometheusSource(
            query=fields.check_template(prometheus.get("query") or preset.query, f"{path}.provider.prometheus.query"),
            address=fields.prometheus_address(prometheus, f"{path}.provider.prometheus"),
        )
    elif isinstance(provider_raw, Mapping):
        source = _parse_source(provider_raw, f"{path}.provider", plugins=plugins)
    else:
        raise SpecError(f"{path}.provider", f"is missing; name a provider ({plugins.provider_keys}) or a preset")
    comparison_raw = raw.get("comparison")
    if comparison_raw is None and preset is not None:
        comparison = preset.comparison
    else:
        comparison = _parse_comparison(comparison_raw or {}, f"{path}.comparison")
        # Bounds given replace the preset's; the direction stays the preset's unless given.
        if preset is not None and "direction" not in (comparison_raw or {}):
            comparison = replace(comparison, direction=preset.comparison.direction)
    return MetricSpec(
        **_history_fields(raw, path),
        source=source,
        comparison=comparison,
        min_samples=_parse_min_samples(raw.get("minSamples"), f"{path}.minSamples", preset=preset),
        rubric_items=() if preset is None else preset.rubric_items,
    )


def _parse_min_samples(raw: Mapping[str, Any] | None, path: str, *, preset: GaugePreset | None) -> MinSamples | None:
    if raw is None:
        return None if preset is None else MinSamples(count=preset.min_samples, query=preset.samples_query)
    count = fields.number(raw, "count", path, minimum=0.0)
    if count is None:
        raise SpecError(f"{path}.count", "is required: the fewest samples a measurement may rest on")
    query = raw.get("query") or (preset.samples_query if preset is not None else None)
    if not query:
        raise SpecError(f"{path}.query", "is required without a preset: PromQL counting the samples in {{window}}")
    return MinSamples(count=count, query=fields.check_template(query, f"{path}.query"))


@refusing_malformed("spec.metrics")
def parse_metrics(
    raw: Sequence[Mapping[str, Any]] | None, *, path: str, plugins: AnalysisPlugins = DEFAULT_PLUGINS
) -> tuple[AnalysisMetric, ...]:
    """A list of metrics; names must be unique."""
    metrics = tuple(parse_metric(item, path=f"{path}[{i}]", plugins=plugins) for i, item in enumerate(raw or []))
    check_unique_names(metrics, path=path)
    return metrics


def check_unique_names(metrics: Sequence[MeasuredSpec], *, path: str) -> None:
    seen: set[str] = set()
    for metric in metrics:
        if metric.name in seen:
            raise SpecError(path, f"metric name {metric.name!r} appears twice; give each metric its own name")
        seen.add(metric.name)


def _error_rate(raw: Mapping[str, Any], key: str, path: str, *, default: float) -> float:
    value = fields.number(raw, key, path)
    if value is None:
        return default
    if not 0 < value < 0.5:
        raise SpecError(f"{path}.{key}", f"{value:g} is not a chance between 0 and 0.5, e.g. 0.05")
    return value


@refusing_malformed("spec.analysis")
def parse_analysis(raw: Mapping[str, Any] | None, *, plugins: AnalysisPlugins = DEFAULT_PLUGINS) -> AnalysisSpec | None:
    """spec.analysis as a value; None when the rollout configures no analysis at all."""
    if not raw:
        return None
    path = "spec.analysis"
    policy_text = raw.get("onInconclusive", InconclusivePolicy.HOLD.value)
    if policy_text not in InconclusivePolicy._value2member_map_:
        raise SpecError(f"{path}.onInconclusive", f"{policy_text!r} is not one of hold, pause, rollback")
    promote_text = raw.get("promoteWhen", PromoteWhen.NO_EVIDENCE_OF_HARM.value)
    if promote_text not in PromoteWhen._value2member_map_:
        raise SpecError(f"{path}.promoteWhen", f"{promote_text!r} is not one of noEvidenceOfHarm, evidenceOfSafety")
    max_duration = fields.duration(raw, "maxDuration", path)
    if max_duration is not None and promote_text != PromoteWhen.EVIDENCE_OF_SAFETY:
        raise SpecError(f"{path}.maxDuration", "only extends steps with promoteWhen: evidenceOfSafety; drop it")
    templates = []
    for i, item in enumerate(raw.get("templates") or []):
        templates.append(fields.text(item, "name", f"{path}.templates[{i}]"))
    return AnalysisSpec(
        interval_seconds=_interval(raw, path),
        metrics=parse_metrics(raw.get("metrics"), path=f"{path}.metrics", plugins=plugins),
        templates=tuple(templates),
        on_inconclusive=InconclusivePolicy(policy_text),
        starting_step=fields.whole(raw, "startingStep", path, minimum=0),
        measurement_history_limit=fields.whole_or(
            raw, "measurementHistoryLimit", path, default=DEFAULT_MEASUREMENT_HISTORY_LIMIT, minimum=1
        ),
        false_rollback_rate=_error_rate(raw, "falseRollbackRate", path, default=DEFAULT_FALSE_ROLLBACK_RATE),
        false_promotion_rate=_error_rate(raw, "falsePromotionRate", path, default=DEFAULT_FALSE_PROMOTION_RATE),
        promote_when=PromoteWhen(promote_text),
        max_duration_seconds=max_duration,
    )


# ---------------------------------------------------------------------------------------------
# After the promotion (spec.postPromotion)

POST_PROMOTION_PATH = "spec.postPromotion"


@dataclass(frozen=True, kw_only=True)
class PostPromotionSpec:
    """spec.postPromotion's analysis: the promoted version alone against absolute guardrails."""

    interval_seconds: float
    """Time between two looks: postPromotion.interval, else spec.analysis.interval, else 30s."""
    false_rollback_rate: float
    """Largest chance that a promoted version within its guardrails is undone, over the whole
    duration: every metric and look together."""
    metrics: tuple[AnalysisMetric, ...]
    """Each with an absolute guardrail; a count metric's test is its guardrails alone (GuardrailTest)."""


def _guardrails_only(metric: AnalysisMetric, path: str) -> AnalysisMetric:
    """`metric` judged on the promoted version alone: a count metric by its guardrails, a number
    by comparison.max / min; SpecError naming the entry for one that can only compare with a baseline."""
    alone = "after promotion no baseline serves; give max or min"
    if isinstance(metric, MetricSpec):
        comparison = metric.comparison
        if comparison.max is None and comparison.min is None:
            raise SpecError(path, f"{alone} (comparison.max or comparison.min)")
        relative = "maxRatio" if comparison.max_ratio is not None else "maxDifference"
        if comparison.is_relative:
            raise SpecError(f"{path}.comparison.{relative}", f"{alone}, and drop {relative}")
        return metric
    test = metric.test
    if not isinstance(test, RateTest) or (test.max is None and test.min is None):
        raise SpecError(path, f"{alone} (comparison.max or comparison.min on counts or a count preset)")
    return replace(metric, test=GuardrailTest(rate=test))


@refusing_malformed(POST_PROMOTION_PATH)
def parse_post_promotion(
    raw: Mapping[str, Any], *, analysis: AnalysisSpec | None, plugins: AnalysisPlugins = DEFAULT_PLUGINS
) -> PostPromotionSpec:
    """spec.postPromotion's interval, error rate and metrics (its duration is controller.api's)."""
    path = POST_PROMOTION_PATH
    for i, item in enumerate(raw.get("metrics") or []):
        if isinstance(item, Mapping) and "tolerance" in item:
            raise SpecError(f"{path}.metrics[{i}].tolerance", "after promotion no baseline serves; give max or min")
    metrics = tuple(
        _guardrails_only(metric, f"{path}.metrics[{i}]")
        for i, metric in enumerate(parse_metrics(raw.get("metrics"), path=f"{path}.metrics", plugins=plugins))
    )
    interval = _interval(raw, path) if raw.get("interval") is not None else None
    return PostPromotionSpec(
        interval_seconds=interval or (analysis.interval_seconds if analysis is not None else DEFAULT_INTERVAL_SECONDS),
        false_rollback_rate=_error_rate(raw, "falseRollbackRate", path, default=DEFAULT_FALSE_ROLLBACK_RATE),
        metrics=metrics,
    )
