"""The one rule every route write obeys, whatever the router: no write may cause an outage.

The weights a write would leave on the route must name versions of spec.versions, each on a
backend (Service and port) of its own, and sum to 100. (Versions without a backend, KServe's
revisions, are told apart by their names.) A write that breaks the rule is refused
before it is sent, with the reason: a bug or a spec the schema let through must show up as a
refused write, not as a route that sends every request nowhere.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Mapping

from controller.api import ModelRolloutSpec
from controller.errors import RouteWriteLoop, UnsafeTrafficSplit

FULL_SHARE = 100
"""The managed weights are percentages: together they carry all of the route's traffic."""


def split_problem(*, spec: ModelRolloutSpec, weights: Mapping[str, int]) -> str | None:
    """Why writing `weights` (percent per version label) would be unsafe, or None when it is safe."""
    labels = [version.version for version in spec.versions]
    return percentages_problem(
        labels=labels, weights=weights, unknown_means=", so no backend would take that traffic"
    ) or (_shared_backend(spec))


def percentages_problem(*, labels: Collection[str], weights: Mapping[str, int], unknown_means: str = "") -> str | None:
    """Why `weights` are not percentages of known versions summing to 100, or None."""
    unknown = sorted(set(weights) - set(labels))
    if unknown:
        return f"{', '.join(unknown)} not in spec.versions{unknown_means}"
    out_of_range = {version: weight for version, weight in weights.items() if not 0 <= weight <= FULL_SHARE}
    if out_of_range:
        return f"weights {out_of_range} are not percentages from 0 to {FULL_SHARE}"
    total = sum(weights.values())
    if total != FULL_SHARE:
        return f"the weights sum to {total}, not {FULL_SHARE}"
    return None


def _shared_backend(spec: ModelRolloutSpec) -> str | None:
    owner: dict[tuple[str, int], str] = {}
    for version in spec.versions:
        if version.backend is None:
            continue  # a KServe revision: no Service, and the router tells revisions apart by name
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


ROUTE_WRITE_LIMIT = 120
"""Writes one route may take within ROUTE_WRITE_WINDOW_SECONDS. A rollout writes once per step
and a release ships in a few steps (twenty versions shipped back to back write 40 times), so only
a fight reaches this: another tool restoring its own weights writes many times a second."""
ROUTE_WRITE_WINDOW_SECONDS = 60.0
ROUTE_WRITE_LOOP_DELAY_SECONDS = 30.0
"""How long a rollout stops writing a route found in a write loop before it tries again."""
ROUTE_WRITE_KEYS_LIMIT = 10_000
"""Routes remembered before those with no write in the window are forgotten."""


class RouteWriteBudget:
    """The backstop against write storms: writes per route within a sliding window, shared by
    every worker of the process (so two rollouts fighting over one route are stopped too)."""

    def __init__(
        self,
        *,
        limit: int = ROUTE_WRITE_LIMIT,
        window_seconds: float = ROUTE_WRITE_WINDOW_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.window_seconds = window_seconds
        self.clock = clock
        self._writes: dict[tuple[str, ...], deque[float]] = {}
        self._lock = threading.Lock()

    def spend(self, route: tuple[str, ...], *, label: str) -> None:
        """Counts one write to `route`; raises RouteWriteLoop when the budget is spent."""
        now = self.clock()
        with self._lock:
            writes = self._writes.setdefault(route, deque())
            while writes and writes[0] <= now - self.window_seconds:
                writes.popleft()
            if len(writes) >= self.limit:
                raise RouteWriteLoop(
                    f"{len(writes)} writes to {label} within {self.window_seconds:.0f}s: something else keeps "
                    "changing its weights (see the TrafficDrift Events); writes stop for "
                    f"{ROUTE_WRITE_LOOP_DELAY_SECONDS:.0f}s",
                    delay=ROUTE_WRITE_LOOP_DELAY_SECONDS,
                )
            writes.append(now)
            if len(self._writes) > ROUTE_WRITE_KEYS_LIMIT:
                self._forget_idle(now)

    def _forget_idle(self, now: float) -> None:
        idle = [key for key, writes in self._writes.items() if not writes or writes[-1] <= now - self.window_seconds]
        for key in idle:
            del self._writes[key]
