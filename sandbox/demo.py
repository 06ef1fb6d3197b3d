"""`make demo` / `python -m sandbox.demo`: four scripted model rollouts on the sandbox.

1. v1 -> v2, a better model: shadowed first (the Gateway copies every request to it, no client is
   answered by it), then canaried; the controller walks the steps and promotes it.
2. v2 -> v3, better on average but broken on the 'borderline' slice, as a plain canary: metric
   analysis catches it at 50 % and the controller rolls it back on its own.
3. v2 -> v4, a preprocessing bug: it gets the mirrored requests wrong, and is rolled back during
   its shadow step, before it answers a single client (the demo checks that none got an answer
   from it).
4. v2 -> v5, a good model, promoted after a short canary with a rollback window; then the demo
   makes v5's servers fail a share of their requests (their fault switch): the sandbox's alerting
   rule fires in Prometheus, Alertmanager posts the alert to the controller, and the controller
   undoes the promotion, all traffic back on v2, which kept its replicas through the window.

Prints progress while it waits; for a rollback, which metric caught the bad candidate, when, and
the evidence it decided on (samples per version, the ratio of their bad-event rates and its
interval, the e-value against its threshold); for a promotion, what each metric's evidence could
see at the end; for the undone promotion, the alert (name, labels, when it fired), when the undo was
done and the route's weights after it. Saves a PNG per rollout and a summary.json under --out,
stops everything at the end (or on Ctrl-C), and exits non-zero if any rollout ends otherwise.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any, cast

import httpx
import yaml
from kubernetes import client
from kubernetes import config as kube_config

from sandbox.environment import (
    ALERT_ERROR_SHARE,
    ALERT_FOR,
    ALERT_NAME,
    DEFAULT_TRAFFIC_PER_SECOND,
    EXAMPLE_ROLLOUT,
    HTTPROUTE,
    MODEL,
    NAMESPACE,
    REPO_ROOT,
    ROUTE_RULE,
    VERSIONS,
    Sandbox,
    SandboxSettings,
)
from sandbox.plot import Marker, Moment, RolloutPicture, TrafficSample, draw

GROUP, VERSION, PLURAL = "rollouts.mlops.dev", "v1alpha1", "modelrollouts"
TERMINAL_PHASES = ("Promoted", "RolledBack", "Aborted")
POLL_SECONDS = 1.0
HEARTBEAT_SECONDS = 10.0
"""Progress is printed on every change, and at least this often while nothing changes."""
ROLLOUT_TIMEOUT_SECONDS = 240.0
"""Longer than the example's steps (a 20 s shadow, 75 s and 20 s of analysis) plus its scale-down delay."""
SCALE_DOWN_TIMEOUT_SECONDS = 60.0
INCIDENT_TIMEOUT_SECONDS = 90.0
"""From the fault to the undo: the rule's rate window and `for:` (about 10 s) with room to spare."""
DEFAULT_OUT = REPO_ROOT / "out" / "demo"


@dataclass(frozen=True, kw_only=True)
class Incident:
    """What happens after a promotion: the promoted version's servers start failing a share of
    their requests, a real alert fires on it, and the controller is to undo the promotion."""

    error_rate: float
    """Share of inference requests the promoted version's servers fail (their fault switch)."""
    rollback_window: str
    """spec.rollbackWindow: for this long after the promotion an alert undoes it, and the version
    it replaced keeps its replicas."""
    hold_seconds: float
    """How long the promoted version serves all traffic unharmed before the fault."""


INCIDENT = Incident(error_rate=0.3, rollback_window="10m", hold_seconds=5.0)
INCIDENT_STEPS: tuple[Mapping[str, Any], ...] = (
    {"setWeight": 50},
    {"analyze": {"duration": "20s"}},
    {"setWeight": 100},
)
"""The incident scene's canary: short, since what it shows comes after the promotion."""


@dataclass(frozen=True, kw_only=True)
class Scenario:
    """One scripted rollout."""

    title: str
    candidate: str
    expected_phase: str
    """Promoted or RolledBack."""
    shadow: bool = True
    """Whether the rollout runs the example's steps as they are, starting with its mirror (shadow)
    step; False leaves the mirror step out (a plain canary)."""
    caught_in_shadow: bool = False
    """The candidate must be rolled back during the mirror step, having answered mirrored copies
    but not a single client."""
    steps: tuple[Mapping[str, Any], ...] = ()
    """Steps of its own; empty: the example's (with or without its mirror step, as `shadow` says)."""
    incident: Incident | None = None
    """After the promotion, make the promoted version fail until an alert undoes the promotion."""


SCENARIOS = (
    Scenario(title="good candidate", candidate="v2", expected_phase="Promoted"),
    # v3's flaw shows only on the borderline slice, a tenth of the requests: at the rates of
    # docs/sandbox.md a 20 s shadow would catch it in some runs and not in others. As a plain
    # canary the slice's evidence catches it at 50 %, which is the scene it was made for.
    Scenario(title="bad candidate", candidate="v3", expected_phase="RolledBack", shadow=False),
    Scenario(title="bad candidate, shadowed", candidate="v4", expected_phase="RolledBack", caught_in_shadow=True),
    # Last: it needs v2 stable (as the scenes above leave it) to have a promotion to undo back to.
    Scenario(
        title="good candidate, then an incident",
        candidate="v5",
        expected_phase="RolledBack",
        shadow=False,
        steps=INCIDENT_STEPS,
        incident=INCIDENT,
    ),
)


@dataclass(kw_only=True)
class IncidentOutcome:
    """What happened after the promotion, as written to summary.json; times in seconds since the
    rollout started."""

    error_rate: float
    """Share of inference requests the promoted version's servers were made to fail."""
    fault_on_seconds: float
    """When they started failing."""
    pending_seconds: float | None = None
    """When the alerting rule first held for the promoted version (Prometheus' activeAt)."""
    alert: dict[str, Any] | None = None
    """The alert as the controller recorded it on the undo (status.incident): alertname, labels,
    startsAt (when Prometheus fired it), response."""
    firing_seconds: float | None = None
    """The alert's startsAt."""
    undo: dict[str, Any] | None = None
    """status.undo: fromVersion, toVersion, state, cause (the alert), requestedAt, time."""
    undone_seconds: float | None = None
    """When the undo was done (status.undo.time): the route showed all traffic on the old version."""
    route_weights: dict[str, int] = field(default_factory=dict)
    """The HTTPRoute's weight per version once the undo was done."""
    previous_replicas: list[tuple[float, int]] = field(default_factory=list)
    """(seconds, available replicas) of the version undone to, at each poll from the fault until
    the status showed the undo done."""

    def undone_by_alert(self, *, to_version: str) -> bool:
        """The alert undid the promotion: traffic all on `to_version`, which had replicas all along."""
        undo = self.undo or {}
        return (
            undo.get("state") == "Done"
            and undo.get("toVersion") == to_version
            and ALERT_NAME in str(undo.get("cause"))
            and self.route_weights.get(to_version) == 100
            and bool(self.previous_replicas)
            and all(replicas > 0 for _, replicas in self.previous_replicas)
        )


@dataclass(kw_only=True)
class Outcome:
    """How one rollout ended, as written to summary.json."""

    title: str
    baseline: str
    candidate: str
    expected_phase: str
    phase: str = "(timed out)"
    message: str = ""
    seconds_to_decision: float | None = None
    caught_by: dict[str, Any] | None = None
    """The failed measurement that decided a rollback: metric, values, time, look and its `evidence`."""
    evidence: dict[str, Any] = field(default_factory=dict)
    """Per metric, the summary of its latest look (status.analysis.evidence[].latest): samples per
    version, ratio and interval, e-value and threshold, what it could detect so far."""
    false_rollback_rate: float | None = None
    """The rollout's error budget the thresholds come from (status.analysis.falseRollbackRate)."""
    scaled_down: str | None = None
    """The losing version whose Deployment was scaled to zero (and its Pods deleted)."""
    picture: str | None = None
    weights: list[tuple[float, int]] = field(default_factory=list)
    shadow: bool = True
    """Whether the rollout began with the mirror (shadow) step."""
    expected_in_shadow: bool = False
    """Whether the candidate had to be rolled back during the mirror step without answering a client."""
    expected_undo: bool = False
    """Whether the candidate had to be promoted, then undone by an alert."""
    decided_in_step: str | None = None
    """The kind of step (`mirror`, `analyze`, ...) the rollout was in when it ended."""
    samples: list[TrafficSample] = field(default_factory=list)
    """What the demo saw each second: weight, mirror, the candidate server's requests, the clients' answers."""
    client_answers: dict[str, int] = field(default_factory=dict)
    """Answers the clients got during the rollout (until its loser was scaled down), per version."""
    candidate_requests: int | None = None
    """Requests the candidate's server answered during the rollout, mirrored copies included."""
    mirrored_copies: int | None = None
    """Of those, the ones no client counted an answer for: the mirrored copies (and, on a loaded
    machine, the odd answer a client had given up waiting for)."""
    client_failures: dict[str, int] = field(default_factory=dict)
    """Requests of the clients that failed during the rollout, by reason (`infer HTTP 500`, ...)."""
    promoted_seconds: float | None = None
    """For an incident scene, when the candidate was promoted (before the alert undid it)."""
    incident: IncidentOutcome | None = None
    """For an incident scene, the fault, the alert and the undo."""

    @property
    def candidate_answered_no_client(self) -> bool:
        return self.client_answers.get(self.candidate, 0) == 0 and sum(self.client_answers.values()) > 0

    @property
    def as_expected(self) -> bool:
        caught_in_shadow = (
            self.decided_in_step == "mirror"
            and self.candidate_answered_no_client
            and (self.mirrored_copies or 0) > 0
            and max((weight for _, weight in self.weights), default=0) == 0
        )
        rolled_back_by_its_cause = (
            self.promoted_seconds is not None
            and self.incident is not None
            and self.incident.undone_by_alert(to_version=self.baseline)
            if self.expected_undo
            else self.caught_by is not None
        )
        return (
            self.phase == self.expected_phase
            and self.scaled_down is not None
            and (self.expected_phase != "RolledBack" or rolled_back_by_its_cause)
            and (not self.expected_in_shadow or caught_in_shadow)
        )


class Clock:
    """Seconds since the demo began, for every printed line."""

    def __init__(self) -> None:
        self.began = time.monotonic()
        self._progress, self._progress_at = "", 0.0

    def say(self, text: str) -> None:
        elapsed = int(time.monotonic() - self.began)
        print(f"[{elapsed // 60:02d}:{elapsed % 60:02d}] {text}", flush=True)

    def progress(self, line: str) -> None:
        """Says a progress line when it differs from the last one, or again after HEARTBEAT_SECONDS."""
        if line != self._progress or time.monotonic() - self._progress_at >= HEARTBEAT_SECONDS:
            self.say(line)
            self._progress, self._progress_at = line, time.monotonic()


def _rollout(api: client.CustomObjectsApi) -> dict[str, Any]:
    return cast(dict[str, Any], api.get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, MODEL))


def _progress_line(status: Mapping[str, Any], steps: int) -> str:
    step = status.get("currentStepIndex", 0)
    message = status.get("message", "")
    weight = status.get("currentWeight", 0)
    return f"{status.get('phase', '-'):<11} step {min(step + 1, steps)}/{steps}  weight {weight:>3}%  {message}"


@dataclass(frozen=True, kw_only=True)
class Observers:
    """What the demo reads besides the rollout: the clients' answers per version (each second), the
    candidate server's own request counter (copies included) and the clients' failed requests."""

    client_answers: Callable[[], dict[str, int]]
    candidate_requests: Callable[[], int | None]
    client_failures: Callable[[], dict[str, int]]
    """The clients' failed requests so far, by reason."""


def _sample(status: Mapping[str, Any], observers: Observers, *, seconds: float, candidate: str) -> TrafficSample:
    answers = observers.client_answers()
    mirror = status.get("routeMirror") or {}
    return TrafficSample(
        seconds=seconds,
        weight=int(status.get("currentWeight", 0)),
        mirror_percent=int(mirror.get("percent", 0)) if mirror.get("version") == candidate else 0,
        candidate_requests=observers.candidate_requests(),
        client_answers=sum(answers.values()),
        client_answers_by_candidate=answers.get(candidate, 0),
        client_failures=sum(observers.client_failures().values()),
    )


def _ended(status: Mapping[str, Any]) -> bool:
    return status.get("phase") in TERMINAL_PHASES


def _watch(
    api: client.CustomObjectsApi,
    scenario: Scenario,
    outcome: Outcome,
    clock: Clock,
    *,
    started: float,
    observers: Observers,
    until: Callable[[Mapping[str, Any]], bool] = _ended,
    each_poll: Callable[[Mapping[str, Any]], None] = lambda status: None,
    timeout_seconds: float = ROLLOUT_TIMEOUT_SECONDS,
) -> dict[str, Any]:
    """Polls the rollout until this candidate's rollout ends (or `until(status)`); prints progress;
    records weights and what the clients and the candidate's server saw; `each_poll(status)` once a
    poll of this candidate's rollout."""
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        rollout = _rollout(api)
        status = rollout.get("status") or {}
        ours = status.get("candidateVersion") == scenario.candidate
        if ours:
            outcome.weights.append((time.time() - started, int(status.get("currentWeight", 0))))
            outcome.samples.append(
                _sample(status, observers, seconds=time.time() - started, candidate=scenario.candidate)
            )
            each_poll(status)
            clock.progress(f"  {_progress_line(status, len(rollout['spec']['steps']))[:160]}")
            if until(status):
                return status
        time.sleep(POLL_SECONDS)
    return (_rollout(api).get("status")) or {}


def _since(stamp: object, *, started: float) -> float | None:
    """Seconds from the rollout's start (Unix time) to an RFC 3339 time of the API server or of
    Prometheus (whose nanoseconds are cut to microseconds); None for none."""
    if not isinstance(stamp, str) or not stamp:
        return None
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() - started


def _decision(status: Mapping[str, Any], *, started: float) -> float | None:
    """Seconds from the rollout's start to the (last) history entry that ended it."""
    for entry in reversed(status.get("history", [])):
        if entry.get("phase") in TERMINAL_PHASES and entry.get("time"):
            return _since(entry["time"], started=started)
    return None


def _failed_measurements(status: Mapping[str, Any], candidate: str) -> list[dict[str, Any]]:
    measurements = (status.get("analysis") or {}).get("measurements", [])
    return [m for m in measurements if m.get("verdict") == "Failed" and m.get("candidateVersion") == candidate]


def _latest_evidence(status: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Per metric, the summary of its latest look, from status.analysis.evidence."""
    entries = (status.get("analysis") or {}).get("evidence") or []
    return {e["metric"]: dict(e["latest"]) for e in entries if isinstance(e, Mapping) and e.get("latest")}


def _deciding_evidence(status: Mapping[str, Any], failed: Mapping[str, Any]) -> dict[str, Any]:
    """The evidence of the look that failed: status.analysis.evidence keeps it in full (with every
    slice); the measurement carries the same figures without the per-slice rows."""
    latest = _latest_evidence(status).get(failed["metric"], {})
    measured = dict(failed.get("evidence") or {})
    return latest if latest.get("look") == measured.get("look") else measured


def _figure(value: object) -> str:
    """A statistic to three significant figures; `-` when absent."""
    return f"{value:.3g}" if isinstance(value, int | float) else "-"


def _times(value: object) -> str:
    """A ratio as `2.06x`; `-` when there is none (no event yet to reckon it from)."""
    return f"{value:.3g}x" if isinstance(value, int | float) else "-"


def _share(value: object) -> str:
    return f"{value * 100:.3g}%" if isinstance(value, int | float) else "-"


def _samples(side: object) -> str:
    samples = side.get("samples") if isinstance(side, Mapping) else None
    return f"{samples:.0f}" if isinstance(samples, int | float) else "-"


def _interval(bounds: object) -> str:
    """A ratio's confidence interval; an end not bounded yet (null in status) is `inf`."""
    if not isinstance(bounds, Sequence) or len(bounds) != 2:
        return "-"
    low, high = bounds
    return f"{_figure(low)}-{'inf' if high is None else _figure(high)}"


def _reached(summary: Mapping[str, Any]) -> bool:
    value, threshold = summary.get("eValue"), summary.get("threshold")
    return isinstance(value, int | float) and isinstance(threshold, int | float) and value >= threshold


def _compared(summary: Mapping[str, Any], versions: tuple[str, str]) -> list[str]:
    """One comparison of bad-event rates (a metric's, or one slice's) as the judge saw it: both
    versions' values and samples, the ratio and its interval against the tolerance, the evidence
    against its threshold, and the smallest ratio the samples so far would catch."""
    baseline, candidate = versions
    cand, base = summary.get("candidate") or {}, summary.get("baseline") or {}
    relation = ">=" if _reached(summary) else "of"
    return [
        f"candidate {candidate} {_share(cand.get('value'))} of {_samples(cand)}, "
        f"baseline {baseline} {_share(base.get('value'))} of {_samples(base)}",
        f"ratio of bad-event rates {_figure(summary.get('ratio'))} (interval {_interval(summary.get('interval'))}), "
        f"tolerance {summary.get('tolerance', '-')} (at most {_figure(summary.get('nullRatio'))}x)",
        f"evidence {_figure(summary.get('eValue'))} {relation} threshold {_figure(summary.get('threshold'))}; "
        f"smallest ratio detectable so far {_times(summary.get('smallestDetectableRatio'))}",
    ]


def _label(metric: str, summary: Mapping[str, Any]) -> str:
    threshold = summary.get("thresholdSeconds")
    return f"{metric} (slower than {threshold:g}s)" if isinstance(threshold, int | float) else metric


def evidence_lines(metric: str, summary: Mapping[str, Any], versions: tuple[str, str]) -> list[str]:
    """A sequential metric's look in full, for the rollback: one block per comparison (the metric's,
    or each slice's), the failing slice first."""
    look = f"look {summary.get('look', '-')}"
    if summary.get("test") in ("rate", "slow-requests"):
        return [f"{_label(metric, summary)}, {look}:", *(f"  {line}" for line in _compared(summary, versions))]
    if summary.get("test") == "slices":
        slices = sorted(summary.get("slices") or [], key=lambda entry: entry.get("verdict") != "Failed")
        lines = [f"{metric}, {look}:"]
        for entry in slices:
            lines.append(f"  slice {entry.get('slice')} ({entry.get('verdict', '-')}, quality = right answers):")
            lines.extend(f"    {line}" for line in _compared(entry, versions))
        if not slices:  # the measurement's copy names only the worst slice
            lines.append(f"  worst slice {summary.get('worstSlice', '-')}")
        return lines
    return [f"{metric}, {look}: {summary.get('verdict', '-')}"]


def summary_lines(metric: str, summary: Mapping[str, Any], versions: tuple[str, str]) -> list[str]:
    """A sequential metric's latest look in one line per comparison, for the promotion: samples
    per version, the evidence of harm against its threshold, the smallest ratio it would catch."""
    baseline, candidate = versions

    def line(label: str, figures: Mapping[str, Any]) -> str:
        return (
            f"{label:<36} samples {candidate} {_samples(figures.get('candidate')):>6} / {baseline} "
            f"{_samples(figures.get('baseline')):>6}   evidence {_figure(figures.get('eValue')):>8} of "
            f"{_figure(figures.get('threshold'))}   detectable so far "
            f"{_times(figures.get('smallestDetectableRatio'))}"
        )

    if summary.get("test") in ("rate", "slow-requests"):
        return [line(_label(metric, summary), summary)]
    if summary.get("test") == "slices":
        return [line(f"{metric}: slice {e.get('slice')}", e) for e in summary.get("slices") or []]
    return [f"{metric:<36} look {summary.get('look', '-')}: {summary.get('verdict', '-')}"]


def _wait_scaled_down(
    apps: client.AppsV1Api,
    core: client.CoreV1Api,
    version: str,
    clock: Clock,
    *,
    each_poll: Callable[[], None] = lambda: None,
) -> bool:
    """Waits until the loser's Deployment has 0 replicas and KWOK has deleted its Pods;
    `each_poll()` once a poll (the picture's samples go on meanwhile)."""
    name = f"{MODEL}-{version}"
    deadline = time.monotonic() + SCALE_DOWN_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        each_poll()
        deployment = apps.read_namespaced_deployment(name, NAMESPACE)
        pods = core.list_namespaced_pod(NAMESPACE, label_selector=f"app={MODEL},version={version}").items
        if deployment.spec.replicas == 0 and not pods:
            clock.say(f"  Deployment {name} scaled to 0 by the controller; its Pods are gone")
            return True
        time.sleep(POLL_SECONDS)
    clock.say(f"  Deployment {name} was not scaled to 0 within {SCALE_DOWN_TIMEOUT_SECONDS:.0f}s")
    return False


def _requests_answered(metrics_url: str) -> int | None:
    """A model server's own count of inference requests answered (model_requests_total, every
    code): mirrored copies included, which the gateway's clients never see. None if unreadable."""
    try:
        text = httpx.get(metrics_url, timeout=2.0).text
    except httpx.HTTPError:
        return None
    return round(sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith("model_requests_total{")))


def _steps(manifest: Mapping[str, Any], scenario: Scenario) -> list[dict[str, Any]]:
    """The scenario's own steps, else the example's, without its mirror step for a plain canary."""
    if scenario.steps:
        return [dict(step) for step in scenario.steps]
    steps = [dict(step) for step in manifest["spec"]["steps"]]
    return steps if scenario.shadow else [step for step in steps if "mirror" not in step]


def _step_kind(status: Mapping[str, Any], steps: Sequence[Mapping[str, Any]]) -> str | None:
    """The kind of step the rollout is in (`mirror`, `analyze`, ...); None once past the last."""
    index = status.get("currentStepIndex", 0)
    return next(iter(steps[index]), None) if isinstance(index, int) and 0 <= index < len(steps) else None


def _diff(after: Mapping[str, int], before: Mapping[str, int]) -> dict[str, int]:
    return {key: count - before.get(key, 0) for key, count in after.items() if count - before.get(key, 0) > 0}


def _how(scenario: Scenario) -> str:
    """How the scenario rolls its candidate out, for its first printed line."""
    if scenario.steps:
        how = f"plain canary, {len(scenario.steps)} short steps"
    elif scenario.shadow:
        how = "shadow step, then canary"
    else:
        how = "plain canary, the example's steps without the shadow"
    if scenario.incident is not None:
        how += f", spec.rollbackWindow {scenario.incident.rollback_window}; then an incident"
    return how


def _conclude(outcome: Outcome, status: Mapping[str, Any], *, started: float) -> None:
    outcome.phase = status.get("phase", outcome.phase)
    outcome.message = status.get("message", "")
    outcome.seconds_to_decision = _decision(status, started=started)


def run_scenario(
    sandbox: Sandbox, api_client: client.ApiClient, scenario: Scenario, *, out: Path, clock: Clock
) -> Outcome:
    assert sandbox.plane is not None and sandbox.prometheus is not None
    api = client.CustomObjectsApi(api_client)
    manifest = yaml.safe_load(EXAMPLE_ROLLOUT.read_text())
    steps = _steps(manifest, scenario)
    candidate_server = sandbox.servers[scenario.candidate]
    observers = Observers(
        client_answers=sandbox.client_answers,
        candidate_requests=lambda: _requests_answered(candidate_server.metrics_url),
        client_failures=sandbox.client_failures,
    )
    exists = sandbox.plane.kubectl("get", "mro", MODEL, f"--namespace={NAMESPACE}", check=False).returncode == 0
    status_before = (_rollout(api).get("status") or {}) if exists else {}
    baseline = str(status_before.get("stableVersion") or manifest["spec"]["baseline"])
    outcome = Outcome(
        title=scenario.title,
        baseline=baseline,
        candidate=scenario.candidate,
        expected_phase=scenario.expected_phase,
        weights=[(0.0, 0)],
        shadow=scenario.shadow,
        expected_in_shadow=scenario.caught_in_shadow,
        expected_undo=scenario.incident is not None,
    )
    stories = {v.version: v.story for v in VERSIONS}
    clock.say(f"Rollout {baseline} -> {scenario.candidate} ({_how(scenario)}): {stories[scenario.candidate]}")
    answers_before, requests_before = observers.client_answers(), observers.candidate_requests()
    failures_before = observers.client_failures()
    started = time.time()
    spec_change: dict[str, Any] = {"candidate": scenario.candidate, "steps": steps}
    if scenario.incident is not None:
        spec_change["rollbackWindow"] = scenario.incident.rollback_window
    if exists:
        change = {"spec": spec_change}
        api.patch_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, MODEL, change)
        clock.say(f"  kubectl -n {NAMESPACE} patch mro {MODEL} --type=merge -p '{json.dumps(change)}'")
    else:
        manifest["spec"].update(spec_change)
        sandbox.plane.kubectl("apply", "--filename=-", input=json.dumps(manifest))
        clock.say(f"  kubectl apply -f {EXAMPLE_ROLLOUT.relative_to(REPO_ROOT)}")
    status = _watch(api, scenario, outcome, clock, started=started, observers=observers)
    outcome.decided_in_step = _step_kind(status, steps)
    _conclude(outcome, status, started=started)
    outcome.evidence = _latest_evidence(status)
    outcome.false_rollback_rate = (status.get("analysis") or {}).get("falseRollbackRate")
    versions = (baseline, scenario.candidate)
    failed = _failed_measurements(status, scenario.candidate)
    if failed:
        first = failed[0]
        outcome.caught_by = {**first, "evidence": _deciding_evidence(status, first)}
        caught_at = _since(first["time"], started=started) or 0.0
        during = " during the mirror (shadow) step" if outcome.decided_in_step == "mirror" else ""
        clock.say(f"  caught by {first['metric']} at {first['time']} ({caught_at:.0f}s into the rollout){during}:")
        for line in evidence_lines(first["metric"], outcome.caught_by["evidence"], versions):
            clock.say(f"    {line}")
    elif outcome.evidence:
        budget = outcome.false_rollback_rate
        clock.say(
            f"  evidence at each metric's last look (a metric fails once its evidence reaches its threshold: "
            f"1 / its share of falseRollbackRate {_figure(budget)}):"
        )
        for metric, summary in outcome.evidence.items():
            for line in summary_lines(metric, summary, versions):
                clock.say(f"    {line}")
    if scenario.incident is not None and outcome.phase == "Promoted":
        outcome.promoted_seconds = outcome.seconds_to_decision
        clock.say(f"  Promoted after {outcome.promoted_seconds or 0:.0f}s: {outcome.message}")
        status = _run_incident(sandbox, api_client, scenario, outcome, clock, started=started, observers=observers)
        _conclude(outcome, status, started=started)
    verdict = "as expected" if outcome.phase == scenario.expected_phase else f"EXPECTED {scenario.expected_phase}"
    when = f" after {outcome.seconds_to_decision:.0f}s" if outcome.seconds_to_decision is not None else ""
    clock.say(f"  {outcome.phase}{when}: {outcome.message} -- {verdict}")
    loser = scenario.candidate if outcome.phase in ("RolledBack", "Aborted") else baseline

    def sample_on() -> None:
        seconds = time.time() - started
        outcome.samples.append(_sample(_rollout(api).get("status") or {}, observers, seconds=seconds,
                                       candidate=scenario.candidate))  # fmt: skip

    if outcome.phase in TERMINAL_PHASES and _wait_scaled_down(
        client.AppsV1Api(api_client), client.CoreV1Api(api_client), loser, clock, each_poll=sample_on
    ):
        outcome.scaled_down = loser
    _count_answers(
        outcome, observers, answers_before=answers_before, requests_before=requests_before,
        failures_before=failures_before, clock=clock,
    )  # fmt: skip
    ending = f"{outcome.phase}{when}"
    if outcome.incident is not None and outcome.incident.alert is not None:
        ending = f"promoted after {outcome.promoted_seconds or 0:.0f}s, undone by an alert{when}"
    picture = RolloutPicture(
        title=f"{MODEL} {baseline} -> {scenario.candidate} ({scenario.title}): {ending}",
        model=MODEL,
        baseline=baseline,
        candidate=scenario.candidate,
        start_unix=started,
        end_unix=time.time(),
        weights=[*outcome.weights, (time.time() - started, outcome.weights[-1][1])],
        samples=outcome.samples,
        moments=_moments(outcome, failed),
        failed=[
            Marker(seconds=_since(m["time"], started=started) or 0.0, metric=m["metric"], value=m.get("candidateValue"))
            for m in failed
        ],
        alert_error_share=ALERT_ERROR_SHARE,
    )
    path = draw(
        picture, prometheus_url=sandbox.prometheus.url, path=out / f"rollout-{baseline}-to-{scenario.candidate}.png"
    )
    outcome.picture = str(path)
    clock.say(f"  picture: {path}")
    return outcome


def _moments(outcome: Outcome, failed: Sequence[Mapping[str, Any]]) -> list[Moment]:
    """The picture's vertical lines: the decision; for an incident scene, the promotion, the fault,
    the alert firing and the undo."""
    incident = outcome.incident
    if incident is None:
        if outcome.seconds_to_decision is None:
            return []
        label = f"rolled back: {failed[0]['metric']}" if failed else outcome.phase.lower()
        return [Moment(seconds=outcome.seconds_to_decision, label=label, colour="red" if failed else "green")]
    moments = (
        (outcome.promoted_seconds, f"{outcome.candidate} promoted", "green"),
        (incident.fault_on_seconds, f"fault on: {incident.error_rate:.0%} of requests fail", "dimgrey"),
        (incident.firing_seconds, f"alert {ALERT_NAME} firing", "red"),
        (incident.undone_seconds, f"undone: all traffic to {outcome.baseline}", "red"),
    )
    return [Moment(seconds=at, label=label, colour=colour) for at, label, colour in moments if at is not None]


def _labels_text(labels: Mapping[str, str]) -> str:
    return "{" + ", ".join(f'{name}="{value}"' for name, value in sorted(labels.items())) + "}"


def _route_weights(api: client.CustomObjectsApi) -> dict[str, int]:
    """The weight per version that the HTTPRoute's rule gives each backend (its Service)."""
    route = cast(
        dict[str, Any],
        api.get_namespaced_custom_object("gateway.networking.k8s.io", "v1", NAMESPACE, "httproutes", HTTPROUTE),
    )
    rule = next(rule for rule in route["spec"]["rules"] if rule.get("name") == ROUTE_RULE)
    return {ref["name"].removeprefix(f"{MODEL}-"): int(ref.get("weight", 1)) for ref in rule["backendRefs"]}


def _run_incident(
    sandbox: Sandbox,
    api_client: client.ApiClient,
    scenario: Scenario,
    outcome: Outcome,
    clock: Clock,
    *,
    started: float,
    observers: Observers,
) -> dict[str, Any]:
    """After the promotion: the promoted version serves a while, then its servers fail a share of
    their requests until the alert this raises makes the controller undo the promotion. Records
    it all in `outcome.incident`; the rollout's status at the end."""
    assert scenario.incident is not None and sandbox.prometheus is not None
    prometheus, incident = sandbox.prometheus, scenario.incident
    candidate, previous = scenario.candidate, outcome.baseline
    api, apps = client.CustomObjectsApi(api_client), client.AppsV1Api(api_client)
    watch = partial(_watch, api, scenario, outcome, clock, started=started, observers=observers)
    hold_until = time.monotonic() + incident.hold_seconds
    watch(until=lambda status: time.monotonic() >= hold_until)

    server = sandbox.servers[candidate]
    server.set_fault(error_rate=incident.error_rate)
    record = outcome.incident = IncidentOutcome(error_rate=incident.error_rate, fault_on_seconds=time.time() - started)
    body = json.dumps({"errorRate": incident.error_rate})
    clock.say(f"  fault on: {candidate}'s server fails {incident.error_rate:.0%} of its inference requests "
              f"(curl -X POST {server.url}/admin/fault -d '{body}')")  # fmt: skip
    seen: dict[str, str] = {}  # the state of the rule's alert for the candidate last printed

    def each_poll(status: Mapping[str, Any]) -> None:
        if (status.get("undo") or {}).get("state") != "Done":
            deployment = apps.read_namespaced_deployment(f"{MODEL}-{previous}", NAMESPACE)
            available = deployment.status.available_replicas if deployment.status is not None else None
            record.previous_replicas.append((time.time() - started, available or 0))
        for alert in prometheus.alerts():
            labels = alert.get("labels") or {}
            if (labels.get("alertname"), labels.get("version")) != (ALERT_NAME, candidate):
                continue
            if seen.get("state") != alert.get("state"):
                seen["state"] = str(alert.get("state"))
                if record.pending_seconds is None:
                    record.pending_seconds = _since(alert.get("activeAt"), started=started)
                share = float(alert.get("value", "nan"))
                clock.say(f"  Prometheus: alert {ALERT_NAME} {seen['state']} for {candidate} (error share {share:.0%}"
                          f" over the rule's window; the rule has held since {alert.get('activeAt')})")  # fmt: skip

    def undo_ended(status: Mapping[str, Any]) -> bool:
        undo = status.get("undo") or {}
        return undo.get("fromVersion") == candidate and undo.get("state") in ("Done", "Failed")

    status = watch(until=undo_ended, each_poll=each_poll, timeout_seconds=INCIDENT_TIMEOUT_SECONDS)
    server.set_fault(error_rate=0.0)
    clock.say(f"  fault off: {candidate}'s server answers every request again")
    undo, alert = status.get("undo") or {}, status.get("incident") or {}
    if not undo_ended(status):
        clock.say(f"  no undo within {INCIDENT_TIMEOUT_SECONDS:.0f}s of the fault: {status.get('message', '')}")
        return status
    record.undo, record.alert = dict(undo), dict(alert) or None
    record.firing_seconds = _since(alert.get("startsAt"), started=started)
    record.undone_seconds = _since(undo.get("time"), started=started)
    record.route_weights = _route_weights(api)
    fired_after = (record.firing_seconds or 0.0) - record.fault_on_seconds
    clock.say(f"  alert {alert.get('alertname')} {_labels_text(alert.get('labels') or {})} fired at "
              f"{alert.get('startsAt')}, {fired_after:.1f}s after the fault (the rule's `for: {ALERT_FOR}` included); "
              "Alertmanager posted it to the controller's receiver")  # fmt: skip
    undone_after = (record.undone_seconds or 0.0) - (record.firing_seconds or 0.0)
    clock.say(f"  undo {undo.get('state')} at {undo.get('time')}, {undone_after:.1f}s after the alert fired: "
              f"{undo.get('fromVersion')} -> {undo.get('toVersion')}")  # fmt: skip
    weights = ", ".join(f"{version} {weight}%" for version, weight in sorted(record.route_weights.items()))
    ready = sorted({replicas for _, replicas in record.previous_replicas})
    clock.say(f"  route {HTTPROUTE}: {weights}; {previous} had {' or '.join(map(str, ready)) or 'no'} replicas "
              "available at each poll from the fault until traffic moved (kept for the rollbackWindow)")  # fmt: skip
    return status


def _count_answers(
    outcome: Outcome,
    observers: Observers,
    *,
    answers_before: Mapping[str, int],
    requests_before: int | None,
    failures_before: Mapping[str, int],
    clock: Clock,
) -> None:
    """Who answered whom during the rollout: the clients' answers per version, the requests the
    candidate's server answered that no client got (the mirrored copies), the clients' failures."""
    outcome.client_answers = _diff(observers.client_answers(), answers_before)
    outcome.client_failures = _diff(observers.client_failures(), failures_before)
    requests_after = observers.candidate_requests()
    candidate, by_candidate = outcome.candidate, outcome.client_answers.get(outcome.candidate, 0)
    if requests_before is not None and requests_after is not None:
        outcome.candidate_requests = requests_after - requests_before
        outcome.mirrored_copies = max(outcome.candidate_requests - by_candidate, 0)
    clients = ", ".join(f"{count} from {version}" for version, count in sorted(outcome.client_answers.items()))
    copies = f", {outcome.mirrored_copies} of them answered to no client (mirrored copies)" if outcome.shadow else ""
    served = (
        f"{candidate}'s server answered {outcome.candidate_requests} requests{copies}"
        if outcome.candidate_requests is not None
        else f"{candidate}'s server could not be read"
    )
    clock.say(f"  {served}; the clients got {sum(outcome.client_answers.values())} answers ({clients or 'none'})")
    if outcome.client_failures:
        failures = ", ".join(f"{count} {reason}" for reason, count in sorted(outcome.client_failures.items()))
        clock.say(f"  the clients' failed requests: {failures}")
    if outcome.expected_in_shadow:
        verdict = "as expected" if outcome.candidate_answered_no_client else "EXPECTED NONE"
        clock.say(f"  answers from {candidate} that reached a client: {by_candidate} -- {verdict}")


def run(*, out: Path, traffic_per_second: float, scenarios: Sequence[Scenario] = SCENARIOS) -> list[Outcome]:
    """Starts the sandbox, runs the scenarios in order, stops everything; the outcomes."""
    clock = Clock()
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    outcomes: list[Outcome] = []
    settings = SandboxSettings(work_dir=out / "logs", traffic_per_second=traffic_per_second)
    with Sandbox.start(settings, progress=clock.say) as sandbox:
        assert sandbox.plane is not None
        clock.say(f"sandbox up: Gateway (Envoy) {sandbox.gateway.url if sandbox.gateway else '?'}, Prometheus "
                  f"{sandbox.prometheus.url if sandbox.prometheus else '?'}; logs in {settings.work_dir}")  # fmt: skip
        api_client = kube_config.new_client_from_config(config_file=str(sandbox.plane.kubeconfig))  # type: ignore[no-untyped-call]
        for scenario in scenarios:
            outcomes.append(run_scenario(sandbox, api_client, scenario, out=out, clock=clock))
        clock.say("stopping everything")
    summary = {
        "seconds": round(time.monotonic() - clock.began, 1),
        "rollouts": [{**asdict(o), "as_expected": o.as_expected} for o in outcomes],
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return outcomes


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="pictures, summary and logs (default: %(default)s)"
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=DEFAULT_TRAFFIC_PER_SECOND,
        help="inference requests per second of the traffic (default: %(default)g)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    # Ctrl-C and SIGTERM both unwind through the `with Sandbox` block, which stops everything.
    # Set explicitly: a shell starting the demo in the background leaves SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    began = time.monotonic()
    try:
        outcomes = run(out=args.out.resolve(), traffic_per_second=args.rate)
    except KeyboardInterrupt:
        print(f"\ninterrupted; everything the demo started is stopped ({time.monotonic() - began:.0f}s)")
        return 130
    print()
    for outcome in outcomes:
        mark = "ok  " if outcome.as_expected else "FAIL"
        caught = f", caught by {outcome.caught_by['metric']}" if outcome.caught_by else ""
        rollout = f"{outcome.baseline} -> {outcome.candidate} ({outcome.title})"
        shadow = ""
        if outcome.expected_in_shadow:
            step = (
                "during its shadow step"
                if outcome.decided_in_step == "mirror"
                else f"in a {outcome.decided_in_step} step"
            )
            answered = outcome.client_answers.get(outcome.candidate, 0)
            shadow = f" {step}, {outcome.mirrored_copies} mirrored copies answered, {answered} client answers"
        undone = ""
        if outcome.expected_undo:
            alert = (outcome.incident.alert or {}) if outcome.incident is not None else {}
            route = outcome.incident.route_weights if outcome.incident is not None else {}
            undone = (
                f", promoted then undone by alert {alert.get('alertname', '(none)')}, "
                f"{outcome.baseline} at {route.get(outcome.baseline, 0)}% on the route"
            )
        print(f"{mark} {rollout}: {outcome.phase}{caught}{shadow}{undone}; {outcome.picture}")
    print(f"total {time.monotonic() - began:.0f}s")
    return 0 if all(o.as_expected for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
