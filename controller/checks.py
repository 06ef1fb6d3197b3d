"""The interface between the rollout state machine and everything that judges the candidate.

Two stages judge a candidate:

* pre-traffic gates (contract, golden set, ...) run before the first step that sends the
  candidate any traffic; the rollout does not shift traffic until they pass;
* analysis (metrics from Prometheus, web, ...) runs while traffic is shared, in the background
  and in `analyze` steps.

Each stage is a `Checker`: a callable doing its own I/O at the edge and returning a
`CheckOutcome`, which the pure planner (`controller.plan`) turns into a decision. Before any
traffic moves, each checker also validates its part of the spec (`Checker.validate`). Checkers keep
what they need between passes in their own status field (`CheckOutcome.status_fields`), so a
restarted controller resumes from the stored status.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

from controller.api import ModelRolloutSpec, ModelRolloutStatus

ReadConfigMap = Callable[[str, str], Mapping[str, str] | None]
"""`read_configmap(namespace, name)`: the ConfigMap's data, or None when it does not exist; the
one cluster read checkers share (golden sets, training profiles)."""


class Verdict(StrEnum):
    SUCCESSFUL = "Successful"
    """Enough evidence, and all of it passes."""
    FAILED = "Failed"
    """The candidate is worse beyond a limit: roll back."""
    INCONCLUSIVE = "Inconclusive"
    """No data, too few samples, or a provider error beyond the limits: neither pass nor fail."""
    RUNNING = "Running"
    """Not done yet (no measurement due, window not over); nothing against the candidate so far."""


class InconclusivePolicy(StrEnum):
    """What an Inconclusive outcome does to the rollout. It never promotes."""

    HOLD = "hold"
    """Stay at the current weight and keep measuring (the default)."""
    PAUSE = "pause"
    """Phase Paused until a person resumes, promotes or aborts."""
    ROLLBACK = "rollback"
    """Treat it as a failure."""


class Stage(StrEnum):
    PRE_TRAFFIC = "pre-traffic"
    ANALYSIS = "analysis"


@dataclass(frozen=True, kw_only=True)
class StepWindow:
    """The `analyze` step in progress, for checkers that judge a fixed window."""

    index: int
    started_at: datetime
    seconds: float
    templates: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class CheckContext:
    namespace: str
    name: str
    spec: ModelRolloutSpec
    status: ModelRolloutStatus
    stable_version: str
    """The version traffic returns to; the baseline every comparison is made against."""
    now: datetime
    current_weight: int
    step: StepWindow | None = None


@dataclass(frozen=True, kw_only=True)
class RubricEntry:
    """One ML Test Score item, the check that verifies it, and how that check came out."""

    item: str
    """The rubric's id, e.g. `Monitor 7`."""
    check: str
    """What verified it: a metric's name, or a stage such as `gates`."""
    verdict: Verdict


@dataclass(frozen=True, kw_only=True)
class CheckOutcome:
    verdict: Verdict
    message: str = ""
    """For people: which check decided and by how much (names the metric or slice and both values)."""
    requeue_after: float | None = None
    """Seconds until this checker wants to run again (next measurement due)."""
    on_inconclusive: InconclusivePolicy = InconclusivePolicy.HOLD
    status_fields: Mapping[str, Any] = field(default_factory=dict)
    """Top-level status fields this checker owns (e.g. `analysis`, `gates`); written as given."""
    rubric: tuple[RubricEntry, ...] = ()
    """ML Test Score items (e.g. `Infra 4`) this outcome verified, per check with its own verdict."""

    @property
    def rubric_items(self) -> tuple[str, ...]:
        return tuple(entry.item for entry in self.rubric)


class Checker(Protocol):
    """Judges the candidate at one stage; returns None when the spec configures nothing for it."""

    def __call__(self, *, context: CheckContext) -> CheckOutcome | None: ...

    def validate(self, *, context: CheckContext) -> None:
        """Finds every mistake in this checker's part of the spec that a later call could find,
        measuring nothing. The reconciler calls it while the rollout is Pending, so that a mistake
        stops the rollout before the first weight moves. Raises `SpecError` naming the field, or
        `controller.errors.ReferenceProblem` for an object the spec names that does not exist."""
        ...
