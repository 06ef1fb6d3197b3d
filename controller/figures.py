"""How numbers read, wherever people read them: the judges' reasons and detail rows in status, and
kubectl. One module, so a figure written by a check and one printed by the CLI never differ."""

from __future__ import annotations

from collections.abc import Callable, Sequence


def figure(value: object) -> str:
    """A statistic to three significant figures (e-values run to 1e+11; infinity is `inf`); `-`
    when absent."""
    return f"{value:.3g}" if isinstance(value, int | float) else "-"


def share(value: object) -> str:
    """Events per trial as a percentage: `0.938%`; `-` when absent."""
    return f"{value * 100:.3g}%" if isinstance(value, int | float) else "-"


def interval(bounds: object, shown: Callable[[object], str] = figure) -> str:
    """`[low, high]`; an upper end not bounded yet is `∞`; `-` when absent."""
    if not isinstance(bounds, Sequence) or isinstance(bounds, str) or len(bounds) != 2:
        return "-"
    low, high = bounds
    return f"[{shown(low)}, {'∞' if high is None else shown(high)}]"


def span(seconds: float) -> str:
    """A length of time the way kubectl prints ages: `45s`, `3m10s`, `25m`, `4h30m`, `14h`, `4d`."""
    seconds = max(0, int(seconds))
    minutes, hours, days = seconds // 60, seconds // 3600, seconds // 86400
    if seconds < 120:
        return f"{seconds}s"
    if minutes < 10:
        return f"{minutes}m{seconds % 60}s" if seconds % 60 else f"{minutes}m"
    if hours < 3:
        return f"{minutes}m"
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if days < 2:
        return f"{hours}h"
    return f"{days}d"
