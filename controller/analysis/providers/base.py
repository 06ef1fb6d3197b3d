"""What a metric provider plug-in is, and what every provider shares.

    ProviderPlugin
      key           the key under a metric's `provider` ("prometheus", "web", ...)
      parse_source  provider.<key> (raw JSON) and its field path -> the provider's typed
                    `MetricSource`; SpecError naming the field (checked while the spec is parsed,
                    before any weight moves)
      build         ProviderSettings -> the `MetricProvider` doing the I/O

A `MetricSource` is one metric's configuration for its provider: it renders its template
variables, says which lane of the measurement pool its reads go to, which URLs it will call (the
outbound fence checks them while Pending) and which cluster objects it reads (the checker checks
they exist, naming the field, before any traffic and before each look). The analysis code asks
the source these things and never looks at its type.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, Self, runtime_checkable

from controller.errors import PermanentError, TemporaryError
from controller.outbound import DEFAULT_POLICY, OutboundPolicy

if TYPE_CHECKING:
    from controller.analysis.providers.prometheus import PrometheusSource

LABEL_VALUE_SEPARATOR = "|"
"""Joins the values of several labels into one key of `VectorProvider.measure_by`."""


class ProviderUnavailable(TemporaryError):
    """The provider could not answer now (refused, timed out, 5xx); the next interval retries."""


class InvalidQuery(PermanentError):
    """The query or request is wrong (PromQL syntax, 4xx, not one number); a person must fix it."""


class SecretReader(Protocol):
    """Decoded data of a Secret; raises a TemporaryError or PermanentError when it cannot."""

    def __call__(self, *, namespace: str, name: str) -> Mapping[str, str]: ...


@dataclass(frozen=True, kw_only=True)
class OutboundUrl:
    """A URL a source will call, as the spec gives it (or rendered for one version)."""

    field: str
    """The field giving it, under the metric: `provider.web.url`."""
    url: str
    parsed_by_httpx: bool
    """Its host is read as httpx reads it (True) or as requests does (False), as the provider will."""
    rendered_for: str | None = None
    """The version it was rendered for, when rendering changed it (said in the error)."""


@dataclass(frozen=True, kw_only=True)
class ObjectReference:
    """A cluster object in the rollout's namespace a source reads when it measures."""

    kind: str
    """`Secret` or `ConfigMap`: the checker asks its reader of that kind whether it exists."""
    name: str
    field: str
    """The field naming it, under the metric: `provider.web.headersFrom.secretName`."""

    def missing(self, *, namespace: str, metric_field: str) -> str:
        """What the rollout waits for when the object is not there, naming the field to fix."""
        return (
            f"{metric_field}.{self.field}: {self.kind} {namespace}/{self.name} does not exist; "
            "create it or fix the name"
        )


class MetricSource(Protocol):
    """One metric's typed configuration for its provider (see the module's docstring)."""

    provider: ClassVar[str]
    """The key of the provider plug-in that parsed it and measures it."""

    def rendered(self, variables: Mapping[str, str], *, at: float | None = None) -> Self:
        """With its template variables replaced; `at` is the look's moment (Unix seconds), for a
        provider that can read the past (Prometheus), ignored by one that cannot."""
        ...

    @property
    def lane_address(self) -> str:
        """Where its reads go, which with the provider names the measurement pool's lane: a slow
        address holds its own lane only."""
        ...

    @property
    def samples_address(self) -> str | None:
        """The Prometheus that `minSamples.query` is read from: the source's own, or None for the
        controller's."""
        ...

    def outbound_urls(self, *, variables_by_version: Mapping[str, Mapping[str, str]]) -> tuple[OutboundUrl, ...]:
        """The URLs the spec gives that it will call (rendered for each version measured); none
        for a source reading the operator's own address."""
        ...

    def references(self) -> tuple[ObjectReference, ...]:
        """The cluster objects it reads when it measures."""
        ...


class MetricProvider(Protocol):
    def measure(self, *, source: MetricSource, namespace: str) -> float | None:
        """The value `source` (already rendered, of this provider's type) gives; None when there is no data."""
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


@dataclass(frozen=True, kw_only=True)
class ProviderSettings:
    prometheus_address: str
    """Base URL of the Prometheus used when a metric names none, e.g. http://127.0.0.1:9090."""
    secret_reader: SecretReader | None = None
    """Reads the Secrets that web metrics take headers from; None rejects such metrics."""
    timeout_seconds: int = 5
    """Longest wait for one Prometheus query; a thread of the measurement pool waits this long at
    most per query (controller.analysis.measurements), never a reconcile worker."""
    outbound: OutboundPolicy = DEFAULT_POLICY
    """Where web metrics and a metric's own Prometheus address may send requests (controller.outbound)."""


@dataclass(frozen=True, kw_only=True)
class ProviderPlugin:
    key: str
    """The key under a metric's `provider`."""
    parse_source: Callable[[Mapping[str, Any], str], MetricSource]
    """provider.<key> (raw JSON) and its field path -> the typed source; raises SpecError."""
    build: Callable[[ProviderSettings], MetricProvider]
    """The provider doing this plug-in's I/O."""
