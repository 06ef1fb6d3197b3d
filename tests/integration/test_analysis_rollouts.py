"""Metric analysis end to end: the real controller process decides from a real Prometheus.

A loopback exporter plays the baseline (v1) and the candidate (v2) of a model with steady traffic
(requests, errors, latency, labelled feedback), Prometheus scrapes it every second, and the
controller, started with `--prometheus-address`, measures both versions every 2 s and moves a real
HTTPRoute on a real API server. Each test plays its own model name, so no test sees another's
series.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from localenv.controller import RunningController
from localenv.controlplane import ControlPlane
from localenv.prometheus import Behaviour, LocalPrometheus, MetricsPlayer, ModelMetricsExporter
from tests.integration.rollout_world import (
    JSON,
    WeightRecorder,
    World,
    controller_reading,
    rollout_manifest,
    wait_for,
)
from tests.integration.test_crd_validation import CRD, INVALID_MANIFESTS, expected_messages, fixed_cel_messages

pytestmark = pytest.mark.integration

INTERVAL = "2s"
WINDOW = "10s"
"""Ten scrapes: rate() always has enough samples, and a regression shows within a scrape or two."""

ERRORS: JSON = {"name": "errors", "preset": "error-rate", "window": WINDOW}
P99: JSON = {"name": "p99", "preset": "latency-p99", "window": WINDOW}
ACCURACY: JSON = {"name": "accuracy", "preset": "feedback-accuracy", "window": WINDOW}


@pytest.fixture
def player(exporter: ModelMetricsExporter, namespace: str) -> Iterator[MetricsPlayer]:
    """Plays v1 and v2 of a model named after the test's namespace, once the test starts it."""
    playing = MetricsPlayer(exporter, model=f"iris-{namespace}")
    yield playing
    playing.stop()


def analysed_rollout(model: str, *, steps: list[JSON], metrics: list[JSON], **analysis: Any) -> JSON:
    """Rollout `iris` of v2 against v1, reading the metrics of `model` every INTERVAL."""
    return rollout_manifest(model=model, steps=steps, analysis={"interval": INTERVAL, "metrics": metrics, **analysis})


def measurements_of(status: Mapping[str, Any], metric: str) -> list[JSON]:
    return [m for m in (status.get("analysis") or {}).get("measurements", []) if m["metric"] == metric]


def condition(status: Mapping[str, Any], type: str) -> JSON:
    """The condition of this type; empty when there is none yet."""
    return next((c for c in status.get("conditions", []) if c["type"] == type), {})


def assert_held(world: World, recorder: WeightRecorder, *, seconds: float, weight: int) -> None:
    """For `seconds`, the rollout stays Progressing and the route never leaves `weight` on v2."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        status = world.status()
        assert status.get("phase") == "Progressing", status
        assert recorder.candidate_weights()[-1] == weight
        time.sleep(0.5)
    assert recorder.candidate_weights() == [0, weight]


# ---------------------------------------------------------------------------------------------
# An analyze step decides


def test_a_candidate_as_good_as_the_baseline_is_promoted_after_its_analyze_step(
    world: World, prometheus: LocalPrometheus, player: MetricsPlayer, analysis_controller: RunningController
) -> None:
    # Given v1 and v2 equally good in Prometheus, and a team's AnalysisTemplate with latency and accuracy
    player.start()
    player.wait_until_seen(prometheus, window=WINDOW)
    world.apply(
        {
            "apiVersion": "rollouts.mlops.dev/v1alpha1",
            "kind": "AnalysisTemplate",
            "metadata": {"name": "model-quality"},
            "spec": {"metrics": [P99, ACCURACY]},
        }
    )
    recorder = WeightRecorder(world)

    # When a rollout sends v2 half the traffic and analyses it for 6 s (errors from the rollout,
    # latency and accuracy from the template named by the step)
    world.apply(
        analysed_rollout(
            player.model,
            steps=[{"setWeight": 50}, {"analyze": {"duration": "6s", "templates": [{"name": "model-quality"}]}}],
            metrics=[ERRORS],
        )
    )
    half_at = wait_for(lambda: recorder.latest().get("v2") == 50 and time.monotonic(), what="50 % on v2")
    status = world.wait_for_phase("Promoted", timeout=40)
    held_for = time.monotonic() - half_at

    # Then v2 is promoted with nobody touching it, only once the step's window was over
    assert recorder.candidate_weights() == [0, 50, 100]
    assert held_for >= 5, "the analyze step lasts 6 s (its start is stored to the second)"
    assert status["analysis"]["verdict"] == "Successful"
    assert condition(status, "AnalysisHealthy")["status"] == "True"
    # every metric was measured for both versions, more than once, and passed each time
    for metric, name in ((ERRORS, "errors"), (P99, "p99"), (ACCURACY, "accuracy")):
        measured = measurements_of(status, name)
        assert len(measured) >= 2, (metric, measured)
        assert {m["verdict"] for m in measured} == {"Successful"}
        assert {m["run"] for m in measured} == {"step-1"}
        last = measured[-1]
        assert (last["baselineVersion"], last["candidateVersion"]) == ("v1", "v2")
        assert last["baselineSamples"] >= 50 and last["candidateSamples"] >= 50
    assert measurements_of(status, "errors")[-1]["candidateValue"] == 0
    assert measurements_of(status, "accuracy")[-1]["candidateValue"] == pytest.approx(0.95)
    # and the values measured are on the controller's /metrics
    exported = {
        (sample.labels["metric"], sample.labels["version"]): sample.value
        for family in text_string_to_metric_families(analysis_controller.metrics())
        if family.name == "model_rollouts_measurement_value"
        for sample in family.samples
        if sample.labels["namespace"] == world.namespace and sample.labels["rollout"] == "iris"
    }
    assert exported[("accuracy", "v2")] == pytest.approx(0.95)
    assert exported[("errors", "v1")] == 0


REGRESSIONS = [
    pytest.param(
        Behaviour(error_rate=0.2),
        "errors",
        ["candidate v2 20% of ", "vs baseline v1 0% of ", "rate ratio inf", "beyond tolerance 0%"],
        id="error-rate",
    ),
    pytest.param(
        Behaviour(latency_seconds=0.4),
        "p99",
        # Every v1 request takes 20 ms: its p99 bucket ends at 25 ms, and every v2 request is slower.
        [
            "candidate v2 100% of ",
            "vs baseline v1 0% of ",
            "share slower than 0.025s (the baseline's p99) ratio inf",
            "beyond tolerance 20%",
        ],
        id="latency",
    ),
    pytest.param(
        Behaviour(accuracy=0.75),
        "accuracy",
        ["candidate v2 75% of ", "vs baseline v1 95% of ", "miss rate ratio 5 ", "beyond tolerance 0.02"],
        id="feedback-accuracy",
    ),
]


@pytest.mark.parametrize(("candidate", "failing", "why"), REGRESSIONS)
def test_a_candidate_worse_than_the_baseline_is_rolled_back_naming_the_metric_and_both_values(
    world: World,
    prometheus: LocalPrometheus,
    player: MetricsPlayer,
    analysis_controller: RunningController,
    candidate: Behaviour,
    failing: str,
    why: list[str],
) -> None:
    # Given v2 worse than v1 in one respect, and as good in the others
    player.start(candidate=candidate)
    player.wait_until_seen(prometheus, window=WINDOW)
    recorder = WeightRecorder(world)

    # When a rollout analyses all three presets in a long analyze step at 50 %
    world.apply(
        analysed_rollout(
            player.model,
            steps=[{"setWeight": 50}, {"analyze": {"duration": "5m"}}, {"setWeight": 100}],
            metrics=[ERRORS, P99, ACCURACY],
        )
    )
    status = world.wait_for_phase("RolledBack", timeout=40)

    # Then all traffic went back to v1 at the first measurement, long before the step's end
    assert recorder.candidate_weights() == [0, 50, 0]
    assert (world.route_weights()["v1"], world.route_weights()["v2"]) == (100, 0)
    assert status["currentWeight"] == 0 and status["stableVersion"] == "v1"
    # and the status says which metric failed at which look, with both values, samples and the evidence
    message = status["message"]
    assert message.startswith(f"{failing} failed 1 time(s), more than failureLimit 0: look 1: ")
    assert all(part in message for part in why), message
    assert re.search(r"evidence [0-9.e+]+ >= 60", message), "a third of the 5 % budget: 1 / (0.05 / 3)"
    assert [m for m in ("errors", "p99", "accuracy") if f"{m} failed" in message] == [failing]
    assert condition(status, "AnalysisHealthy")["status"] == "False"
    assert measurements_of(status, failing)[-1]["verdict"] == "Failed"
    # and status.analysis.evidence keeps the failed look: samples per version, the ratio's interval
    # wholly beyond the tolerated ratio, the evidence past its threshold
    evidence = next(e for e in status["analysis"]["evidence"] if e["metric"] == failing)
    latest = evidence["latest"]
    assert (latest["look"], latest["verdict"], latest["threshold"]) == (1, "Failed", 60), latest
    assert latest["eValue"] >= latest["threshold"] and latest["interval"][0] > latest["nullRatio"]
    assert latest["candidate"]["samples"] >= 50 and latest["baseline"]["samples"] >= 50
    assert [segment["step"] for segment in evidence["segments"]] == [1]
    assert measurements_of(status, failing)[-1]["evidence"]["eValue"] == latest["eValue"]
    # and a Warning Event tells the same
    warnings = [e for e in world.events() if e["type"] == "Warning" and e["reason"] == "AnalysisFailed"]
    assert len(warnings) == 1
    assert failing in warnings[0]["message"] and all(part in warnings[0]["message"] for part in why)
    assert warnings[0]["message"].endswith("all traffic returned to v1")


# ---------------------------------------------------------------------------------------------
# What cannot be measured holds, and never moves traffic


def test_prometheus_stopped_mid_analysis_holds_the_weight_then_the_rollout_resumes_to_promotion(
    world: World,
    exporter: ModelMetricsExporter,
    player: MetricsPlayer,
    control_plane: ControlPlane,
    tmp_path: Path,
) -> None:
    # Given a Prometheus of this test's own, a controller reading it, and two equally good versions
    with (
        LocalPrometheus(scrape_targets=[exporter.target]) as own_prometheus,
        controller_reading(
            own_prometheus, control_plane=control_plane, namespace=world.namespace, log_file=tmp_path / "c.log"
        ),
    ):
        player.start()
        player.wait_until_seen(own_prometheus, window=WINDOW)
        recorder = WeightRecorder(world)
        world.apply(analysed_rollout(player.model, steps=[{"setWeight": 50}, {"analyze": {"duration": "6s"}}],
                                     metrics=[ERRORS]))  # fmt: skip
        wait_for(lambda: measurements_of(world.status(), "errors") or None, what="a first measurement", timeout=20)

        # When Prometheus goes away for longer than the step and consecutiveErrorLimit (4) allow
        own_prometheus.stop()

        # Then the rollout holds at 50 %: no promotion, no rollback, no traffic change
        assert_held(world, recorder, seconds=14, weight=50)
        status = world.status()
        errors = measurements_of(status, "errors")
        assert errors[-1]["verdict"] == "Error" and errors[-1]["candidateValue"] is None
        assert "did not answer" in errors[-1]["reason"]
        tally = next(m for m in status["analysis"]["runs"][-1]["metrics"] if m["metric"] == "errors")
        assert tally["consecutiveErrors"] > 4
        assert status["message"].startswith("holding at step 1, inconclusive: errors: candidate v2: Prometheus at")
        assert condition(status, "AnalysisHealthy")["reason"] == "Inconclusive"

        # When Prometheus is back
        own_prometheus.start()

        # Then the next good measurement lets the step pass and v2 is promoted
        status = world.wait_for_phase("Promoted", timeout=40)
        assert recorder.candidate_weights() == [0, 50, 100]
        verdicts = [m["verdict"] for m in measurements_of(status, "errors")]
        assert verdicts[0] == "Successful" and "Error" in verdicts and verdicts[-1] == "Successful"
        assert not any(e["type"] == "Warning" and e["reason"] == "AnalysisFailed" for e in world.events())


def test_a_promql_syntax_error_names_the_error_in_a_condition_and_moves_no_traffic(
    world: World, prometheus: LocalPrometheus, player: MetricsPlayer, analysis_controller: RunningController
) -> None:
    # Given a metric whose query misses a closing parenthesis
    broken = "sum(rate(model_requests_total[1m])"
    player.start()
    player.wait_until_seen(prometheus, window=WINDOW)
    recorder = WeightRecorder(world)

    # When a rollout at 20 % analyses it in a 2 s analyze step before going to 60 %
    world.apply(
        analysed_rollout(
            player.model,
            steps=[{"setWeight": 20}, {"analyze": {"duration": "2s"}}, {"setWeight": 60}],
            metrics=[{"name": "broken", "provider": {"prometheus": {"query": broken}}, "comparison": {"max": 1}}],
        )
    )

    # Then the AnalysisHealthy condition quotes Prometheus' error and the query, and says to fix it
    unhealthy = wait_for(
        lambda: (c := condition(world.status(), "AnalysisHealthy")).get("status") == "False" and c,
        what="AnalysisHealthy False",
        timeout=20,
    )
    assert unhealthy["reason"] == "Inconclusive"
    assert "parse error: unclosed left parenthesis" in unhealthy["message"]
    assert broken in unhealthy["message"]
    assert "a configuration error, fix it" in unhealthy["message"]
    # and the rollout holds at 20 % well past the step's end, neither going on nor rolling back
    assert_held(world, recorder, seconds=6, weight=20)
    assert world.status()["currentStepIndex"] == 1


# ---------------------------------------------------------------------------------------------
# Background analysis


def test_background_analysis_lets_steps_pass_and_rolls_back_when_the_candidate_turns_bad(
    world: World, prometheus: LocalPrometheus, player: MetricsPlayer, analysis_controller: RunningController
) -> None:
    # Given two equally good versions and a rollout analysing errors in the background from step 1
    player.start()
    player.wait_until_seen(prometheus, window=WINDOW)
    recorder = WeightRecorder(world)
    world.apply(
        analysed_rollout(
            player.model,
            steps=[{"setWeight": 20}, {"pause": {"duration": "3s"}}, {"setWeight": 50}, {"pause": {"duration": "5m"}},
                   {"setWeight": 100}],
            metrics=[ERRORS],
            startingStep=1,
        )
    )  # fmt: skip

    # When the background measurements pass, the timed steps go on without waiting for them
    wait_for(lambda: world.status().get("currentStepIndex") == 3, what="step 3", timeout=30)
    wait_for(
        lambda: len(measurements_of(world.status(), "errors")) >= 2, what="two background measurements", timeout=20
    )
    assert {m["verdict"] for m in measurements_of(world.status(), "errors")} == {"Successful"}
    assert recorder.candidate_weights() == [0, 20, 50]

    # When v2 starts failing a fifth of its requests in the middle of the 5-minute pause
    player.play("v2", Behaviour(error_rate=0.2))

    # Then the background analysis rolls it back, naming the metric and both values
    status = world.wait_for_phase("RolledBack", timeout=40)
    assert recorder.candidate_weights() == [0, 20, 50, 0]
    failed = measurements_of(status, "errors")[-1]
    assert failed["run"] == "background" and failed["verdict"] == "Failed"
    assert failed["baselineValue"] == 0 and 0.01 < failed["candidateValue"] <= 0.2
    assert status["message"].startswith("errors failed 1 time(s), more than failureLimit 0: look ")
    assert ": candidate v2 " in status["message"]
    assert status["currentWeight"] == 0


# ---------------------------------------------------------------------------------------------
# The schema of spec.analysis


def test_every_cel_rule_of_spec_analysis_has_a_refused_manifest() -> None:
    # given the CEL rules under spec.analysis (test_crd_validation leaves them to this suite) and
    # the answers the refused manifests in invalid/ expect (that suite applies each of them)
    crd = yaml.safe_load(CRD.read_text())
    analysis = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["analysis"]
    rules = fixed_cel_messages(analysis)
    expected = [message for path in INVALID_MANIFESTS for message in expected_messages(path)]

    # when each rule's message is looked for among those answers
    untested = [rule for rule in rules if not any(part in rule for part in expected)]

    # then every rule is exercised by some manifest
    assert rules, "spec.analysis has CEL rules (interval, window, provider or preset, ...)"
    assert untested == []
