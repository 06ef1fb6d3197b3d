"""How a candidate value is compared: absolute bounds and bounds relative to the baseline."""

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
