"""Leader election on a coordination.k8s.io Lease, so two replicas never both act.

The holder renews the lease every `renew_seconds`; a candidate takes it over only once it has
not been renewed for `lease_seconds`. A leader that cannot renew before its lease runs out stops
acting at once (the process exits and is restarted), because another replica may take over.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from controller import telemetry

log = logging.getLogger(__name__)

DEFAULT_LEASE_NAME = "model-rollouts-controller"
"""The Lease of an unsharded controller (one that owns every ModelRollout)."""


def default_lease_name(label_selector: str) -> str:
    """The Lease of the shard owning the rollouts that match `label_selector`: distinct per
    selector, so that each shard elects its own leader, and readable, e.g.
    `model-rollouts-controller-sharding-fluxcd-io-key-shard1-73fdc1be` for
    `sharding.fluxcd.io/key=shard1`. The hash is of the selector as written: every replica of a
    shard must be given the same string."""
    text = label_selector.strip()
    if not text:
        return DEFAULT_LEASE_NAME
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40].strip("-")
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    return f"{DEFAULT_LEASE_NAME}-{slug}-{digest}" if slug else f"{DEFAULT_LEASE_NAME}-{digest}"


@dataclass(frozen=True, kw_only=True)
class LeaderElectionSettings:
    lease_name: str = DEFAULT_LEASE_NAME
    """Name of the Lease all replicas (of one shard) compete for."""
    lease_namespace: str = "default"
    """Namespace of that Lease (the controller's own namespace in a cluster)."""
    identity: str = ""
    """This replica's name in the Lease; the pod name in a cluster."""
    lease_seconds: float = 15.0
    """How long a lease holds without renewal before another replica may take it."""
    renew_seconds: float = 10.0
    """A leader that has not renewed for this long gives up leadership."""
    retry_seconds: float = 2.0
    """How often replicas try to acquire or renew."""


class LeaderElector:
    def __init__(self, *, api_client: client.ApiClient, settings: LeaderElectionSettings) -> None:
        self.settings = settings
        self.api = client.CoordinationV1Api(api_client)
        self.is_leader = threading.Event()

    def run(self, *, stop: threading.Event, on_lost: Callable[[], None]) -> None:
        """Tries until `stop`; sets `is_leader` once acquired; calls `on_lost` if it is lost."""
        last_renewal: datetime | None = None
        while not stop.is_set():
            now = datetime.now(UTC)
            try:
                acquired = self._try_acquire_or_renew(now)
            except Exception:
                log.exception("leader election: lease update failed")
                acquired = False
            if acquired:
                last_renewal = now
                if not self.is_leader.is_set():
                    log.info("leader election: became leader", extra={"identity": self.settings.identity})
                    self.is_leader.set()
                    telemetry.IS_LEADER.set(1)
            elif self.is_leader.is_set() and (
                last_renewal is None or now - last_renewal > timedelta(seconds=self.settings.renew_seconds)
            ):
                log.error("leader election: lost the lease", extra={"identity": self.settings.identity})
                self.is_leader.clear()
                telemetry.IS_LEADER.set(0)
                on_lost()
                return
            stop.wait(self.settings.retry_seconds)

    def release(self) -> None:
        """Hands the lease over at once on a clean shutdown instead of letting it expire."""
        if not self.is_leader.is_set():
            return
        s = self.settings
        try:
            lease = self.api.read_namespaced_lease(s.lease_name, s.lease_namespace)
            if lease.spec is not None and lease.spec.holder_identity == s.identity:
                lease.spec.holder_identity = None
                lease.spec.renew_time = None
                self.api.replace_namespaced_lease(s.lease_name, s.lease_namespace, lease)
        except ApiException:
            log.warning("leader election: could not release the lease")
        self.is_leader.clear()

    def _try_acquire_or_renew(self, now: datetime) -> bool:
        s = self.settings
        try:
            lease = self.api.read_namespaced_lease(s.lease_name, s.lease_namespace)
        except ApiException as error:
            if error.status != 404:
                raise
            body = client.V1Lease(
                metadata=client.V1ObjectMeta(name=s.lease_name, namespace=s.lease_namespace),
                spec=client.V1LeaseSpec(
                    holder_identity=s.identity,
                    lease_duration_seconds=int(s.lease_seconds),
                    acquire_time=now,
                    renew_time=now,
                    lease_transitions=0,
                ),
            )
            try:
                self.api.create_namespaced_lease(s.lease_namespace, body)
            except ApiException as create_error:
                if create_error.status == 409:
                    return False
                raise
            return True
        spec = lease.spec
        if spec is None:
            spec = lease.spec = client.V1LeaseSpec()
        held_by_me = spec.holder_identity == s.identity
        renewed = spec.renew_time
        duration = spec.lease_duration_seconds or int(s.lease_seconds)
        expired = renewed is None or not spec.holder_identity or now > renewed + timedelta(seconds=duration)
        if not held_by_me and not expired:
            return False
        if not held_by_me:
            spec.acquire_time = now
            spec.lease_transitions = (spec.lease_transitions or 0) + 1
        spec.holder_identity = s.identity
        spec.lease_duration_seconds = int(s.lease_seconds)
        spec.renew_time = now
        try:
            # resourceVersion in the body makes this a compare-and-swap: one winner.
            self.api.replace_namespaced_lease(s.lease_name, s.lease_namespace, lease)
        except ApiException as error:
            if error.status == 409:
                return False
            raise
        return True
