"""`AnalysisChecker.validate`: every mistake analysis could find once traffic is shared, found
before the first weight moves, naming the field; nothing is measured."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import pytest

from controller.analysis.checker import AnalysisChecker
from controller.analysis.spec import MetricSource
from controller.api import ModelRolloutStatus, SpecError, parse_spec
from controller.checks import CheckContext
from controller.errors import ReferenceProblem

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
ERRORS = {
    "name": "errors",
    "provider": {"prometheus": {"query": "err{{version}}"}},
    "comparison": {"maxDifference": 0.01},
}
LATENCY_TEMPLATE = {
    "metrics": [{"name": "p99", "provider": {"prometheus": {"query": "p99{{version}}"}}, "comparison": {"maxRatio": 2}}]
}
STEPS = [{"setWeight": 20}, {"analyze": {"duration": "1m"}}, {"setWeight": 50}]


class NeverAsked:
    """A provider that fails the test when validation measures anything."""

    def measure(self, *, source: MetricSource, namespace: str) -> float | None:
        raise AssertionError(f"validation measured {source}")


def validator(templates: Mapping[str, Any]) -> AnalysisChecker:
    def lookup(*, namespace: str, name: str) -> Mapping[str, Any] | None:
        return templates.get(name)

    return AnalysisChecker(providers={"prometheus": NeverAsked(), "web": NeverAsked()}, template_lookup=lookup)


def pending(analysis: Mapping[str, Any], *, steps: list[Any] = STEPS, **spec: Any) -> CheckContext:
    """A Pending rollout of v2 against v1 with this analysis section."""
    return CheckContext(
        namespace="ml",
        name="iris",
        spec=parse_spec(
            {
                "model": "iris",
                "versions": [{"version": v, "backend": {"service": f"iris-{v}", "port": 8080}} for v in ("v1", "v2")],
                "baseline": "v1",
                "candidate": "v2",
                "trafficRouting": {"gatewayAPI": {"httpRoute": "iris"}},
                "steps": steps,
                "analysis": dict(analysis),
                **spec,
            }
        ),
        status=ModelRolloutStatus(),
        stable_version="v1",
        now=T0,
        current_weight=0,
    )


def with_metric(**changes: Any) -> dict[str, Any]:
    return {"metrics": [{**ERRORS, **changes}]}


SPEC_MISTAKES = {
    "a comparison with no bounds": (with_metric(comparison={}), "spec.analysis.metrics[0].comparison"),
    "a negative maxRatio": (with_metric(comparison={"maxRatio": -1}), "spec.analysis.metrics[0].comparison.maxRatio"),
    "an interval of 0s": ({**with_metric(), "interval": "0s"}, "spec.analysis.interval"),
    "an unknown template variable": (
        with_metric(provider={"prometheus": {"query": "err{{verison}}"}}),
        "spec.analysis.metrics[0].provider.prometheus.query",
    ),
    "a JSONPath without $": (
        with_metric(provider={"web": {"url": "http://m/{{version}}", "jsonPath": "data.value"}}),
        "spec.analysis.metrics[0].provider.web.jsonPath",
    ),
    "a metric named again by a template": (
        {"metrics": [{**ERRORS, "name": "p99"}], "templates": [{"name": "latency"}]},
        "spec.analysis (metrics and templates together)",
    ),
    "a mistake inside a template": ({"templates": [{"name": "broken"}]}, "AnalysisTemplate broken: spec.metrics[0]"),
    "a maxDuration shorter than the analyze step": (
        {**with_metric(), "promoteWhen": "evidenceOfSafety", "maxDuration": "30s"},
        "spec.analysis.maxDuration",
    ),
    "startingStep beyond the last step": ({**with_metric(), "startingStep": 3}, "spec.analysis.startingStep"),
}


@pytest.mark.parametrize(("analysis", "field"), SPEC_MISTAKES.values(), ids=SPEC_MISTAKES.keys())
def test_a_mistake_in_the_analysis_spec_is_found_before_any_traffic(analysis: dict[str, Any], field: str) -> None:
    # given a Pending rollout whose analysis holds the mistake
    context = pending(analysis)
    templates = {"latency": LATENCY_TEMPLATE, "broken": {"metrics": [{**ERRORS, "comparison": {}}]}}

    # when it is validated, then the error names the field
    with pytest.raises(SpecError) as raised:
        validator(templates).validate(context=context)
    assert raised.value.field_path.startswith(field)


def test_background_analysis_with_nothing_to_measure_is_found_before_any_traffic() -> None:
    # given background analysis from step 0 and neither metrics nor templates (no analyze step)
    context = pending({"startingStep": 0}, steps=[{"setWeight": 20}, {"pause": {"duration": "1m"}}])

    # when it is validated, then spec.analysis is named
    with pytest.raises(SpecError, match="startingStep is set but there are no metrics") as raised:
        validator({}).validate(context=context)
    assert raised.value.field_path == "spec.analysis"


def test_a_max_duration_the_progress_deadline_would_cut_short_names_both_fields() -> None:
    # given evidenceOfSafety letting the analyze step run 9 minutes past its minute, with a 5-minute deadline
    context = pending(
        {**with_metric(), "promoteWhen": "evidenceOfSafety", "maxDuration": "10m"}, progressDeadlineSeconds=300
    )

    # when it is validated, then maxDuration is refused before the analyze step is ever reached
    with pytest.raises(SpecError, match="progressDeadlineSeconds") as raised:
        validator({}).validate(context=context)
    assert raised.value.field_path == "spec.analysis.maxDuration"


@pytest.mark.parametrize(
    ("analysis", "steps", "field"),
    [
        ({"templates": [{"name": "nope"}]}, STEPS, "spec.analysis.templates"),
        (
            with_metric(),
            [{"setWeight": 20}, {"analyze": {"duration": "1m", "templates": [{"name": "nope"}]}}],
            "spec.steps[1].analyze.templates",
        ),
    ],
    ids=["in spec.analysis.templates", "in an analyze step's templates"],
)
def test_a_missing_template_is_a_reference_problem_naming_where_it_is_named(
    analysis: dict[str, Any], steps: list[Any], field: str
) -> None:
    # given a rollout naming an AnalysisTemplate that does not exist
    context = pending(analysis, steps=steps)

    # when it is validated, then the problem names the field and the way out
    with pytest.raises(ReferenceProblem) as raised:
        validator({}).validate(context=context)
    assert str(raised.value) == (
        f"{field}: AnalysisTemplate 'nope' does not exist in namespace ml; create it or fix the name"
    )


def test_a_valid_analysis_passes_without_measuring() -> None:
    # given background analysis from the last step and an analyze step with its own template
    steps = [{"setWeight": 20}, {"analyze": {"duration": "1m", "templates": [{"name": "latency"}]}}]
    context = pending({**with_metric(), "startingStep": 1}, steps=steps)

    # when it is validated, then nothing is raised and nothing measured (NeverAsked would fail)
    validator({"latency": LATENCY_TEMPLATE}).validate(context=context)
