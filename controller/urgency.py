"""Which ModelRollouts the work queue hands out first: those with a safety action to carry out.

Decided from the object an event (or a list) delivers, with no other state, on the watch thread, so
it must be quick and must never raise. Urgent is:

* a deletion in progress (`metadata.deletionTimestamp`): traffic goes back to stable before the
  object may go;
* a requested action in URGENT_ACTIONS (`rollouts.mlops.dev/action: abort`);
* a rollout whose status says it ended badly (RolledBack, Aborted, Failed) while its traffic is
  not all back on the stable version yet: the decision is stored, the route write it asks for is
  still to come (a pass writes the route at most once, so the decision can land before the write).

Once the traffic is home, further events of that rollout are ordinary again.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from controller.api import ACTION_ANNOTATION, Action, Phase

URGENT_ACTIONS = frozenset({Action.ABORT.value})
"""Values of the action annotation that take traffic away from the candidate. Add `rollback` or
`undo` here when such actions exist."""

SAFETY_PHASES = frozenset({Phase.ROLLED_BACK.value, Phase.ABORTED.value, Phase.FAILED.value})
"""Phases whose decision is to send all traffic back to the stable version."""


def is_urgent(obj: Mapping[str, Any]) -> bool:
    """Whether a pass of this ModelRollout carries out a safety action (see the module docstring).
    Anything malformed is simply not urgent: the pass itself reports it."""
    try:
        metadata = obj.get("metadata") or {}
        if metadata.get("deletionTimestamp"):
            return True
        action = (metadata.get("annotations") or {}).get(ACTION_ANNOTATION)
        if isinstance(action, str) and action.strip() in URGENT_ACTIONS:
            return True
        status = obj.get("status") or {}
        return status.get("phase") in SAFETY_PHASES and _traffic_away_from_stable(status)
    except (AttributeError, TypeError, ValueError):
        return False


def _traffic_away_from_stable(status: Mapping[str, Any]) -> bool:
    stable = status.get("stableVersion")
    weights = status.get("routeWeights")
    if isinstance(weights, Mapping) and isinstance(stable, str):
        return any(version != stable and float(weight) > 0 for version, weight in weights.items())
    return float(status.get("currentWeight") or 0) > 0
