"""The model-metrics convention (docs/model-metrics.md), exported with prometheus_client."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
from numpy.typing import NDArray
from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector

from localenv.modelserver.variants import FeatureBins

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
"""Seconds; loopback inference takes a few milliseconds, a real one up to seconds."""
SCORE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
"""Ten equal-width bins over [0, 1] (plus +Inf): the bins prediction-drift statistics compare."""


class InputFeatureHistograms(Collector):
    """`model_input_feature_bucket{model, version, feature, le}`: what the estimator read, per
    feature, binned at the training profile's edges. A histogram family whose buckets differ per
    feature, which prometheus_client's Histogram (one set of buckets per metric) cannot express."""

    def __init__(self, *, model_name: str, version: str, profile: Sequence[FeatureBins]) -> None:
        self._labels = (model_name, version)
        self._profile = tuple(profile)
        self._counts = [np.zeros(len(bins.edges) + 1, dtype=np.int64) for bins in self._profile]
        self._sums = [0.0 for _ in self._profile]

    def observe(self, features: NDArray[np.float64]) -> None:
        """`features`: rows x model features, in the profile's order; non-finite values are left
        out (they are counted as invariant violations)."""
        for i, bins in enumerate(self._profile):
            column = features[:, i]
            finite = column[np.isfinite(column)]
            np.add.at(self._counts[i], np.searchsorted(bins.edges, finite, side="left"), 1)
            self._sums[i] += float(finite.sum())

    def collect(self) -> Iterator[HistogramMetricFamily]:
        family = HistogramMetricFamily(
            "model_input_feature",
            "Model input features as the estimator read them, binned at the training profile's edges.",
            labels=("model", "version", "feature"),
        )
        for bins, counts, total in zip(self._profile, self._counts, self._sums, strict=True):
            cumulative = np.cumsum(counts)
            buckets = [(repr(edge), float(c)) for edge, c in zip(bins.edges, cumulative, strict=False)]
            family.add_metric([*self._labels, bins.name], [*buckets, ("+Inf", float(cumulative[-1]))], total)
        yield family


class ModelMetrics:
    """The metrics of one served model version, on a registry of its own."""

    def __init__(self, *, model_name: str, version: str, profile: Sequence[FeatureBins] = ()) -> None:
        self.registry = CollectorRegistry()
        self.input_features = InputFeatureHistograms(model_name=model_name, version=version, profile=profile)
        self.registry.register(self.input_features)
        # Resident memory and CPU of the server: the sandbox has no cAdvisor to report them.
        ProcessCollector(registry=self.registry)
        self.model_name = model_name
        self.version = version
        labels = ("model", "version")
        self._requests = Counter(
            "model_requests",
            "Inference requests by HTTP status code.",
            (*labels, "code"),
            registry=self.registry,
        )
        self._errors = Counter(
            "model_request_errors",
            "Inference requests answered with a status >= 400.",
            labels,
            registry=self.registry,
        )
        self._duration = Histogram(
            "model_request_duration_seconds",
            "Time to answer an inference request.",
            labels,
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._predictions = Histogram(
            "model_predictions",
            "Predicted scores (probability of the positive class), one per row.",
            labels,
            buckets=SCORE_BUCKETS,
            registry=self.registry,
        )
        self._nonfinite = Counter(
            "model_nonfinite_outputs",
            "Predicted rows whose score was NaN or infinite.",
            labels,
            registry=self.registry,
        )
        self._violations = Counter(
            "model_input_invariant_violations",
            "Input rows with a feature non-finite or outside the range seen in training.",
            labels,
            registry=self.registry,
        )
        self._feedback = Counter(
            "model_feedback",
            "Labelled feedback received, by data slice.",
            (*labels, "slice"),
            registry=self.registry,
        )
        self._feedback_correct = Counter(
            "model_feedback_correct",
            "Labelled feedback whose label equals the prediction.",
            (*labels, "slice"),
            registry=self.registry,
        )
        # Children created up front so that every series exists (at 0) from the first scrape:
        # rate() and increase() need a starting sample.
        for child in (self._errors, self._duration, self._predictions, self._nonfinite, self._violations):
            child.labels(model_name, version)

    def record_request(self, *, status_code: int, seconds: float) -> None:
        self._requests.labels(self.model_name, self.version, str(status_code)).inc()
        self._duration.labels(self.model_name, self.version).observe(seconds)
        if status_code >= 400:
            self._errors.labels(self.model_name, self.version).inc()

    def record_rows(
        self, *, scores: list[float], invariant_violations: int, features: NDArray[np.float64] | None = None
    ) -> None:
        """Scores (and model features) of one request's rows; non-finite scores are counted, never
        put in the histogram (a NaN observation would turn the histogram's _sum into NaN for good)."""
        if features is not None:
            self.input_features.observe(features)
        predictions = self._predictions.labels(self.model_name, self.version)
        nonfinite = 0
        for score in scores:
            if math.isfinite(score):
                predictions.observe(score)
            else:
                nonfinite += 1
        self._nonfinite.labels(self.model_name, self.version).inc(nonfinite)
        self._violations.labels(self.model_name, self.version).inc(invariant_violations)

    def record_feedback(self, *, version: str, data_slice: str, correct: bool) -> None:
        self._feedback.labels(self.model_name, version, data_slice).inc()
        # Touched even when wrong, so the correct series exists (at 0) beside the total.
        correct_counter = self._feedback_correct.labels(self.model_name, version, data_slice)
        if correct:
            correct_counter.inc()
