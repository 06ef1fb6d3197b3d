"""How a candidate value is compared: absolute bounds, bounds relative to the baseline, tolerances."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Direction(StrEnum):
    """Which way a value moves when the model gets worse; relative bounds count in that direction."""

    HIGHER_IS_WORSE = "higher-is-worse"
    """Error rates, latencies."""
    LOWER_IS_WORSE = "lower-is-worse"
    """Accuracy, throughput."""


@dataclass(frozen=True, kw_only=True)
class Comparison:
    """Bounds a candidate value must keep; every bound given must hold."""

    direction: Direction = Direction.HIGHER_IS_WORSE
    """Which way is worse, for the relative bounds."""
    max: float | None = None
    """Absolute: the candidate value may be at most this."""
    min: float | None = None
    """Absolute: the candidate value must be at least this."""
    max_ratio: float | None = None
    """Relative: how many times worse than the baseline the candidate may be (1.2 = 20 % worse)."""
    max_difference: float | None = None
    """Relative: by how much (in the metric's unit) the candidate may be worse than the baseline."""

    @property
    def is_relative(self) -> bool:
        """Whether judging needs the baseline's value."""
        return self.max_ratio is not None or self.max_difference is not None

    @property
    def has_bounds(self) -> bool:
        return self.is_relative or self.max is not None or self.min is not None


@dataclass(frozen=True, kw_only=True)
class Tolerance:
    """How much worse than the baseline a candidate may be before it counts as harmful.

    On a rate of bad events (errors per request, wrong answers per label): `relative` 0.1 lets the
    candidate's rate be 1.1 times the baseline's; `absolute` 0.002 lets it be 0.002 higher.
    """

    relative: float = 0.0
    absolute: float = 0.0

    def null_ratio(self, *, baseline_rate: float) -> float:
        """The largest ratio of bad-event rates (candidate / baseline) still within tolerance.

        An absolute tolerance becomes a ratio through the baseline's rate; pass an upper
        confidence bound of it, which can only widen the tolerance (no false rollback from it)."""
        ratio = 1.0 + self.relative
        if self.absolute > 0:
            ratio = max(ratio, 1.0 + self.absolute / max(baseline_rate, 1e-12))
        return ratio

    def __str__(self) -> str:
        parts = []
        if self.relative or not self.absolute:
            parts.append(f"{self.relative * 100:g}%")
        if self.absolute:
            parts.append(f"{self.absolute:g}")
        return " or ".join(parts)
