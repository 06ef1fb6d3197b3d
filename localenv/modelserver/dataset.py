"""The data every model server and the traffic generator share: scikit-learn's breast-cancer set.

It ships inside scikit-learn (no download). Targets are recoded so that 1 means malignant, the
class a screening service must not miss; sklearn's own coding has 1 = benign.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np
from numpy.typing import NDArray
from sklearn.datasets import load_breast_cancer  # type: ignore[import-untyped]
from sklearn.model_selection import train_test_split  # type: ignore[import-untyped]

SPLIT_SEED = 2
"""Fixed so that every process (servers, traffic, tests) sees the same train/test rows."""
TEST_SHARE = 0.4

MEAN_RADIUS_COLUMN = 0
"""Index of 'mean radius', the feature the data slices are cut on."""

SLICE_BANDS: tuple[tuple[str, float], ...] = (
    ("small", 12.0),
    ("medium", 14.0),
    ("borderline", 15.0),
    ("large", float("inf")),
)
"""Data slices by tumour size: (name, mean radius upper bound, exclusive), in increasing order.
'borderline' (14 <= radius < 15) is the important slice: about a third malignant, the cases where
a missed diagnosis is likeliest."""

IMPORTANT_SLICE = "borderline"


@dataclass(frozen=True, kw_only=True)
class Dataset:
    """The train/test split, raw (unscaled) features in sklearn's column order."""

    feature_names: tuple[str, ...]
    """The 30 column names ('mean radius', ..., 'worst fractal dimension')."""
    train_features: NDArray[np.float64]
    """Shape (n_train, 30)."""
    train_labels: NDArray[np.int64]
    """1 = malignant, 0 = benign."""
    test_features: NDArray[np.float64]
    """Shape (n_test, 30); what the traffic generator replays."""
    test_labels: NDArray[np.int64]
    """1 = malignant, 0 = benign."""


@cache
def load_dataset() -> Dataset:
    bunch = load_breast_cancer()
    features = np.asarray(bunch.data, dtype=np.float64)
    labels = (1 - np.asarray(bunch.target)).astype(np.int64)
    train_x, test_x, train_y, test_y = train_test_split(
        features, labels, test_size=TEST_SHARE, random_state=SPLIT_SEED, stratify=labels
    )
    return Dataset(
        feature_names=tuple(str(name) for name in bunch.feature_names),
        train_features=train_x,
        train_labels=train_y,
        test_features=test_x,
        test_labels=test_y,
    )


def slice_names(features: NDArray[np.float64]) -> list[str]:
    """The slice of each row of raw features (any width whose first column is 'mean radius')."""
    return [slice_of_radius(float(radius)) for radius in features[:, MEAN_RADIUS_COLUMN]]


def slice_of_radius(mean_radius: float) -> str:
    for name, upper_bound in SLICE_BANDS:
        if mean_radius < upper_bound:
            return name
    return SLICE_BANDS[-1][0]
