"""One rollout per routing object, recorded on the object itself.

A route (HTTPRoute, InferenceService, VirtualService, ...) carries the name of the ModelRollout
that manages its weights in an annotation. Two rollouts writing one route would overwrite each
other many times a second; with the owner on the object, the second one sees it before writing
anything, and its message names the first. The annotation goes when the owner is deleted (after
its traffic went back to its stable version), so another rollout may then take the route.
"""

from __future__ import annotations

from typing import Any

from controller.api import GROUP
from controller.errors import ReferenceProblem

OWNER_ANNOTATION = f"{GROUP}/managed-by"
"""Name of the ModelRollout (in the object's namespace) that manages the object's weights."""

JSON = dict[str, Any]


class RouteOwnedElsewhere(ReferenceProblem):
    """The route is managed by another rollout: this one waits and writes nothing."""

    def __init__(self, *, route: str, owner: str) -> None:
        super().__init__(
            f"{route} is managed by ModelRollout {owner} (annotation {OWNER_ANNOTATION}); a route has one "
            f"rollout: point spec.trafficRouting at another route, or delete ModelRollout {owner}"
        )
        self.owner = owner


def owner_of(obj: JSON) -> str | None:
    annotations = obj.get("metadata", {}).get("annotations") or {}
    owner = annotations.get(OWNER_ANNOTATION)
    return str(owner) if owner else None


def check_owner(obj: JSON, *, route: str, owner: str, replacing: str | None = None) -> None:
    """Raises RouteOwnedElsewhere unless the object is unowned, owned by `owner`, or owned by
    `replacing` (an owner found to be gone)."""
    found = owner_of(obj)
    if found not in (None, owner, replacing):
        raise RouteOwnedElsewhere(route=route, owner=found)


def claim(obj: JSON, *, owner: str) -> bool:
    """Records `owner` on the object (to be written by the caller); False when already recorded."""
    annotations = obj.setdefault("metadata", {}).setdefault("annotations", {}) or {}
    obj["metadata"]["annotations"] = annotations
    if annotations.get(OWNER_ANNOTATION) == owner:
        return False
    annotations[OWNER_ANNOTATION] = owner
    return True


def release(obj: JSON, *, owner: str) -> bool:
    """Removes `owner` from the object (to be written by the caller); False when it was not there."""
    annotations = obj.get("metadata", {}).get("annotations") or {}
    if annotations.get(OWNER_ANNOTATION) != owner:
        return False
    del annotations[OWNER_ANNOTATION]
    return True
