"""The one rule every route write obeys, whatever the router: no write may cause an outage.

The weights a write would leave on the route must name versions of spec.versions, each on a
backend (Service and port) of its own, and sum to 100. A write that breaks the rule is refused
before it is sent, with the reason: a bug or a spec the schema let through must show up as a
refused write, not as a route that sends every request nowhere.
"""

from __future__ import annotations

from collections.abc import Mapping

from controller.api import ModelRolloutSpec
from controller.errors import UnsafeTrafficSplit

FULL_SHARE = 100
"""The managed weights are percentages: together they carry all of the route's traffic."""


def split_problem(*, spec: ModelRolloutSpec, weights: Mapping[str, int]) -> str | None:
    """Why writing `weights` (percent per version label) would be unsafe, or None when it is safe."""
    labels = {version.version for version in spec.versions}
    unknown = sorted(set(weights) - labels)
    if unknown:
        return f"{', '.join(unknown)} not in spec.versions, so no backend would take that traffic"
    out_of_range = {version: weight for version, weight in weights.items() if not 0 <= weight <= FULL_SHARE}
    if out_of_range:
        return f"weights {out_of_range} are not percentages from 0 to {FULL_SHARE}"
    total = sum(weights.values())
    if total != FULL_SHARE:
        return f"the weights sum to {total}, not {FULL_SHARE}"
    return _shared_backend(spec)


def _shared_backend(spec: ModelRolloutSpec) -> str | None:
    owner: dict[tuple[str, int], str] = {}
    for version in spec.versions:
        backend = (version.backend.service, version.backend.port)
        if backend in owner:
            return (
                f"versions {owner[backend]} and {version.version} share Service {version.backend.service} "
                f"port {version.backend.port}, so the route cannot give them different weights"
            )
        owner[backend] = version.version
    return None


def refuse_unsafe_split(*, spec: ModelRolloutSpec, weights: Mapping[str, int], route: str) -> None:
    """Raises UnsafeTrafficSplit, quoting the weights and the reason, when `weights` break the rule."""
    problem = split_problem(spec=spec, weights=weights)
    if problem is not None:
        raise UnsafeTrafficSplit(f"refused to write weights {dict(weights)} to {route}: {problem}")
