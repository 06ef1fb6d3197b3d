"""What every provider shares: the protocol, its two error types, the Secret reader it may get."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable

from controller.analysis.spec import MetricSource, PrometheusSource
from controller.errors import PermanentError, TemporaryError

LABEL_VALUE_SEPARATOR = "|"
"""Joins the values of several labels into one key of `VectorProvider.measure_by`."""


class ProviderUnavailable(TemporaryError):
    """The provider could not answer now (refused, timed out, 5xx); the next interval retries."""


class InvalidQuery(PermanentError):
    """The query or request is wrong (PromQL syntax, 4xx, not one number); a person must fix it."""


class SecretReader(Protocol):
    """Decoded data of a Secret; raises a TemporaryError or PermanentError when it cannot."""

    def __call__(self, *, namespace: str, name: str) -> Mapping[str, str]: ...


class MetricProvider(Protocol):
    def measure(self, *, source: MetricSource, namespace: str) -> float | None:
        """The value `source` (already rendered) gives; None when there is no data."""
        ...


@runtime_checkable
class VectorProvider(Protocol):
    """A provider that can also give several numbers at once, one per value of a label."""

    def measure_by(self, *, source: PrometheusSource, label: str) -> dict[str, float]:
        """{value of `label`: number} from the series `source` (already rendered) returns; {} for no data.
        Several labels, comma-separated, key each number by their values joined by
        LABEL_VALUE_SEPARATOR."""
        ...


@runtime_checkable
class SeriesProvider(Protocol):
    """A provider that can answer one query for every rollout at once (a batched query)."""

    def measure_series(self, *, source: PrometheusSource, labels: tuple[str, ...]) -> dict[tuple[str, ...], float]:
        """{values of `labels`: number} for every series `source` returns; a series without one of
        the labels has "" for it (Prometheus drops empty labels). {} for no data."""
        ...
