"""`GatesChecker`: the pre-traffic stage. Contract first, then the golden set, before any traffic.

Each pass either reuses a stored success or runs the gates from the start: readiness of both
servers, metadata, contract, golden set. Only waiting for readiness spans passes (its start is
kept in status, so a restarted controller keeps counting). A success is stored in status field
`gates`, keyed by the candidate, the baseline and the gates config, and is not run again; a
failure is reported but not reused, so a `retry` after fixing (say) a golden set checks afresh.

A golden set's ConfigMap, or its key, that does not exist fails nothing: `validate` and the gates
raise `controller.errors.ReferenceProblem` naming the field, and the rollout waits with
ReferencesValid=False, no traffic moving, until it is created (or fails at its progress deadline).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from controller.api import format_time, parse_time
from controller.checks import CheckContext, CheckOutcome, ReadConfigMap, RubricEntry, Verdict
from controller.errors import ReferenceProblem
from controller.gates.contract import (
    ContractReport,
    ModelMetadata,
    TensorSpec,
    check_contract,
    parse_metadata,
)
from controller.gates.errors import EndpointRefused, GateInputError, OipUnavailable
from controller.gates.golden import (
    GoldenReport,
    GoldenRequest,
    InferAnswer,
    judge_golden_set,
    parse_golden_set,
)
from controller.gates.oip import OipClient, wait_until_ready
from controller.gates.spec import ConfigMapRef, GatesSpec, GoldenSetSpec, configures_gates, parse_gates
from controller.outbound import DEFAULT_POLICY, OutboundPolicy

STATUS_FIELD = "gates"
CONTRACT_RUBRIC_ITEMS = ("Infra 2", "Data 1")
GOLDEN_SET_RUBRIC_ITEMS = ("Infra 4", "Monitor 5")


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
    contract: ContractReport | None = None
    golden: GoldenReport | None = None
    waiting_since: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


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
    ) -> None:
        self._read_configmap = read_configmap
        self._settings = settings
        self._transport = transport
        self._sleep = sleep

    def validate(self, *, context: CheckContext) -> None:
        """The golden set's ConfigMap, when spec.gates names one, must exist and hold its key:
        else `ReferenceProblem` naming the field, so the rollout waits for it (ReferencesValid=False)
        while the candidate's Deployment may still be starting. Nothing else ahead: the gates
        themselves run before any traffic, and a mistake in spec.gates fails them (GateFailed)
        naming the field."""
        raw = context.spec.gates
        if not configures_gates(raw):
            return
        try:
            gates = parse_gates(raw)
        except GateInputError:
            return  # the gates report it, naming the field
        if gates.golden_set is not None and gates.golden_set.config_map is not None:
            self._golden_set_data(namespace=context.namespace, ref=gates.golden_set.config_map)

    def __call__(self, *, context: CheckContext) -> CheckOutcome | None:
        raw = context.spec.gates
        if not configures_gates(raw):
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
            finding = self._run(context=context, gates=parse_gates(raw), waiting_since=previous.get("waitingSince"))
        except GateInputError as error:
            finding = _Finding(verdict=Verdict.FAILED, message=f"gates: {error}")
        except OipUnavailable as error:
            finding = _Finding(verdict=Verdict.RUNNING, message=f"gates: a model server did not answer: {error}")
        except EndpointRefused as error:
            finding = _Finding(verdict=Verdict.FAILED, message=f"gates: {_refused_endpoint(context, error)}")
        return self._outcome(context=context, key=key, finding=finding)

    def _outcome(self, *, context: CheckContext, key: Mapping[str, str], finding: _Finding) -> CheckOutcome:
        rubric = tuple(
            RubricEntry(item=item, check=check, verdict=Verdict.SUCCESSFUL if report.passed else Verdict.FAILED)
            for check, items, report in (
                ("contract", CONTRACT_RUBRIC_ITEMS, finding.contract),
                ("golden-set", GOLDEN_SET_RUBRIC_ITEMS, finding.golden),
            )
            if report is not None
            for item in items
        )
        body: dict[str, Any] = {
            **key,
            "verdict": finding.verdict.value,
            "message": finding.message,
            "checkedAt": format_time(context.now),
            "rubric": [{"item": e.item, "check": e.check, "verdict": e.verdict.value} for e in rubric],
            **finding.extra,
        }
        if finding.waiting_since is not None:
            body["waitingSince"] = finding.waiting_since
        if finding.contract is not None:
            body["contract"] = finding.contract.to_json()
        if finding.golden is not None:
            body["goldenSet"] = finding.golden.to_json()
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

    def _load_golden_set(self, *, namespace: str, golden: GoldenSetSpec) -> tuple[Any, str]:
        """The raw requests and where they came from (for messages)."""
        if golden.inline is not None:
            return list(golden.inline), "spec.gates.goldenSet.inline"
        assert golden.config_map is not None  # parse_gates sets exactly one
        ref = golden.config_map
        data = self._golden_set_data(namespace=namespace, ref=ref)
        where = f"ConfigMap {namespace}/{ref.name} key {ref.key}"
        try:
            return json.loads(data[ref.key]), where
        except json.JSONDecodeError as error:
            raise GateInputError(where, f"not JSON: {error}") from error

    def _golden_set_data(self, *, namespace: str, ref: ConfigMapRef) -> Mapping[str, str]:
        """The ConfigMap's data, holding `ref.key`. A ConfigMap or key that is not there is a
        missing reference, not a failed gate: the rollout waits for it (ReferencesValid=False) and
        goes on once it is created, or fails at its progress deadline."""
        field_path = "spec.gates.goldenSet.configMapRef"
        data = self._read_configmap(namespace, ref.name)
        if data is None:
            raise ReferenceProblem(
                f"{field_path}.name: ConfigMap {namespace}/{ref.name} does not exist; create it or fix the name"
            )
        if ref.key not in data:
            raise ReferenceProblem(
                f"{field_path}.key: ConfigMap {namespace}/{ref.name} has no key {ref.key} "
                f"(it has {sorted(data)}); add it or fix the key"
            )
        return data

    def _run(self, *, context: CheckContext, gates: GatesSpec, waiting_since: str | None) -> _Finding:
        model = context.spec.model
        versions = {"baseline": context.stable_version, "candidate": context.spec.candidate}
        endpoints = {role: self._endpoint(context=context, version=v) for role, v in versions.items()}
        golden_raw = (
            None
            if gates.golden_set is None
            else self._load_golden_set(namespace=context.namespace, golden=gates.golden_set)
        )
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
            contract, inputs, outputs = self._contract(gates=gates, metadata=metadata, baseline=versions["baseline"])
            if not contract.passed or gates.golden_set is None or golden_raw is None:
                verdict = Verdict.SUCCESSFUL if contract.passed else Verdict.FAILED
                return _Finding(verdict=verdict, message=contract.message(), contract=contract)
            requests_raw, where = golden_raw
            requests = parse_golden_set(requests_raw, where=where, contract_inputs=inputs)
            golden = judge_golden_set(
                requests=requests,
                baseline=self._send(client=clients["baseline"], model=model, requests=requests),
                candidate=self._send(client=clients["candidate"], model=model, requests=requests),
                contract_outputs=outputs,
                rules=gates.golden_set.rules,
            )
        finally:
            for client in clients.values():
                client.close()
        return _Finding(
            verdict=Verdict.SUCCESSFUL if golden.passed else Verdict.FAILED,
            message=f"{contract.message()}; {golden.message()}",
            contract=contract,
            golden=golden,
            extra={"goldenSetSource": where},
        )

    @staticmethod
    def _contract(
        *, gates: GatesSpec, metadata: Mapping[str, ModelMetadata], baseline: str
    ) -> tuple[ContractReport, tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
        """The contract report, the expected inputs, and the outputs the golden set compares."""
        declared = gates.contract
        from_baseline = f"baseline {baseline} metadata"
        inputs = declared.inputs if declared.inputs is not None else metadata["baseline"].inputs
        sources = {"spec.gates.contract" if declared.inputs is not None else from_baseline}
        expected_outputs = None
        if not declared.allow_output_changes:
            expected_outputs = declared.outputs if declared.outputs is not None else metadata["baseline"].outputs
            sources.add("spec.gates.contract" if declared.outputs is not None else from_baseline)
        report = check_contract(
            candidate=metadata["candidate"],
            expected_inputs=inputs,
            expected_outputs=expected_outputs,
            expected_from=" and ".join(sorted(sources)),
        )
        return (
            report,
            inputs,
            expected_outputs if expected_outputs is not None else metadata["candidate"].outputs,
        )

    @staticmethod
    def _send(*, client: OipClient, model: str, requests: Sequence[GoldenRequest]) -> list[InferAnswer]:
        return [client.infer(model=model, body=request.body()) for request in requests]

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
