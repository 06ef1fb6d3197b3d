"""The training reference profile a training-skew check compares live inputs with.

A ConfigMap key (default `profile.json`) holds, per input feature, the bin edges the model server
buckets that feature at and the share of training rows in each bin (docs/checks/training-skew.md):

    {"features": [{"name": "mean radius", "edges": [-1.1, -0.6, ...], "frequencies": [0.1, ...]}]}

`edges` are the upper bounds (inclusive, like Prometheus' `le`) of every bin but the last, which
is open (`+Inf`); `frequencies` has one share per bin, adding up to 1.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass

from controller.errors import PermanentError

FREQUENCY_SUM_SLACK = 1e-6


class ProfileError(PermanentError):
    """The profile is missing or malformed; the message names the ConfigMap, key and feature."""


@dataclass(frozen=True, kw_only=True)
class FeatureProfile:
    name: str
    edges: tuple[float, ...]
    """Upper bounds of every bin but the last, ascending."""
    frequencies: tuple[float, ...]
    """Share of training rows per bin, len(edges) + 1 of them."""


TrainingProfile = Mapping[str, FeatureProfile]
"""Feature name -> its profile."""


def parse_profile(text: str, *, where: str) -> TrainingProfile:
    """The profile in `text`; `where` (e.g. `ConfigMap ml/profile key profile.json`) starts every error."""
    try:
        raw = json.loads(text)
    except ValueError as error:
        raise ProfileError(f"{where}: not JSON ({error}); see docs/checks/training-skew.md") from error
    items = raw.get("features") if isinstance(raw, Mapping) else None
    if not isinstance(items, list) or not items:
        raise ProfileError(f"{where}: give features: [{{name, edges, frequencies}}, ...]")
    profile: dict[str, FeatureProfile] = {}
    for i, item in enumerate(items):
        feature = _feature(item, f"{where} features[{i}]")
        if feature.name in profile:
            raise ProfileError(f"{where} features[{i}].name: {feature.name!r} appears twice")
        profile[feature.name] = feature
    return profile


def _feature(item: object, where: str) -> FeatureProfile:
    if not isinstance(item, Mapping) or not isinstance(item.get("name"), str) or not item["name"]:
        raise ProfileError(f"{where}.name: is required (the feature's name, as the model server labels it)")
    edges, frequencies = item.get("edges"), item.get("frequencies")
    if not _numbers(edges) or not _numbers(frequencies):
        raise ProfileError(f"{where}: edges and frequencies are lists of numbers")
    assert isinstance(edges, list) and isinstance(frequencies, list)
    if any(b <= a for a, b in itertools.pairwise(edges)):
        raise ProfileError(f"{where}.edges: must increase")
    if len(frequencies) != len(edges) + 1:
        raise ProfileError(
            f"{where}.frequencies: {len(frequencies)} shares for {len(edges)} edges; give one per bin, "
            f"{len(edges) + 1} (the last bin is above the last edge)"
        )
    if any(f < 0 for f in frequencies) or abs(sum(frequencies) - 1) > FREQUENCY_SUM_SLACK:
        raise ProfileError(f"{where}.frequencies: shares of training rows, at least 0 and adding up to 1")
    return FeatureProfile(
        name=item["name"], edges=tuple(float(e) for e in edges), frequencies=tuple(float(f) for f in frequencies)
    )


def _numbers(value: object) -> bool:
    return isinstance(value, list) and all(
        isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in value
    )
