"""Fixtures for integration tests that drive the real controller process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from localenv.controller import RunningController, start_controller
from localenv.controlplane import ControlPlane
from tests.integration.rollout_world import World


@pytest.fixture
def world(control_plane: ControlPlane, kube_api: client.ApiClient, namespace: str) -> World:
    """A namespace with Services iris-v1..v3 and an HTTPRoute `iris` sending all traffic to v1."""
    w = World(plane=control_plane, api=kube_api, namespace=namespace)
    w.create_services()
    w.create_route()
    return w


@pytest.fixture
def controller(control_plane: ControlPlane, namespace: str, tmp_path: Path) -> Iterator[RunningController]:
    """The real controller process, watching the test's namespace."""
    running = start_controller(
        kubeconfig=control_plane.kubeconfig, namespace=namespace, log_file=tmp_path / "controller.log"
    )
    yield running
    running.stop()
    print(running.log()[-5000:])
