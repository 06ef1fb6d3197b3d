"""Batched count queries: one Prometheus query per counter, window and moment serves every rollout.

Without batching each rollout asks Prometheus for its own counts (`increase()` over the time since
its segment began, per version): the load grows with the number of rollouts. With batching, the
count queries of the presets and of the model-aware checks' defaults (`presets.BATCHABLE`) are
asked once for every rollout at once,

    sum by (namespace, model, version[, le | slice | feature, le])
        ((<counter> - <counter> offset <window>) >= 0 or <counter>)

evaluated at a moment on a common grid (`time=`), and each rollout picks its (model, version) out
of the answer (summed over namespaces: the presets select series by model and version only). So
the queries Prometheus sees grow with the number of distinct counters, windows and moments, not
with the number of rollouts. Each query selects only the models of the rollouts it serves
(`<counter>{model=~"iris|fraud"}`, gathered by the measurement pool for a fraction of a second,
controller.analysis.measurements): the series it returns, and Prometheus's work, are those of
the rollouts looking at that moment, never the whole fleet's.

**A common window.** Rollouts' segments begin whenever their steps did, so "the time since the
segment began" is different for each. A batched look reads only what is new since the metric's
previous look instead (the window is `now - previous look`), and adds it to the segment's counts
in status (controller.analysis.evidence), which thus still hold everything since the segment
began. Looks are taken on a grid (`grid_ms`: multiples of a period that divides the interval, 5 s
by default), so rollouts with the same interval looking on schedule all ask for the same window
at the same moment, and share one query. A segment's first look reads from the first grid moment
at or after the segment began (at most one period of its traffic, a few seconds, is not counted).
A look that comes late (a restarted controller, a Prometheus slower than the interval) is taken at
the latest moment a whole number of intervals after it was due (`latest_on_phase`) and reads the
whole time since the previous look: the rollouts that looked together stay together, and keep
sharing their queries.

**What a look counts** is, per series, the counter's value now minus its value one window ago:
two instant readings, so any scrape interval works (`increase()` over a window as short as one
interval would need two scrapes inside it) and there is no extrapolation.

**Counter resets** are handled per series, in the query: a series whose value went down since the
window began restarted (a model server restarted), and counts its value now, the growth since the
restart (`>= 0 or <counter>`); a series that did not exist when the window began (a new pod, a
version's first request) counts its whole value. The sums never go down and nothing is counted
twice. Lost, as with `increase()`: what a server counted between its last scrape and its restart;
and, if a restarted counter grows past its old value within one window (a series younger than the
window's traffic), the part of its growth up to the old value.

Per-rollout custom queries (`counts`, `query` overrides that differ from the defaults, one-number
metrics, web metrics) are not batched: each is asked for its rollout on the measurement pool.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime

from controller.analysis.fields import promql_string
from controller.analysis.presets import Counter, CounterSum
from controller.analysis.providers.base import LABEL_VALUE_SEPARATOR
from controller.analysis.spec import format_window

DEFAULT_BATCH_PERIOD_SECONDS = 1.0
"""The grid batched looks are taken on: at most this far apart (a period dividing the interval)."""
IDENTITY_LABELS = ("namespace", "model", "version")
"""What a batched query is summed by, besides the counter's own labels."""

Index = dict[tuple[str, str], dict[str | None, float]]
"""(model, version) -> {label value: count} (label value None for a counter that is one number
per version, `a|b` for two labels), summed over namespaces."""


def grid_ms(interval_seconds: float, batch_period_seconds: float) -> int:
    """The grid period in milliseconds for an interval: the interval divided into as few equal parts
    as keep each within the batch period (30 s -> 5 s, 7 s -> 3.5 s, 2 s -> 2 s)."""
    interval = max(round(interval_seconds * 1000), 1)
    period = max(round(batch_period_seconds * 1000), 1)
    return max(interval // math.ceil(interval / period), 1)


def _ms(moment: datetime) -> int:
    return round(moment.timestamp() * 1000)


def _moment(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def tick_at_or_after(moment: datetime, period_ms: int) -> datetime:
    return _moment(-(-_ms(moment) // period_ms) * period_ms)


def tick_at_or_before(moment: datetime, period_ms: int) -> datetime:
    return _moment(_ms(moment) // period_ms * period_ms)


def latest_on_phase(due: datetime, now: datetime, *, interval_seconds: float, period_ms: int) -> datetime:
    """When a look due at `due` is taken at `now`: the latest `due + k * interval` not after `now`
    (k >= 0, the interval rounded to the grid). A late look keeps its phase on the grid, so that
    rollouts that looked together keep sharing their queries however late their answers come."""
    step = max(round(interval_seconds * 1000 / period_ms), 1) * period_ms
    late = max(_ms(now) - _ms(due), 0)
    return _moment(_ms(due) + late // step * step)


def seconds_between(start: datetime, end: datetime) -> float:
    """`end - start` in seconds, to the millisecond (status keeps times to the millisecond)."""
    return (_ms(end) - _ms(start)) / 1000


def labels_of(counts: CounterSum) -> tuple[str, ...]:
    return (*IDENTITY_LABELS, *counts.by)


def batch_query(counter: Counter, *, by: tuple[str, ...], window_seconds: float, models: Iterable[str]) -> str:
    """The PromQL asking `counter`'s growth over the window for the rollouts of `models` at once,
    counting a series that restarted (or appeared) in the window from 0 (the module docstring)."""
    grouping = ", ".join((*IDENTITY_LABELS, *by))
    window = format_window(round(window_seconds, 3))
    name = f'{counter.name}{{model=~"{promql_string(_regex_of(sorted(set(models))))}"}}'
    return f"sum by ({grouping}) (({name} - {name} offset {window}) >= 0 or {name})"


def _regex_of(values: Sequence[str]) -> str:
    """An RE2 alternation matching exactly `values` (Prometheus anchors label regexes)."""
    return "|".join(re.sub(r"([\\.+*?()|\[\]{}^$])", r"\\\1", value) for value in values)


def index_series(series: Mapping[tuple[str, ...], float], *, by: tuple[str, ...]) -> Index:
    """A batched answer ({(namespace, model, version, *by): value}) keyed for the rollouts."""
    index: Index = {}
    for labels, value in series.items():
        if not math.isfinite(value):
            continue
        _, model, version, *rest = labels
        key = LABEL_VALUE_SEPARATOR.join(rest) if by else None
        numbers = index.setdefault((model, version), {})
        numbers[key] = numbers.get(key, 0.0) + max(value, 0.0)
    return index


def counts_of(counts: CounterSum, indexes: Sequence[Index], *, model: str, version: str) -> dict[str | None, float]:
    """One version's numbers of `counts` from the answers of its counters (in order): their sum.
    A counter that may be missing (`or_zero`) counts 0 without series; any other leaves the whole
    sum without data ({}), as PromQL's `a + b` has no series when `a` has none."""
    total: dict[str | None, float] = {}
    for counter, index in zip(counts.counters, indexes, strict=True):
        numbers = index.get((model, version))
        if numbers is None:
            if counter.or_zero:
                numbers = {} if counts.by else {None: 0.0}
            else:
                return {}
        for key, value in numbers.items():
            total[key] = total.get(key, 0.0) + value
    return total
