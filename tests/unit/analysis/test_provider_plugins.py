"""A metric provider plug-in is one object registered in one place: the analysis parses its
`provider.<key>` block with it, checks the objects its source reads, and measures through the
provider it builds. Shown with a fake plug-in whose provider answers a number per version."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import pytest

from controller.analysis import fields
from controller.analysis.checker import AnalysisChecker
from controller.analysis.plugins import AnalysisPlugins
from controller.analysis.providers import (
    PROVIDERS,
    MetricSource,
    ObjectReference,
    OutboundUrl,
    ProviderPlugin,
    ProviderSettings,
    build_providers,
    registry,
)
from controller.api import SpecError
from controller.errors import ReferenceProblem
from tests.unit.analysis.test_missing_references import analyzing
from tests.unit.analysis.test_validate import pending


@dataclass(frozen=True, kw_only=True)
class TableSource:
    """Reads `table` (a ConfigMap) for the number of the version `row` renders to."""

    provider: ClassVar[str] = "table"
    table: str
    row: str

    def rendered(self, variables: Mapping[str, str], *, at: float | None = None) -> TableSource:
        return replace(self, row=fields.render_template(self.row, variables))

    @property
    def lane_address(self) -> str:
        return self.table

    @property
    def samples_address(self) -> str | None:
        return None

    def outbound_urls(self, *, variables_by_version: Mapping[str, Mapping[str, str]]) -> tuple[OutboundUrl, ...]:
        return ()

    def references(self) -> tuple[ObjectReference, ...]:
        return (ObjectReference(kind="ConfigMap", name=self.table, field="provider.table.configMap"),)


def parse_table(raw: Mapping[str, Any], path: str) -> TableSource:
    return TableSource(
        table=fields.text(raw, "configMap", path),
        row=fields.check_template(fields.text(raw, "row", path), f"{path}.row"),
    )


class TableProvider:
    """The numbers of each row; records the typed sources it was asked for."""

    def __init__(self, rows: Mapping[str, float]) -> None:
        self.rows = rows
        self.asked: list[TableSource] = []

    def measure(self, *, source: MetricSource, namespace: str) -> float | None:
        assert isinstance(source, TableSource)
        self.asked.append(source)
        return self.rows.get(source.row)


PROVIDER = TableProvider({"scores-v1": 0.9, "scores-v2": 0.5})
FAKE = ProviderPlugin(key="table", parse_source=parse_table, build=lambda settings: PROVIDER)
PLUGINS = AnalysisPlugins(providers=registry((*PROVIDERS.values(), FAKE)))
METRIC = {
    "name": "score",
    "provider": {"table": {"configMap": "scores", "row": "scores-{{version}}"}},
    "comparison": {"min": 0.8},
}


def checker(*, configmaps: Mapping[str, Mapping[str, str]], plugins: AnalysisPlugins = PLUGINS) -> AnalysisChecker:
    def no_template(*, namespace: str, name: str) -> Mapping[str, Any] | None:
        return None

    return AnalysisChecker(
        providers=build_providers(ProviderSettings(prometheus_address="http://127.0.0.1:1"), plugins=plugins.providers),
        template_lookup=no_template,
        read_configmap=lambda namespace, name: configmaps.get(name),
        plugins=plugins,
    )


def test_a_registered_provider_measures_the_metrics_that_name_it_with_its_typed_source() -> None:
    # given the fake plug-in registered beside the real ones, and a rollout with a metric naming it
    context = pending({"metrics": [METRIC]})
    analysis = checker(configmaps={"scores": {}})

    # when the rollout is validated while Pending, then measured at the end of its analyze step
    analysis.validate(context=context)
    outcome = analysis(context=analyzing(context, seconds=60))

    # then its provider read both versions from the source it parsed, and the candidate failed its bound
    assert outcome is not None
    assert {(s.table, s.row) for s in PROVIDER.asked[-2:]} == {("scores", "scores-v1"), ("scores", "scores-v2")}
    measurement = outcome.status_fields["analysis"]["measurements"][-1]
    assert (measurement["baselineValue"], measurement["candidateValue"], measurement["verdict"]) == (
        0.9,
        0.5,
        "Failed",
    )


def test_its_config_errors_are_spec_errors_naming_the_field_and_its_missing_objects_hold_the_rollout() -> None:
    broken = pending({"metrics": [{**METRIC, "provider": {"table": {"configMap": "scores", "row": "{{vresion}}"}}}]})
    with pytest.raises(SpecError, match=r"spec\.analysis\.metrics\[0\]\.provider\.table\.row: unknown template"):
        checker(configmaps={"scores": {}}).validate(context=broken)

    with pytest.raises(ReferenceProblem) as missing:
        checker(configmaps={}).validate(context=pending({"metrics": [METRIC]}))
    assert str(missing.value) == (
        "spec.analysis.metrics[0].provider.table.configMap: ConfigMap ml/scores does not exist; "
        "create it or fix the name"
    )


def test_without_the_plugin_its_key_is_no_provider() -> None:
    with pytest.raises(SpecError, match="name exactly one provider: prometheus or web"):
        checker(configmaps={"scores": {}}, plugins=AnalysisPlugins()).validate(context=pending({"metrics": [METRIC]}))


def test_a_key_registered_twice_is_refused() -> None:
    with pytest.raises(ValueError, match=r"two plug-ins under provider\.table"):
        registry((FAKE, FAKE))
