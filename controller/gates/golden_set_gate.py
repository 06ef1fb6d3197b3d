"""The golden-set gate (Infra 4, Monitor 5): fixed requests sent to the baseline and the candidate,
the candidate's answers held to agreement with the baseline's and to sanity rules
(docs/checks/golden-set.md). The requests are written in the spec or kept in a ConfigMap: a
missing ConfigMap or key is a ReferenceProblem (the rollout waits for it), a malformed set fails
the gate. The requests carry the contract's inputs, and the answers are compared on its outputs."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar

from controller.checks import ReadConfigMap
from controller.errors import ReferenceProblem
from controller.gates import fields
from controller.gates.errors import GateInputError
from controller.gates.golden import (
    AgreementRules,
    Bounds,
    CompareMode,
    GoldenReport,
    GoldenRequest,
    InferAnswer,
    judge_golden_set,
    parse_golden_set,
)
from controller.gates.plugin import Contract, GatePlugin, ReferenceLoader, Servers

KEY = "goldenSet"


@dataclass(frozen=True, kw_only=True)
class ConfigMapRef:
    name: str
    """ConfigMap in the rollout's namespace."""
    key: str
    """Key whose value is the golden set as JSON."""


@dataclass(frozen=True, kw_only=True)
class GoldenRequests:
    """The golden set as read, before the contract's inputs are checked in it."""

    raw: Any
    """The requests as JSON values."""
    where: str
    """Where they are, for messages: `spec.gates.goldenSet.inline` or a ConfigMap and its key."""


@dataclass(frozen=True, kw_only=True)
class GoldenSetGate:
    """spec.gates.goldenSet, typed."""

    key: ClassVar[str] = KEY
    check: ClassVar[str] = "golden-set"
    rubric_items: ClassVar[tuple[str, ...]] = ("Infra 4", "Monitor 5")
    inline: tuple[Any, ...] | None
    """Requests written in the spec, still unparsed (parsing needs the contract)."""
    config_map: ConfigMapRef | None
    """Where the requests are otherwise; exactly one of `inline` and `config_map` is set."""
    rules: AgreementRules
    """What the candidate's answers must satisfy."""

    def read_reference(self, *, namespace: str, field_path: str, read_configmap: ReadConfigMap) -> ReferenceLoader:
        """The requests: inline, or the ConfigMap's data, which must hold the key (else
        ReferenceProblem naming the field: the rollout waits for it, then goes on once it is created
        or fails at its progress deadline); parsing them raises GateInputError when not JSON."""
        if self.config_map is None:
            inline = list(self.inline or ())
            return lambda: GoldenRequests(raw=inline, where=f"{field_path}.inline")
        ref, at = self.config_map, f"{field_path}.configMapRef"
        data = read_configmap(namespace, ref.name)
        if data is None:
            raise ReferenceProblem(
                f"{at}.name: ConfigMap {namespace}/{ref.name} does not exist; create it or fix the name"
            )
        if ref.key not in data:
            raise ReferenceProblem(
                f"{at}.key: ConfigMap {namespace}/{ref.name} has no key {ref.key} (it has {sorted(data)}); "
                "add it or fix the key"
            )
        where = f"ConfigMap {namespace}/{ref.name} key {ref.key}"
        text = data[ref.key]
        return lambda: GoldenRequests(raw=_json(text, where), where=where)

    def run(self, *, servers: Servers, contract: Contract, reference: object) -> GoldenReport:
        assert isinstance(reference, GoldenRequests), "the checker loads the golden set before running the gate"
        requests = parse_golden_set(reference.raw, where=reference.where, contract_inputs=contract.inputs)
        report = judge_golden_set(
            requests=requests,
            baseline=_send(servers, "baseline", requests),
            candidate=_send(servers, "candidate", requests),
            contract_outputs=contract.outputs,
            rules=self.rules,
        )
        return replace(report, source=reference.where)


def _json(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise GateInputError(where, f"not JSON: {error}") from error


def _send(servers: Servers, role: str, requests: Sequence[GoldenRequest]) -> list[InferAnswer]:
    return [servers.infer(role, request.body()) for request in requests]


def _config_map(raw: Any, where: str) -> ConfigMapRef:
    ref = fields.block(raw, where)
    name, key = ref.get("name"), ref.get("key")
    if not isinstance(name, str) or not name or not isinstance(key, str) or not key:
        raise GateInputError(where, "needs both name and key")
    return ConfigMapRef(name=name, key=key)


def _bounds(raw: Any, where: str) -> Bounds:
    given = fields.block(raw, where)
    bounds = Bounds(min=fields.number(given, "min", where, None), max=fields.number(given, "max", where, None))
    if bounds.min is not None and bounds.max is not None and bounds.min > bounds.max:
        raise GateInputError(
            f"{where}.min",
            f"{bounds.min:g} is above bounds.max {bounds.max:g}, so no output can be in bounds; swap them",
        )
    return bounds


def parse_config(raw: Any, where: str) -> GoldenSetGate:
    config: Mapping[str, Any] = fields.block(raw, where)
    inline, ref = config.get("inline"), config.get("configMapRef")
    if (inline is None) == (ref is None):
        raise GateInputError(where, "give exactly one of inline and configMapRef")
    if inline is not None and not isinstance(inline, list):
        raise GateInputError(f"{where}.inline", "must be a list of requests {inputs: [...]}")
    compare = config.get("compare")
    if compare is not None and compare not in CompareMode._value2member_map_:
        raise GateInputError(f"{where}.compare", f"{compare!r} is not one of label, argmax, score")
    min_agreement = fields.number(config, "minAgreement", where, AgreementRules.min_agreement)
    if min_agreement is None or not 0 <= min_agreement <= 1:
        raise GateInputError(f"{where}.minAgreement", f"{min_agreement!r} is not a share from 0 to 1")
    tolerance = fields.number(config, "tolerance", where, AgreementRules.tolerance)
    if tolerance is None or tolerance < 0:
        raise GateInputError(f"{where}.tolerance", f"{tolerance!r} is not a number >= 0")
    output = config.get("output")
    if output is not None and (not isinstance(output, str) or not output):
        raise GateInputError(f"{where}.output", f"{output!r} is not a tensor name")
    return GoldenSetGate(
        inline=None if inline is None else tuple(inline),
        config_map=None if ref is None else _config_map(ref, f"{where}.configMapRef"),
        rules=AgreementRules(
            output=output,
            compare=None if compare is None else CompareMode(compare),
            tolerance=tolerance,
            min_agreement=min_agreement,
            bounds=None if config.get("bounds") is None else _bounds(config["bounds"], f"{where}.bounds"),
        ),
    )


PLUGIN = GatePlugin(key=KEY, parse_config=parse_config)
