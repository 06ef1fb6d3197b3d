"""The check routers that send traffic to one Service per version share: each version about to get
traffic has its Service, and the Service has the version's port."""

from __future__ import annotations

from controller.api import ModelRolloutSpec
from controller.kube import Kube


def service_problem(kube: Kube, *, namespace: str, spec: ModelRolloutSpec, versions: tuple[str, ...]) -> str | None:
    for version_name in versions:
        backend = spec.version(version_name).routed_backend
        service = kube.get_service(namespace=namespace, name=backend.service)
        if service is None:
            return (
                f"Service {namespace}/{backend.service} of version {version_name} not found; "
                "create it or fix spec.versions[].backend.service"
            )
        ports = {port.get("port") for port in (service.get("spec") or {}).get("ports") or []}
        if backend.port not in ports:
            return (
                f"Service {namespace}/{backend.service} has no port {backend.port} "
                f"(it has {sorted(p for p in ports if isinstance(p, int))}); fix spec.versions[].backend.port"
            )
    return None
