"""The Helm chart and manifests/install.yaml: linted, rendered, applied to a real kube-apiserver, and
the controller's ServiceAccount checked by impersonation to hold enough permissions and no more.

Helm is built from Go modules by hack/build-helm.sh (cached by version).
"""

from __future__ import annotations

import json
import re
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from controller.__main__ import parse_args
from localenv.controlplane import ControlPlane

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART = REPO_ROOT / "charts" / "model-rollouts"
INSTALL_YAML = REPO_ROOT / "manifests" / "install.yaml"

VALUE_CASES: dict[str, dict[str, Any]] = {
    "defaults": {},
    "high-availability": {"replicaCount": 3, "podDisruptionBudget": {"enabled": True}},
    "namespaced": {"watchNamespace": "ml", "rbac": {"secrets": {"enabled": True}}},
    "monitored": {"serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}}},
    "secrets-cluster-wide": {"rbac": {"secrets": {"enabled": True}}},
    "secrets-in-listed-namespaces": {"rbac": {"secrets": {"enabled": True, "namespaces": ["team-a", "team-b"]}}},
    "allowed-hosts": {"controller": {"allowedHosts": ["prometheus.monitoring.svc", "*.models.svc", "10.0.0.7"]}},
}

# What the controller does to run a rollout end to end: (verb, resource, subresource).
NEEDED = [
    *((verb, "modelrollouts.rollouts.mlops.dev", "") for verb in ("get", "list", "watch", "update", "patch")),
    *((verb, "modelrollouts.rollouts.mlops.dev", "status") for verb in ("get", "update", "patch")),
    ("update", "modelrollouts.rollouts.mlops.dev", "finalizers"),
    *((verb, "analysistemplates.rollouts.mlops.dev", "") for verb in ("get", "list", "watch")),
    *((verb, "httproutes.gateway.networking.k8s.io", "") for verb in ("get", "list", "watch", "update", "patch")),
    *((verb, "services", "") for verb in ("get", "list", "watch")),
    ("get", "configmaps", ""),
    *((verb, "events", "") for verb in ("create", "patch")),
    *((verb, "events.events.k8s.io", "") for verb in ("create", "patch")),
    *((verb, "deployments.apps", "") for verb in ("get", "list", "watch", "patch")),
    *((verb, "deployments.apps", "scale") for verb in ("get", "update", "patch")),
    *((verb, "inferenceservices.serving.kserve.io", "") for verb in ("get", "list", "watch", "update")),
    # The KServe router's claims: a Lease beside each InferenceService it rolls out.
    *((verb, "leases.coordination.k8s.io", "") for verb in ("get", "create", "update", "delete")),
]
# A sample of what it must never be able to do.
NOT_NEEDED = [
    ("*", "*", ""),
    ("delete", "modelrollouts.rollouts.mlops.dev", ""),
    ("create", "modelrollouts.rollouts.mlops.dev", ""),
    ("create", "httproutes.gateway.networking.k8s.io", ""),
    ("delete", "httproutes.gateway.networking.k8s.io", ""),
    ("create", "deployments.apps", ""),
    ("delete", "deployments.apps", ""),
    ("update", "deployments.apps", ""),
    ("list", "pods", ""),
    ("create", "pods", "exec"),
    ("get", "secrets", ""),
    ("list", "secrets", ""),
    ("list", "configmaps", ""),
    ("update", "configmaps", ""),
    ("update", "services", ""),
    ("delete", "events", ""),
    ("update", "analysistemplates.rollouts.mlops.dev", ""),
    ("create", "inferenceservices.serving.kserve.io", ""),
    ("delete", "inferenceservices.serving.kserve.io", ""),
    ("update", "inferenceservices.serving.kserve.io", "status"),
    ("create", "rolebindings.rbac.authorization.k8s.io", ""),
    ("escalate", "clusterroles.rbac.authorization.k8s.io", ""),
    ("impersonate", "users", ""),
]
LEASE_VERBS = ("get", "create", "update")


@pytest.fixture(scope="session")
def helm() -> Path:
    built = subprocess.run(
        ["bash", str(REPO_ROOT / "hack" / "build-helm.sh")], capture_output=True, text=True, check=True, timeout=1200
    )
    return Path(built.stdout.strip().splitlines()[-1]) / "helm"


def run_helm(helm: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(helm), *args], capture_output=True, text=True, timeout=120, check=False)


def render(
    helm: Path, values: dict[str, Any], *, tmp_path: Path, release: str = "mr", namespace: str = "model-rollouts"
) -> list[dict[str, Any]]:
    values_file = tmp_path / f"values-{secrets.token_hex(3)}.yaml"
    values_file.write_text(yaml.safe_dump(values))
    rendered = run_helm(helm, "template", release, str(CHART), "--namespace", namespace, "-f", str(values_file))
    assert rendered.returncode == 0, rendered.stderr
    return [doc for doc in yaml.safe_load_all(rendered.stdout) if doc]


def of_kind(documents: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in documents if doc["kind"] == kind]


def controller_container(documents: list[dict[str, Any]]) -> dict[str, Any]:
    (deployment,) = of_kind(documents, "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    container_spec: dict[str, Any] = container
    return container_spec


def rules_granting(documents: list[dict[str, Any]], resource: str) -> list[tuple[str, str, dict[str, Any]]]:
    """(kind, namespace, rule) for every RBAC rule that names `resource`."""
    return [
        (doc["kind"], doc["metadata"].get("namespace", ""), rule)
        for doc in documents
        if doc["kind"] in ("Role", "ClusterRole")
        for rule in doc["rules"]
        if resource in rule["resources"]
    ]


# ---------------------------------------------------------------------------------------------
# helm lint and helm template


@pytest.mark.parametrize("case", VALUE_CASES)
def test_helm_lint_passes_strictly(helm: Path, case: str, tmp_path: Path) -> None:
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump(VALUE_CASES[case]))
    linted = run_helm(helm, "lint", "--strict", str(CHART), "-f", str(values_file))
    assert linted.returncode == 0, linted.stdout + linted.stderr


@pytest.mark.parametrize("case", VALUE_CASES)
def test_no_rbac_rule_uses_a_wildcard(helm: Path, case: str, tmp_path: Path) -> None:
    documents = render(helm, VALUE_CASES[case], tmp_path=tmp_path)
    rules = [rule for doc in documents if doc["kind"] in ("Role", "ClusterRole") for rule in doc["rules"]]
    assert rules
    for rule in rules:
        for key in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[key], rule


def test_deployment_runs_hardened_with_probes_metrics_port_and_requests(helm: Path, tmp_path: Path) -> None:
    documents = render(helm, {}, tmp_path=tmp_path)
    (deployment,) = of_kind(documents, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = controller_container(documents)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert container["ports"] == [{"name": "metrics", "containerPort": 8080, "protocol": "TCP"}]
    assert "--metrics-port=8080" in container["args"]
    assert set(container["resources"]["requests"]) == {"cpu", "memory"}
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert pod["serviceAccountName"] == "mr-model-rollouts"
    (service,) = of_kind(documents, "Service")
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"
    assert not of_kind(documents, "ServiceMonitor") and not of_kind(documents, "PodDisruptionBudget")


@pytest.mark.parametrize(
    ("values", "elected"),
    [
        ({}, False),
        ({"replicaCount": 2}, True),
        ({"leaderElection": {"enabled": True}}, True),
        ({"replicaCount": 2, "leaderElection": {"enabled": False}}, False),
    ],
)
def test_leader_election_is_on_with_more_than_one_replica(
    helm: Path, tmp_path: Path, values: dict[str, Any], elected: bool
) -> None:
    documents = render(helm, values, tmp_path=tmp_path)
    args = controller_container(documents)["args"]
    (deployment,) = of_kind(documents, "Deployment")
    # The ClusterRole's Lease rule is the KServe router's claims (test_kserve_rights_can_be_turned_off).
    lease_rules = [granted for granted in rules_granting(documents, "leases") if granted[0] == "Role"]
    if elected:
        assert {"--leader-elect", "--lease-namespace=model-rollouts", "--lease-name=mr-model-rollouts-leader"} <= set(
            args
        )
        assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
        assert [(kind, ns, rule["verbs"], rule.get("resourceNames")) for kind, ns, rule in lease_rules] == [
            ("Role", "model-rollouts", ["create"], None),
            ("Role", "model-rollouts", ["get", "update"], ["mr-model-rollouts-leader"]),
        ]
    else:
        assert "--no-leader-elect" in args
        assert deployment["spec"]["strategy"]["type"] == "Recreate", "two unelected controllers must not overlap"
        assert lease_rules == []


ROUTER_RIGHTS = {
    "kserve": [
        ("ClusterRole", ["inferenceservices"], ["get", "list", "watch", "update"]),
        ("ClusterRole", ["leases"], ["get", "create", "update", "delete"]),
    ],
    "istio": [
        ("ClusterRole", ["virtualservices"], ["get", "list", "watch", "update"]),
        ("ClusterRole", ["destinationrules"], ["get"]),
    ],
}
"""Per router with its own rbac.<router>.enabled, the rules it needs by default."""


def router_rights(documents: list[dict[str, Any]], router: str) -> list[tuple[str, list[str], list[str]]]:
    resources = [resource for _, (resource,), _ in ROUTER_RIGHTS[router]]
    return [
        (kind, rule["resources"], rule["verbs"])
        for resource in resources
        for kind, _, rule in rules_granting(documents, resource)
    ]


@pytest.mark.parametrize("router", ROUTER_RIGHTS)
def test_a_routers_rights_can_be_turned_off(helm: Path, router: str, tmp_path: Path) -> None:
    # given the default values, then the router may read and write its routed objects
    assert router_rights(render(helm, {}, tmp_path=tmp_path), router) == ROUTER_RIGHTS[router]

    # when rbac.<router>.enabled is false, then none of its rights is granted, and the other
    # routers keep theirs
    documents = render(helm, {"rbac": {router: {"enabled": False}}}, tmp_path=tmp_path)
    assert router_rights(documents, router) == []
    for other in ROUTER_RIGHTS.keys() - {router}:
        assert router_rights(documents, other) == ROUTER_RIGHTS[other]


@pytest.mark.parametrize("case", VALUE_CASES)
def test_the_controller_accepts_the_rendered_command_line(helm: Path, case: str, tmp_path: Path) -> None:
    args = controller_container(render(helm, VALUE_CASES[case], tmp_path=tmp_path))["args"]
    parsed = parse_args(args)
    assert parsed.metrics_port == 8080
    assert parsed.leader_elect is (case == "high-availability")
    assert parsed.read_secrets is bool(VALUE_CASES[case].get("rbac", {}).get("secrets", {}).get("enabled"))
    assert parsed.allowed_hosts == tuple(VALUE_CASES[case].get("controller", {}).get("allowedHosts", ()))


def test_leader_election_rejects_an_unknown_setting(helm: Path, tmp_path: Path) -> None:
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump({"leaderElection": {"enabled": "sometimes"}}))
    rendered = run_helm(helm, "template", "mr", str(CHART), "-f", str(values_file))
    assert rendered.returncode != 0
    assert "leaderElection.enabled must be auto, true or false" in rendered.stderr


def test_namespaced_install_uses_a_role_in_the_watched_namespace_only(helm: Path, tmp_path: Path) -> None:
    documents = render(helm, VALUE_CASES["namespaced"], tmp_path=tmp_path)
    assert not of_kind(documents, "ClusterRole") and not of_kind(documents, "ClusterRoleBinding")
    assert {(doc["metadata"]["namespace"], doc["metadata"]["name"]) for doc in of_kind(documents, "Role")} == {
        ("ml", "mr-model-rollouts"),
        ("ml", "mr-model-rollouts-secrets"),
    }
    assert "--namespace=ml" in controller_container(documents)["args"]


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("defaults", []),
        ("secrets-cluster-wide", [("ClusterRole", "")]),
        ("secrets-in-listed-namespaces", [("Role", "team-a"), ("Role", "team-b")]),
        ("namespaced", [("Role", "ml")]),
    ],
)
def test_secrets_are_readable_only_where_configured(
    helm: Path, tmp_path: Path, case: str, expected: list[tuple[str, str]]
) -> None:
    grants = rules_granting(render(helm, VALUE_CASES[case], tmp_path=tmp_path), "secrets")
    assert [(kind, ns) for kind, ns, _ in grants] == expected
    assert all(rule["verbs"] == ["get"] for _, _, rule in grants)


def test_optional_servicemonitor_and_poddisruptionbudget(helm: Path, tmp_path: Path) -> None:
    documents = render(helm, {**VALUE_CASES["monitored"], "podDisruptionBudget": {"enabled": True}}, tmp_path=tmp_path)
    (monitor,) = of_kind(documents, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert monitor["spec"]["endpoints"] == [{"port": "metrics", "path": "/metrics", "interval": "30s"}]
    (budget,) = of_kind(documents, "PodDisruptionBudget")
    assert budget["spec"]["maxUnavailable"] == 1


def test_every_value_is_documented() -> None:
    """Each leaf value in values.yaml has a comment right above it or above one of its parents."""
    undocumented: list[str] = []
    ancestors: list[tuple[int, str, bool]] = []  # (indent, key, documented)
    previous = ""
    for line in (CHART / "values.yaml").read_text().splitlines():
        match = re.match(r"^(\s*)([A-Za-z][\w.-]*):(.*)$", line)
        if match:
            indent, key, rest = len(match.group(1)), match.group(2), match.group(3).strip()
            ancestors = [a for a in ancestors if a[0] < indent]
            documented = previous.lstrip().startswith("#") or any(a[2] for a in ancestors)
            ancestors.append((indent, key, documented))
            if rest and not documented:
                undocumented.append(".".join(a[1] for a in ancestors))
        if line.strip():
            previous = line
    assert undocumented == []


def test_chart_crds_and_install_yaml_are_in_sync_with_their_sources() -> None:
    checked = subprocess.run(
        ["bash", str(REPO_ROOT / "hack" / "render-install.sh"), "--check"],
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr
    crds = sorted(p.name for p in (CHART / "crds").glob("*.yaml"))
    assert crds == sorted(p.name for p in (REPO_ROOT / "manifests" / "crds").glob("*.yaml"))


# ---------------------------------------------------------------------------------------------
# Applied to a real API server, permissions checked by impersonation


def can(
    control_plane: ControlPlane,
    account: str,
    verb: str,
    resource: str,
    subresource: str,
    *,
    namespace: str,
    name: str = "",
) -> bool:
    """What `kubectl auth can-i --as=ACCOUNT` asks: a SelfSubjectAccessReview made while impersonating
    the account. Posted directly so that the group is exact even for a CRD not served yet (can-i
    would guess the group from discovery)."""
    plural, _, group = resource.partition(".")
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectAccessReview",
        "spec": {
            "resourceAttributes": {
                "namespace": namespace,
                "verb": verb,
                "group": "*" if plural == "*" else group,
                "resource": plural,
                "subresource": subresource,
                "name": name,
            }
        },
    }
    answer = control_plane.kubectl(
        "create", f"--as={account}", "--validate=false", "-o", "json", "-f", "-", input=json.dumps(review)
    )
    allowed: bool = json.loads(answer.stdout)["status"]["allowed"]
    return allowed


def permissions(
    control_plane: ControlPlane, account: str, checks: list[tuple[str, str, str]], *, namespace: str
) -> dict[tuple[str, str, str], bool]:
    return {check: can(control_plane, account, *check, namespace=namespace) for check in checks}


@pytest.fixture
def other_namespace(control_plane: ControlPlane) -> Iterator[str]:
    name = f"other-{secrets.token_hex(4)}"
    control_plane.kubectl("create", "namespace", name)
    yield name
    control_plane.kubectl("delete", "namespace", name, "--wait=false")


def test_install_yaml_applies_and_grants_the_controller_enough_and_no_more(
    control_plane: ControlPlane, namespace: str
) -> None:
    applied = control_plane.kubectl("apply", "--server-side", "-f", str(INSTALL_YAML))
    assert "deployment.apps/model-rollouts serverside-applied" in applied.stdout
    deployment = json.loads(
        control_plane.kubectl("get", "deployment", "model-rollouts", "-n", "model-rollouts", "-o", "json").stdout
    )
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == "model-rollouts"
    account = "system:serviceaccount:model-rollouts:model-rollouts"

    # A cluster-wide install: what it needs, in any namespace (here a fresh one).
    granted = permissions(control_plane, account, NEEDED, namespace=namespace)
    assert [check for check, ok in granted.items() if not ok] == []
    refused = permissions(control_plane, account, NOT_NEEDED, namespace=namespace)
    assert [check for check, ok in refused.items() if ok] == []
    # Default install: one replica, no leader election; its only Lease rights are the KServe
    # router's claims (in NEEDED), which rbac.kserve.enabled=false takes away.


def test_namespaced_install_is_confined_to_its_namespace(
    control_plane: ControlPlane, helm: Path, tmp_path: Path, namespace: str, other_namespace: str
) -> None:
    """Installed in `namespace`, watching `watched`; nothing at all in `other_namespace`."""
    watched = f"watched-{secrets.token_hex(4)}"
    control_plane.kubectl("create", "namespace", watched)
    values = {"watchNamespace": watched, "replicaCount": 2, "rbac": {"secrets": {"enabled": True}}}
    documents = render(helm, values, tmp_path=tmp_path, release="team", namespace=namespace)
    control_plane.kubectl("apply", "-f", "-", input="\n---\n".join(yaml.safe_dump(doc) for doc in documents))
    account = f"system:serviceaccount:{namespace}:team-model-rollouts"
    try:
        secret_read = [("get", "secrets", "")]
        granted = permissions(control_plane, account, [*NEEDED, *secret_read], namespace=watched)
        assert [check for check, ok in granted.items() if not ok] == []
        elsewhere = permissions(control_plane, account, [*NEEDED, *secret_read], namespace=other_namespace)
        assert [check for check, ok in elsewhere.items() if ok] == []
        assert not can(control_plane, account, "list", "secrets", "", namespace=watched)

        lease = "leases.coordination.k8s.io"
        assert can(control_plane, account, "create", lease, "", namespace=namespace)
        for verb in ("get", "update"):
            assert can(control_plane, account, verb, lease, "", namespace=namespace, name="team-model-rollouts-leader")
            assert not can(control_plane, account, verb, lease, "", namespace=namespace, name="someone-elses")
        assert not can(control_plane, account, "delete", lease, "", namespace=namespace)
        # In the watched namespace the KServe router's claims (NEEDED, checked above), nowhere else.
        assert not any(can(control_plane, account, verb, lease, "", namespace=other_namespace) for verb in LEASE_VERBS)
    finally:
        control_plane.kubectl("delete", "namespace", watched, "--wait=false")
