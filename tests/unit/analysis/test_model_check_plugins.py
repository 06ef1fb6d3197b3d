"""A model check plug-in is one object registered in one place: the analysis parses the metric's
block with it, asks it what it judges against in the cluster, reads its counts and keeps the
verdict of its judge in status and the rubric. Shown with a fake check that holds the candidate's
error count under a ceiling kept in a ConfigMap."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest

from controller.analysis import fields
from controller.analysis.checker import AnalysisChecker
from controller.analysis.evaluate import Judgement, Reading, Result
from controller.analysis.evidence import CountQuery, Evidence
from controller.analysis.judges import Budget, Look, ReferenceLoader, Versions
from controller.analysis.modelchecks import MODEL_CHECKS, ModelCheckPlugin, registry
from controller.analysis.plugins import AnalysisPlugins
from controller.analysis.providers import MetricSource, PrometheusSource
from controller.analysis.rows import Row, Tone, with_rows
from controller.api import SpecError
from controller.checks import ReadConfigMap, RubricEntry, Verdict
from controller.cli.render import Style, render_get
from controller.errors import ReferenceProblem
from tests.unit.analysis.test_missing_references import analyzing
from tests.unit.analysis.test_validate import pending
from tests.unit.cli.test_render import NOW, rollout, section_rows


@dataclass(frozen=True, kw_only=True)
class ErrorCeiling:
    """The candidate's errors since the step began must stay under the ceiling in ConfigMap `config_map`."""

    key: ClassVar[str] = "errorCeiling"
    rubric_items: ClassVar[tuple[str, ...]] = ("Monitor 2",)
    address_field: ClassVar[str] = "errorCeiling.address"
    compares_baseline: ClassVar[bool] = False
    tests: ClassVar[int] = 1
    config_map: str
    address: str | None = None

    @property
    def queries(self) -> tuple[CountQuery, ...]:
        return (CountQuery(name="errors", query='errors{version="{{version}}"}'),)

    def read_reference(
        self, *, namespace: str, metric_field: str, read_configmap: ReadConfigMap | None
    ) -> ReferenceLoader | None:
        data = read_configmap(namespace, self.config_map) if read_configmap else None
        if data is None:
            raise ReferenceProblem(f"{metric_field}.{self.key}.configMap: ConfigMap {self.config_map} is missing")
        return lambda: float(data["ceiling"])

    def judge(self, evidence: Evidence, *, budget: Budget, versions: Versions) -> Look:
        assert isinstance(evidence.reference, float)
        errors = sum(segment.candidate.get("errors", 0.0) for segment in evidence.segments)
        result = Result.FAILED if errors > evidence.reference else Result.SUCCESSFUL
        tones: dict[str, Tone] = {"estimate": "bad"} if result is Result.FAILED else {}
        return Look(
            judgement=Judgement(result=result, reason=f"{errors:g} errors, ceiling {evidence.reference:g}"),
            baseline=Reading(version=versions.baseline),
            candidate=Reading(version=versions.candidate, value=errors),
            summary=with_rows(
                {"test": "error-ceiling", "errors": errors},
                columns=Row(candidate=f"{errors:g} errors", tolerance=f"≤ {evidence.reference:g}"),
                rows=[Row(label="headroom", estimate=f"{evidence.reference - errors:g}", tones=tones)],
            ),
        )


def parse_ceiling(raw: Mapping[str, Any], path: str) -> ErrorCeiling:
    return ErrorCeiling(config_map=fields.text(raw, "configMap", path), address=fields.prometheus_address(raw, path))


FAKE = ModelCheckPlugin(key=ErrorCeiling.key, parse_config=parse_ceiling)
PLUGINS = AnalysisPlugins(checks=registry((*MODEL_CHECKS.values(), FAKE)))
METRIC = {"name": "ceiling", "errorCeiling": {"configMap": "limits"}}


class Errors:
    """Prometheus answering the error count of each version's rendered query."""

    def __init__(self, counts: Mapping[str, float]) -> None:
        self.counts = counts

    def measure(self, *, source: MetricSource, namespace: str) -> float | None:
        assert isinstance(source, PrometheusSource)
        return self.counts.get(source.query)


def checker(*, configmaps: Mapping[str, Mapping[str, str]], plugins: AnalysisPlugins = PLUGINS) -> AnalysisChecker:
    return AnalysisChecker(
        providers={"prometheus": Errors({'errors{version="v2"}': 7.0})},
        template_lookup=lambda *, namespace, name: None,
        read_configmap=lambda namespace, name: configmaps.get(name),
        plugins=plugins,
    )


@pytest.mark.parametrize(("ceiling", "verdict"), [("10", Verdict.SUCCESSFUL), ("5", Verdict.FAILED)])
def test_a_registered_check_is_read_judged_and_reported_like_the_shipped_ones(ceiling: str, verdict: Verdict) -> None:
    # given the fake check registered beside the real ones, a rollout with a metric configuring it,
    # and its ceiling in the cluster
    context = pending({"metrics": [METRIC]})
    analysis = checker(configmaps={"limits": {"ceiling": ceiling}})

    # when the rollout is validated while Pending, then looked at the end of its analyze step
    analysis.validate(context=context)
    outcome = analysis(context=analyzing(context, seconds=60))

    # then its judge decided on the counts it asked for and the ceiling it read, as status and the rubric show
    assert outcome is not None and outcome.verdict is verdict
    measurement = outcome.status_fields["analysis"]["measurements"][-1]
    assert measurement["reason"] == f"look 1: 7 errors, ceiling {ceiling}"
    assert measurement["candidateValue"] == 7.0 and measurement["evidence"]["errors"] == 7.0
    assert outcome.rubric == (RubricEntry(item="Monitor 2", check="ceiling", verdict=verdict),)


def test_kubectl_prints_the_row_and_detail_row_the_check_wrote_without_knowing_the_check() -> None:
    # given the status of a look of the fake check over its ceiling
    context = pending({"metrics": [METRIC]})
    analysis = checker(configmaps={"limits": {"ceiling": "5"}})
    outcome = analysis(context=analyzing(context, seconds=60))
    assert outcome is not None

    # when the rollout is shown, coloured and plain
    status = {"phase": "Progressing", **outcome.status_fields}
    plain = render_get(rollout(status=status), events=[], now=NOW, style=Style(color=False))
    coloured = render_get(rollout(status=status), events=[], now=NOW, style=Style(color=True))

    # then the Evidence section has the metric's row and its detail row, with the cells it wrote
    rows = section_rows(plain, "Evidence (latest look per metric")
    assert [(r["METRIC"], r["LOOK"], r["VERDICT"], r["CANDIDATE (v2)"], r["ESTIMATE [INTERVAL]"], r["TOLERANCE"])
            for r in rows] == [("ceiling", "1", "Failed", "7 errors", "", "≤ 5"),
                               ("headroom", "", "", "", "-2", "")]  # fmt: skip
    # and the estimate it called bad is painted bad
    assert re.search(r"\x1b\[31m-2 *\x1b\[0m", coloured)


def test_its_config_errors_are_spec_errors_and_its_missing_reference_holds_the_rollout() -> None:
    with pytest.raises(SpecError, match=r"spec\.analysis\.metrics\[0\]\.errorCeiling\.configMap: is required"):
        checker(configmaps={}).validate(context=pending({"metrics": [{"name": "c", "errorCeiling": {}}]}))

    with pytest.raises(ReferenceProblem, match=r"metrics\[0\]\.errorCeiling\.configMap: ConfigMap limits is missing"):
        checker(configmaps={}).validate(context=pending({"metrics": [METRIC]}))


def test_without_the_plugin_its_key_configures_nothing() -> None:
    with pytest.raises(
        SpecError,
        match=r"a check \(predictionDrift, importantSlices, offlineVsOnline, trainingSkew, pairedPredictions\)",
    ):
        checker(configmaps={}, plugins=AnalysisPlugins()).validate(context=pending({"metrics": [METRIC]}))


def test_a_key_registered_twice_is_refused() -> None:
    with pytest.raises(ValueError, match=r"two plug-ins under spec\.analysis\.metrics\[\]\.errorCeiling"):
        registry((FAKE, FAKE))
