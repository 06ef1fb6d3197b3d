"""The Helm chart installing N shards: one Deployment and one Lease per shard, RBAC written once,
selectors that never give a rollout two controllers, and the Lease permissions checked on a real
kube-apiserver by impersonation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from controller.__main__ import parse_args
from controller.watch import LabelSelector
from localenv.controlplane import ControlPlane
from tests.integration.test_chart import CHART, can, helm, of_kind, render, run_helm

pytestmark = pytest.mark.integration

__all__ = ["helm"]  # the session fixture, shared with test_chart

KEY = "sharding.fluxcd.io/key"
SHARDED: dict[str, Any] = {
    "replicaCount": 2,
    "podDisruptionBudget": {"enabled": True},
    "sharding": {"shards": [{"name": "shard1"}, {"name": "shard2", "replicaCount": 1}, {"name": "shard3"}]},
}


def deployments(documents: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in of_kind(documents, "Deployment")}


def args_of(deployment: dict[str, Any]) -> list[str]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return list(container["args"])


def test_helm_lint_passes_strictly_with_shards(helm: Path, tmp_path: Path) -> None:
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump(SHARDED))
    linted = run_helm(helm, "lint", "--strict", str(CHART), "-f", str(values_file))
    assert linted.returncode == 0, linted.stdout + linted.stderr


def test_each_shard_is_a_deployment_with_its_selector_and_its_own_lease(helm: Path, tmp_path: Path) -> None:
    documents = render(helm, SHARDED, tmp_path=tmp_path)
    found = deployments(documents)

    # one Deployment per shard, and one for the rollouts without the shard label
    assert set(found) == {f"mr-model-rollouts-{name}" for name in ("unlabelled", "shard1", "shard2", "shard3")}
    parsed = {name: parse_args(args_of(deployment)) for name, deployment in found.items()}
    assert {name: args.watch_label_selector.text for name, args in parsed.items()} == {
        "mr-model-rollouts-unlabelled": f"!{KEY}",
        "mr-model-rollouts-shard1": f"{KEY}=shard1",
        "mr-model-rollouts-shard2": f"{KEY}=shard2",
        "mr-model-rollouts-shard3": f"{KEY}=shard3",
    }
    # leader election per shard, on its own replica count, each with a Lease of its own
    assert {name: (found[name]["spec"]["replicas"], args.leader_elect) for name, args in parsed.items()} == {
        "mr-model-rollouts-unlabelled": (2, True),
        "mr-model-rollouts-shard1": (2, True),
        "mr-model-rollouts-shard2": (1, False),
        "mr-model-rollouts-shard3": (2, True),
    }
    assert found["mr-model-rollouts-shard2"]["spec"]["strategy"]["type"] == "Recreate"
    leases = [args.lease_name for args in parsed.values() if args.leader_elect]
    assert leases == [f"{name}-leader" for name in parsed if parsed[name].leader_elect]
    # the pods of one Deployment are never selected by another's selector, nor by another's PDB
    selectors = [deployment["spec"]["selector"]["matchLabels"] for deployment in found.values()]
    for deployment in found.values():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert [s for s in selectors if s.items() <= labels.items()] == [deployment["spec"]["selector"]["matchLabels"]]
    budgets = {
        doc["metadata"]["name"]: doc["spec"]["selector"]["matchLabels"]
        for doc in of_kind(documents, "PodDisruptionBudget")
    }
    assert budgets == {name: deployment["spec"]["selector"]["matchLabels"] for name, deployment in found.items()}
    # the metrics Service reaches every shard
    (service,) = of_kind(documents, "Service")
    assert all(service["spec"]["selector"].items() <= labels.items() for labels in (
        deployment["spec"]["template"]["metadata"]["labels"] for deployment in found.values()
    ))  # fmt: skip


@pytest.mark.parametrize(
    ("labels", "owner"),
    [
        ({}, "mr-model-rollouts-unlabelled"),
        ({"team": "ml"}, "mr-model-rollouts-unlabelled"),
        ({KEY: "shard1"}, "mr-model-rollouts-shard1"),
        ({KEY: "shard3", "team": "ml"}, "mr-model-rollouts-shard3"),
        ({KEY: "no-such-shard"}, None),
    ],
)
def test_a_rollout_has_at_most_one_controller(
    helm: Path, tmp_path: Path, labels: dict[str, str], owner: str | None
) -> None:
    found = deployments(render(helm, SHARDED, tmp_path=tmp_path))
    owners = [
        name
        for name, deployment in found.items()
        if LabelSelector.parse(parse_args(args_of(deployment)).watch_label_selector.text).matches(labels)
    ]
    assert owners == ([owner] if owner else [])


def test_rbac_is_written_once_with_every_shard_lease(helm: Path, tmp_path: Path) -> None:
    documents = render(helm, SHARDED, tmp_path=tmp_path)
    assert [doc["metadata"]["name"] for doc in of_kind(documents, "ClusterRole")] == ["mr-model-rollouts"]
    assert [doc["metadata"]["name"] for doc in of_kind(documents, "ClusterRoleBinding")] == ["mr-model-rollouts"]
    assert len(of_kind(documents, "ServiceAccount")) == 1
    (lease_role,) = of_kind(documents, "Role")
    assert [rule.get("resourceNames") for rule in lease_role["rules"]] == [
        None,
        [f"mr-model-rollouts-{name}-leader" for name in ("unlabelled", "shard1", "shard3")],
    ]


def test_shards_may_set_their_own_selector_and_lease_and_drop_the_unlabelled_deployment(
    helm: Path, tmp_path: Path
) -> None:
    values = {
        "leaderElection": {"enabled": True},
        "sharding": {
            "unlabelled": False,
            "shards": [{"name": "gold", "selector": "tier in (gold, platinum)", "leaseName": "gold-lease"}],
        },
    }
    (deployment,) = deployments(render(helm, values, tmp_path=tmp_path)).values()
    args = parse_args(args_of(deployment))
    assert (args.watch_label_selector.text, args.lease_name) == ("tier in (gold, platinum)", "gold-lease")


def test_without_shards_one_deployment_owns_every_rollout(helm: Path, tmp_path: Path) -> None:
    (deployment,) = of_kind(render(helm, {}, tmp_path=tmp_path), "Deployment")
    assert deployment["metadata"]["name"] == "mr-model-rollouts"
    assert not any(arg.startswith("--watch-label-selector") for arg in args_of(deployment))
    assert "rollouts.mlops.dev/shard" not in deployment["spec"]["selector"]["matchLabels"]


@pytest.mark.parametrize(
    ("shards", "complaint"),
    [
        ([{"name": "a"}, {"name": "a"}], '"a" appears twice'),
        ([{"name": "unlabelled"}], '"unlabelled" names the Deployment for the rollouts without'),
        ([{"name": "Shard_1"}], "is not a valid name"),
        ([{"selector": "a=b"}], "needs a name"),
    ],
)
def test_a_mistake_in_the_shards_stops_the_install(
    helm: Path, tmp_path: Path, shards: list[dict[str, str]], complaint: str
) -> None:
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump({"sharding": {"shards": shards}}))
    rendered = run_helm(helm, "template", "mr", str(CHART), "-f", str(values_file))
    assert rendered.returncode != 0
    assert complaint in rendered.stderr


def test_each_shard_may_hold_only_its_own_lease_on_a_real_api_server(
    control_plane: ControlPlane, helm: Path, tmp_path: Path, namespace: str
) -> None:
    documents = render(helm, SHARDED, tmp_path=tmp_path, release="sharded", namespace=namespace)
    applied = [doc for doc in documents if doc["kind"] not in ("ClusterRole", "ClusterRoleBinding")]
    control_plane.kubectl("apply", "-f", "-", input="\n---\n".join(yaml.safe_dump(doc) for doc in applied))
    account = f"system:serviceaccount:{namespace}:sharded-model-rollouts"
    lease = "leases.coordination.k8s.io"
    for shard in ("unlabelled", "shard1", "shard3"):
        for verb in ("get", "update"):
            assert can(
                control_plane,
                account,
                verb,
                lease,
                "",
                namespace=namespace,
                name=f"sharded-model-rollouts-{shard}-leader",
            )
    assert not can(control_plane, account, "update", lease, "", namespace=namespace, name="someone-elses")
    assert len(deployments(documents)) == 4
