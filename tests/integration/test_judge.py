"""The sequential judge end to end: the real controller process decides from a real Prometheus on
the evidence accumulated since each analyze step began (docs/statistics.md).

A loopback exporter plays the baseline (v1) and the candidate (v2) of a model with noisy traffic,
as real traffic is: every request fails and every label matches at random with the version's
chances, so two identical versions never show identical counts. Prometheus scrapes it every
second; the controller measures every 2 s. Each test plays its own model name. The error and
latency regressions are in test_analysis_rollouts.py; here: an identical candidate, a slice
regression and counters that reset mid-step.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from localenv.controller import RunningController
from localenv.prometheus import Behaviour, LocalPrometheus, MetricsPlayer, ModelMetricsExporter
from tests.integration.rollout_world import JSON, WeightRecorder, World, rollout_manifest, wait_for

pytestmark = pytest.mark.integration

INTERVAL = "2s"
SEEN_WINDOW = "10s"
REQUESTS_PER_SECOND = MetricsPlayer.REQUESTS_PER_TICK / MetricsPlayer.TICK_SECONDS
"""Requests the player counts per version and second (50): modest traffic, one error a second at 2 %."""

ERRORS: JSON = {"name": "errors", "preset": "error-rate"}
P99: JSON = {"name": "p99", "preset": "latency-p99"}
ACCURACY: JSON = {"name": "accuracy", "preset": "feedback-accuracy"}
SLICES: JSON = {"name": "slices", "importantSlices": {"slices": ["borderline", "large"]}}

TWIN = Behaviour(error_rate=0.02, accuracy=0.9, slices=(("borderline", 0.85), ("large", 0.95)), noisy=True)
"""A realistic version: 2 % of requests fail, 90 % of labels match, at random."""


@pytest.fixture
def player(exporter: ModelMetricsExporter, namespace: str) -> Iterator[MetricsPlayer]:
    """Plays v1 and v2 of a model named after the test's namespace, once the test starts it; the
    seed fixes the noise, so a test sees the same draws on every run."""
    playing = MetricsPlayer(exporter, model=f"iris-{namespace}", seed=7)
    yield playing
    playing.stop()


def play(player: MetricsPlayer, prometheus: LocalPrometheus, *, baseline: Behaviour, candidate: Behaviour) -> None:
    """Both versions playing, and seen by Prometheus, before the rollout begins."""
    player.play("v1", baseline)
    player.start(candidate=candidate)
    player.wait_until_seen(prometheus, window=SEEN_WINDOW)


def analysed_rollout(model: str, *, steps: list[JSON], metrics: list[JSON]) -> JSON:
    """Rollout `iris` of v2 against v1, reading the metrics of `model` every INTERVAL."""
    analysis = {"interval": INTERVAL, "measurementHistoryLimit": 100, "metrics": metrics}
    return rollout_manifest(model=model, steps=steps, analysis=analysis)


def evidence_of(status: Mapping[str, Any], metric: str) -> JSON:
    """status.analysis.evidence of one metric: its segments and its latest look."""
    entries = (status.get("analysis") or {}).get("evidence") or []
    found: JSON = next(e for e in entries if e["metric"] == metric)
    return found


def measurements_of(status: Mapping[str, Any], metric: str) -> list[JSON]:
    return [m for m in (status.get("analysis") or {}).get("measurements", []) if m["metric"] == metric]


def analysis_failures(world: World) -> list[JSON]:
    return [e for e in world.events() if e["type"] == "Warning" and e["reason"] == "AnalysisFailed"]


def test_a_candidate_identical_to_the_baseline_under_noisy_traffic_is_promoted_with_the_evidence_in_status(
    world: World, prometheus: LocalPrometheus, player: MetricsPlayer, analysis_controller: RunningController
) -> None:
    # Given v1 and v2 alike: 2 % errors, 90 % right answers, drawn at random for each request
    play(player, prometheus, baseline=TWIN, candidate=TWIN)
    recorder = WeightRecorder(world)

    # When a rollout judges errors, latency, accuracy and two slices in two analyze steps of 8 s
    world.apply(
        analysed_rollout(
            player.model,
            steps=[{"setWeight": 20}, {"analyze": {"duration": "8s"}}, {"setWeight": 50},
                   {"analyze": {"duration": "8s"}}, {"setWeight": 100}],
            metrics=[ERRORS, P99, ACCURACY, SLICES],
        )
    )  # fmt: skip
    status = world.wait_for_phase("Promoted", timeout=60)

    # Then v2 is promoted after both steps, and no look failed
    assert recorder.candidate_weights() == [0, 20, 50, 100]
    assert analysis_failures(world) == []
    assert status["analysis"]["falseRollbackRate"] == 0.05
    # and each metric's evidence holds one segment per analyze step, read since the step began
    for metric in ("errors", "p99", "accuracy", "slices"):
        evidence = evidence_of(status, metric)
        assert [segment["step"] for segment in evidence["segments"]] == [1, 3], evidence
        assert all(6 <= segment["seconds"] <= 12 for segment in evidence["segments"]), evidence
        assert evidence["looks"] >= 4 and evidence["latest"]["verdict"] == "Successful"
    # and the latest look says, per version, how many samples it rests on, how far the evidence of
    # harm got (below its threshold: 1 / (5 % / 4 metrics)), and what it could have detected
    for metric in ("errors", "p99", "accuracy"):
        latest = evidence_of(status, metric)["latest"]
        for version in ("candidate", "baseline"):
            # 50 requests and 100 labels a second per version, for about 16 s of steps
            assert latest[version]["samples"] >= 0.7 * REQUESTS_PER_SECOND * 16, latest
        assert latest["threshold"] == 80
        assert 0 <= latest["eValue"] < latest["threshold"], latest
        assert latest["smallestDetectableRatio"] > 1
        low, high = latest["interval"]
        assert low <= 1 <= (high if high is not None else float("inf")), "the ratio's interval holds 1"
    errors = evidence_of(status, "errors")["latest"]
    assert 0.005 < errors["candidate"]["value"] < 0.05 and 0.005 < errors["baseline"]["value"] < 0.05
    assert errors["candidate"]["events"] > 0, "noisy traffic: the candidate did fail some requests"
    assert 0.02 < evidence_of(status, "p99")["thresholdSeconds"] <= 0.1, "the baseline's p99 bucket"
    slices = evidence_of(status, "slices")["latest"]
    assert [(s["slice"], s["verdict"]) for s in slices["slices"]] == [("borderline", "Successful"),
                                                                      ("large", "Successful")]  # fmt: skip
    assert all(s["eValue"] < s["threshold"] == 160 for s in slices["slices"]), "80 split over two slices"
    # and each look's measurement carries the same figures
    last = measurements_of(status, "errors")[-1]
    assert last["evidence"]["look"] == evidence_of(status, "errors")["looks"]
    assert last["evidence"]["eValue"] == errors["eValue"]


def test_a_candidate_worse_on_one_slice_is_rolled_back_with_that_slice_s_evidence_in_status(
    world: World, prometheus: LocalPrometheus, player: MetricsPlayer, analysis_controller: RunningController
) -> None:
    # Given v2 as good as v1 on large tumours (95 %) but wrong on 40 % of borderline ones (v1: 10 %)
    baseline = Behaviour(error_rate=0.02, slices=(("borderline", 0.9), ("large", 0.95)), noisy=True)
    candidate = Behaviour(error_rate=0.02, slices=(("borderline", 0.6), ("large", 0.95)), noisy=True)
    play(player, prometheus, baseline=baseline, candidate=candidate)
    recorder = WeightRecorder(world)

    # When a rollout judges errors and both slices in a long analyze step at 50 %
    world.apply(
        analysed_rollout(
            player.model,
            steps=[{"setWeight": 50}, {"analyze": {"duration": "5m"}}, {"setWeight": 100}],
            metrics=[ERRORS, SLICES],
        )
    )
    status = world.wait_for_phase("RolledBack", timeout=40)

    # Then all traffic went back to v1, and the message names the slice, the look and the evidence
    assert recorder.candidate_weights() == [0, 50, 0]
    message = status["message"]
    assert message.startswith("slices failed 1 time(s), more than failureLimit 0: look "), message
    assert "slice borderline: candidate v2 " in message and "beyond tolerance 0.02" in message
    assert "slice large" not in message
    assert len(analysis_failures(world)) == 1
    # and status.analysis.evidence shows the failing slice: samples per version, the ratio of the
    # wrong-answer rates with its interval above the tolerated ratio, the evidence past its threshold
    evidence = evidence_of(status, "slices")
    latest = evidence["latest"]
    assert (latest["verdict"], latest["test"], latest["worstSlice"]) == ("Failed", "slices", "borderline")
    assert latest["look"] == evidence["looks"] and f"look {latest['look']}: " in message
    borderline, large = latest["slices"]
    assert (borderline["slice"], borderline["verdict"]) == ("borderline", "Failed")
    assert borderline["candidate"]["samples"] > 0 and borderline["baseline"]["samples"] > 0
    assert 0.45 < borderline["candidate"]["value"] < 0.75 < 0.8 < borderline["baseline"]["value"]
    assert borderline["threshold"] == 80, "1 / (5 % / 2 metrics / 2 slices)"
    assert borderline["eValue"] >= borderline["threshold"]
    low, _high = borderline["interval"]
    assert low > borderline["nullRatio"] > 1, "the whole interval lies beyond the tolerated ratio"
    # and the slice that did not regress is judged on its own, without harm
    assert (large["slice"], large["verdict"]) == ("large", "Successful")
    assert large["eValue"] < large["threshold"]
    # and the failed measurement carries the same look's figures
    failed = measurements_of(status, "slices")[-1]
    assert failed["verdict"] == "Failed"
    assert failed["evidence"]["look"] == latest["look"] and failed["evidence"]["worstSlice"] == "borderline"
    assert evidence_of(status, "errors")["latest"]["verdict"] == "Successful"


def test_counters_that_reset_mid_step_do_not_decide_and_the_evidence_keeps_growing(
    world: World, prometheus: LocalPrometheus, player: MetricsPlayer, analysis_controller: RunningController
) -> None:
    # Given v1 and v2 alike under noisy traffic, in an analyze step of 16 s at 50 %
    play(player, prometheus, baseline=TWIN, candidate=TWIN)
    world.apply(
        analysed_rollout(
            player.model,
            steps=[{"setWeight": 50}, {"analyze": {"duration": "16s"}}, {"setWeight": 100}],
            metrics=[ERRORS, P99, ACCURACY],
        )
    )
    wait_for(lambda: len(measurements_of(world.status(), "errors")) >= 2, what="two looks", timeout=30)

    # When the candidate's model server restarts (its counters start again from 0), and a few
    # seconds later the baseline's
    player.restart("v2")
    wait_for(lambda: len(measurements_of(world.status(), "errors")) >= 4, what="two more looks", timeout=10)
    player.restart("v1")

    # Then Prometheus saw each version's counters drop
    for version in ("v1", "v2"):
        selector = f'model="{player.model}",version="{version}"'
        prometheus.wait_for_value(f"sum(resets(model_requests_total{{{selector}}}[1m]))", at_least=1, timeout=10)
    # and the rollout is promoted at the end of the step: a reset is no evidence either way
    status = world.wait_for_phase("Promoted", timeout=40)
    assert analysis_failures(world) == []
    for metric in ("errors", "p99", "accuracy"):
        looks = measurements_of(status, metric)
        assert len(looks) >= 6 and {m["verdict"] for m in looks} == {"Successful"}, looks
        # and at every look the counts since the step began are whole traffic, never negative, and
        # they grow from look to look across both restarts (increase() counts past a reset)
        for role in ("candidate", "baseline"):
            samples = [m["evidence"][role]["samples"] for m in looks]
            events = [m["evidence"][role]["events"] for m in looks]
            assert all(0 <= e <= s for e, s in zip(events, samples, strict=True)), (role, samples, events)
            assert samples == sorted(samples), f"{metric} {role} samples fell at a look: {samples}"
        segment = evidence_of(status, metric)["segments"][-1]
        latest = evidence_of(status, metric)["latest"]
        # (what the servers counted between their last scrape and the restart is lost: a second at most)
        played = REQUESTS_PER_SECOND * (segment["seconds"] - 2)
        assert latest["candidate"]["samples"] >= 0.7 * played and latest["baseline"]["samples"] >= 0.7 * played
    assert all(value >= 0 for value in segment["candidate"].values()) and all(
        value >= 0 for value in segment["baseline"].values()
    )
