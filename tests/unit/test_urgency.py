"""Which rollout events put a key in the urgent lane of the work queue: safety actions only."""

from __future__ import annotations

from typing import Any

import pytest

from controller.api import ACTION_ANNOTATION
from controller.urgency import URGENT_ACTIONS, is_urgent

JSON = dict[str, Any]


def rollout(*, metadata: JSON | None = None, status: JSON | None = None) -> JSON:
    obj: JSON = {"metadata": {"namespace": "ns", "name": "iris", **(metadata or {})}, "spec": {}}
    if status is not None:
        obj["status"] = status
    return obj


def test_a_progressing_rollout_is_ordinary() -> None:
    # given a rollout walking its steps with 20 % on the candidate, then its events are ordinary
    status = {"phase": "Progressing", "stableVersion": "v1", "currentWeight": 20, "routeWeights": {"v1": 80, "v2": 20}}
    assert not is_urgent(rollout(status=status))


def test_a_rollout_being_deleted_is_urgent() -> None:
    assert is_urgent(rollout(metadata={"deletionTimestamp": "2025-01-01T00:00:00Z"}))


@pytest.mark.parametrize("action", [*sorted(URGENT_ACTIONS), " abort "])
def test_an_abort_is_urgent(action: str) -> None:
    assert is_urgent(rollout(metadata={"annotations": {ACTION_ANNOTATION: action}}))


@pytest.mark.parametrize("action", ["promote", "promote-full", "retry", "pause", "resume", "nonsense"])
def test_other_actions_are_ordinary(action: str) -> None:
    assert not is_urgent(rollout(metadata={"annotations": {ACTION_ANNOTATION: action}}))


@pytest.mark.parametrize("phase", ["RolledBack", "Aborted", "Failed"])
def test_a_rollout_that_ended_badly_is_urgent_until_its_traffic_is_back_on_stable(phase: str) -> None:
    # given the decision to go back is stored while the route still gives the candidate 30 %
    away = {"phase": phase, "stableVersion": "v1", "currentWeight": 30, "routeWeights": {"v1": 70, "v2": 30}}
    assert is_urgent(rollout(status=away))

    # when the route shows all traffic on stable, then its events are ordinary again
    home = {"phase": phase, "stableVersion": "v1", "currentWeight": 0, "routeWeights": {"v1": 100, "v2": 0}}
    assert not is_urgent(rollout(status=home))


def test_traffic_on_a_retired_version_counts_as_away_from_stable() -> None:
    status = {"phase": "RolledBack", "stableVersion": "v1", "currentWeight": 0, "routeWeights": {"v1": 90, "v0": 10}}
    assert is_urgent(rollout(status=status))


def test_without_route_weights_the_candidate_share_decides() -> None:
    assert is_urgent(rollout(status={"phase": "Failed", "currentWeight": 5}))
    assert not is_urgent(rollout(status={"phase": "Failed", "currentWeight": 0}))


def test_a_promoted_rollout_is_ordinary() -> None:
    status = {"phase": "Promoted", "stableVersion": "v2", "currentWeight": 100, "routeWeights": {"v2": 100}}
    assert not is_urgent(rollout(status=status))


@pytest.mark.parametrize(
    "obj",
    [
        {},
        {"metadata": None, "status": None},
        {"metadata": {"annotations": "abort"}},
        {"metadata": {}, "status": {"phase": "Failed", "currentWeight": "lots"}},
        {"metadata": {}, "status": {"phase": "Failed", "stableVersion": "v1", "routeWeights": {"v2": None}}},
        {"metadata": {}, "status": ["Failed"]},
    ],
)
def test_a_malformed_object_is_ordinary_and_never_raises(obj: JSON) -> None:
    assert not is_urgent(obj)
