"""Property-based tests of the spec parsers (issue 13, item 2): whatever JSON they are given, they
return a value or raise the one error that names the field, never anything else.

`parse_spec` and `parse_analysis` (and `parse_metrics`, for AnalysisTemplates) raise `SpecError`;
`parse_gates` raises `GateInputError` (the gates checker turns it into a failed gate). The inputs:

* typed as the CRD schema says (the generator walks `manifests/crds/*.yaml`), with every value
  the types allow but nothing the schema's ranges, patterns and CEL rules would otherwise refuse:
  huge and negative numbers, odd strings, huge durations, unknown enum values;
* valid manifests with random mutations that keep the schema's types: fields left out, values
  replaced by odd ones, list entries repeated;
* what the schema refuses: a value of the wrong type anywhere, a required field missing, and
  fully random nested JSON. The API server never stores such a spec, but an object stored under an
  older CRD, or written past the schema, must still fail with a message rather than a traceback.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.analysis.presets import PRESETS
from controller.analysis.spec import parse_analysis, parse_metrics
from controller.api import SpecError, parse_spec
from controller.gates.errors import GateInputError
from controller.gates.spec import parse_gates

ROOT = Path(__file__).resolve().parents[2]


def _schema(crd_file: str) -> Mapping[str, Any]:
    crd = yaml.safe_load((ROOT / "manifests" / "crds" / crd_file).read_text())
    schema: Mapping[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    return schema


SPEC_SCHEMA = _schema("modelrollouts.yaml")
TEMPLATE_SCHEMA = _schema("analysistemplates.yaml")

PROPERTIES = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ---------------------------------------------------------------------------------------------
# Values


ODD_STRINGS = [
    # versions, Services, routes, and two that differ only in letter case
    "v1", "v2", "V2", "v3", "iris", "iris-v1", "iris-v2",
    # durations: plain, compound, sub-second, zero, huge (past any timedelta), not quite durations
    "30s", "5m", "1h30m", "250ms", "1.5m", "0s", "0ms", "168h", "169h", "9999999h", "99999999999999999999h",
    "1" + "0" * 400 + "h", "1e3s", "-5s", "5", "s", "5 m", "\u0665s", "30S",
    # queries, URLs, JSONPaths, template variables
    "up", "sum(rate(x[{{window}}]))", "{{model}}", "{{ version }}", "{{nope}}", "{{", "$.data.value", "$", "data.value",
    "http://x.test/{{version}}", "https://x.test", "x.test", "ftp://x", "http://169.254.169.254/",
    # enum-ish words, right and wrong
    "hold", "pause", "rollback", "Hold", "noEvidenceOfHarm", "evidenceOfSafety", "GET", "POST", "get", "PUT",
    "higher-is-worse", "lower-is-worse", "bad", "good", "label", "argmax", "score", "FP32", "BYTES", "fp32",
    "prometheus", "web", "gatewayAPI", "10%", "0.002", "2", "150%", "True", "False", "null",
    # odd text
    "", " ", "\t", "\x00", "\u00e9", "\U0001f600", "a" * 300,
    *sorted(PRESETS),
]  # fmt: skip
EXTREME_INTS = [0, 1, -1, 2, 100, 101, 65535, 65536, 604800, 604801, 2**31 - 1, 2**31, 2**53 + 1, 2**63 - 1, -(2**63)]
EXTREME_FLOATS = [0.0, -0.0, 0.5, 1.0, 1.0000001, -1.0, 1e-300, 5e-324, 1e300, 1.7976931348623157e308, -1e308]

strings = st.one_of(st.sampled_from(ODD_STRINGS), st.text(max_size=12))
DURATIONS = ["30s", "5m", "1h30m", "250ms", "1.5m", "0s", "0ms", "1ms", "168h", "169h", "9999999h", "99999999999h"]
BY_FIELD = {
    **dict.fromkeys(
        ("duration", "delay", "interval", "window", "timeout", "maxDuration", "readinessTimeout"),
        st.one_of(st.sampled_from(DURATIONS), strings),
    ),
    **dict.fromkeys(
        ("version", "candidate", "baseline"), st.one_of(st.sampled_from(["v1", "v2", "V2", "v3"]), strings)
    ),
    "service": st.one_of(st.sampled_from(["iris-v1", "iris-v2"]), strings),
}
"""Strings of the right shape more often where a field wants one, to get deeper into the parsers."""
integers = st.one_of(st.integers(min_value=-3, max_value=110), st.sampled_from(EXTREME_INTS))
numbers = st.one_of(
    st.sampled_from(EXTREME_FLOATS),
    st.floats(allow_nan=False, allow_infinity=False),
    integers,
)
"""JSON numbers: the API server stores no NaN or infinity."""
json_values = st.recursive(
    st.none() | st.booleans() | integers | st.floats(allow_nan=False, allow_infinity=False) | strings,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(strings, inner, max_size=3),
    max_leaves=12,
)
"""Any JSON value."""


def typed(schema: Mapping[str, Any], field: str = "") -> st.SearchStrategy[Any]:
    """Values of the JSON types `schema` names, required fields present, every other constraint
    (ranges, patterns, CEL rules, often the enum) left out."""
    kind = schema.get("type")
    if kind is None:
        # spec.analysis.metrics[].tolerance: preserved, a string or a number by its constraints.
        return json_values if schema.get("properties") else st.one_of(strings, numbers)
    if "enum" in schema:
        return st.one_of(st.sampled_from(schema["enum"]), strings)
    if kind == "string":
        return BY_FIELD.get(field, strings)
    if kind == "integer":
        return integers
    if kind == "number":
        return numbers
    if kind == "boolean":
        return st.booleans()
    if kind == "array":
        return st.lists(typed(schema["items"]), max_size=4)
    assert kind == "object", schema
    properties: Mapping[str, Any] = schema.get("properties") or {}
    if not properties:
        return st.dictionaries(strings, json_values, max_size=3)
    required = set(schema.get("required", ()))
    return st.fixed_dictionaries(
        {key: typed(sub, key) for key, sub in properties.items() if key in required},
        optional={key: typed(sub, key) for key, sub in properties.items() if key not in required},
    )


def _subschema(schema: Mapping[str, Any] | None, key: str | int) -> Mapping[str, Any] | None:
    if schema is None:
        return None
    if isinstance(key, int):
        items: Mapping[str, Any] | None = schema.get("items")
        return items
    properties: Mapping[str, Any] = schema.get("properties") or {}
    return properties.get(key)


@st.composite
def mutated(draw: st.DrawFn, value: Any, schema: Mapping[str, Any] | None, *, keep_types: bool) -> Any:
    """`value` with one node changed. With `keep_types`, the change keeps the schema's types and
    required fields: an optional field left out, a list entry repeated or dropped, a value replaced
    by another of its type. Otherwise any node may become any JSON, and required fields go too."""
    value = copy.deepcopy(value)
    path: list[str | int] = []
    node, node_schema = value, schema
    while isinstance(node, dict | list) and node and (not path or draw(st.integers(0, 3)) > 0):
        key: str | int = draw(
            st.sampled_from(sorted(node)) if isinstance(node, dict) else st.integers(0, len(node) - 1)
        )
        path.append(key)
        node, node_schema = node[key], _subschema(node_schema, key)  # type: ignore[index]
    parent: Any = value
    for key in path[:-1]:
        parent = parent[key]
    required = set((_parent_schema(schema, path) or {}).get("required", ()))
    choices: list[str] = ["replace"]
    if path and (not keep_types or isinstance(path[-1], int) or path[-1] not in required):
        choices.append("drop")
    if isinstance(node, list) and node:
        choices.append("repeat")
    choice = draw(st.sampled_from(choices))
    if choice == "repeat":
        node.append(copy.deepcopy(node[draw(st.integers(0, len(node) - 1))]))
        return value
    if choice == "drop":
        del parent[path[-1]]
        return value
    if keep_types and node_schema is not None:
        replacement = draw(typed(node_schema, path[-1] if isinstance(path[-1], str) else ""))
    else:
        # Any JSON: what the schema refuses, or what it keeps as given (x-kubernetes-preserve-unknown-fields).
        replacement = draw(json_values)
    parent[path[-1]] = replacement
    return value


def _parent_schema(schema: Mapping[str, Any] | None, path: list[str | int]) -> Mapping[str, Any] | None:
    for key in path[:-1]:
        schema = _subschema(schema, key)
    return schema


@st.composite
def mutations(draw: st.DrawFn, base: Any, schema: Mapping[str, Any], *, keep_types: bool) -> Any:
    value = base
    for _ in range(draw(st.integers(1, 3))):
        value = draw(mutated(value, schema, keep_types=keep_types))
    return value


# ---------------------------------------------------------------------------------------------
# Valid manifests to start the mutations from

VERSIONS = [
    {"version": "v1", "backend": {"service": "iris-v1", "port": 8080}, "deployment": "iris-v1",
     "endpoint": "http://iris-v1.test:8080"},
    {"version": "v2", "backend": {"service": "iris-v2", "port": 8080}, "deployment": "iris-v2",
     "endpoint": "http://iris-v2.test:8080"},
]  # fmt: skip
QUICKSTART = {
    "model": "iris",
    "versions": VERSIONS,
    "baseline": "v1",
    "candidate": "v2",
    "trafficRouting": {"gatewayAPI": {"httpRoute": "iris", "ruleNames": ["main"]}},
    "steps": [{"setWeight": 10}, {"pause": {"duration": "5m"}}, {"setWeight": 50}, {"pause": {}}],
    "progressDeadlineSeconds": 600,
    "scaleDown": {"delay": "30s"},
}
METRICS: list[dict[str, Any]] = [
    {"name": "errors", "preset": "error-rate", "tolerance": "10%"},
    {"name": "p99", "preset": "latency-p99", "tolerance": 0.2},
    {"name": "memory", "preset": "container-memory", "comparison": {"maxRatio": 1.2}},
    {"name": "accuracy", "preset": "feedback-accuracy", "comparison": {"min": 0.8}, "minSamples": {"count": 50}},
    {
        "name": "p95",
        "provider": {"prometheus": {"query": "q{version='{{version}}'}[{{window}}]", "address": "http://p.test"}},
        "comparison": {"direction": "lower-is-worse", "min": 0.5, "maxRatio": 1.1},
        "minSamples": {"count": 10, "query": "n"},
        "window": "1m",
        "count": 3,
        "failureLimit": 1,
        "consecutiveErrorLimit": 2,
        "inconclusiveLimit": 3,
    },
    {
        "name": "score",
        "provider": {
            "web": {
                "url": "http://s.test/{{model}}/{{version}}",
                "jsonPath": "$.data.value",
                "method": "POST",
                "body": '{"window": "{{window}}"}',
                "headersFrom": {"secretName": "token"},
                "timeout": "5s",
            }
        },
        "comparison": {"max": 1, "maxDifference": 0.1},
    },
    {"name": "bad", "counts": {"events": "sum(e[{{window}}])", "trials": "sum(t[{{window}}])", "eventsAre": "bad"},
     "comparison": {"max": 0.1}},
    {"name": "drift", "predictionDrift": {"maxPSI": 0.2, "maxJSDistance": 0.3, "minCount": 100}},
    {"name": "slices", "importantSlices": {"slices": ["borderline", "rare"], "maxDrop": 0.05, "minSamples": 20}},
    {"name": "offline", "offlineVsOnline": {"offline": 0.93, "maxGap": 0.05}},
    {"name": "skew", "trainingSkew": {"profile": {"configMap": "profile", "key": "p.json"}, "features": ["x", "y"]}},
]  # fmt: skip
ANALYSIS = {
    "interval": "10s",
    "metrics": METRICS,
    "templates": [{"name": "shared"}],
    "onInconclusive": "pause",
    "startingStep": 1,
    "measurementHistoryLimit": 10,
    "falseRollbackRate": 0.05,
    "falsePromotionRate": 0.1,
    "promoteWhen": "evidenceOfSafety",
    "maxDuration": "15m",
}
GATES = {
    "readinessTimeout": "30s",
    "contract": {
        "allowOutputChanges": False,
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
        "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]}],
    },
    "goldenSet": {
        "inline": [{"id": "a", "inputs": [{"name": "x", "data": [[5.1, 3.5, 1.4, 0.2]]}]}],
        "output": "probabilities",
        "compare": "argmax",
        "tolerance": 1e-6,
        "minAgreement": 0.95,
        "bounds": {"min": 0, "max": 1},
    },
}
FULL = {
    **QUICKSTART,
    "steps": [{"setWeight": 10}, {"analyze": {"duration": "5m", "templates": [{"name": "extra"}]}}, {"setWeight": 100}],
    "analysis": ANALYSIS,
    "gates": GATES,
}
TEMPLATE = {"metrics": METRICS}


def test_the_valid_manifests_parse() -> None:
    """The mutations start from manifests every parser accepts."""
    for manifest in (QUICKSTART, FULL):
        parse_spec(manifest)
    assert parse_analysis(ANALYSIS) is not None
    parse_metrics(METRICS, path="spec.metrics")
    parse_gates(GATES)


# ---------------------------------------------------------------------------------------------
# The property


def parses_or_names_the_field(parse: Callable[[Any], object], raw: Any, error: type[ValueError]) -> None:
    """`parse(raw)` returns, or raises `error` with a message: nothing else escapes."""
    try:
        parse(raw)
    except error as raised:
        assert str(raised), "the error names the field and the problem"


def parse_metric_list(raw: Any) -> object:
    return parse_metrics(raw, path="spec.metrics")


PARSERS: list[tuple[str, Callable[[Any], object], type[ValueError], Mapping[str, Any], Any]] = [
    ("parse_spec", parse_spec, SpecError, SPEC_SCHEMA, FULL),
    ("parse_analysis", parse_analysis, SpecError, SPEC_SCHEMA["properties"]["analysis"], ANALYSIS),
    ("parse_metrics", parse_metric_list, SpecError, TEMPLATE_SCHEMA["properties"]["metrics"], METRICS),
    ("parse_gates", parse_gates, GateInputError, SPEC_SCHEMA["properties"]["gates"], GATES),
]
BY_NAME = {name: (parse, error, schema, base) for name, parse, error, schema, base in PARSERS}
NAMES = [name for name, *_ in PARSERS]


@pytest.mark.parametrize("name", NAMES)
@PROPERTIES
@given(data=st.data())
def test_values_typed_as_the_schema_says_parse_or_raise_the_field_error(name: str, data: st.DataObject) -> None:
    parse, error, schema, _ = BY_NAME[name]
    raw = data.draw(typed(schema), label="raw")
    parses_or_names_the_field(parse, raw, error)


@pytest.mark.parametrize("name", NAMES)
@PROPERTIES
@given(data=st.data())
def test_valid_manifests_mutated_within_the_schema_types_parse_or_raise_the_field_error(
    name: str, data: st.DataObject
) -> None:
    parse, error, schema, base = BY_NAME[name]
    raw = data.draw(mutations(base, schema, keep_types=True), label="raw")
    parses_or_names_the_field(parse, raw, error)


@PROPERTIES
@given(raw=mutations(QUICKSTART, SPEC_SCHEMA, keep_types=True))
def test_the_quickstart_mutated_within_the_schema_types_parses_or_raises_spec_error(raw: Any) -> None:
    parses_or_names_the_field(parse_spec, raw, SpecError)


# What the schema refuses --------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
@PROPERTIES
@given(data=st.data())
def test_valid_manifests_with_any_value_anywhere_parse_or_raise_the_field_error(name: str, data: st.DataObject) -> None:
    parse, error, schema, base = BY_NAME[name]
    raw = data.draw(mutations(base, schema, keep_types=False), label="raw")
    parses_or_names_the_field(parse, raw, error)


@pytest.mark.parametrize("name", NAMES)
@PROPERTIES
@given(data=st.data())
def test_any_json_object_parses_or_raises_the_field_error(name: str, data: st.DataObject) -> None:
    parse, error, schema, _ = BY_NAME[name]
    item_schema = schema.get("items", schema)
    keys = st.sampled_from(sorted(item_schema["properties"])) | strings
    objects = st.dictionaries(keys, json_values, max_size=6)
    raw = data.draw(st.lists(objects, max_size=3) if "items" in schema else objects, label="raw")
    parses_or_names_the_field(parse, raw, error)
