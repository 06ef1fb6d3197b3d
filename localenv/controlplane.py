"""A real Kubernetes control plane on 127.0.0.1: etcd and kube-apiserver built from pinned sources.

Use it from Python (`ControlPlane.start()`, also a context manager), as the pytest fixture
`control_plane` (tests/conftest.py), or from the command line:

    python -m localenv.controlplane up      # start in the background, print the environment
    eval "$(python -m localenv.controlplane env)"
    python -m localenv.controlplane down    # stop it and remove its files
    python -m localenv.controlplane serve   # run in the foreground until Ctrl-C

Binaries come from hack/build-control-plane.sh (built once, cached by version). The admin is a
bearer token in system:masters; `ControlPlane.mint_identity` makes client certificates for any
other user and groups, and the admin may impersonate anyone (`kubectl --as`).

Every process started here leads its own process group and is stopped by `stop()` (called on
exit from a `with` block, at interpreter exit, and on a failed start). The kernel also kills it
if the Python process that started it dies without cleaning up.
"""

from __future__ import annotations

import argparse
import atexit
import ctypes
import logging
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import yaml

from localenv.supervisor import hold_until_signalled, live_state, stop_supervisor

LOG = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
BUILD_SCRIPT = REPO_ROOT / "hack" / "build-control-plane.sh"
PROJECT_CRD_DIR = REPO_ROOT / "manifests" / "crds"
GATEWAY_API_HTTPROUTE_CRD_GLOB = "crds/gateway-api-*/httproutes.yaml"
"""Where the build script puts the Gateway API HTTPRoute CRD, relative to the binaries."""
DEFAULT_COMMAND_LINE_DIR = REPO_ROOT / "out" / "control-plane"

# kube-apiserver insists on a service range; nothing here ever dials an address in it. Wide,
# because no namespace controller runs: the whole suite's Services (several per test, never
# deleted) share one control plane, and a /24 ran out of addresses.
SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/16"
ADMIN_USER = "admin"
CERTIFICATE_VALIDITY_DAYS = "30"
STOP_GRACE_SECONDS = 15.0
POLL_INTERVAL_SECONDS = 0.1
PR_SET_PDEATHSIG = 1


class ControlPlaneError(RuntimeError):
    """The control plane could not be built, started or made ready."""


@dataclass(frozen=True, kw_only=True)
class ControlPlaneSettings:
    """How to start a control plane."""

    crd_files: tuple[Path, ...] | None = None
    """CRD manifests to apply and wait for; None means `default_crd_files()`."""
    work_dir: Path | None = None
    """Directory for data, keys, logs and kubeconfigs, created if missing and removed on stop;
    None means a fresh temporary directory."""
    ready_timeout_seconds: float = 120.0
    """How long kube-apiserver may take to become ready, and the CRDs to be served."""


@dataclass(frozen=True, kw_only=True)
class Component:
    """A process of the control plane, leader of its own process group."""

    name: str
    """Short name, also the stem of its log file ("etcd", "kube-apiserver", ...)."""
    process: subprocess.Popen[bytes]
    """The running process; its pid is also its process-group id."""
    log_file: Path
    """Where its stdout and stderr go."""


def build_binaries() -> Path:
    """Runs the (cached) build script and returns the directory holding the binaries.

    Progress goes to stderr as the script runs; a cold build takes minutes.
    """
    result = subprocess.run(["bash", str(BUILD_SCRIPT)], stdout=subprocess.PIPE, text=True, check=False)
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines:
        raise ControlPlaneError(f"{BUILD_SCRIPT} exited with {result.returncode}; its progress and errors are above")
    return Path(lines[-1])


def default_crd_files(bin_dir: Path) -> tuple[Path, ...]:
    """The project's own CRDs (manifests/crds/*.yaml) and the Gateway API HTTPRoute CRD."""
    httproute_crds = sorted(bin_dir.glob(GATEWAY_API_HTTPROUTE_CRD_GLOB))
    if not httproute_crds:
        raise ControlPlaneError(f"no {GATEWAY_API_HTTPROUTE_CRD_GLOB} under {bin_dir}: rerun {BUILD_SCRIPT}")
    return (*sorted(PROJECT_CRD_DIR.glob("*.yaml")), httproute_crds[-1])


@dataclass(frozen=True, kw_only=True)
class ServedResource:
    """A resource that a CRD makes the API server serve."""

    crd_name: str
    """metadata.name of the CRD, e.g. "httproutes.gateway.networking.k8s.io"."""
    group_version: str
    """e.g. "gateway.networking.k8s.io/v1"."""
    plural: str
    """e.g. "httproutes"."""


def served_resources(crd_files: Sequence[Path]) -> list[ServedResource]:
    """Every (CRD, served version) pair declared in the given manifests."""
    resources: list[ServedResource] = []
    for crd_file in crd_files:
        for document in yaml.safe_load_all(crd_file.read_text()):
            if not document or document.get("kind") != "CustomResourceDefinition":
                continue
            spec = document["spec"]
            resources.extend(
                ServedResource(
                    crd_name=document["metadata"]["name"],
                    group_version=f"{spec['group']}/{version['name']}",
                    plural=spec["names"]["plural"],
                )
                for version in spec["versions"]
                if version.get("served", True)
            )
    return resources


def free_local_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _openssl(*args: str) -> None:
    result = subprocess.run(["openssl", *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ControlPlaneError(f"openssl {' '.join(args)} failed: {result.stderr.strip()}")


def _new_ec_key(path: Path) -> None:
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(path))


def _write_kubeconfig(*, path: Path, server_url: str, ca_file: Path, user: dict[str, Any]) -> None:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "local", "cluster": {"server": server_url, "certificate-authority": str(ca_file)}}],
        "users": [{"name": "local-user", "user": user}],
        "contexts": [{"name": "local", "context": {"cluster": "local", "user": "local-user"}}],
        "current-context": "local",
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)


def _die_with_parent() -> None:
    """Runs in the child before exec: the kernel kills it when the parent dies.

    SIGKILL, not SIGTERM: kube-apiserver's graceful shutdown can hang once etcd is gone too, and
    a parent that died uncleanly has abandoned the work directory anyway.
    """
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _log_tail(path: Path, *, lines: int = 30) -> str:
    if not path.exists():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


class ControlPlane:
    """A running etcd + kube-apiserver pair (and whatever else `start_component` added)."""

    def __init__(self, *, bin_dir: Path, work_dir: Path, server_url: str, token: str) -> None:
        self.bin_dir = bin_dir
        """Directory of the built binaries (kubectl, kube-apiserver, etcd, ...)."""
        self.work_dir = work_dir
        """Holds pki/, etcd/, logs/, identities/ and the admin kubeconfig; removed by stop()."""
        self.server_url = server_url
        """https://127.0.0.1:PORT of kube-apiserver."""
        self.token = token
        """Bearer token of the admin (group system:masters)."""
        self.kubeconfig = work_dir / "kubeconfig"
        """Admin kubeconfig file."""
        self.crd_files: tuple[Path, ...] = ()
        """The CRD manifests installed at start."""
        self.startup_seconds = 0.0
        """Wall time from start() to ready, CRDs served, build check included."""
        self._pki_dir = work_dir / "pki"
        self._serving_ca_file = self._pki_dir / "serving" / "apiserver.crt"
        self._client_ca_cert = self._pki_dir / "client-ca.crt"
        self._client_ca_key = self._pki_dir / "client-ca.key"
        self._components: list[Component] = []

    @classmethod
    def start(cls, settings: ControlPlaneSettings = ControlPlaneSettings()) -> ControlPlane:
        """Builds (or finds) the binaries, starts etcd and kube-apiserver, installs the CRDs."""
        began = time.monotonic()
        bin_dir = build_binaries()
        crd_files = default_crd_files(bin_dir) if settings.crd_files is None else settings.crd_files
        work_dir = settings.work_dir or Path(tempfile.mkdtemp(prefix="model-rollouts-control-plane-"))
        work_dir.mkdir(parents=True, exist_ok=True)
        apiserver_port = free_local_port()
        plane = cls(
            bin_dir=bin_dir,
            work_dir=work_dir,
            server_url=f"https://127.0.0.1:{apiserver_port}",
            token=secrets.token_urlsafe(32),
        )
        atexit.register(plane.stop)
        try:
            plane._boot(apiserver_port=apiserver_port, deadline=time.monotonic() + settings.ready_timeout_seconds)
            plane._install_crds(crd_files, deadline=time.monotonic() + settings.ready_timeout_seconds)
        except BaseException:
            plane.stop()
            raise
        plane.startup_seconds = time.monotonic() - began
        LOG.info(
            "control plane at %s ready in %.1fs (work dir %s)",
            plane.server_url,
            plane.startup_seconds,
            work_dir,
        )
        return plane

    def _boot(self, *, apiserver_port: int, deadline: float) -> None:
        self._pki_dir.mkdir()
        service_account_key = self._pki_dir / "service-account.key"
        service_account_public_key = self._pki_dir / "service-account.pub"
        _new_ec_key(service_account_key)
        _openssl("pkey", "-in", str(service_account_key), "-pubout", "-out", str(service_account_public_key))
        _new_ec_key(self._client_ca_key)
        _openssl(
            *("req", "-x509", "-new", "-key", str(self._client_ca_key), "-out", str(self._client_ca_cert)),
            *("-subj", "/CN=model-rollouts-local-client-ca", "-days", CERTIFICATE_VALIDITY_DAYS),
        )
        token_file = self._pki_dir / "tokens.csv"
        token_file.write_text(f'{self.token},{ADMIN_USER},{ADMIN_USER}-uid,"system:masters"\n')

        etcd_client_url = f"http://127.0.0.1:{free_local_port()}"
        etcd_peer_url = f"http://127.0.0.1:{free_local_port()}"
        self.start_component(
            name="etcd",
            argv=[
                str(self.bin_dir / "etcd"),
                "--name=local",
                f"--data-dir={self.work_dir / 'etcd'}",
                f"--listen-client-urls={etcd_client_url}",
                f"--advertise-client-urls={etcd_client_url}",
                f"--listen-peer-urls={etcd_peer_url}",
                f"--initial-advertise-peer-urls={etcd_peer_url}",
                f"--initial-cluster=local={etcd_peer_url}",
                "--unsafe-no-fsync",
            ],
        )
        self.start_component(
            name="kube-apiserver",
            argv=[
                str(self.bin_dir / "kube-apiserver"),
                f"--etcd-servers={etcd_client_url}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={apiserver_port}",
                f"--cert-dir={self._serving_ca_file.parent}",
                f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                "--authorization-mode=RBAC",
                f"--token-auth-file={token_file}",
                f"--client-ca-file={self._client_ca_cert}",
                f"--service-account-issuer={self.server_url}/",
                f"--service-account-key-file={service_account_public_key}",
                f"--service-account-signing-key-file={service_account_key}",
                # Without kube-controller-manager no namespace gets a default ServiceAccount, and
                # this admission plugin would then refuse every Pod (envtest disables it too).
                "--disable-admission-plugins=ServiceAccount",
            ],
        )
        self._wait_until("kube-apiserver /readyz answers ok", self._apiserver_ready, deadline=deadline)
        _write_kubeconfig(
            path=self.kubeconfig,
            server_url=self.server_url,
            ca_file=self._serving_ca_file,
            user={"token": self.token},
        )

    def start_component(self, *, name: str, argv: Sequence[str], append_log: bool = False) -> Component:
        """Starts a process that stop() will stop: its own process group, output in logs/NAME.log
        (appended to, with `append_log`, instead of started afresh)."""
        log_dir = self.work_dir / "logs"
        log_dir.mkdir(exist_ok=True)
        log_file = log_dir / f"{name}.log"
        with log_file.open("ab" if append_log else "wb") as log:
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        component = Component(name=name, process=process, log_file=log_file)
        self._components.append(component)
        return component

    def component(self, name: str) -> Component:
        """The newest component of that name, running or not (say, to signal it: its pid is also
        its process-group id)."""
        for component in reversed(self._components):
            if component.name == name:
                return component
        raise ControlPlaneError(f"no component named {name}")

    def etcd_client_url(self) -> str:
        """http://127.0.0.1:PORT where etcd serves clients (its gRPC gateway answers JSON there)."""
        prefix = "--listen-client-urls="
        argv = [str(arg) for arg in self.component("etcd").process.args]  # type: ignore[union-attr]
        return next(arg.removeprefix(prefix) for arg in argv if arg.startswith(prefix))

    def restart_component(self, name: str, *, ready_timeout_seconds: float = 120.0) -> Component:
        """Starts a component that has exited (a test killed it, say) again, with the same command
        line, port and files, its output appended to the same log; for kube-apiserver, waits until
        it is ready again."""
        old = self.component(name)
        if old.process.poll() is None:
            raise ControlPlaneError(f"{name} (pid {old.process.pid}) is still running; stop it first")
        self._components.remove(old)
        argv = [str(arg) for arg in old.process.args]  # type: ignore[union-attr]
        component = self.start_component(name=name, argv=argv, append_log=True)
        if name == "kube-apiserver":
            self._wait_until(
                "the restarted kube-apiserver /readyz answers ok",
                self._apiserver_ready,
                deadline=time.monotonic() + ready_timeout_seconds,
            )
        return component

    def _http_client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.server_url,
            verify=ssl.create_default_context(cafile=str(self._serving_ca_file)),
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=5.0,
        )

    def _apiserver_ready(self) -> bool:
        if not self._serving_ca_file.exists():
            return False
        try:
            with self._http_client() as client:
                return client.get("/readyz").status_code == 200
        except (httpx.TransportError, ssl.SSLError):
            return False

    def _install_crds(self, crd_files: Sequence[Path], *, deadline: float) -> None:
        self.crd_files = tuple(crd_files)
        if not crd_files:
            return
        # Server-side: the HTTPRoute CRD is larger than the annotation client-side apply keeps.
        self.kubectl("apply", "--server-side", "--force-conflicts", *(f"--filename={f}" for f in crd_files))
        resources = served_resources(crd_files)
        with self._http_client() as client:

            def established() -> bool:
                return all(self._crd_established(client, r.crd_name) for r in resources)

            def in_discovery() -> bool:
                return all(self._in_discovery(client, r) for r in resources)

            self._wait_until("the CRDs are Established", established, deadline=deadline)
            self._wait_until("the CRDs are served in discovery", in_discovery, deadline=deadline)

    @staticmethod
    def _crd_established(client: httpx.Client, crd_name: str) -> bool:
        response = client.get(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{crd_name}")
        conditions = response.json().get("status", {}).get("conditions", []) if response.is_success else []
        return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)

    @staticmethod
    def _in_discovery(client: httpx.Client, resource: ServedResource) -> bool:
        response = client.get(f"/apis/{resource.group_version}")
        served = response.json().get("resources", []) if response.is_success else []
        return any(r["name"] == resource.plural for r in served)

    def _wait_until(self, what: str, condition: Callable[[], bool], *, deadline: float) -> None:
        while not condition():
            for component in self._components:
                if component.process.poll() is not None:
                    raise ControlPlaneError(
                        f"{component.name} exited with {component.process.returncode} while waiting until "
                        f"{what}; end of {component.log_file}:\n{_log_tail(component.log_file)}"
                    )
            if time.monotonic() > deadline:
                logs = "\n".join(f"--- {c.name}:\n{_log_tail(c.log_file)}" for c in self._components)
                raise ControlPlaneError(f"timed out waiting until {what}\n{logs}")
            time.sleep(POLL_INTERVAL_SECONDS)

    def kubectl(
        self, *args: str, kubeconfig: Path | None = None, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Runs the built kubectl against this control plane (as admin unless `kubeconfig` says
        otherwise); with `check`, a non-zero exit raises ControlPlaneError quoting stderr."""
        argv = [
            str(self.bin_dir / "kubectl"),
            f"--kubeconfig={kubeconfig or self.kubeconfig}",
            f"--cache-dir={self.work_dir / 'kubectl-cache'}",
            *args,
        ]
        result = subprocess.run(argv, input=input, capture_output=True, text=True, check=False, timeout=120)
        if check and result.returncode != 0:
            raise ControlPlaneError(f"kubectl {' '.join(args)} exited with {result.returncode}: {result.stderr}")
        return result

    def mint_identity(self, *, user: str, groups: Sequence[str] = ()) -> Path:
        """A kubeconfig that authenticates as `user` in `groups` (a client certificate signed by the
        control plane's client CA). It has no permissions until RBAC grants some."""
        identity_dir = self.work_dir / "identities" / f"{user}-{secrets.token_hex(4)}"
        identity_dir.mkdir(parents=True)
        key, request, certificate = (identity_dir / f"client.{suffix}" for suffix in ("key", "csr", "crt"))
        extensions = identity_dir / "extensions.cnf"
        extensions.write_text("extendedKeyUsage = clientAuth\n")
        subject = "".join([f"/CN={user}", *(f"/O={group}" for group in groups)])
        _new_ec_key(key)
        _openssl("req", "-new", "-key", str(key), "-subj", subject, "-out", str(request))
        _openssl(
            *("x509", "-req", "-in", str(request), "-out", str(certificate), "-extfile", str(extensions)),
            *("-CA", str(self._client_ca_cert), "-CAkey", str(self._client_ca_key)),
            *("-set_serial", str(secrets.randbits(63)), "-days", CERTIFICATE_VALIDITY_DAYS),
        )
        kubeconfig = identity_dir / "kubeconfig"
        _write_kubeconfig(
            path=kubeconfig,
            server_url=self.server_url,
            ca_file=self._serving_ca_file,
            user={"client-certificate": str(certificate), "client-key": str(key)},
        )
        return kubeconfig

    def process_ids(self) -> list[int]:
        """Process ids (also process-group ids) of every component still running."""
        return [c.process.pid for c in self._components if c.process.poll() is None]

    def stop(self) -> None:
        """Stops every component, newest first (SIGTERM to its group, SIGKILL after a grace
        period), and removes the work directory. Safe to call more than once."""
        atexit.unregister(self.stop)
        while self._components:
            component = self._components.pop()
            _stop_process_group(component.process)
        shutil.rmtree(self.work_dir, ignore_errors=True)

    def __enter__(self) -> ControlPlane:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()


def _stop_process_group(process: subprocess.Popen[bytes]) -> None:
    for stop_signal in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, stop_signal)
        except ProcessLookupError:
            break
        try:
            process.wait(timeout=STOP_GRACE_SECONDS)
            break
        except subprocess.TimeoutExpired:
            continue
    process.wait()


# --- command line -----------------------------------------------------------------------------


def _environment_lines(state: dict[str, Any]) -> str:
    return f"export KUBECONFIG={state['kubeconfig']}\nexport PATH={state['bin_dir']}:$PATH\n"


def _serve(directory: Path, *, crd_files: tuple[Path, ...] | None) -> int:
    """Runs a control plane until SIGTERM or Ctrl-C, announcing it in DIRECTORY/state.json."""
    running = live_state(directory)
    if running is not None:
        print(f"control plane already up at {running['server_url']}", file=sys.stderr)
        return 1
    work_dir = directory / "run"
    shutil.rmtree(work_dir, ignore_errors=True)  # left behind by a supervisor that was killed
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with ControlPlane.start(ControlPlaneSettings(crd_files=crd_files, work_dir=work_dir)) as plane:
        state = {
            "kubeconfig": str(plane.kubeconfig),
            "server_url": plane.server_url,
            "bin_dir": str(plane.bin_dir),
            "startup_seconds": round(plane.startup_seconds, 2),
        }
        hold_until_signalled(directory, state)
    return 0


def _up(directory: Path, command_line_args: Sequence[str], *, timeout_seconds: float) -> int:
    state = live_state(directory)
    if state is None:
        supervisor_log = directory / "supervisor.log"
        with supervisor_log.open("wb") as log:
            supervisor = subprocess.Popen(
                [sys.executable, "-m", "localenv.controlplane", *command_line_args],
                cwd=REPO_ROOT,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout_seconds
        while (state := live_state(directory)) is None:
            if supervisor.poll() is not None or time.monotonic() > deadline:
                print(f"control plane did not come up; end of {supervisor_log}:", file=sys.stderr)
                print(_log_tail(supervisor_log), file=sys.stderr)
                _stop_process_group(supervisor)
                return 1
            time.sleep(POLL_INTERVAL_SECONDS)
        print(f"control plane up in {state['startup_seconds']}s at {state['server_url']}", file=sys.stderr)
    else:
        print(f"control plane already up at {state['server_url']}", file=sys.stderr)
    sys.stdout.write(_environment_lines(state))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m localenv.controlplane", description="Run a local Kubernetes control plane."
    )
    parser.add_argument("command", choices=["up", "down", "env", "serve"])
    parser.add_argument(
        "--dir",
        type=Path,
        default=DEFAULT_COMMAND_LINE_DIR,
        help="state and work directory (default: %(default)s)",
    )
    parser.add_argument(
        "--crd",
        type=Path,
        action="append",
        help="CRD file to install (repeatable; default: project + HTTPRoute)",
    )
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds `up` waits, cold build included")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per readiness poll otherwise
    directory: Path = args.dir.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    crd_files = None if args.crd is None else tuple(path.resolve() for path in args.crd)
    if args.command == "serve":
        return _serve(directory, crd_files=crd_files)
    if args.command == "up":
        crd_args = [f"--crd={path}" for path in crd_files or ()]
        return _up(directory, ["serve", f"--dir={directory}", *crd_args], timeout_seconds=args.timeout)
    if args.command == "down":
        return stop_supervisor(directory, timeout_seconds=args.timeout, what="control plane")
    state = live_state(directory)
    if state is None:
        print("no control plane running: start one with `up`", file=sys.stderr)
        return 1
    sys.stdout.write(_environment_lines(state))
    return 0


if __name__ == "__main__":
    sys.exit(main())
