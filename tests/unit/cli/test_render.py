"""The plugin's pure formatting: stored ModelRollout JSON in, the text a person reads out."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

import pytest
import yaml

from controller.analysis.judges import with_rate_rows
from controller.analysis.modelchecks.drift import with_drift_rows
from controller.analysis.modelchecks.offline_online import with_gap_rows
from controller.analysis.modelchecks.slices import with_slice_rows
from controller.analysis.modelchecks.training_skew import with_feature_rows
from controller.analysis.rows import measured_summary
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
    "gates": {"ran": ["contract"], "contract": {"verdict": "Passed", "summary": "inputs and outputs match v1"}},
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
    for absent in ("Analysis", "Evidence", "Gates:", "Conditions:"):
        assert absent not in text
    assert text.endswith("Events:\n  <none>")


def test_get_shows_the_last_undo_of_a_promotion() -> None:
    undo = {"fromVersion": "v2", "toVersion": "v1", "requestedAt": "2025-03-01T11:59:00Z", "state": "Done",
            "cause": "annotation 'incident-42'", "time": "2025-03-01T11:59:01Z"}  # fmt: skip
    text = render_get(rollout(status={"phase": "RolledBack", "undo": undo}), events=[], now=NOW, style=PLAIN)
    assert header_fields(text)["Undo"] == "v2 -> v1: Done (annotation 'incident-42')"
    assert "Undo" not in header_fields(render_get(rollout(), events=[], now=NOW, style=PLAIN))


def test_get_lists_the_versions_kept_ready_for_an_undo_after_stable_and_candidate() -> None:
    # given a rollout promoted to v2 whose spec.rollbackRevisions keeps v1 ready
    status = {"phase": "Promoted", "stableVersion": "v2", "candidateVersion": "v2", "keptVersions": ["v1"]}

    # when it is shown, then v1 is listed last as kept, with its Service and Deployment
    rows = section_rows(render_get(rollout(status=status), events=[], now=NOW, style=PLAIN), "Versions")
    kept = {"ROLE": "kept", "VERSION": "v1", "SERVICE": "fraud-v1", "PORT": "8080", "DEPLOYMENT": "fraud-v1"}
    assert rows[-1] == kept
    # and a rollout keeping none lists only its stable version and its candidate
    rows = section_rows(render_get(rollout(), events=[], now=NOW, style=PLAIN), "Versions")
    assert [row["ROLE"] for row in rows] == ["stable", "candidate"]


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


def section_rows(text: str, title: str) -> list[dict[str, str]]:
    """The rows of the titled table in `get`'s output, keyed by column header; cells are cut at the
    headers' column starts (headers and cells may hold single spaces)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(title))
    header, *rows = lines[start + 1 : lines.index("", start)]
    columns = [(match.group(), match.start()) for match in re.finditer(r"\S+(?: \S+)*", header)]
    ends = [start for _, start in columns[1:]] + [None]
    return [{name: row[begin:end].strip() for (name, begin), end in zip(columns, ends, strict=True)} for row in rows]


# The latest looks of sequential metrics as their judges summarise them in
# status.analysis.evidence[].latest, with the figures real looks at such counts gave, and the rows
# each check writes from them for kubectl.
ERRORS_LOOK = with_rate_rows({
    "look": 12, "verdict": "Failed", "test": "rate",
    "candidate": {"samples": 5120, "events": 48, "value": 0.009375},
    "baseline": {"samples": 48210, "events": 101, "value": 0.002095},
    "ratio": 4.4749, "interval": [2.3784, 8.7241], "tolerance": "0%", "nullRatio": 1.0,
    "eValue": 497958055898.1927, "threshold": 80.0, "safetyEValue": 0.0022, "safetyThreshold": 80.0,
    "smallestDetectableRatio": 2.556, "secondsToResolveTolerance": None, "secondsToDetectTwiceTolerated": 1126.0,
})  # fmt: skip
LATENCY_LOOK = with_rate_rows({
    "look": 12, "verdict": "Successful", "test": "slow-requests", "thresholdSeconds": 0.25,
    "candidate": {"samples": 5120, "events": 50, "value": 0.009766},
    "baseline": {"samples": 48210, "events": 510, "value": 0.010579},
    "ratio": 0.9231, "interval": [0.5221, None], "tolerance": "20%", "nullRatio": 1.2,
    "eValue": 0.0678, "threshold": 80.0, "safetyEValue": 81.3, "safetyThreshold": 80.0,
    "smallestDetectableRatio": 1.943, "secondsToResolveTolerance": 3746.0, "secondsToDetectTwiceTolerated": 224.0,
})  # fmt: skip
REFUSALS_LOOK = with_rate_rows({
    "look": 3, "verdict": "Successful", "test": "rate",
    "candidate": {"samples": 900, "events": 9, "value": 0.01},
    "baseline": {"samples": 9000, "events": 80, "value": 0.008889},
    "ratio": 1.125, "interval": [0.2446, 3.2915], "tolerance": "0.002", "nullRatio": 1.1426,
    "eValue": 0.3065, "threshold": 160.0, "safetyEValue": 0.3546, "safetyThreshold": 160.0,
    "smallestDetectableRatio": 3.207, "secondsToResolveTolerance": 52205.0, "secondsToDetectTwiceTolerated": 1640.0,
    "maxInterval": [0.001656, 0.030659],
})  # fmt: skip
SLICES_LOOK = with_slice_rows({
    "look": 12, "verdict": "Failed", "test": "slices", "worstSlice": "borderline",
    "slices": [
        {"slice": "borderline", "verdict": "Failed",
         "candidate": {"samples": 440, "events": 140, "value": 0.681818},
         "baseline": {"samples": 4400, "events": 600, "value": 0.863636},
         "ratio": 2.3333, "interval": [1.7186, 3.2915], "tolerance": "0.02", "nullRatio": 1.125,
         "eValue": 24849132060.0776, "threshold": 160.0, "safetyEValue": 0.0408, "safetyThreshold": 160.0,
         "smallestDetectableRatio": 1.831, "secondsToResolveTolerance": 9073.0, "secondsToDetectTwiceTolerated": 220.0},
        {"slice": "large", "verdict": "Successful",
         "candidate": {"samples": 900, "events": 40, "value": 0.955556},
         "baseline": {"samples": 9000, "events": 390, "value": 0.956667},
         "ratio": 1.0256, "interval": [0.5221, 1.7186], "tolerance": "0.02", "nullRatio": 1.3736,
         "eValue": 0.1157, "threshold": 160.0, "safetyEValue": 1.3707, "safetyThreshold": 160.0,
         "smallestDetectableRatio": 2.36, "secondsToResolveTolerance": 1738.0, "secondsToDetectTwiceTolerated": 338.0},
    ],
})  # fmt: skip
DRIFT_LOOK = with_drift_rows({
    "look": 12, "verdict": "Failed", "test": "drift",
    "psi": 0.4026, "psiInterval": [0.2262, 0.658], "maxPSI": 0.2,
    "jsDistance": 0.2641, "jsDistanceInterval": [0.1994, 0.3346], "maxJSDistance": 0.2,
    "buckets": [
        {"le": "0.25", "baseline": 8700.0, "candidate": 300.0}, {"le": "0.5", "baseline": 6300.0, "candidate": 600.0},
        {"le": "0.75", "baseline": 6300.0, "candidate": 900.0}, {"le": "+Inf", "baseline": 5700.0, "candidate": 1200.0},
    ],
})  # fmt: skip
ONLINE_LOOK = with_gap_rows({
    "look": 12, "verdict": "Successful", "test": "offline-online",
    "declared": 0.965, "online": 0.96, "interval": [0.9202, 0.984], "gap": 0.005, "maxGap": 0.05, "samples": 600,
})  # fmt: skip

SKEW_LOOK = with_feature_rows({
    "look": 5, "verdict": "Failed", "test": "training-skew", "maxPSI": 0.2, "worstFeature": "mean radius",
    "features": [
        {"feature": "mean radius", "samples": 480.0, "psi": 6.8112, "psiInterval": [6.52, 7.4], "verdict": "Failed"},
        {"feature": "mean texture", "samples": 480.0, "psi": 0.05, "psiInterval": [0.0, 0.31], "verdict": "Successful"},
    ],
})  # fmt: skip


def measured(metric: str, look: dict[str, Any]) -> dict[str, Any]:
    """The measurement a look records: its values, verdict and summary without the per-slice rows,
    the buckets and the verdict (status.analysis.measurements)."""
    evidence = measured_summary(look)
    return {"metric": metric, "verdict": look["verdict"], "time": "2025-03-01T11:59:30Z",
            "reason": f"look {look['look']}: ...", "evidence": evidence}  # fmt: skip


def judged(looks: dict[str, dict[str, Any]], *, with_evidence: bool = True) -> dict[str, Any]:
    """A status whose sequential metrics took these latest looks; `with_evidence` False leaves out
    status.analysis.evidence, so only the measurements carry the looks."""
    analysis: dict[str, Any] = {
        "verdict": "Running",
        "falseRollbackRate": 0.05,
        "measurements": [measured(metric, look) for metric, look in looks.items()],
    }
    if with_evidence:
        analysis["evidence"] = [
            {"metric": metric, "looks": look["look"], "segments": [], "latest": look} for metric, look in looks.items()
        ]
    return {**PROGRESSING, "analysis": analysis}


EVIDENCE = "Evidence (latest look per metric"


def shown_evidence(status: dict[str, Any]) -> list[dict[str, str]]:
    """The Evidence section of `get`, uncoloured, as rows keyed by column header."""
    return section_rows(render_get(rollout(status=status), events=[], now=NOW, style=PLAIN), EVIDENCE)


def test_get_shows_the_evidence_each_rate_rests_on_against_its_threshold_and_what_it_can_detect() -> None:
    # given the latest looks of error-rate (harm shown) and latency-p99 (no harm, the interval open above)
    status = judged({"errors": ERRORS_LOOK, "p99": LATENCY_LOOK})

    # when the rollout is shown
    rows = shown_evidence(status)

    # then each metric shows the look, samples and values per version, the ratio with its interval,
    # the tolerance (as a ratio too), the evidence against its threshold, and what it can detect so far
    assert rows == [
        {"METRIC": "errors", "LOOK": "12", "VERDICT": "Failed",
         "BASELINE (v1)": "0.21% of 48210", "CANDIDATE (v2)": "0.938% of 5120",
         "ESTIMATE [INTERVAL]": "ratio 4.47 [2.38, 8.72]", "TOLERANCE": "0% (≤1x)",
         "EVIDENCE": "4.98e+11 of 80", "DETECTABLE SO FAR": "2.56x; tolerance out of reach"},
        {"METRIC": "p99 (>0.25s)", "LOOK": "12", "VERDICT": "Successful",
         "BASELINE (v1)": "1.06% of 48210", "CANDIDATE (v2)": "0.977% of 5120",
         "ESTIMATE [INTERVAL]": "ratio 0.923 [0.522, ∞]", "TOLERANCE": "20% (≤1.2x)",
         "EVIDENCE": "0.0678 of 80", "DETECTABLE SO FAR": "1.94x; tolerance needs 62m"},
    ]  # fmt: skip


def test_get_titles_the_evidence_with_the_rollouts_false_rollback_budget() -> None:
    text = render_get(rollout(status=judged({"errors": ERRORS_LOOK})), events=[], now=NOW, style=PLAIN)
    assert "Evidence (latest look per metric; falseRollbackRate 0.05 for the whole rollout):" in text.splitlines()


def test_get_shows_a_guardrail_under_its_metric_as_the_candidates_interval() -> None:
    # given counts of one's own with comparison.max, whose look carries the candidate's interval
    status = judged({"refusals": REFUSALS_LOOK})

    # when the rollout is shown
    rows = shown_evidence(status)

    # then the guardrail follows the metric, its interval in events per trial
    assert [(r["METRIC"], r["TOLERANCE"], r["ESTIMATE [INTERVAL]"]) for r in rows] == [
        ("refusals", "0.002 (≤1.14x)", "ratio 1.12 [0.245, 3.29]"),
        ("guardrail max", "", "candidate [0.166%, 3.07%]"),
    ]


def test_get_shows_each_important_slice_with_its_own_evidence() -> None:
    # given the look of two slices, one of them failed
    status = judged({"slices": SLICES_LOOK})

    # when the rollout is shown
    rows = shown_evidence(status)

    # then the metric names the worst slice, and each slice has its own row and verdict
    assert [(r["METRIC"], r["LOOK"], r["VERDICT"], r["ESTIMATE [INTERVAL]"]) for r in rows] == [
        ("slices", "12", "Failed", "worst slice borderline"),
        ("slice borderline", "", "Failed", "ratio 2.33 [1.72, 3.29]"),
        ("slice large", "", "Successful", "ratio 1.03 [0.522, 1.72]"),
    ]
    borderline = rows[1]
    assert (borderline["BASELINE (v1)"], borderline["CANDIDATE (v2)"]) == ("86.4% of 4400", "68.2% of 440")
    assert (borderline["TOLERANCE"], borderline["EVIDENCE"]) == ("0.02 (≤1.12x)", "2.48e+10 of 160")
    assert borderline["DETECTABLE SO FAR"] == "1.83x; tolerance needs 151m"


def test_get_shows_psi_and_js_distance_with_their_intervals_against_their_tolerances() -> None:
    rows = shown_evidence(judged({"drift": DRIFT_LOOK}))
    assert [(r["METRIC"], r["BASELINE (v1)"], r["CANDIDATE (v2)"], r["ESTIMATE [INTERVAL]"], r["TOLERANCE"])
            for r in rows] == [
        ("drift", "27000 predictions", "3000 predictions", "", ""),
        ("PSI", "", "", "0.403 [0.226, 0.658]", "0.2"),
        ("JS distance", "", "", "0.264 [0.199, 0.335]", "0.2"),
    ]  # fmt: skip


def test_get_shows_each_skewed_feature_with_psi_against_the_training_profile() -> None:
    rows = shown_evidence(judged({"skew": SKEW_LOOK}))
    assert [(r["METRIC"], r["VERDICT"], r["CANDIDATE (v2)"], r["ESTIMATE [INTERVAL]"], r["TOLERANCE"])
            for r in rows] == [
        ("skew", "Failed", "", "worst feature mean radius", ""),
        ("feature mean radius", "Failed", "480 rows", "PSI 6.81 [6.52, 7.4]", "0.2"),
    ]  # fmt: skip


def test_get_shows_the_online_quality_against_the_declared_offline_quality() -> None:
    rows = shown_evidence(judged({"online": ONLINE_LOOK}))
    assert rows == [
        {"METRIC": "online", "LOOK": "12", "VERDICT": "Successful",
         "BASELINE (v1)": "", "CANDIDATE (v2)": "0.96 of 600",
         "ESTIMATE [INTERVAL]": "online 0.96 [0.92, 0.984]", "TOLERANCE": "declared 0.965 ± 0.05",
         "EVIDENCE": "gap 0.005", "DETECTABLE SO FAR": ""},
    ]  # fmt: skip


def test_with_promote_when_evidence_of_safety_get_also_shows_the_evidence_of_safety() -> None:
    # given a rollout that promotes on evidence of safety, and a look that reached it
    waiting = rollout(status=judged({"p99": LATENCY_LOOK}))
    waiting["spec"]["analysis"] = {"promoteWhen": "evidenceOfSafety"}

    # when it is shown, coloured
    text = render_get(waiting, events=[], now=NOW, style=COLOUR)

    # then the evidence of safety stands next to the evidence of harm, painted good
    assert "\x1b[32m0.0678 of 80; safety 81.3 of 80\x1b[0m" in text


def test_evidence_that_reached_its_threshold_is_painted_bad() -> None:
    text = render_get(rollout(status=judged({"errors": ERRORS_LOOK})), events=[], now=NOW, style=COLOUR)
    assert "\x1b[31m4.98e+11 of 80\x1b[0m" in text


def test_a_drift_statistic_whose_interval_lies_above_its_tolerance_is_painted_bad() -> None:
    # given a look whose PSI interval lies above 0.2 and whose JS distance interval reaches below it
    status = judged({"drift": DRIFT_LOOK})

    # when it is shown, coloured
    text = render_get(rollout(status=status), events=[], now=NOW, style=COLOUR)

    # then only the PSI is painted bad
    assert "\x1b[31m0.403 [0.226, 0.658]\x1b[0m" in text
    assert "\x1b[31m0.264" not in text


def test_without_evidence_in_status_get_shows_the_summary_the_latest_measurement_carries() -> None:
    # given a status whose measurements carry the looks' summaries but without status.analysis.evidence
    status = judged({"errors": ERRORS_LOOK, "slices": SLICES_LOOK}, with_evidence=False)

    # when it is shown
    rows = shown_evidence(status)

    # then each metric's row comes from its measurement (which keeps no per-slice rows)
    assert [(r["METRIC"], r["VERDICT"], r["ESTIMATE [INTERVAL]"]) for r in rows] == [
        ("errors", "Failed", "ratio 4.47 [2.38, 8.72]"),
        ("slices", "Failed", "worst slice borderline"),
    ]


def test_a_look_whose_summary_carries_no_rows_shows_the_look_alone() -> None:
    # given a look stored before checks wrote their rows (or by a check that writes none)
    old = {key: value for key, value in ERRORS_LOOK.items() if key not in ("columns", "rows")}

    # when it is shown, then its row has the look and verdict, and no figures
    assert shown_evidence(judged({"errors": old})) == [
        {"METRIC": "errors", "LOOK": "12", "VERDICT": "Failed", "BASELINE (v1)": "", "CANDIDATE (v2)": "",
         "ESTIMATE [INTERVAL]": "", "TOLERANCE": "", "EVIDENCE": "", "DETECTABLE SO FAR": ""},
    ]  # fmt: skip


def test_the_analysis_table_keeps_one_row_per_metric_and_leaves_slices_and_statistics_to_the_evidence() -> None:
    # given the looks of a slices metric and a drift metric
    status = judged({"slices": SLICES_LOOK, "drift": DRIFT_LOOK})

    # when the rollout is shown
    text = render_get(rollout(status=status), events=[], now=NOW, style=PLAIN)

    # then the Analysis table has a row per metric, and the Evidence section the rest
    analysis = section_rows(text, "Analysis (latest per metric)")
    assert [(r["METRIC"], r["VERDICT"], r["REASON"]) for r in analysis] == [
        ("slices", "Failed", "look 12: ..."),
        ("drift", "Failed", "look 12: ..."),
    ]
    assert [r["METRIC"] for r in section_rows(text, EVIDENCE)] == [
        "slices", "slice borderline", "slice large", "drift", "PSI", "JS distance"
    ]  # fmt: skip


GATES_AND_RUBRIC: dict[str, Any] = {
    **PROGRESSING,
    "gates": {
        "verdict": "Failed", "message": "contract mismatch", "ran": ["contract"],
        "contract": {"passed": False, "expectedFrom": "baseline v1 metadata", "mismatches": [
            {"role": "input", "tensor": "features", "property": "datatype", "expected": "FP64", "got": "FP32"}],
            "verdict": "Failed",
            "summary": "contract: candidate does not match baseline v1 metadata: "
                       "input features: datatype expected FP64, got FP32"},
    },
    "rubric": [
        {"item": "Infra 2", "check": "contract", "stage": "pre-traffic", "verdict": "Successful"},
        {"item": "Model 6", "check": "slices", "stage": "analysis", "verdict": "Failed"},
    ],
}  # fmt: skip


def test_get_lists_the_rubric_items_verified_and_what_each_gate_found() -> None:
    lines = render_get(rollout(status=GATES_AND_RUBRIC), events=[], now=NOW, style=PLAIN).splitlines()
    rubric = lines.index("Rubric (ML Test Score items verified):")
    assert lines[rubric + 1].split() == ["ITEM", "CHECK", "STAGE", "VERDICT"]
    assert lines[rubric + 2].split() == ["Infra", "2", "contract", "pre-traffic", "Successful"]
    assert lines[rubric + 3].split() == ["Model", "6", "slices", "analysis", "Failed"]
    contract = next(line for line in lines if line.strip().startswith("contract"))
    assert contract.split()[:2] == ["contract", "Failed"]
    assert "input features: datatype expected FP64, got FP32" in contract


def test_gates_written_before_reports_carried_a_summary_show_the_overall_verdict_and_message() -> None:
    # given status.gates as an older controller wrote it: reports without summary, no `ran`
    old = {key: value for key, value in GATES_AND_RUBRIC["gates"].items() if key != "ran"}

    # when the rollout is shown
    rows = section_rows(render_get(rollout(status={**PROGRESSING, "gates": old}), events=[], now=NOW, style=PLAIN),
                        "Gates")  # fmt: skip

    # then one row carries the gates' overall verdict and message
    assert rows == [{"GATE": "gates", "RESULT": "Failed", "MESSAGE": "contract mismatch"}]
