"""Fixtures for integration tests that drive the real controller process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from localenv.controller import RunningController, start_controller
from localenv.controlplane import ControlPlane
from localenv.prometheus import LocalPrometheus, ModelMetricsExporter
from tests.integration.rollout_world import World, controller_reading


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


@pytest.fixture(scope="module")
def exporter() -> Iterator[ModelMetricsExporter]:
    """A loopback exporter whose model metrics a test sets, shared by a module's tests."""
    metrics = ModelMetricsExporter()
    yield metrics
    metrics.close()


@pytest.fixture(scope="module")
def prometheus(exporter: ModelMetricsExporter) -> Iterator[LocalPrometheus]:
    """A real Prometheus scraping `exporter` every second (a module may scrape other targets)."""
    with LocalPrometheus(scrape_targets=[exporter.target]) as server:
        yield server


@pytest.fixture
def analysis_controller(
    control_plane: ControlPlane, namespace: str, tmp_path: Path, prometheus: LocalPrometheus
) -> Iterator[RunningController]:
    """The real controller process, measuring from the `prometheus` the module uses."""
    with controller_reading(
        prometheus, control_plane=control_plane, namespace=namespace, log_file=tmp_path / "controller.log"
    ) as running:
        yield running
