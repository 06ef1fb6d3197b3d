"""The plugin's pure formatting: stored ModelRollout JSON in, the text a person reads out."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
import yaml

from controller.cli.render import (
    ExitCode,
    Style,
    age,
    latest_measurements,
    render_events,
    render_get,
    render_history,
    render_list,
    serialize,
    settled_phase,
    status_exit_code,
    status_line,
)

NOW = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
PLAIN = Style(color=False)
COLOUR = Style(color=True)


def rollout(*, name: str = "fraud", status: dict[str, Any] | None = None, generation: int = 1) -> dict[str, Any]:
    return {
        "apiVersion": "rollouts.mlops.dev/v1alpha1",
        "kind": "ModelRollout",
        "metadata": {
            "name": name,
            "namespace": "ml",
            "generation": generation,
            "creationTimestamp": "2025-03-01T11:00:00Z",
        },
        "spec": {
            "model": "fraud-detector",
            "baseline": "v1",
            "candidate": "v2",
            "versions": [
                {"version": "v1", "backend": {"service": "fraud-v1", "port": 8080}, "deployment": "fraud-v1"},
                {"version": "v2", "backend": {"service": "fraud-v2", "port": 8080}},
            ],
            "trafficRouting": {"gatewayAPI": {"httpRoute": "fraud"}},
            "steps": [
                {"setWeight": 10},
                {"analyze": {"duration": "5m", "templates": [{"name": "latency"}]}},
                {"pause": {}},
                {"setWeight": 50},
            ],
        },
        "status": status or {},
    }


PROGRESSING = {
    "phase": "Progressing",
    "message": "analysing at 10%",
    "observedGeneration": 1,
    "stableVersion": "v1",
    "candidateVersion": "v2",
    "currentStepIndex": 1,
    "currentWeight": 10,
    "conditions": [
        {
            "type": "Progressing",
            "status": "True",
            "reason": "StepStarted",
            "message": "step 2 analyze 5m",
            "lastTransitionTime": "2025-03-01T11:58:00Z",
            "observedGeneration": 1,
        }
    ],
    "analysis": {
        "measurements": [
            {"metric": "error-rate", "baselineValue": 0.01, "candidateValue": 0.5, "verdict": "Running",
             "time": "2025-03-01T11:58:30Z", "reason": "old"},
            {"metric": "latency-p99", "baselineValue": 0.120, "candidateValue": 0.1234567,
             "verdict": "Successful", "time": "2025-03-01T11:59:00Z", "reason": "within 10 %"},
            {"metric": "error-rate", "baselineValue": 0.01, "candidateValue": 0.2, "verdict": "Failed",
             "time": "2025-03-01T11:59:30Z", "reason": "0.2 > 0.01 + 5 %"},
        ]
    },
    "gates": {"contract": {"verdict": "Passed", "message": "inputs and outputs match v1"}},
    "history": [
        {"time": "2025-03-01T11:55:00Z", "phase": "Progressing", "step": 0, "weight": 10,
         "reason": "StepCompleted", "message": "weight 10"},
        {"time": "2025-03-01T11:59:30Z", "phase": "RolledBack", "step": 1, "weight": 0,
         "reason": "AnalysisFailed", "message": "error-rate 0.2 vs 0.01"},
    ],
}  # fmt: skip


def test_list_shows_phase_step_versions_and_weight_per_rollout() -> None:
    text = render_list([rollout(status=PROGRESSING)], all_namespaces=False, now=NOW, style=PLAIN)
    header, row = text.splitlines()
    assert header.split() == ["NAME", "MODEL", "PHASE", "STEP", "STABLE", "CANDIDATE", "WEIGHT", "AGE"]
    assert row.split() == ["fraud", "fraud-detector", "Progressing", "2/4", "v1", "v2", "10%", "60m"]


def test_list_across_namespaces_leads_with_the_namespace_and_aligns_columns() -> None:
    text = render_list(
        [rollout(name="a", status=PROGRESSING), rollout(name="a-much-longer-name")],
        all_namespaces=True,
        now=NOW,
        style=PLAIN,
    )
    lines = text.splitlines()
    assert lines[0].startswith("NAMESPACE   NAME")
    assert [line.index("MODEL" if i == 0 else "fraud-detector") for i, line in enumerate(lines)] == [33] * 3
    assert lines[2].split()[3] == "<none>"


def test_list_says_so_when_empty() -> None:
    assert render_list([], all_namespaces=False, now=NOW, style=PLAIN) == "No ModelRollouts found."


def test_latest_measurement_per_metric_is_the_newest_one() -> None:
    latest = latest_measurements(PROGRESSING)
    assert [(m["metric"], m["verdict"]) for m in latest] == [
        ("error-rate", "Failed"),
        ("latency-p99", "Successful"),
    ]


def header_fields(text: str) -> dict[str, str]:
    head = text.split("\n\n")[0]
    return {k: v.strip() for k, v in (line.split(":", 1) for line in head.splitlines())}


def test_get_shows_every_section_a_person_needs() -> None:
    events: list[dict[str, Any]] = [
        {"type": "Normal", "reason": "StepStarted", "message": "weight 10",
         "lastTimestamp": "2025-03-01T11:57:00Z", "source": {"component": "model-rollouts"}},
        {"type": "Warning", "reason": "AnalysisFailed", "message": "error-rate",
         "eventTime": "2025-03-01T11:59:30.123456Z", "reportingComponent": "model-rollouts"},
    ]  # fmt: skip
    text = render_get(rollout(status=PROGRESSING), events=events, now=NOW, style=PLAIN)
    fields = header_fields(text)
    assert fields["Phase"] == "Progressing"
    assert fields["Step"] == "2/4"
    assert fields["Weights"] == "v1 90% / v2 10%"
    assert fields["Message"] == "analysing at 10%"
    lines = text.splitlines()
    analysis = lines.index("Analysis (latest per metric):")
    assert lines[analysis + 1].split() == [
        "METRIC",
        "BASELINE",
        "(v1)",
        "CANDIDATE",
        "(v2)",
        "VERDICT",
        "AGE",
        "REASON",
    ]
    assert lines[analysis + 2].split()[:5] == ["error-rate", "0.01", "0.2", "Failed", "30s"]
    assert lines[analysis + 3].split()[:4] == ["latency-p99", "0.12", "0.1235", "Successful"]
    assert any(line.split()[:2] == ["contract", "Passed"] for line in lines)
    assert any(line.split()[:4] == ["Progressing", "True", "StepStarted", "2m"] for line in lines)
    steps = lines[lines.index("Steps:") + 1 : lines.index("Steps:") + 6]
    assert [s.split()[-1] for s in steps[1:3]] == ["done", "current"]
    assert "pause (until resumed)" in steps[3]
    assert "analyze 5m (latency)" in steps[2]
    event_rows = lines[lines.index("Events:") + 2 :]
    assert [r.split()[1] for r in event_rows] == ["StepStarted", "AnalysisFailed"]
    assert event_rows[1].split()[2:4] == ["29s", "model-rollouts"]


def test_get_of_a_new_rollout_has_no_empty_sections() -> None:
    text = render_get(rollout(), events=[], now=NOW, style=PLAIN)
    assert header_fields(text)["Phase"] == "<none>"
    for absent in ("Analysis", "Gates:", "Conditions:"):
        assert absent not in text
    assert text.endswith("Events:\n  <none>")


def test_colour_only_when_asked_and_table_widths_ignore_escape_codes() -> None:
    plain = render_list([rollout(status=PROGRESSING)], all_namespaces=False, now=NOW, style=PLAIN)
    coloured = render_list([rollout(status=PROGRESSING)], all_namespaces=False, now=NOW, style=COLOUR)
    assert "\x1b[" not in plain
    assert "\x1b[36mProgressing\x1b[0m" in coloured
    assert coloured.replace("\x1b[36m", "").replace("\x1b[0m", "") == plain


def test_history_lists_each_decision_in_order() -> None:
    lines = render_history(rollout(status=PROGRESSING), now=NOW, style=PLAIN).splitlines()
    assert lines[0].split() == ["TIME", "AGE", "PHASE", "STEP", "WEIGHT", "REASON", "MESSAGE"]
    assert lines[1].split()[:6] == [
        "2025-03-01T11:55:00Z",
        "5m",
        "Progressing",
        "1/4",
        "10%",
        "StepCompleted",
    ]
    assert lines[2].split()[2:6] == ["RolledBack", "2/4", "0%", "AnalysisFailed"]
    assert render_history(rollout(), now=NOW, style=PLAIN) == "No decisions recorded for fraud yet."


@pytest.mark.parametrize(
    ("phase", "code"),
    [
        ("Promoted", ExitCode.OK),
        ("RolledBack", ExitCode.ROLLED_BACK),
        ("Aborted", ExitCode.ABORTED),
        ("Failed", ExitCode.FAILED),
        ("Progressing", ExitCode.IN_PROGRESS),
        ("Paused", ExitCode.IN_PROGRESS),
        (None, ExitCode.IN_PROGRESS),
    ],
)
def test_status_exit_code_tells_pipelines_the_outcome(phase: str | None, code: ExitCode) -> None:
    status = {"phase": phase, "observedGeneration": 1} if phase else {}
    assert status_exit_code(rollout(status=status)) == code


def test_exit_codes_are_distinct() -> None:
    assert len({c.value for c in ExitCode}) == len(ExitCode)


def test_a_terminal_phase_from_an_older_generation_is_not_the_outcome() -> None:
    stale = rollout(status={"phase": "Promoted", "observedGeneration": 1}, generation=2)
    assert settled_phase(stale) is None
    assert status_exit_code(stale) == ExitCode.IN_PROGRESS


def test_status_line_summarises_phase_step_weights_and_message() -> None:
    assert status_line(rollout(status=PROGRESSING), style=PLAIN) == (
        "fraud: Progressing  ·  step 2/4  ·  v1 90% / v2 10%  ·  analysing at 10%"
    )
    done = rollout(status={**PROGRESSING, "phase": "Promoted", "currentStepIndex": 4, "currentWeight": 100,
                           "message": ""})  # fmt: skip
    assert status_line(done, style=PLAIN) == "fraud: Promoted  ·  step 4/4  ·  v1 0% / v2 100%"


@pytest.mark.parametrize(
    ("stamp", "expected"),
    [
        ("2025-03-01T11:59:15Z", "45s"),
        ("2025-03-01T11:56:50Z", "3m10s"),
        ("2025-03-01T11:55:00Z", "5m"),
        ("2025-03-01T10:30:00Z", "90m"),
        ("2025-03-01T07:30:00Z", "4h30m"),
        ("2025-02-28T22:00:00Z", "14h"),
        ("2025-02-25T12:00:00Z", "4d"),
        (None, "<unknown>"),
        ("not a time", "<unknown>"),
    ],
)
def test_age_reads_like_kubectl(stamp: str | None, expected: str) -> None:
    assert age(stamp, now=NOW) == expected


def test_events_show_only_the_most_recent_ten() -> None:
    events = [
        {
            "type": "Normal",
            "reason": f"R{i:02d}",
            "message": "m",
            "lastTimestamp": f"2025-03-01T11:{i:02d}:00Z",
        }
        for i in range(15)
    ]
    rows = render_events(list(reversed(events)), now=NOW, style=PLAIN).splitlines()[1:]
    assert [r.split()[1] for r in rows] == [f"R{i:02d}" for i in range(5, 15)]


def test_serialize_json_and_yaml_round_trip() -> None:
    document = rollout(status=PROGRESSING)
    assert json.loads(serialize(document, output="json")) == document
    assert yaml.safe_load(serialize(document, output="yaml")) == document


MODEL_CHECKS = {
    **PROGRESSING,
    "analysis": {
        "measurements": [
            {"metric": "slices", "baselineValue": 0.8636, "candidateValue": 0.6818, "verdict": "Failed",
             "time": "2025-03-01T11:59:30Z", "reason": "slice borderline: drop 0.1818 > 0.02",
             "slices": [{"slice": "borderline", "baselineValue": 0.8636, "candidateValue": 0.6818,
                         "baselineSamples": 44, "candidateSamples": 44, "verdict": "Failed"}]},
            {"metric": "drift", "baselineValue": None, "candidateValue": None, "verdict": "Successful",
             "time": "2025-03-01T11:59:30Z", "reason": "within limits",
             "drift": {"psi": 0.0419, "jsDistance": 0.0863, "maxPSI": 0.2, "maxJSDistance": 0.2}},
            {"metric": "online", "baselineValue": None, "candidateValue": 0.96, "verdict": "Successful",
             "time": "2025-03-01T11:59:30Z", "reason": "gap within",
             "offline": {"declared": 0.965, "online": 0.96, "gap": 0.005, "maxGap": 0.03}},
        ]
    },
    "gates": {
        "verdict": "Failed", "message": "contract mismatch",
        "contract": {"passed": False, "expectedFrom": "baseline v1 metadata", "mismatches": [
            {"role": "input", "tensor": "features", "property": "datatype", "expected": "FP64", "got": "FP32"}]},
    },
    "rubric": [
        {"item": "Infra 2", "check": "contract", "stage": "pre-traffic", "verdict": "Successful"},
        {"item": "Model 6", "check": "slices", "stage": "analysis", "verdict": "Failed"},
    ],
}  # fmt: skip


def test_get_shows_each_important_slice_the_drift_statistics_and_the_declared_offline_value() -> None:
    lines = render_get(rollout(status=MODEL_CHECKS), events=[], now=NOW, style=PLAIN).splitlines()
    analysis = lines.index("Analysis (latest per metric):")
    rows = [line.split() for line in lines[analysis + 2 : analysis + 10]]
    assert rows[0][:4] == ["slices", "0.8636", "0.6818", "Failed"]
    assert rows[1][:6] == ["slice", "borderline", "0.8636", "0.6818", "Failed", "labelled"]
    assert rows[2][:4] == ["drift", "-", "-", "Successful"]
    assert rows[3] == ["PSI", "-", "0.0419", "limit", "0.2"]
    assert rows[4] == ["JS", "distance", "-", "0.0863", "limit", "0.2"]
    assert rows[6][:5] == ["declared", "offline", "-", "0.965", "gap"]


def test_get_lists_the_rubric_items_verified_and_what_each_gate_found() -> None:
    lines = render_get(rollout(status=MODEL_CHECKS), events=[], now=NOW, style=PLAIN).splitlines()
    rubric = lines.index("Rubric (ML Test Score items verified):")
    assert lines[rubric + 1].split() == ["ITEM", "CHECK", "STAGE", "VERDICT"]
    assert lines[rubric + 2].split() == ["Infra", "2", "contract", "pre-traffic", "Successful"]
    assert lines[rubric + 3].split() == ["Model", "6", "slices", "analysis", "Failed"]
    contract = next(line for line in lines if line.strip().startswith("contract"))
    assert contract.split()[:2] == ["contract", "Failed"]
    assert "input features: datatype expected FP64, got FP32" in contract
