"""Fixtures shared by every test suite. Integration tests (tests/integration, each file marked with
`pytestmark = pytest.mark.integration`) get a real control plane from here; unit tests use none."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import kubernetes
import pytest

from localenv.controlplane import ControlPlane

# The official client leaves this function unannotated.
_new_client_from_config: Any = kubernetes.config.new_client_from_config


@pytest.fixture(scope="session")
def control_plane() -> Iterator[ControlPlane]:
    """etcd + kube-apiserver with the project's CRDs and the HTTPRoute CRD, once per session.

    Building the binaries on a cold cache takes minutes; a failure there is an error, never a skip.
    """
    with ControlPlane.start() as plane:
        yield plane


@pytest.fixture(scope="session")
def kube_api(control_plane: ControlPlane) -> Iterator[kubernetes.client.ApiClient]:
    """An official-client ApiClient acting as the admin of `control_plane`."""
    client = _new_client_from_config(config_file=str(control_plane.kubeconfig))
    with client:
        yield client


@pytest.fixture
def namespace(kube_api: kubernetes.client.ApiClient) -> Iterator[str]:
    """A fresh namespace of its own for each test."""
    core = kubernetes.client.CoreV1Api(kube_api)
    name = f"test-{secrets.token_hex(4)}"
    core.create_namespace(kubernetes.client.V1Namespace(metadata=kubernetes.client.V1ObjectMeta(name=name)))
    yield name
    # Nothing is waited for: without kube-controller-manager the namespace only turns Terminating.
    core.delete_namespace(name)
