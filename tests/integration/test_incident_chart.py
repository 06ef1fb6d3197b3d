"""The chart's alertReceiver values: off by default; on, the token comes from a Secret mounted
read-only (no RBAC on Secrets), a Service port and TLS files are wired, the controller accepts the
rendered command line, and an optional NetworkPolicy lets only the named peers reach the receiver."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from controller.__main__ import alert_receiver_config, parse_args
from tests.integration.test_chart import (
    CHART,
    controller_container,
    helm,
    of_kind,
    render,
    rules_granting,
    run_helm,
)

pytestmark = pytest.mark.integration

__all__ = ["helm"]  # the session fixture, imported for the tests below

MONITORING = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
ENABLED: dict[str, Any] = {"alertReceiver": {"enabled": True, "tokenSecret": {"name": "alertmanager-token"}}}


def test_the_receiver_is_off_by_default(helm: Path, tmp_path: Path) -> None:
    documents = render(helm, {}, tmp_path=tmp_path)
    container = controller_container(documents)
    assert not any(arg.startswith("--alert-receiver") for arg in container["args"])
    assert [port["name"] for port in container["ports"]] == ["metrics"]
    assert not of_kind(documents, "NetworkPolicy")
    assert [s["metadata"]["name"] for s in of_kind(documents, "Service")] == ["mr-model-rollouts-metrics"]
    assert alert_receiver_config(parse_args(container["args"])) is None


def test_enabled_the_token_comes_from_a_secret_mount_and_a_service_exposes_the_port(helm: Path, tmp_path: Path) -> None:
    # given the receiver enabled with a token Secret and a TLS Secret
    values = {"alertReceiver": {**ENABLED["alertReceiver"], "tls": {"secretName": "alerts-tls"}}}
    documents = render(helm, values, tmp_path=tmp_path)

    # then the controller is started with the receiver's flags, which it accepts
    container = controller_container(documents)
    config = alert_receiver_config(parse_args(container["args"]))
    assert config is not None
    assert config.token_file == Path("/etc/model-rollouts/alert-receiver/token")
    assert config.port == 8443
    assert config.tls_cert_file == Path("/etc/model-rollouts/alert-receiver-tls/tls.crt")
    assert config.tls_key_file == Path("/etc/model-rollouts/alert-receiver-tls/tls.key")
    assert config.repeat_interval.total_seconds() == 4 * 3600

    # and the token and certificate are read-only Secret mounts: no right to read Secrets is granted
    mounts = {mount["name"]: mount for mount in container["volumeMounts"]}
    assert mounts["alert-receiver-token"] == {
        "name": "alert-receiver-token", "mountPath": "/etc/model-rollouts/alert-receiver", "readOnly": True,
    }  # fmt: skip
    assert mounts["alert-receiver-tls"]["readOnly"] is True
    (deployment,) = of_kind(documents, "Deployment")
    volumes = {volume["name"]: volume for volume in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["alert-receiver-token"]["secret"] == {
        "secretName": "alertmanager-token", "items": [{"key": "token", "path": "token"}],
    }  # fmt: skip
    assert volumes["alert-receiver-tls"]["secret"]["secretName"] == "alerts-tls"
    assert rules_granting(documents, "secrets") == []

    # and a Service of its own sends its port to the container's `alerts` port
    assert {"name": "alerts", "containerPort": 8443, "protocol": "TCP"} in container["ports"]
    (service,) = [s for s in of_kind(documents, "Service") if s["metadata"]["name"] == "mr-model-rollouts-alerts"]
    assert service["spec"]["ports"] == [{"name": "alerts", "port": 8443, "targetPort": "alerts", "protocol": "TCP"}]


def test_the_network_policy_lets_only_the_named_peers_reach_the_receiver(helm: Path, tmp_path: Path) -> None:
    values = {"alertReceiver": {**ENABLED["alertReceiver"], "networkPolicy": {"enabled": True, "from": MONITORING}}}
    (policy,) = of_kind(render(helm, values, tmp_path=tmp_path), "NetworkPolicy")
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    assert policy["spec"]["ingress"] == [
        {"ports": [{"port": "alerts", "protocol": "TCP"}], "from": MONITORING},
        {"ports": [{"port": "metrics", "protocol": "TCP"}]},
    ]


@pytest.mark.parametrize(
    ("values", "refusal"),
    [
        ({"alertReceiver": {"enabled": True}}, "alertReceiver.tokenSecret.name is required"),
        (
            {"alertReceiver": {**ENABLED["alertReceiver"], "networkPolicy": {"enabled": True}}},
            "alertReceiver.networkPolicy.from is required",
        ),
        ({**ENABLED, "sharding": {"shards": [{"name": "a"}]}}, "cannot be used with sharding.shards"),
    ],
)
def test_a_receiver_that_cannot_work_is_refused_at_rendering(
    helm: Path, tmp_path: Path, values: dict[str, Any], refusal: str
) -> None:
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    rendered = run_helm(helm, "template", "mr", str(CHART), "-f", str(values_file))
    assert rendered.returncode != 0 and refusal in rendered.stderr


def test_helm_lint_passes_with_the_receiver_on(helm: Path, tmp_path: Path) -> None:
    values_file = tmp_path / "values.yaml"
    on = {"alertReceiver": {**ENABLED["alertReceiver"], "networkPolicy": {"enabled": True, "from": MONITORING}}}
    values_file.write_text(yaml.safe_dump(on))
    linted = run_helm(helm, "lint", "--strict", str(CHART), "-f", str(values_file))
    assert linted.returncode == 0, linted.stdout + linted.stderr
