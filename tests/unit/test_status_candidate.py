"""status.candidateVersion: the candidate a rollout rolls out, recorded for every router (the spec's
on the Gateway API and Istio, the revision read from the InferenceService on KServe), and the field
`kubectl get mro` prints as CANDIDATE."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from controller.api import ModelRolloutStatus, Phase, parse_spec
from controller.plan import Observed, decide
from controller.reconcile import with_routed_versions
from controller.routers import RoutedVersions

NOW = datetime(2026, 1, 1, tzinfo=UTC)
R1, R2 = "iris-predictor-00001", "iris-predictor-00002"
REPO = Path(__file__).resolve().parents[2]
CRDS = [
    REPO / "manifests" / "crds" / "modelrollouts.yaml",
    REPO / "charts" / "model-rollouts" / "crds" / "modelrollouts.yaml",
]


def gateway_spec(candidate: str) -> Any:
    return parse_spec(
        {
            "model": "iris",
            "versions": [{"version": v, "backend": {"service": f"iris-{v}", "port": 80}} for v in ("v1", "v2", "v3")],
            "candidate": candidate,
            "baseline": "v1",
            "trafficRouting": {"gatewayAPI": {"httpRoute": "iris"}},
            "steps": [{"setWeight": 20}],
        }
    )


def observed(weights: dict[str, int], *, generation: int = 1) -> Observed:
    return Observed(now=NOW, generation=generation, route_weights=weights)


def test_the_candidate_version_round_trips_through_status_json() -> None:
    status = ModelRolloutStatus(phase=Phase.PROGRESSING, stable_version=R1, candidate_version=R2)
    written = status.to_json()
    assert written["candidateVersion"] == R2
    assert ModelRolloutStatus.from_json(written).candidate_version == R2

    unknown = ModelRolloutStatus().to_json()
    assert "candidateVersion" not in unknown
    assert ModelRolloutStatus.from_json(unknown).candidate_version is None


def test_a_rollout_records_the_candidate_of_the_spec_when_it_starts_and_a_new_one_when_it_starts_over() -> None:
    # given no status yet, when the first pass decides, then the spec's candidate is recorded
    started = decide(
        spec=gateway_spec("v2"), spec_error=None, status=ModelRolloutStatus(), observed=observed({"v1": 100})
    )
    assert (started.status.phase, started.status.candidate_version) == (Phase.PENDING, "v2")

    # given v2 at 20 %, when the spec names v3, then v2 is still recorded while its traffic goes home
    at_20 = decide(
        spec=gateway_spec("v2"),
        spec_error=None,
        status=started.status,
        observed=observed({"v1": 100, "v2": 0}),
    ).status
    assert (at_20.phase, at_20.candidate_version) == (Phase.PROGRESSING, "v2")
    going_home = decide(
        spec=gateway_spec("v3"), spec_error=None, status=at_20, observed=observed({"v1": 80, "v2": 20}, generation=2)
    )
    assert going_home.status.candidate_version == "v2"

    # and v3 once the rollout starts over
    over = decide(
        spec=gateway_spec("v3"),
        spec_error=None,
        status=going_home.status,
        observed=observed({"v1": 100, "v2": 0}, generation=2),
    )
    assert (over.status.phase, over.status.candidate_version) == (Phase.PENDING, "v3")


def test_on_kserve_the_revision_read_from_the_inference_service_is_recorded() -> None:
    spec = parse_spec(
        {"model": "iris", "trafficRouting": {"kserve": {"inferenceService": "iris"}}, "steps": [{"setWeight": 20}]}
    )
    assert spec.candidate == ""

    # given only the rolled-out revision, then the rollout records it: nothing to roll out
    steady = decide(
        spec=with_routed_versions(spec, RoutedVersions(stable=R1, candidate=None), ModelRolloutStatus()),
        spec_error=None,
        status=ModelRolloutStatus(),
        observed=observed({R1: 100}),
    ).status
    assert (steady.phase, steady.candidate_version) == (Phase.PROMOTED, R1)

    # when KServe shows a newer revision, then it is the recorded candidate
    started = decide(
        spec=with_routed_versions(spec, RoutedVersions(stable=R1, candidate=R2), steady),
        spec_error=None,
        status=steady,
        observed=observed({R1: 100, R2: 0}),
    ).status
    assert (started.phase, started.candidate_version) == (Phase.PENDING, R2)


@pytest.mark.parametrize("crd", CRDS, ids=lambda path: str(path.relative_to(REPO)))
def test_kubectl_prints_the_recorded_candidate_in_both_crd_copies(crd: Path) -> None:
    version = yaml.safe_load(crd.read_text())["spec"]["versions"][0]
    columns = {column["name"]: column["jsonPath"] for column in version["additionalPrinterColumns"]}
    assert columns["Candidate"] == ".status.candidateVersion"
    assert columns["Baseline"] == ".status.stableVersion"
    assert "candidateVersion" in version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
