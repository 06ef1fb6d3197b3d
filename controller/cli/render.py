"""Pure formatting for the plugin: stored JSON and `now` in, text out. No I/O, no clock."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from enum import IntEnum, StrEnum
from typing import Any

import yaml

from controller.api import TERMINAL_PHASES, ModelRolloutStatus, Phase
from controller.figures import span

JSON = Mapping[str, Any]

EVENTS_SHOWN = 10
"""Most recent Events shown by `get`; older ones are in `kubectl get events`."""


class ExitCode(IntEnum):
    """Exit codes of the plugin; `status` maps the rollout's outcome onto them for pipelines."""

    OK = 0
    """Success; for `status`, the candidate was promoted."""
    ERROR = 1
    """The API call failed or the rollout does not exist."""
    USAGE = 2
    """The command line is wrong (argparse's own code)."""
    ROLLED_BACK = 3
    """`status`: analysis failed and traffic is back on the stable version."""
    ABORTED = 4
    """`status`: a person aborted the rollout."""
    FAILED = 5
    """`status`: the progress deadline passed or the spec cannot be acted on."""
    TIMED_OUT = 6
    """`status --watch --timeout`: the timeout passed before the rollout finished."""
    IN_PROGRESS = 7
    """`status` without --watch: the rollout has not finished yet."""


PHASE_EXIT_CODES = {
    Phase.PROMOTED: ExitCode.OK,
    Phase.ROLLED_BACK: ExitCode.ROLLED_BACK,
    Phase.ABORTED: ExitCode.ABORTED,
    Phase.FAILED: ExitCode.FAILED,
}


class Tone(StrEnum):
    """What a cell means, so a terminal can colour it; ANSI SGR codes as values."""

    GOOD = "32"
    BAD = "31"
    WARN = "33"
    BUSY = "36"
    DIM = "2"
    BOLD = "1"


PHASE_TONES = {
    Phase.PROMOTED: Tone.GOOD,
    Phase.ROLLED_BACK: Tone.BAD,
    Phase.ABORTED: Tone.BAD,
    Phase.FAILED: Tone.BAD,
    Phase.PAUSED: Tone.WARN,
    Phase.PROGRESSING: Tone.BUSY,
}
WORD_TONES = {
    "successful": Tone.GOOD,
    "passed": Tone.GOOD,
    "true": Tone.GOOD,
    "failed": Tone.BAD,
    "error": Tone.BAD,
    "warning": Tone.WARN,
    "inconclusive": Tone.WARN,
    "running": Tone.BUSY,
}


@dataclass(frozen=True, kw_only=True)
class Style:
    """How text reaches the reader: coloured on a terminal, plain everywhere else."""

    color: bool
    """Wrap toned text in ANSI colour codes."""

    def paint(self, text: str, tone: Tone | None) -> str:
        if not self.color or tone is None or not text:
            return text
        return f"\x1b[{tone.value}m{text}\x1b[0m"


@dataclass(frozen=True, kw_only=True)
class Cell:
    text: str
    """What the cell says; column widths are measured on it, before any colour."""
    tone: Tone | None = None
    """How to colour it on a terminal."""


def cell(value: object, tone: Tone | None = None) -> Cell:
    return Cell(text="" if value is None else str(value), tone=tone)


def table(*, headers: Sequence[str], rows: Sequence[Sequence[Cell]], style: Style, indent: str = "") -> str:
    """Columns aligned as kubectl aligns them: three spaces apart, the last one unpadded."""
    header_cells = [Cell(text=h) for h in headers]
    widths = [max(len(r[i].text) for r in [header_cells, *rows]) for i in range(len(headers))]
    lines = []
    for row in [header_cells, *rows]:
        parts = [
            style.paint(c.text if i == len(row) - 1 else c.text.ljust(widths[i]), c.tone) for i, c in enumerate(row)
        ]
        lines.append((indent + "   ".join(parts)).rstrip())
    return "\n".join(lines)


def parse_timestamp(text: str | None) -> datetime | None:
    """Kubernetes times: `2024-05-01T10:00:00Z`, or with microseconds as Events' eventTime."""
    if not text:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def age(text: str | None, *, now: datetime) -> str:
    """How long ago, the way kubectl prints it (`45s`, `3m10s`, `2h`, `4d`); `<unknown>` without a time."""
    moment = parse_timestamp(text)
    if moment is None:
        return "<unknown>"
    return span((now - moment).total_seconds())


def phase_of(rollout: JSON) -> Phase | None:
    return ModelRolloutStatus.from_json(rollout.get("status")).phase


def phase_cell(phase: Phase | None) -> Cell:
    return Cell(text=phase.value if phase else "<none>", tone=PHASE_TONES.get(phase) if phase else Tone.DIM)


def word_tone(word: str | None) -> Tone | None:
    return WORD_TONES.get((word or "").lower())


def step_progress(rollout: JSON) -> str:
    """`2/5`: the step being worked on, counted from one; `5/5` once every step is done."""
    steps = len(rollout.get("spec", {}).get("steps", []))
    index = ModelRolloutStatus.from_json(rollout.get("status")).current_step_index
    return f"{min(index + 1, steps)}/{steps}"


def describe_step(step: JSON) -> str:
    if "setWeight" in step:
        return f"setWeight {step['setWeight']}"
    if "pause" in step:
        duration = (step["pause"] or {}).get("duration")
        return f"pause {duration}" if duration else "pause (until resumed)"
    if "analyze" in step:
        analyze = step["analyze"] or {}
        templates = ", ".join(t.get("name", "") for t in analyze.get("templates", []))
        return f"analyze {analyze.get('duration', '')}" + (f" ({templates})" if templates else "")
    return json.dumps(step, sort_keys=True)


def stable_and_candidate(rollout: JSON) -> tuple[str, str]:
    """The versions compared: what traffic returns to, and what is being rolled out."""
    spec = rollout.get("spec", {})
    status = ModelRolloutStatus.from_json(rollout.get("status"))
    return (
        status.stable_version or spec.get("baseline", ""),
        status.candidate_version or spec.get("candidate", ""),
    )


def weights(rollout: JSON) -> str:
    stable, candidate = stable_and_candidate(rollout)
    weight = ModelRolloutStatus.from_json(rollout.get("status")).current_weight
    return f"{stable} {100 - weight}% / {candidate} {weight}%"


# ---------------------------------------------------------------------------------------------
# Commands


def render_list(rollouts: Sequence[JSON], *, all_namespaces: bool, now: datetime, style: Style) -> str:
    if not rollouts:
        return "No ModelRollouts found."
    headers = ["NAME", "MODEL", "PHASE", "STEP", "STABLE", "CANDIDATE", "WEIGHT", "AGE"]
    rows = []
    for rollout in rollouts:
        metadata, spec = rollout.get("metadata", {}), rollout.get("spec", {})
        stable, candidate = stable_and_candidate(rollout)
        weight = ModelRolloutStatus.from_json(rollout.get("status")).current_weight
        rows.append(
            [
                cell(metadata.get("name")),
                cell(spec.get("model")),
                phase_cell(phase_of(rollout)),
                cell(step_progress(rollout)),
                cell(stable),
                cell(candidate),
                cell(f"{weight}%"),
                cell(age(metadata.get("creationTimestamp"), now=now)),
            ]
        )
    if all_namespaces:
        headers.insert(0, "NAMESPACE")
        for row, rollout in zip(rows, rollouts, strict=True):
            row.insert(0, cell(rollout.get("metadata", {}).get("namespace")))
    return table(headers=headers, rows=rows, style=style)


def latest_measurements(status: JSON) -> list[JSON]:
    """The newest measurement of each metric, in the order metrics first appear."""
    latest: dict[str, JSON] = {}
    for measurement in status.get("analysis", {}).get("measurements", []):
        metric = measurement.get("metric", "")
        previous = latest.get(metric)
        if previous is None or (measurement.get("time") or "") >= (previous.get("time") or ""):
            latest[metric] = measurement
    return list(latest.values())


def format_number(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)


def gate_rows(gates: object) -> list[list[Cell]]:
    """One row per gate report in status.gates, in the order the gates ran (`ran`), each with the
    verdict and one-line summary the gate wrote; the overall verdict when no gate reported yet,
    or when status was written before reports carried their summary."""
    if not isinstance(gates, Mapping):
        return []
    ran = gates.get("ran")
    reports = [(str(key), gates.get(key)) for key in ran] if isinstance(ran, list) else []
    rows = [
        [cell(key), cell(report.get("verdict"), word_tone(str(report.get("verdict")))), cell(report.get("summary"))]
        for key, report in reports
        if isinstance(report, Mapping)
    ]
    if not rows and gates.get("verdict"):
        verdict = str(gates["verdict"])
        rows.append([cell("gates"), cell(verdict, word_tone(verdict)), cell(gates.get("message"))])
    return rows


def measurement_row(measurement: Mapping[str, Any], *, now: datetime) -> list[Cell]:
    """A metric's latest measurement: both versions' values, the verdict, when, and why."""
    verdict = measurement.get("verdict")
    return [
        cell(measurement.get("metric")),
        cell(format_number(measurement.get("baselineValue"))),
        cell(format_number(measurement.get("candidateValue"))),
        cell(verdict, word_tone(verdict)),
        cell(age(measurement.get("time"), now=now)),
        cell(measurement.get("reason")),
    ]


# ---------------------------------------------------------------------------------------------
# Evidence: what each sequential metric's latest look rests on (status.analysis.evidence)


def latest_evidence(status: JSON) -> dict[str, Mapping[str, Any]]:
    """The latest look of each sequential metric, by metric, in the order of the Analysis table:
    from status.analysis.evidence, else from the metric's latest measurement, which carries the
    same summary without the per-slice rows and the histogram buckets."""
    found: dict[str, Mapping[str, Any]] = {}
    for measurement in latest_measurements(status):
        summary = measurement.get("evidence")
        if isinstance(summary, Mapping):
            found[str(measurement.get("metric"))] = {**summary, "verdict": measurement.get("verdict")}
    for entry in status.get("analysis", {}).get("evidence") or []:
        if isinstance(entry, Mapping) and isinstance(entry.get("latest"), Mapping):
            found[str(entry.get("metric"))] = entry["latest"]
    return found


BLANK = Cell(text="")

TONES = {"bad": Tone.BAD, "good": Tone.GOOD}
"""The tones a check gives the cells of its rows (controller.analysis.rows)."""


@dataclass(frozen=True, kw_only=True)
class EvidenceRow:
    """One line of the Evidence section; the columns not given stay blank."""

    label: str
    look: Cell = BLANK
    verdict: Cell = BLANK
    baseline: Cell = BLANK
    """The baseline's value and the samples it rests on."""
    candidate: Cell = BLANK
    estimate: Cell = BLANK
    """What the test estimates (the ratio of bad-event rates, PSI, ...) and its confidence interval."""
    tolerance: Cell = BLANK
    evidence: Cell = BLANK
    """The e-value against the threshold that fails the candidate."""
    detectable: Cell = BLANK
    """What the evidence can see so far."""

    def cells(self) -> list[Cell]:
        return [cell(self.label), self.look, self.verdict, self.baseline, self.candidate, self.estimate,
                self.tolerance, self.evidence, self.detectable]  # fmt: skip

    @staticmethod
    def headers(*, baseline: str, candidate: str) -> list[str]:
        return ["METRIC", "LOOK", "VERDICT", f"BASELINE ({baseline})", f"CANDIDATE ({candidate})",
                "ESTIMATE [INTERVAL]", "TOLERANCE", "EVIDENCE", "DETECTABLE SO FAR"]  # fmt: skip


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _row(raw: Mapping[str, Any], *, label: str, with_safety: bool) -> EvidenceRow:
    """A row as the check wrote it (controller.analysis.rows.Row); with evidenceOfSafety the
    evidence of safety stands next to the evidence of harm, painted good when shown."""
    tones = _mapping(raw.get("tones"))

    def column(name: str) -> Cell:
        return cell(raw.get(name, ""), TONES.get(str(tones.get(name))))

    evidence = column("evidence")
    if with_safety and raw.get("safety"):
        evidence = Cell(
            text=f"{evidence.text}; safety {raw['safety']}", tone=evidence.tone or TONES.get(str(tones.get("safety")))
        )
    verdict = raw.get("verdict")
    return EvidenceRow(
        label=label,
        verdict=cell(verdict, word_tone(verdict)) if verdict else BLANK,
        baseline=column("baseline"),
        candidate=column("candidate"),
        estimate=column("estimate"),
        tolerance=column("tolerance"),
        evidence=evidence,
        detectable=column("detectable"),
    )


def evidence_rows(metric: str, summary: Mapping[str, Any], *, with_safety: bool) -> list[EvidenceRow]:
    """A sequential metric's latest look: the metric's row (its look, verdict and the cells its
    check wrote), then the detail rows the check wrote under it (a slice, a drift statistic, a
    skewed feature, a guardrail). A summary without them (an older status) gives the look alone."""
    columns = _mapping(summary.get("columns"))
    about = columns.get("about")
    verdict = summary.get("verdict")
    own = replace(
        _row(columns, label=f"{metric} ({about})" if about else metric, with_safety=with_safety),
        look=cell(summary.get("look", "-")),
        verdict=cell(verdict, word_tone(verdict)),
    )
    details = [r for r in summary.get("rows") or [] if isinstance(r, Mapping)]
    return [own, *(_row(r, label=f"  {r.get('label', '')}", with_safety=with_safety) for r in details)]


def evidence_title(status: JSON) -> str:
    """The section's title, with the rollout's error budget when status records it."""
    budget = status.get("analysis", {}).get("falseRollbackRate")
    if not isinstance(budget, int | float):
        return "Evidence (latest look per metric)"
    return f"Evidence (latest look per metric; falseRollbackRate {budget:g} for the whole rollout)"


def rubric_rows(rubric: object) -> list[list[Cell]]:
    """status.rubric: the ML Test Score items verified, by which check, with its verdict."""
    entries = [e for e in rubric if isinstance(e, Mapping)] if isinstance(rubric, list) else []
    return [
        [
            cell(entry.get("item")),
            cell(entry.get("check")),
            cell(entry.get("stage")),
            cell(entry.get("verdict"), word_tone(entry.get("verdict"))),
        ]
        for entry in entries
    ]


def section(title: str, body: str, *, style: Style) -> str:
    return f"{style.paint(title + ':', Tone.BOLD)}\n{body}"


def titled_table(title: str, *, headers: Sequence[str], rows: Sequence[Sequence[Cell]], style: Style) -> str:
    return section(title, table(headers=headers, rows=rows, style=style, indent="  "), style=style)


def render_get(rollout: JSON, *, events: Sequence[JSON], now: datetime, style: Style) -> str:
    """`get NAME`: everything a person needs to judge a rollout, one screen."""
    metadata, spec = rollout.get("metadata", {}), rollout.get("spec", {})
    raw_status = rollout.get("status") or {}
    status = ModelRolloutStatus.from_json(raw_status)
    stable, candidate = stable_and_candidate(rollout)
    steps = spec.get("steps", [])
    label = style.paint
    fields = [
        ("Name", metadata.get("name", "")),
        ("Namespace", metadata.get("namespace", "")),
        ("Model", spec.get("model", "")),
        ("Phase", label(*_phase_label(status.phase))),
        ("Message", status.message or "-"),
        ("Step", step_progress(rollout)),
        ("Weights", weights(rollout)),
        ("Paused by user", "yes" if status.paused_by_user else "no"),
        ("Age", age(metadata.get("creationTimestamp"), now=now)),
    ]
    if status.undo is not None:
        undo = status.undo
        fields.append(("Undo", f"{undo.from_version} -> {undo.to_version}: {undo.state.value} ({undo.cause})"))
    if status.post_promotion is not None:
        after = status.post_promotion
        fields.append(
            ("Post-promotion", f"{after.version} {after.state.value} until {after.ends_at}: {after.message or '-'}")
        )
    width = max(len(k) for k, _ in fields) + 2
    blocks = ["\n".join(f"{(k + ':').ljust(width)}{v}" for k, v in fields)]

    versions = {v.get("version"): v for v in spec.get("versions", [])}
    version_rows = []
    # The versions spec.rollbackRevisions keeps ready: an undo to one of them moves traffic at once.
    kept = [("kept", version) for version in status.kept_versions if version not in (stable, candidate)]
    for role, version in (("stable", stable), ("candidate", candidate), *kept):
        entry = versions.get(version, {})
        backend = entry.get("backend", {})
        version_rows.append(
            [
                cell(role),
                cell(version),
                cell(backend.get("service", "-")),
                cell(backend.get("port", "-")),
                cell(entry.get("deployment") or "-"),
            ]
        )
    blocks.append(
        titled_table(
            "Versions",
            headers=["ROLE", "VERSION", "SERVICE", "PORT", "DEPLOYMENT"],
            rows=version_rows,
            style=style,
        )
    )

    if steps:
        step_rows = []
        for i, step in enumerate(steps):
            marker = (
                Cell(text="done", tone=Tone.DIM)
                if i < status.current_step_index or status.phase == Phase.PROMOTED
                else Cell(text="current", tone=Tone.BUSY)
                if i == status.current_step_index and status.phase not in TERMINAL_PHASES
                else cell("")
            )
            step_rows.append([cell(i + 1), cell(describe_step(step)), marker])
        blocks.append(titled_table("Steps", headers=["#", "STEP", ""], rows=step_rows, style=style))

    measurements = latest_measurements(raw_status)
    if measurements:
        rows = [measurement_row(m, now=now) for m in measurements]
        headers = ["METRIC", f"BASELINE ({stable})", f"CANDIDATE ({candidate})", "VERDICT", "AGE", "REASON"]
        blocks.append(titled_table("Analysis (latest per metric)", headers=headers, rows=rows, style=style))

    evidence = latest_evidence(raw_status)
    if evidence:
        with_safety = (spec.get("analysis") or {}).get("promoteWhen") == "evidenceOfSafety"
        rows = [
            row.cells() for m, summary in evidence.items() for row in evidence_rows(m, summary, with_safety=with_safety)
        ]
        headers = EvidenceRow.headers(baseline=stable, candidate=candidate)
        blocks.append(titled_table(evidence_title(raw_status), headers=headers, rows=rows, style=style))

    gates = gate_rows(raw_status.get("gates"))
    if gates:
        blocks.append(titled_table("Gates", headers=["GATE", "RESULT", "MESSAGE"], rows=gates, style=style))

    rubric = rubric_rows(raw_status.get("rubric"))
    if rubric:
        blocks.append(
            titled_table(
                "Rubric (ML Test Score items verified)",
                headers=["ITEM", "CHECK", "STAGE", "VERDICT"],
                rows=rubric,
                style=style,
            )
        )

    if status.conditions:
        rows = [
            [
                cell(c.type),
                cell(c.status, word_tone(c.status)),
                cell(c.reason),
                cell(age(c.last_transition_time, now=now)),
                cell(c.message),
            ]
            for c in status.conditions
        ]
        blocks.append(
            titled_table("Conditions", headers=["TYPE", "STATUS", "REASON", "AGE", "MESSAGE"], rows=rows, style=style)
        )

    blocks.append(section("Events", render_events(events, now=now, style=style), style=style))
    return "\n\n".join(blocks)


def _phase_label(phase: Phase | None) -> tuple[str, Tone | None]:
    painted = phase_cell(phase)
    return painted.text, painted.tone


def event_time(event: JSON) -> str:
    return (
        event.get("lastTimestamp")
        or event.get("eventTime")
        or event.get("firstTimestamp")
        or event.get("metadata", {}).get("creationTimestamp")
        or ""
    )


def render_events(events: Sequence[JSON], *, now: datetime, style: Style) -> str:
    if not events:
        return "  <none>"
    recent = sorted(events, key=lambda e: parse_timestamp(event_time(e)) or now)[-EVENTS_SHOWN:]
    rows = [
        [
            cell(e.get("type"), Tone.WARN if e.get("type") == "Warning" else None),
            cell(e.get("reason")),
            cell(age(event_time(e), now=now)),
            cell(e.get("reportingComponent") or e.get("source", {}).get("component") or "-"),
            cell(e.get("message", "").strip()),
        ]
        for e in recent
    ]
    return table(headers=["TYPE", "REASON", "AGE", "FROM", "MESSAGE"], rows=rows, style=style, indent="  ")


def render_history(rollout: JSON, *, now: datetime, style: Style) -> str:
    history = ModelRolloutStatus.from_json(rollout.get("status")).history
    if not history:
        return f"No decisions recorded for {rollout.get('metadata', {}).get('name', '')} yet."
    steps = len(rollout.get("spec", {}).get("steps", []))
    rows = [
        [
            cell(entry.time),
            cell(age(entry.time, now=now)),
            phase_cell(Phase(entry.phase)) if entry.phase in Phase._value2member_map_ else cell(entry.phase),
            cell(f"{min(entry.step + 1, steps)}/{steps}"),
            cell(f"{entry.weight}%"),
            cell(entry.reason),
            cell(entry.message),
        ]
        for entry in history
    ]
    return table(headers=["TIME", "AGE", "PHASE", "STEP", "WEIGHT", "REASON", "MESSAGE"], rows=rows, style=style)


def status_line(rollout: JSON, *, style: Style) -> str:
    """One line per change while `status --watch` waits: phase, step, weights and the message."""
    status = ModelRolloutStatus.from_json(rollout.get("status"))
    parts = [
        style.paint(*_phase_label(status.phase)),
        f"step {step_progress(rollout)}",
        weights(rollout),
    ]
    if status.message:
        parts.append(status.message)
    return f"{rollout.get('metadata', {}).get('name', '')}: " + "  ·  ".join(parts)


def settled_phase(rollout: JSON) -> Phase | None:
    """The terminal phase the rollout reached for its current spec, or None while it is still going.

    A phase written for an older generation (the candidate changed since) does not count: the
    controller has not looked at the new spec yet.
    """
    status = ModelRolloutStatus.from_json(rollout.get("status"))
    generation = int(rollout.get("metadata", {}).get("generation", 0))
    if status.phase in TERMINAL_PHASES and status.observed_generation >= generation:
        return status.phase
    return None


def status_exit_code(rollout: JSON) -> ExitCode:
    phase = settled_phase(rollout)
    return ExitCode.IN_PROGRESS if phase is None else PHASE_EXIT_CODES[phase]


def serialize(document: object, *, output: str) -> str:
    """`-o json` or `-o yaml`, as kubectl prints them."""
    if output == "json":
        return json.dumps(document, indent=4)
    return yaml.safe_dump(document, sort_keys=False, default_flow_style=False).rstrip("\n")
