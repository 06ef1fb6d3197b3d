"""`GatesChecker`: the pre-traffic stage. The contract first, then each gate of the registry, before any traffic.

Each pass either reuses a stored success or runs the gates from the start: readiness of both
servers, metadata, then the gates in the registry's order (`controller.gates.GATES`: the contract,
the golden set), stopping at the first that fails. Only waiting for readiness spans passes (its
start is kept in status, so a restarted controller keeps counting). A success is stored in status
field `gates`, keyed by the candidate, the baseline and the gates config, and is not run again; a
failure is reported but not reused, so a `retry` after fixing (say) a golden set checks afresh.
Each gate's report is kept under its key with its own verdict and summary, and `ran` lists the
keys in the order the gates ran, so kubectl shows them without knowing any gate.

What a gate reads from the cluster (a golden set's ConfigMap, or its key) that does not exist
fails nothing: `validate` and the gates raise `controller.errors.ReferenceProblem` naming the
field, and the rollout waits with ReferencesValid=False, no traffic moving, until it is created
(or fails at its progress deadline).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from controller.api import format_time, parse_time
from controller.checks import CheckContext, CheckOutcome, ReadConfigMap, RubricEntry, Verdict
from controller.gates import GATES
from controller.gates.contract import parse_metadata
from controller.gates.errors import EndpointRefused, GateInputError, OipUnavailable
from controller.gates.oip import OipClient, wait_until_ready
from controller.gates.plugin import ROLES, Gate, GatePlugin, GateReport, ReferenceLoader, Servers, report_json
from controller.gates.spec import GatesSpec, configures_gates, parse_gates
from controller.outbound import DEFAULT_POLICY, OutboundPolicy

STATUS_FIELD = "gates"


@dataclass(frozen=True, kw_only=True)
class GatesSettings:
    request_timeout_seconds: float = 5.0
    """Timeout of each HTTP request to a model server."""
    readiness_attempts: int = 3
    """Readiness probes per server within one pass before the pass gives up and requeues."""
    readiness_interval_seconds: float = 1.0
    """Pause between those probes."""
    retry_after_seconds: float = 5.0
    """When to run again after a pass that found a server not ready or unreachable."""
    outbound: OutboundPolicy = DEFAULT_POLICY
    """Which endpoints the gates may call (controller.outbound); a refused one fails the gates."""


@dataclass(frozen=True, kw_only=True)
class _Finding:
    """What one pass found, before it is turned into status and a CheckOutcome."""

    verdict: Verdict
    message: str
    reports: tuple[tuple[Gate, GateReport], ...] = ()
    """Each gate that ran and its report, in the order they ran."""
    waiting_since: str | None = None


def _config_hash(raw: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(raw, sort_keys=True, default=str).encode()).hexdigest()[:10]


class GatesChecker:
    """Implements `controller.checks.Checker` for the pre-traffic stage."""

    def __init__(
        self,
        *,
        read_configmap: ReadConfigMap,
        settings: GatesSettings = GatesSettings(),
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        gates: Mapping[str, GatePlugin] = GATES,
    ) -> None:
        self._read_configmap = read_configmap
        self._settings = settings
        self._transport = transport
        self._sleep = sleep
        self._gates = gates

    def validate(self, *, context: CheckContext) -> None:
        """What the gates read from the cluster (a golden set's ConfigMap and its key) must exist:
        else `ReferenceProblem` naming the field, so the rollout waits for it (ReferencesValid=False)
        while the candidate's Deployment may still be starting. Nothing else ahead: the gates
        themselves run before any traffic, and a mistake in spec.gates fails them (GateFailed)
        naming the field."""
        raw = context.spec.gates
        if not configures_gates(raw, gates=self._gates):
            return
        try:
            gates = parse_gates(raw, gates=self._gates)
        except GateInputError:
            return  # the gates report it, naming the field
        self._read_references(namespace=context.namespace, gates=gates)

    def __call__(self, *, context: CheckContext) -> CheckOutcome | None:
        raw = context.spec.gates
        if not configures_gates(raw, gates=self._gates):
            return None
        key = {
            "candidateHash": context.spec.candidate_hash(),
            "configHash": _config_hash(raw),
            "baselineVersion": context.stable_version,
            "candidateVersion": context.spec.candidate,
        }
        stored = context.status.extra.get(STATUS_FIELD)
        previous = stored if isinstance(stored, Mapping) and all(stored.get(k) == v for k, v in key.items()) else {}
        if previous.get("verdict") == Verdict.SUCCESSFUL:
            return CheckOutcome(
                verdict=Verdict.SUCCESSFUL,
                message=str(previous.get("message", "")),
                status_fields={STATUS_FIELD: dict(previous)},
                rubric=tuple(
                    RubricEntry(item=entry["item"], check=entry["check"], verdict=Verdict(entry["verdict"]))
                    for entry in previous.get("rubric", ())
                ),
            )
        try:
            gates = parse_gates(raw, gates=self._gates)
            finding = self._run(context=context, gates=gates, waiting_since=previous.get("waitingSince"))
        except GateInputError as error:
            finding = _Finding(verdict=Verdict.FAILED, message=f"gates: {error}")
        except OipUnavailable as error:
            finding = _Finding(verdict=Verdict.RUNNING, message=f"gates: a model server did not answer: {error}")
        except EndpointRefused as error:
            finding = _Finding(verdict=Verdict.FAILED, message=f"gates: {_refused_endpoint(context, error)}")
        return self._outcome(context=context, key=key, finding=finding)

    def _outcome(self, *, context: CheckContext, key: Mapping[str, str], finding: _Finding) -> CheckOutcome:
        rubric = tuple(
            RubricEntry(item=item, check=gate.check, verdict=Verdict.SUCCESSFUL if report.passed else Verdict.FAILED)
            for gate, report in finding.reports
            for item in gate.rubric_items
        )
        body: dict[str, Any] = {
            **key,
            "verdict": finding.verdict.value,
            "message": finding.message,
            "checkedAt": format_time(context.now),
            "rubric": [{"item": e.item, "check": e.check, "verdict": e.verdict.value} for e in rubric],
        }
        if finding.waiting_since is not None:
            body["waitingSince"] = finding.waiting_since
        if finding.reports:
            body["ran"] = [gate.key for gate, _ in finding.reports]
            body.update((gate.key, report_json(report)) for gate, report in finding.reports)
        return CheckOutcome(
            verdict=finding.verdict,
            message=finding.message,
            requeue_after=self._settings.retry_after_seconds
            if finding.verdict in (Verdict.RUNNING, Verdict.INCONCLUSIVE)
            else None,
            status_fields={STATUS_FIELD: body},
            rubric=rubric,
        )

    @staticmethod
    def _endpoint(*, context: CheckContext, version: str) -> str:
        for index, entry in enumerate(context.spec.versions):
            if entry.version == version:
                if not entry.endpoint:
                    raise GateInputError(
                        f"spec.versions[{index}].endpoint",
                        f"is required for gates: the base URL of {version}'s OIP server",
                    )
                return entry.endpoint
        raise GateInputError("spec.versions", f"has no entry for version {version}; add it back")

    def _read_references(self, *, namespace: str, gates: GatesSpec) -> dict[str, ReferenceLoader | None]:
        """Each gate's loader of what it reads from the cluster, by key; a missing object raises
        ReferenceProblem naming the field."""
        return {
            gate.key: gate.read_reference(
                namespace=namespace, field_path=f"spec.gates.{gate.key}", read_configmap=self._read_configmap
            )
            for gate in gates.gates
        }

    def _run(self, *, context: CheckContext, gates: GatesSpec, waiting_since: str | None) -> _Finding:
        model = context.spec.model
        versions = {"baseline": context.stable_version, "candidate": context.spec.candidate}
        endpoints = {role: self._endpoint(context=context, version=versions[role]) for role in ROLES}
        # What the gates judge with is read, and parsed, before any server is called: a missing
        # or malformed golden set needs no model server to be reported.
        references = {
            key: None if loader is None else loader()
            for key, loader in self._read_references(namespace=context.namespace, gates=gates).items()
        }
        clients = {
            role: OipClient(
                base_url=url,
                timeout_seconds=self._settings.request_timeout_seconds,
                outbound=self._settings.outbound,
                transport=self._transport,
            )
            for role, url in endpoints.items()
        }
        try:
            unready = [
                role
                for role, client in clients.items()
                if not wait_until_ready(
                    client,
                    model=model,
                    attempts=self._settings.readiness_attempts,
                    interval_seconds=self._settings.readiness_interval_seconds,
                    sleep=self._sleep,
                )
            ]
            if unready:
                return self._not_ready(
                    context=context,
                    gates=gates,
                    unready=[f"{role} {versions[role]} ({endpoints[role]})" for role in unready],
                    candidate_unready="candidate" in unready,
                    waiting_since=waiting_since,
                )
            metadata = {
                role: parse_metadata(client.metadata(model=model), where=f"{role} {versions[role]} metadata")
                for role, client in clients.items()
            }
            servers = Servers(model=model, versions=versions, metadata=metadata, clients=clients)
            contract = gates.contract.terms(metadata=metadata, baseline=versions["baseline"])
            reports: list[tuple[Gate, GateReport]] = []
            for gate in gates.gates:
                report = gate.run(servers=servers, contract=contract, reference=references[gate.key])
                reports.append((gate, report))
                if not report.passed:
                    break
        finally:
            for client in clients.values():
                client.close()
        passed = all(report.passed for _, report in reports)
        return _Finding(
            verdict=Verdict.SUCCESSFUL if passed else Verdict.FAILED,
            message="; ".join(report.message() for _, report in reports),
            reports=tuple(reports),
        )

    def _not_ready(
        self,
        *,
        context: CheckContext,
        gates: GatesSpec,
        unready: Sequence[str],
        candidate_unready: bool,
        waiting_since: str | None,
    ) -> _Finding:
        since = parse_time(waiting_since) or context.now
        waited = (context.now - since).total_seconds()
        who, limit = ", ".join(unready), gates.readiness_timeout_seconds
        if waited < limit:
            return _Finding(
                verdict=Verdict.RUNNING,
                message=f"gates: waiting for {who} to be ready ({waited:.0f}s of {limit:g}s)",
                waiting_since=format_time(since),
            )
        message = f"gates: {who} not ready after {limit:g}s"
        # A candidate that never becomes ready must not get traffic; a baseline that is not ready
        # says nothing against the candidate.
        return _Finding(
            verdict=Verdict.FAILED if candidate_unready else Verdict.INCONCLUSIVE,
            message=message,
            waiting_since=format_time(since),
        )


def _refused_endpoint(context: CheckContext, error: EndpointRefused) -> str:
    """The refusal, naming the endpoint fields whose host was refused so the fix is plain."""
    fields = []
    for index, entry in enumerate(context.spec.versions):
        try:
            host = httpx.URL(entry.endpoint or "").raw_host.decode("ascii")
        except (httpx.InvalidURL, UnicodeDecodeError):
            continue
        if host == error.host:
            fields.append(f"spec.versions[{index}].endpoint {entry.endpoint}")
    where = "; ".join(fields) or "an endpoint"
    return f"{where}: {error}"
