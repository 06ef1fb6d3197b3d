"""A rollout whose versions its router reads from the routed object (KServe's revisions): the spec
without versions, the versions filled in from what the InferenceService shows, the plan while they
cannot be read, and a new revision starting a new rollout."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kubernetes import client

from controller.api import ModelRolloutStatus, Phase, SpecError, format_time, parse_spec
from controller.kube import Kube
from controller.plan import Observed, decide, wait_for_versions
from controller.reconcile import Reconciler, adopted_stable, with_routed_versions
from controller.routers import RoutedVersions

NOW = datetime(2025, 1, 1, tzinfo=UTC)
R1, R2, R3 = "iris-predictor-00001", "iris-predictor-00002", "iris-predictor-00003"
STEPS = [{"setWeight": 20}, {"setWeight": 60}]


def raw_spec(**changes: Any) -> dict[str, Any]:
    return {"model": "iris", "trafficRouting": {"kserve": {"inferenceService": "iris"}}, "steps": STEPS, **changes}


def rollout(spec: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"namespace": "ns", "name": "iris", "generation": 1}, "spec": spec}


def test_a_spec_without_versions_is_marked_and_a_partial_one_is_refused() -> None:
    spec = parse_spec(raw_spec())
    assert spec.versions_from_route and spec.versions == () and spec.candidate == spec.baseline == ""
    with pytest.raises(SpecError, match=r"spec\.versions: is required"):
        parse_spec(raw_spec(candidate=R2))


def test_only_a_router_that_reads_the_versions_takes_a_spec_without_them() -> None:
    reconciler = Reconciler(kube=Kube(api_client=client.ApiClient()))
    spec, error, router = reconciler._parse(rollout(raw_spec()))
    assert spec is not None and error is None and router is not None

    listed = raw_spec(
        versions=[{"version": v, "backend": {"service": f"s-{v}", "port": 80}} for v in (R1, R2)],
        baseline=R1,
        candidate=R2,
    )
    _, error, _ = reconciler._parse(rollout(listed))
    assert error is not None and "remove spec.versions, spec.baseline and spec.candidate" in error

    _, error, _ = reconciler._parse(rollout(raw_spec(trafficRouting={"gatewayAPI": {"httpRoute": "iris"}})))
    assert error is not None and error.startswith("spec.versions: is required")


def test_the_versions_are_the_rolled_out_revision_and_the_newest_one() -> None:
    spec = parse_spec(raw_spec())
    status = ModelRolloutStatus()
    filled = with_routed_versions(spec, RoutedVersions(stable=R1, candidate=R2), status)
    assert (filled.baseline, filled.candidate, [v.version for v in filled.versions]) == (R1, R2, [R1, R2])
    assert all(version.backend is None for version in filled.versions)
    steady = with_routed_versions(spec, RoutedVersions(stable=R1, candidate=None), status)
    assert (steady.baseline, steady.candidate, [v.version for v in steady.versions]) == (R1, R1, [R1])


def test_a_promotion_landing_keeps_the_pair_and_a_revision_rolled_out_elsewhere_is_adopted() -> None:
    spec = parse_spec(raw_spec())
    shown = RoutedVersions(stable=R2, candidate=None)  # KServe rolled revision 2 out
    promoting = ModelRolloutStatus(
        phase=Phase.PROGRESSING, stable_version=R1, candidate_version=R2, current_step_index=len(STEPS)
    )
    filled = with_routed_versions(spec, shown, promoting)
    assert (filled.baseline, filled.candidate) == (R1, R2)
    assert adopted_stable(spec, shown, promoting) is promoting

    # at step 0, nothing here asked for it: KServe's rolled-out revision is the stable one now
    mid_way = replace(promoting, current_step_index=0)
    assert adopted_stable(spec, shown, mid_way).stable_version == R2
    assert with_routed_versions(spec, shown, mid_way).candidate == R2


def test_a_new_revision_starts_a_new_rollout_without_a_spec_change() -> None:
    spec = parse_spec(raw_spec())
    observed = Observed(now=NOW, generation=1, route_weights={R1: 100})
    steady = decide(
        spec=with_routed_versions(spec, RoutedVersions(stable=R1, candidate=None), ModelRolloutStatus()),
        spec_error=None,
        status=ModelRolloutStatus(),
        observed=observed,
    ).status
    assert steady.phase == Phase.PROMOTED

    filled = with_routed_versions(spec, RoutedVersions(stable=R1, candidate=R2), steady)
    started = decide(
        spec=filled, spec_error=None, status=steady, observed=replace(observed, route_weights={R1: 100, R2: 0})
    )
    assert (started.status.phase, started.status.candidate_version) == (Phase.PENDING, R2)


def test_while_no_version_can_be_read_it_waits_pending_and_fails_at_the_deadline() -> None:
    observed = Observed(now=NOW, generation=1, reference_problem="InferenceService ns/iris not found")
    plan = wait_for_versions(status=ModelRolloutStatus(), observed=observed, deadline_seconds=600)
    assert plan.status.phase == Phase.PENDING and plan.traffic is None and plan.requeue_after == 10.0
    references = next(c for c in plan.status.conditions if c.type == "ReferencesValid")
    assert references.status == "False" and "not found" in references.message
    assert [event.reason for event in plan.events] == ["InvalidReference"]

    later = replace(observed, now=NOW + timedelta(seconds=601))
    failed = wait_for_versions(status=plan.status, observed=later, deadline_seconds=600)
    assert failed.status.phase == Phase.FAILED and failed.traffic is None
    assert "ProgressDeadlineExceeded" in [event.reason for event in failed.events]

    gone = wait_for_versions(status=plan.status, observed=replace(observed, deleting=True), deadline_seconds=600)
    assert gone.remove_finalizer


def test_the_progress_deadline_counts_from_when_it_started_waiting() -> None:
    observed = Observed(now=NOW, generation=1, reference_problem="missing")
    waiting = ModelRolloutStatus(phase=Phase.PENDING, progress_at=format_time(NOW - timedelta(seconds=30)))
    plan = wait_for_versions(status=waiting, observed=observed, deadline_seconds=60)
    assert plan.status.phase == Phase.PENDING
