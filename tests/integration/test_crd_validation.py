"""The ModelRollout CRD against a real kube-apiserver: what it refuses (and with which message),
what it accepts and stores as written, and what `kubectl get` and `kubectl explain` show.

Each file in invalid/ breaks one rule and says, in its `# expect:` lines, what the API server must
answer; a new rule gets a new file there and needs no new test code.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from controller.analysis.comparison import Tolerance
from controller.analysis.spec import PromoteWhen, RateTest, SequentialSpec, parse_analysis
from controller.api import (
    DEFAULT_PROGRESS_DEADLINE_SECONDS,
    HISTORY_LIMIT,
    HistoryEntry,
    ModelRolloutStatus,
    Phase,
    format_time,
    parse_spec,
    set_condition,
)
from localenv.controlplane import ControlPlane

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
INVALID_MANIFESTS = sorted((Path(__file__).parent / "invalid").glob("*.yaml"))
EXAMPLE = REPO_ROOT / "manifests" / "examples" / "canary-gateway-api.yaml"
CRD = REPO_ROOT / "manifests" / "crds" / "modelrollouts.yaml"
EXPECT_PREFIX = "# expect: "
OPENAPI_PATH = "/openapi/v3/apis/rollouts.mlops.dev/v1alpha1"
OPENAPI_SCHEMA_NAME = "dev.mlops.rollouts.v1alpha1.ModelRollout"


def expected_messages(manifest: Path) -> list[str]:
    return [
        line.removeprefix(EXPECT_PREFIX) for line in manifest.read_text().splitlines() if line.startswith(EXPECT_PREFIX)
    ]


def example_rollout() -> dict[str, Any]:
    """The ModelRollout document of the shipped example, as written."""
    documents = yaml.safe_load_all(EXAMPLE.read_text())
    return next(doc for doc in documents if doc["kind"] == "ModelRollout")


def apply(control_plane: ControlPlane, namespace: str, manifest: dict[str, Any]) -> None:
    control_plane.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(manifest))


def stored_rollout(control_plane: ControlPlane, namespace: str, name: str) -> dict[str, Any]:
    result = control_plane.kubectl("get", "mro", name, "-n", namespace, "-o", "json")
    stored: dict[str, Any] = json.loads(result.stdout)
    return stored


def patch_status(
    control_plane: ControlPlane, namespace: str, name: str, status: dict[str, Any], *, check: bool = True
) -> str:
    """Writes status the way the controller does (status subresource); returns kubectl's stderr."""
    result = control_plane.kubectl(
        *("patch", "mro", name, "-n", namespace, "--subresource=status", "--type=merge"),
        f"--patch={json.dumps({'status': status})}",
        check=check,
    )
    return result.stderr


def controller_status(*, history_length: int) -> dict[str, Any]:
    """A status as ModelRolloutStatus.to_json writes it mid-rollout, every field set, plus a field
    owned by analysis."""
    started = datetime(2026, 1, 1, tzinfo=UTC)
    conditions = set_condition(
        (),
        type="Progressing",
        status=True,
        reason="WeightVerified",
        message="10 % of requests go to v2",
        generation=1,
        now=started,
    )
    history = tuple(
        HistoryEntry(
            time=format_time(started + timedelta(seconds=i)),
            phase=Phase.PROGRESSING.value,
            step=0,
            weight=10,
            reason="WeightVerified",
            message=f"decision {i}",
        )
        for i in range(history_length)
    )
    status = ModelRolloutStatus(
        phase=Phase.PROGRESSING,
        message="step 1 of 5: 10 % of requests go to v2",
        observed_generation=1,
        stable_version="v1",
        candidate_version="v2",
        candidate_hash="0123456789",
        current_step_index=1,
        current_weight=10,
        step_started_at=format_time(started),
        paused_by_user=True,
        progress_at=format_time(started),
        scale_down_at=format_time(started + timedelta(minutes=5)),
        scale_down_target="v0",
        conditions=conditions,
        history=history,
        extra={"analysis": {"measurements": [{"metric": "error-rate", "value": 0.01}]}},
    )
    return status.to_json()


def table(output: str) -> list[dict[str, str]]:
    """Rows of a `kubectl get` table keyed by column header, cut at the header's column starts
    (cells such as MESSAGE may contain spaces)."""
    header, *rows = output.rstrip("\n").splitlines()
    starts = [match.start() for match in re.finditer(r"\S+", header)]
    names = header.split()
    bounds = [*starts[1:], None]
    return [
        {name: row[start:end].strip() for name, start, end in zip(names, starts, bounds, strict=True)} for row in rows
    ]


@pytest.mark.parametrize("manifest", INVALID_MANIFESTS, ids=lambda path: path.stem)
def test_invalid_manifest_is_refused_with_a_message_naming_the_fix(
    control_plane: ControlPlane, namespace: str, manifest: Path
) -> None:
    # given a manifest that breaks one rule, and the answer it must get
    expected = expected_messages(manifest)
    assert expected, f"{manifest.name} needs a line starting with {EXPECT_PREFIX!r}"
    name = yaml.safe_load(manifest.read_text())["metadata"]["name"]

    # when it is applied
    result = control_plane.kubectl("apply", "-n", namespace, "-f", str(manifest), check=False)

    # then the API server refuses it with that message, and nothing is stored
    assert result.returncode != 0, f"accepted: {result.stdout}"
    for message in expected:
        assert message in result.stderr
    leftover = control_plane.kubectl("get", "mro", name, "-n", namespace, "--ignore-not-found", "-o", "name")
    assert leftover.stdout == ""


SUBTREES_TESTED_ELSEWHERE = frozenset({"analysis", "gates"})
"""spec fields whose schemas (and refused manifests) belong to the analysis and gates suites."""


def fixed_cel_messages(schema: dict[str, Any]) -> list[str]:
    """The `message` of every CEL rule under `schema` (rules with a messageExpression have none),
    leaving out SUBTREES_TESTED_ELSEWHERE."""
    messages = [rule["message"] for rule in schema.get("x-kubernetes-validations", []) if "message" in rule]
    for name, child in schema.get("properties", {}).items():
        if name not in SUBTREES_TESTED_ELSEWHERE:
            messages += fixed_cel_messages(child)
    if "items" in schema:
        messages += fixed_cel_messages(schema["items"])
    return messages


def test_every_cel_rule_has_a_refused_manifest() -> None:
    # given the CEL rules of the CRD and the answers the refused manifests expect
    crd = yaml.safe_load(CRD.read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    expected = [message for path in INVALID_MANIFESTS for message in expected_messages(path)]

    # when each rule's message is looked for among those answers
    untested = [rule for rule in fixed_cel_messages(schema) if not any(part in rule for part in expected)]

    # then every rule is exercised by some manifest in invalid/
    assert untested == []


def test_example_is_accepted_and_stored_as_written(control_plane: ControlPlane, namespace: str) -> None:
    # given the shipped example (Services, HTTPRoute and ModelRollout)
    written = example_rollout()

    # when it is applied
    control_plane.kubectl("apply", "-n", namespace, "-f", str(EXAMPLE))

    # then every spec field survives (none pruned by a schema mismatch) and the controller parses it
    stored = stored_rollout(control_plane, namespace, written["metadata"]["name"])
    assert stored["spec"] == written["spec"]
    spec = parse_spec(stored["spec"])
    assert (spec.baseline, spec.candidate) == ("v1", "v2")
    assert spec.traffic_routing.router == "gatewayAPI"
    assert len(spec.steps) == 5
    route = json.loads(control_plane.kubectl("get", "httproute", "iris", "-n", namespace, "-o", "json").stdout)
    weights = {ref["name"]: ref["weight"] for ref in route["spec"]["rules"][0]["backendRefs"]}
    assert weights == {"iris-v1": 100, "iris-v2": 0}


def test_defaults_fill_the_progress_deadline_and_the_scale_down_delay(
    control_plane: ControlPlane, namespace: str
) -> None:
    # given a rollout that leaves out progressDeadlineSeconds and scaleDown.delay
    rollout = example_rollout()
    del rollout["spec"]["progressDeadlineSeconds"]
    rollout["spec"]["scaleDown"] = {}

    # when it is applied
    apply(control_plane, namespace, rollout)

    # then the API server stores the documented defaults, which the controller reads back
    spec = stored_rollout(control_plane, namespace, "iris")["spec"]
    assert spec["progressDeadlineSeconds"] == DEFAULT_PROGRESS_DEADLINE_SECONDS
    assert spec["scaleDown"] == {"delay": "30s"}
    assert parse_spec(spec).scale_down is not None


def test_weights_may_go_down_as_well_as_up(control_plane: ControlPlane, namespace: str) -> None:
    # given steps that raise, lower and raise the weight, with a timed analysis and an open pause
    rollout = example_rollout()
    rollout["spec"]["steps"] = [
        {"setWeight": 50},
        {"setWeight": 5},
        {"analyze": {"duration": "1h30m", "templates": [{"name": "error-rate"}]}},
        {"pause": {}},
        {"setWeight": 100},
    ]

    # when it is applied, then it is stored as written
    apply(control_plane, namespace, rollout)
    assert stored_rollout(control_plane, namespace, "iris")["spec"]["steps"] == rollout["spec"]["steps"]


@pytest.mark.parametrize("model", ["iris", "acme/bert-base", "resnet50:v1.5", "llama_3.1-8b"])
def test_model_names_of_model_registries_are_accepted(control_plane: ControlPlane, namespace: str, model: str) -> None:
    # given the example rollout naming its model as a model registry would
    rollout = example_rollout()
    rollout["spec"]["model"] = model

    # when it is applied, then it is stored as written
    apply(control_plane, namespace, rollout)
    assert stored_rollout(control_plane, namespace, "iris")["spec"]["model"] == model


def test_shipping_the_next_version_is_an_accepted_edit(control_plane: ControlPlane, namespace: str) -> None:
    # given the example rollout, stored
    rollout = example_rollout()
    apply(control_plane, namespace, rollout)

    # when the next version is added and named the candidate (the diff in docs/api.md)
    rollout["spec"]["versions"].append(
        {"version": "v3", "backend": {"service": "iris-v3", "port": 8080}, "deployment": "iris-v3"}
    )
    rollout["spec"]["candidate"] = "v3"
    apply(control_plane, namespace, rollout)

    # then the edit is stored as a new generation, which the controller reads as a new rollout
    stored = stored_rollout(control_plane, namespace, "iris")
    assert stored["metadata"]["generation"] == 2
    assert parse_spec(stored["spec"]).candidate == "v3"


@pytest.mark.parametrize(
    ("written", "meant"),
    [("10%", Tolerance(relative=0.1)), (0.002, Tolerance(absolute=0.002))],
    ids=["percent", "number"],
)
def test_a_tolerance_is_accepted_as_a_percent_or_as_a_number(
    control_plane: ControlPlane, namespace: str, written: str | float, meant: Tolerance
) -> None:
    # given a rollout whose error-rate metric has a tolerance written as a percent or as a number
    rollout = example_rollout()
    rollout["spec"]["analysis"] = {"metrics": [{"name": "errors", "preset": "error-rate", "tolerance": written}]}

    # when it is applied
    apply(control_plane, namespace, rollout)

    # then it is stored as written (a string stays a string, a number a number) and means that tolerance
    analysis = stored_rollout(control_plane, namespace, "iris")["spec"]["analysis"]
    assert analysis == rollout["spec"]["analysis"]
    parsed = parse_analysis(analysis)
    assert parsed is not None
    metric = parsed.metrics[0]
    assert isinstance(metric, SequentialSpec) and isinstance(metric.test, RateTest)
    assert metric.test.tolerance == meant


def test_the_sequential_analysis_fields_are_accepted_and_stored_as_written(
    control_plane: ControlPlane, namespace: str
) -> None:
    # given a rollout using every field of the sequential judge: error rates, promoteWhen with its
    # maxDuration, counts of one's own with a tolerance, a guardrail, a floor and another Prometheus
    rollout = example_rollout()
    rollout["spec"]["analysis"] = {
        "falseRollbackRate": 0.01,
        "falsePromotionRate": 0.1,
        "promoteWhen": "evidenceOfSafety",
        "maxDuration": "15m",
        "metrics": [
            {
                "name": "refusals",
                "counts": {
                    "events": 'sum(increase(model_refusals_total{version="{{version}}"}[{{window}}]))',
                    "trials": 'sum(increase(model_requests_total{version="{{version}}"}[{{window}}]))',
                    "eventsAre": "bad",
                },
                "tolerance": "5%",
                "comparison": {"max": 0.1},
                "minSamples": {"count": 500},
                "provider": {"prometheus": {"address": "http://prometheus.monitoring:9090"}},
            },
            {"name": "p99", "preset": "latency-p99", "comparison": {"maxRatio": 1.3}},
            {"name": "drift", "predictionDrift": {"maxPSI": 0.1, "minCount": 0}},
            {"name": "slices", "importantSlices": {"slices": ["borderline"], "minQuality": 0.8, "minSamples": 0}},
        ],
    }

    # when it is applied
    apply(control_plane, namespace, rollout)

    # then no field is pruned or defaulted, and the controller reads what was meant
    analysis = stored_rollout(control_plane, namespace, "iris")["spec"]["analysis"]
    assert analysis == rollout["spec"]["analysis"]
    parsed = parse_analysis(analysis)
    assert parsed is not None
    assert (parsed.false_rollback_rate, parsed.false_promotion_rate) == (0.01, 0.1)
    assert (parsed.promote_when, parsed.max_duration_seconds) == (PromoteWhen.EVIDENCE_OF_SAFETY, 900.0)
    refusals = parsed.metrics[0]
    assert isinstance(refusals, SequentialSpec) and isinstance(refusals.test, RateTest)
    assert refusals.test.tolerance == Tolerance(relative=0.05)
    assert (refusals.test.max, refusals.test.min_trials) == (0.1, 500)
    assert refusals.test.address == "http://prometheus.monitoring:9090"


def test_status_written_by_the_controller_is_stored_verbatim(control_plane: ControlPlane, namespace: str) -> None:
    # given a stored rollout and the status the controller writes, with a full history
    apply(control_plane, namespace, example_rollout())
    status = controller_status(history_length=HISTORY_LIMIT)

    # when it is written through the status subresource
    patch_status(control_plane, namespace, "iris", status)

    # then it reads back unchanged: every type accepted, fields of analysis kept
    assert stored_rollout(control_plane, namespace, "iris")["status"] == status
    assert ModelRolloutStatus.from_json(status).current_weight == 10


def test_history_longer_than_the_controller_keeps_is_refused(control_plane: ControlPlane, namespace: str) -> None:
    # given a stored rollout
    apply(control_plane, namespace, example_rollout())

    # when a status with one decision more than HISTORY_LIMIT is written
    errors = patch_status(
        control_plane, namespace, "iris", controller_status(history_length=HISTORY_LIMIT + 1), check=False
    )

    # then the API server refuses it
    assert f"must have at most {HISTORY_LIMIT} items" in errors


def test_get_shows_phase_weight_step_and_versions_and_wide_adds_message_and_model(
    control_plane: ControlPlane, namespace: str
) -> None:
    # given a rollout mid-way, at step 1 with 10 % on v2
    apply(control_plane, namespace, example_rollout())
    patch_status(control_plane, namespace, "iris", controller_status(history_length=1))

    # when it is listed, by short name and by category, plain and wide
    plain = table(control_plane.kubectl("get", "mro", "-n", namespace).stdout)
    by_category = table(control_plane.kubectl("get", "mlops", "-n", namespace).stdout)
    wide = table(control_plane.kubectl("get", "mro", "-n", namespace, "-o", "wide").stdout)

    # then the columns show where it stands
    expected = {
        "NAME": "iris",
        "PHASE": "Progressing",
        "WEIGHT": "10",
        "STEP": "1",
        "BASELINE": "v1",
        "CANDIDATE": "v2",
    }
    assert [{k: row[k] for k in expected} for row in plain] == [expected]
    assert list(plain[0]) == [*expected, "AGE"]
    # The category holds AnalysisTemplates too, so kubectl names each row with its kind.
    assert [{**{k: row[k] for k in expected}, "NAME": row["NAME"]} for row in by_category] == [
        {**expected, "NAME": "modelrollout.rollouts.mlops.dev/iris"}
    ]
    assert wide[0]["MESSAGE"] == "step 1 of 5: 10 % of requests go to v2"
    assert wide[0]["MODEL"] == "iris"


def test_explain_describes_the_steps(control_plane: ControlPlane) -> None:
    # when a person asks kubectl about the steps
    explained = control_plane.kubectl("explain", "modelrollout.spec.steps").stdout

    # then it tells them the rule (kubectl wraps lines) and what each kind of step does
    assert "Each step has exactly one of setWeight, pause, analyze or mirror" in " ".join(explained.split())
    assert re.search(r"^\s+setWeight\s+<integer>\n\s+Send this share of traffic", explained, re.MULTILINE)
    assert re.search(r"^\s+pause\s+<Object>\n\s+Hold at the current weight", explained, re.MULTILINE)
    assert re.search(r"^\s+analyze\s+<Object>\n\s+Hold at the current weight", explained, re.MULTILINE)


def published_schema(control_plane: ControlPlane) -> dict[str, Any]:
    """The ModelRollout schema as the API server publishes it in OpenAPI v3 (kubectl explain reads it)."""
    published = json.loads(control_plane.kubectl("get", "--raw", OPENAPI_PATH).stdout)
    schema: dict[str, Any] = published["components"]["schemas"][OPENAPI_SCHEMA_NAME]
    return schema


def undescribed_fields(schema: dict[str, Any], path: str) -> list[str]:
    """Paths under `schema` (as published in OpenAPI v3) that carry no description. Items of a list
    count only when they are objects: a list of numbers or names is described by the list."""
    missing = [] if schema.get("description") else [path]
    for name, child in schema.get("properties", {}).items():
        missing += undescribed_fields(child, f"{path}.{name}")
    if schema.get("items", {}).get("type") == "object":
        missing += undescribed_fields(schema["items"], f"{path}[]")
    return missing


def test_every_spec_and_status_field_is_described_for_kubectl_explain(control_plane: ControlPlane) -> None:
    # when the published OpenAPI schema of ModelRollout is read (what kubectl explain shows)
    properties = published_schema(control_plane)["properties"]

    # then every field under spec and status has a description
    assert undescribed_fields(properties["spec"], "spec") == []
    assert undescribed_fields(properties["status"], "status") == []


def test_published_phases_are_the_controllers(control_plane: ControlPlane) -> None:
    # when the published schema of status.phase is read
    phase = published_schema(control_plane)["properties"]["status"]["properties"]["phase"]

    # then it admits exactly the phases the controller writes
    assert sorted(phase["enum"]) == sorted(p.value for p in Phase)
