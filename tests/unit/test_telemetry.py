"""The per-rollout series on /metrics: the same exposition as prometheus_client gauges, held as plain
values, and dropped when the rollout is deleted."""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest

from controller import telemetry
from controller.analysis.telemetry import MEASUREMENT_VALUE
from controller.api import ModelRolloutStatus, Phase
from controller.telemetry import RolloutGauge


def sample(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def test_a_rollout_shows_one_for_its_phase_and_zero_for_the_others() -> None:
    # given a rollout progressing at 30 %
    status = ModelRolloutStatus(phase=Phase.PROGRESSING, current_weight=30)

    # when its pass records it
    telemetry.record_rollout(namespace="ns", name="iris", status=status)

    # then every phase has a series, 1 for its own
    phases = {p.value: sample("model_rollouts_phase", namespace="ns", rollout="iris", phase=p.value) for p in Phase}
    assert phases == {phase.value: 1.0 if phase == Phase.PROGRESSING else 0.0 for phase in Phase}
    assert sample("model_rollouts_candidate_weight_percent", namespace="ns", rollout="iris") == 30


def test_a_later_pass_replaces_the_phase() -> None:
    telemetry.record_rollout(namespace="ns", name="fraud", status=ModelRolloutStatus(phase=Phase.PROGRESSING))

    telemetry.record_rollout(namespace="ns", name="fraud", status=ModelRolloutStatus(phase=Phase.PROMOTED))

    assert sample("model_rollouts_phase", namespace="ns", rollout="fraud", phase="Promoted") == 1.0
    assert sample("model_rollouts_phase", namespace="ns", rollout="fraud", phase="Progressing") == 0.0


def test_a_deleted_rollout_leaves_no_series_behind() -> None:
    # given a rollout with a phase, a weight and measured values
    telemetry.record_rollout(namespace="ns", name="gone", status=ModelRolloutStatus(phase=Phase.PROGRESSING))
    MEASUREMENT_VALUE.set(0.01, namespace="ns", rollout="gone", labels=("errors", "v2"))
    telemetry.record_rollout(namespace="ns", name="kept", status=ModelRolloutStatus(phase=Phase.PROGRESSING))

    # when it is forgotten
    telemetry.forget_rollout(namespace="ns", name="gone")

    # then none of its series is exposed, and another rollout's still are
    exposed = generate_latest(REGISTRY).decode()
    assert 'rollout="gone"' not in exposed
    assert 'model_rollouts_phase{namespace="ns",phase="Progressing",rollout="kept"} 1.0' in exposed


def test_the_exposition_is_that_of_a_labelled_gauge() -> None:
    # given a gauge outside the default registry, with one series
    registry = CollectorRegistry()
    gauge = RolloutGauge("example_value", "An example.", ["metric"], registry=registry)
    gauge.set(2.5, namespace="ns", rollout="iris", labels=("errors",))

    # when scraped
    exposed = generate_latest(registry).decode()

    # then it reads as a gauge with the rollout's labels
    assert "# TYPE example_value gauge" in exposed
    assert 'example_value{metric="errors",namespace="ns",rollout="iris"} 2.5' in exposed
