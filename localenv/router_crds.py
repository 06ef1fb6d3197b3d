"""The CRDs of the routers besides the Gateway API, installed into a running test control plane.

`hack/fetch-router-crds.sh` fetches them from pinned Go modules into the cache the control-plane
build uses (`make setup` runs it; `fetch_router_crds` runs it again, which costs about 10 ms when
cached). `install_router_crds` applies the chosen CRDs server-side (the KServe CRD is larger than
the annotation a client-side apply keeps) and waits, with a deadline, until each is Established
and each of its served versions is in discovery: after that, a client may create objects of the
kind at once.

No Istio or KServe controller runs here: these CRDs only let the API server store and validate
VirtualServices, DestinationRules and InferenceServices, which is what the routers read and write.

    plane = ControlPlane.start()
    install_router_crds(plane, ISTIO)
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes
import yaml
from kubernetes.client.exceptions import ApiException

from localenv.controlplane import REPO_ROOT, ControlPlane, ControlPlaneError, ServedResource

FETCH_SCRIPT = REPO_ROOT / "hack" / "fetch-router-crds.sh"
DEFAULT_TIMEOUT_SECONDS = 60.0
POLL_INTERVAL_SECONDS = 0.1

# libyaml's parser when PyYAML has it: the pure-Python one takes seconds on these 1 MB files.
_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_Dumper: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)

# The official client leaves this function unannotated.
_new_client_from_config: Any = kubernetes.config.new_client_from_config


@dataclass(frozen=True, kw_only=True)
class RouterCrds:
    """Some CRDs of one file fetched by hack/fetch-router-crds.sh."""

    name: str
    """Short name for messages, e.g. "istio"."""
    file: str
    """The file, relative to the directory the script prints."""
    crd_names: tuple[str, ...]
    """metadata.name of the CRDs of that file to install; the file's others are left out."""


ISTIO = RouterCrds(
    name="istio",
    file="istio-api-v1.32.0/customresourcedefinitions.gen.yaml",
    crd_names=("virtualservices.networking.istio.io", "destinationrules.networking.istio.io"),
)
"""VirtualService and DestinationRule (networking.istio.io, stored as v1; v1beta1 and v1alpha3
served too), of Istio's API module istio.io/api v1.32.0."""
KSERVE = RouterCrds(
    name="kserve",
    file="kserve-v0.17.0/serving.kserve.io_inferenceservices.yaml",
    crd_names=("inferenceservices.serving.kserve.io",),
)
"""InferenceService (serving.kserve.io/v1beta1) of KServe v0.17.0."""


def fetch_router_crds() -> Path:
    """Runs the (cached) fetch script and returns the directory holding the CRD files."""
    result = subprocess.run(["bash", str(FETCH_SCRIPT)], stdout=subprocess.PIPE, text=True, check=False)
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines:
        raise ControlPlaneError(f"{FETCH_SCRIPT} exited with {result.returncode}; its progress and errors are above")
    return Path(lines[-1])


def selected_documents(crd_file: Path, crd_names: Sequence[str]) -> list[dict[str, Any]]:
    """The CRDs named `crd_names` from `crd_file`, in that order; a name not found is an error."""
    found = {
        document["metadata"]["name"]: document
        for document in yaml.load_all(crd_file.read_text(), Loader=_Loader)
        if document and document.get("kind") == "CustomResourceDefinition"
    }
    missing = [name for name in crd_names if name not in found]
    if missing:
        raise ControlPlaneError(f"{crd_file} has no CRD named {', '.join(missing)}")
    return [found[name] for name in crd_names]


def install_router_crds(
    plane: ControlPlane,
    *routers: RouterCrds,
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
) -> list[ServedResource]:
    """Installs the routers' CRDs into `plane` (server-side apply, so installing twice changes
    nothing) and waits until they are Established and served; returns what they serve. Raises
    ControlPlaneError naming what was not ready by the deadline."""
    deadline = time.monotonic() + timeout_seconds
    crd_dir = fetch_router_crds()
    documents = [
        document for router in routers for document in selected_documents(crd_dir / router.file, router.crd_names)
    ]
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix="router-crds-", dir=plane.work_dir) as manifest:
        yaml.dump_all(documents, manifest, Dumper=_Dumper)
        manifest.flush()
        plane.kubectl("apply", "--server-side", "--force-conflicts", f"--filename={manifest.name}")
    resources = [
        ServedResource(
            crd_name=document["metadata"]["name"],
            group_version=f"{document['spec']['group']}/{version['name']}",
            plural=document["spec"]["names"]["plural"],
        )
        for document in documents
        for version in document["spec"]["versions"]
        if version.get("served", True)
    ]
    api = _new_client_from_config(config_file=str(plane.kubeconfig))
    with api:
        extensions = kubernetes.client.ApiextensionsV1Api(api)
        custom = kubernetes.client.CustomObjectsApi(api)
        names = sorted({r.crd_name for r in resources})
        _wait_until(
            f"{', '.join(names)} are Established",
            lambda: all(_established(extensions, name) for name in names),
            deadline=deadline,
        )
        _wait_until(
            "every served version is in discovery",
            lambda: all(_in_discovery(custom, r) for r in resources),
            deadline=deadline,
        )
    return resources


def _established(extensions: Any, crd_name: str) -> bool:
    try:
        crd = extensions.read_custom_resource_definition(crd_name)
    except ApiException as error:
        if error.status == 404:
            return False
        raise
    conditions = (crd.status.conditions if crd.status else None) or []
    return any(c.type == "Established" and c.status == "True" for c in conditions)


def _in_discovery(custom: Any, resource: ServedResource) -> bool:
    group, version = resource.group_version.split("/", 1)
    try:
        served = custom.get_api_resources(group, version)
    except ApiException as error:
        if error.status == 404:
            return False
        raise
    return any(r.name == resource.plural for r in served.resources or [])


def _wait_until(what: str, condition: Callable[[], bool], *, deadline: float) -> None:
    while not condition():
        if time.monotonic() > deadline:
            raise ControlPlaneError(f"timed out waiting until {what}")
        time.sleep(POLL_INTERVAL_SECONDS)
