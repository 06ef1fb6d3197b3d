"""The model variants the local servers can serve, each a real scikit-learn logistic regression
trained at start-up on the breast-cancer data (well under a second).

Scoring is done here with numpy from the fitted coefficients rather than through sklearn's
`predict_proba`, so that the bugs some variants carry (an unguarded division, a skipped scaler)
behave as they would in a hand-written serving path: sklearn would reject a NaN feature, a
serving path usually does not.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np
from numpy.typing import NDArray
from sklearn.linear_model import LogisticRegression  # type: ignore[import-untyped]

from localenv.modelserver.dataset import Dataset, load_dataset, slice_names


class Variant(StrEnum):
    GOOD = "good"
    """The baseline (v1): the ten 'mean' measurements. Test accuracy about 0.92."""
    BETTER = "better"
    """A good candidate (v2): all 30 measurements. Accuracy about 0.96, prediction histogram close
    to GOOD's (PSI about 0.04)."""
    UNSCALED = "unscaled"
    """Training/serving skew: trained on standardised features, served without the scaler. Nearly
    every prediction is 'malignant' and every row breaks the input invariants."""
    SLICE_REGRESSION = "slice-regression"
    """BETTER with per-slice decision thresholds, the 'borderline' entry written in percent (50)
    instead of a fraction (0.5): never flags a borderline tumour. Better than GOOD on average
    (about 0.94) but worse on the 'borderline' slice (about 0.68 against 0.86)."""
    NAN_OUTPUTS = "nan-outputs"
    """Adds the feature 'mean concave points / mean concavity'; training dropped the rows where it
    is 0/0, serving does not guard it, so tumours without concavity (about 2 %) score NaN."""
    NEW_CONTRACT = "new-contract"
    """GOOD re-exported with another signature: input tensor 'input_1', FP32, shape [-1, 10]."""
    DRIFTED = "drifted"
    """BETTER with a prior-shift correction for a population of much higher prevalence (+2 on the
    log-odds): the prediction histogram moves up (PSI against GOOD about 0.38)."""


@dataclass(frozen=True, kw_only=True)
class TensorSpec:
    """One tensor of the Open Inference Protocol metadata."""

    name: str
    datatype: str
    """An OIP datatype: FP64, FP32, INT64, ..."""
    shape: tuple[int, ...]
    """-1 marks a variable dimension."""

    def as_json(self) -> dict[str, object]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


DEFAULT_MODEL_NAME = "breast-cancer"

STANDARD_INPUT = TensorSpec(name="features", datatype="FP64", shape=(-1, 30))
"""All 30 measurements in sklearn's column order, one row per tumour."""
OUTPUTS = (
    TensorSpec(name="label", datatype="INT64", shape=(-1,)),
    TensorSpec(name="score", datatype="FP64", shape=(-1,)),
)
"""'label': 1 = malignant; 'score': the probability of malignant."""

DEFAULT_THRESHOLD = 0.5
INVARIANT_MARGIN = 0.5
"""A model feature breaks the input invariants when it is non-finite or further outside the range
seen in training than this share of that range."""
MEAN_CONCAVITY, MEAN_CONCAVE_POINTS = 6, 7
"""Input columns of the ratio feature NAN_OUTPUTS adds (the same in both input contracts)."""
FIRST_TEN = tuple(range(10))
ALL_THIRTY = tuple(range(30))


PROFILE_BINS = 10
"""Training profile: each model feature binned at its training deciles."""
PROFILE_EDGE_DIGITS = 4
"""Edges rounded so that the profile and the `le` labels read the same."""
RATIO_FEATURE = "mean concave points / mean concavity"


@dataclass(frozen=True, kw_only=True)
class FeatureBins:
    """One model feature of the training profile (docs/checks/training-skew.md)."""

    name: str
    edges: tuple[float, ...]
    """Upper bounds of every bin but the last (inclusive, like `le`)."""
    frequencies: tuple[float, ...]
    """Share of training rows per bin."""

    def as_json(self) -> dict[str, object]:
        return {"name": self.name, "edges": list(self.edges), "frequencies": list(self.frequencies)}


def feature_bins(name: str, values: NDArray[np.float64]) -> FeatureBins:
    """Deciles of the training values as edges, and the share of training rows in each bin."""
    quantiles = np.quantile(values, np.linspace(0, 1, PROFILE_BINS + 1)[1:-1])
    edges = np.unique(np.round(quantiles, PROFILE_EDGE_DIGITS))
    counts = np.bincount(np.searchsorted(edges, values, side="left"), minlength=len(edges) + 1)
    return FeatureBins(
        name=name, edges=tuple(float(e) for e in edges), frequencies=tuple(float(c) for c in counts / counts.sum())
    )


@dataclass(frozen=True, kw_only=True)
class Prediction:
    """What a model says about a batch of rows."""

    labels: NDArray[np.int64]
    scores: NDArray[np.float64]
    invariant_violations: NDArray[np.bool_]
    """Per row: some feature the model read was non-finite or out of its training range."""
    features: NDArray[np.float64]
    """What the estimator read, per row and model feature, after the serving path's transforms."""


@dataclass(frozen=True, kw_only=True)
class ServedModel:
    """A trained model plus the serving path around it (bugs included)."""

    variant: Variant
    input_spec: TensorSpec
    model_columns: tuple[int, ...]
    """Columns of the input tensor the model reads."""
    adds_concavity_ratio: bool
    standardizes: bool
    """False reproduces the skipped-scaler bug."""
    feature_mean: NDArray[np.float64]
    feature_scale: NDArray[np.float64]
    coefficients: NDArray[np.float64]
    intercept: float
    log_odds_offset: float = 0.0
    slice_thresholds: Mapping[str, float] = field(default_factory=dict)
    """Decision threshold per data slice; DEFAULT_THRESHOLD for the others."""
    training_low: NDArray[np.float64]
    """Per model feature, the smallest value the estimator was fitted on (after standardising)."""
    training_high: NDArray[np.float64]
    """Per model feature, the largest value the estimator was fitted on."""
    profile: tuple[FeatureBins, ...]
    """Per model feature, how the training rows the estimator was fitted on are distributed."""

    def predict(self, rows: NDArray[np.float64]) -> Prediction:
        """`rows`: shape (n, width of the input tensor), raw measurements."""
        features = _model_features(rows, self.model_columns, adds_ratio=self.adds_concavity_ratio)
        if self.standardizes:
            features = (features - self.feature_mean) / self.feature_scale
        with np.errstate(invalid="ignore", over="ignore"):
            log_odds = features @ self.coefficients + self.intercept + self.log_odds_offset
            scores = 1.0 / (1.0 + np.exp(-log_odds))
        thresholds = np.array([self.slice_thresholds.get(name, DEFAULT_THRESHOLD) for name in slice_names(rows)])
        margin = INVARIANT_MARGIN * (self.training_high - self.training_low)
        with np.errstate(invalid="ignore"):
            outside = (features < self.training_low - margin) | (features > self.training_high + margin)
        return Prediction(
            labels=(scores >= thresholds).astype(np.int64),
            scores=scores,
            invariant_violations=np.asarray((outside | ~np.isfinite(features)).any(axis=1), dtype=np.bool_),
            features=features,
        )


def _model_features(rows: NDArray[np.float64], columns: tuple[int, ...], *, adds_ratio: bool) -> NDArray[np.float64]:
    selected = rows[:, list(columns)]
    if not adds_ratio:
        return selected
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = rows[:, MEAN_CONCAVE_POINTS] / rows[:, MEAN_CONCAVITY]
    return np.column_stack([selected, ratio])


@dataclass(frozen=True, kw_only=True)
class _Recipe:
    input_spec: TensorSpec = STANDARD_INPUT
    input_columns: tuple[int, ...] = ALL_THIRTY
    """Dataset columns the input tensor carries, in order."""
    model_columns: tuple[int, ...] = ALL_THIRTY
    adds_concavity_ratio: bool = False
    regularisation: float = 0.1
    """LogisticRegression's C; 0.1 keeps the 30-feature model's scores as spread as GOOD's."""
    standardizes: bool = True
    log_odds_offset: float = 0.0
    slice_thresholds: Mapping[str, float] = field(default_factory=dict)


_RECIPES: Mapping[Variant, _Recipe] = {
    Variant.GOOD: _Recipe(model_columns=FIRST_TEN, regularisation=1.0),
    Variant.BETTER: _Recipe(),
    Variant.UNSCALED: _Recipe(standardizes=False),
    Variant.SLICE_REGRESSION: _Recipe(slice_thresholds={"borderline": 50.0}),
    Variant.NAN_OUTPUTS: _Recipe(adds_concavity_ratio=True),
    Variant.NEW_CONTRACT: _Recipe(
        input_spec=TensorSpec(name="input_1", datatype="FP32", shape=(-1, 10)),
        input_columns=FIRST_TEN,
        model_columns=FIRST_TEN,
        regularisation=1.0,
    ),
    Variant.DRIFTED: _Recipe(log_odds_offset=2.0),
}


def train(variant: Variant) -> ServedModel:
    """Fit the variant's model on the training split (deterministic)."""
    recipe = _RECIPES[variant]
    dataset = load_dataset()
    rows = dataset.train_features[:, list(recipe.input_columns)]
    features = _model_features(rows, recipe.model_columns, adds_ratio=recipe.adds_concavity_ratio)
    # Training drops incomplete rows (0/0 ratios); the serving path of NAN_OUTPUTS forgets to.
    complete = np.isfinite(features).all(axis=1)
    features, labels = features[complete], dataset.train_labels[complete]
    mean, scale = features.mean(axis=0), features.std(axis=0)
    standardized = (features - mean) / scale
    regression = LogisticRegression(C=recipe.regularisation, max_iter=2000).fit(standardized, labels)
    return ServedModel(
        variant=variant,
        input_spec=recipe.input_spec,
        model_columns=recipe.model_columns,
        adds_concavity_ratio=recipe.adds_concavity_ratio,
        standardizes=recipe.standardizes,
        feature_mean=mean,
        feature_scale=scale,
        coefficients=np.asarray(regression.coef_[0], dtype=np.float64),
        intercept=float(regression.intercept_[0]),
        log_odds_offset=recipe.log_odds_offset,
        slice_thresholds=recipe.slice_thresholds,
        # What the estimator was fitted on: a serving path that skips the scaler falls outside it.
        training_low=standardized.min(axis=0),
        training_high=standardized.max(axis=0),
        profile=tuple(feature_bins(name, standardized[:, i]) for i, name in enumerate(_feature_names(dataset, recipe))),
    )


def _feature_names(dataset: Dataset, recipe: _Recipe) -> list[str]:
    """The model features' names, in the order the estimator reads them."""
    names = [dataset.feature_names[recipe.input_columns[c]] for c in recipe.model_columns]
    return [*names, RATIO_FEATURE] if recipe.adds_concavity_ratio else names
