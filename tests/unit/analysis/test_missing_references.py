"""Every object the analysis checker reads (an AnalysisTemplate, a training profile's ConfigMap, a
web metric's `headersFrom` Secret) that does not exist is a `ReferenceProblem` naming the field:
found while Pending by `validate`, before the first weight moves, and again whenever a look reads
it, so the rollout holds (ReferencesValid=False) instead of judging the candidate on it. A spec
mistake, such as a misspelt `{{vresion}}` in a template, is a `SpecError` naming the template and
the field, found first."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from controller.analysis.checker import AnalysisChecker
from controller.analysis.measurements import MeasurementPool
from controller.analysis.providers.web import WebProvider
from controller.analysis.spec import MetricSource, PrometheusSource
from controller.api import ModelRolloutStatus, SpecError
from controller.checks import CheckContext, CheckOutcome, StepWindow, Verdict
from controller.errors import ReferenceProblem
from tests.unit.analysis.test_validate import pending

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
SCORE: dict[str, Any] = {
    "name": "score",
    "provider": {
        "web": {
            "url": "http://127.0.0.1:1/score?version={{version}}",
            "jsonPath": "$.value",
            "headersFrom": {"secretName": "score-api"},
        }
    },
    "comparison": {"maxDifference": 0.1},
}
SKEW: dict[str, Any] = {"name": "skew", "trainingSkew": {"profile": {"configMap": "profile"}}}
PROFILE_JSON = json.dumps(
    {
        "features": [
            {"name": "radius", "edges": [0.0], "frequencies": [0.5, 0.5]},
            {"name": "texture", "edges": [0.0], "frequencies": [0.5, 0.5]},
        ]
    }
)
ERRORS: dict[str, Any] = {
    "name": "errors",
    "provider": {"prometheus": {"query": "err{{version}}"}},
    "comparison": {"maxDifference": 0.01},
}
STEPS: list[Any] = [{"setWeight": 20}, {"analyze": {"duration": "1m"}}, {"setWeight": 50}]
MISSING_SECRET = (
    "spec.analysis.metrics[0].provider.web.headersFrom.secretName: Secret ml/score-api does not exist; "
    "create it or fix the name"
)
MISSING_PROFILE = (
    "spec.analysis.metrics[0].trainingSkew.profile.configMap: ConfigMap ml/profile does not exist; "
    "create it from the training pipeline's profile or fix the name"
)


class Cluster:
    """The ConfigMaps, Secrets and AnalysisTemplates of namespace `ml`, as the checker's readers see
    them; `provider_secrets` is what the web provider finds when it reads (on the pool, later)."""

    def __init__(self) -> None:
        self.configmaps: dict[str, dict[str, str]] = {}
        self.secrets: dict[str, dict[str, str]] = {}
        self.provider_secrets: dict[str, dict[str, str]] | None = None
        self.templates: dict[str, Mapping[str, Any]] = {}

    def read_configmap(self, namespace: str, name: str) -> Mapping[str, str] | None:
        return self.configmaps.get(name) if namespace == "ml" else None

    def read_secret(self, namespace: str, name: str) -> Mapping[str, str] | None:
        return self.secrets.get(name) if namespace == "ml" else None

    def provider_secret(self, *, namespace: str, name: str) -> Mapping[str, str]:
        """As controller.wiring gives the web provider: a missing Secret is a ReferenceProblem."""
        found = (self.secrets if self.provider_secrets is None else self.provider_secrets).get(name)
        if found is None:
            raise ReferenceProblem(f"Secret {namespace}/{name} does not exist; create it or fix headersFrom.secretName")
        return found

    def template(self, *, namespace: str, name: str) -> Mapping[str, Any] | None:
        return self.templates.get(name)


class Scorer:
    """The scoring API a web metric calls: 0.5 for every version, counting the calls."""

    def __init__(self) -> None:
        self.calls = 0

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        return httpx.Response(200, json={"value": 0.5})


class Buckets:
    """Prometheus as the training-skew check reads it: the candidate's inputs by feature and bucket."""

    def measure(self, *, source: MetricSource, namespace: str) -> float | None:
        raise AssertionError(f"asked for one number: {source}")

    def measure_by(self, *, source: PrometheusSource, label: str) -> dict[str, float]:
        return {"radius|0.0": 50.0, "radius|+Inf": 100.0, "texture|0.0": 50.0, "texture|+Inf": 100.0}


def analysis_checker(
    cluster: Cluster, scorer: Scorer | None = None, *, pool: MeasurementPool | None = None, reads_secrets: bool = True
) -> AnalysisChecker:
    web = WebProvider(secret_reader=cluster.provider_secret, transport=httpx.MockTransport((scorer or Scorer()).handle))
    return AnalysisChecker(
        providers={"prometheus": Buckets(), "web": web},
        template_lookup=cluster.template,
        read_configmap=cluster.read_configmap,
        read_secret=cluster.read_secret if reads_secrets else None,
        measurements=pool,
    )


def rollout(analysis: Mapping[str, Any], *, steps: list[Any] = STEPS) -> CheckContext:
    """A Pending rollout of v2 against v1 with this analysis section."""
    return pending(analysis, steps=steps)


def analyzing(context: CheckContext, *, seconds: float = 10) -> CheckContext:
    """`context` `seconds` into its analyze step (step 1, a minute long) at 20 %."""
    return CheckContext(
        namespace=context.namespace,
        name=context.name,
        spec=context.spec,
        status=ModelRolloutStatus(current_step_index=1),
        stable_version="v1",
        now=T0 + timedelta(seconds=seconds),
        current_weight=20,
        step=StepWindow(index=1, started_at=T0, seconds=60),
    )


def measurements(outcome: CheckOutcome | None) -> list[dict[str, Any]]:
    assert outcome is not None
    found: list[dict[str, Any]] = outcome.status_fields["analysis"]["measurements"]
    return found


# ---------------------------------------------------------------------------------------------
# While Pending: validate


def full_cluster() -> Cluster:
    """Every object the rollouts here name: the Secret, the profile and two templates."""
    cluster = Cluster()
    cluster.secrets["score-api"] = {"authorization": "Bearer t"}
    cluster.configmaps["profile"] = {"profile.json": PROFILE_JSON}
    cluster.templates.update({"scores": {"metrics": [SCORE]}, "later": {"metrics": [{**ERRORS, "name": "later"}]}})
    return cluster


LATER_STEP: list[Any] = [*STEPS, {"analyze": {"duration": "1m", "templates": [{"name": "later"}]}}]
MISSING_WHILE_PENDING = {
    "a web metric's Secret": ({"metrics": [SCORE]}, lambda c: c.secrets.clear(), MISSING_SECRET),
    "a training profile's ConfigMap": ({"metrics": [SKEW]}, lambda c: c.configmaps.clear(), MISSING_PROFILE),
    "the key of a training profile's ConfigMap": (
        {"metrics": [SKEW]},
        lambda c: c.configmaps.update(profile={"other.json": "{}"}),
        "spec.analysis.metrics[0].trainingSkew.profile.key: ConfigMap ml/profile has no key profile.json "
        "(it has ['other.json']); add it or fix the key",
    ),
    "a Secret named in a template": (
        {"metrics": [ERRORS], "templates": [{"name": "scores"}]},
        lambda c: c.secrets.clear(),
        "AnalysisTemplate scores: spec.metrics[0].provider.web.headersFrom.secretName: Secret ml/score-api "
        "does not exist; create it or fix the name",
    ),
    "a later analyze step's template": (
        {"metrics": [ERRORS]},
        lambda c: c.templates.pop("later"),
        "spec.steps[3].analyze.templates: AnalysisTemplate 'later' does not exist in namespace ml; "
        "create it or fix the name",
    ),
}


@pytest.mark.parametrize(
    ("analysis", "remove", "expected"), MISSING_WHILE_PENDING.values(), ids=MISSING_WHILE_PENDING.keys()
)
def test_a_missing_object_is_a_reference_problem_naming_the_field_before_any_traffic(
    analysis: dict[str, Any], remove: Callable[[Cluster], object], expected: str
) -> None:
    # given a Pending rollout whose planned metrics read an object that does not exist
    cluster = full_cluster()
    remove(cluster)
    scorer = Scorer()

    # when it is validated, then the problem names the field and the object, and nothing is called
    with pytest.raises(ReferenceProblem) as raised:
        analysis_checker(cluster, scorer).validate(context=rollout(analysis, steps=LATER_STEP))
    assert str(raised.value) == expected
    assert scorer.calls == 0


def test_with_every_object_there_validate_passes_and_calls_nothing() -> None:
    # given the Secret, the profile and the templates of background analysis and two analyze steps
    cluster = full_cluster()
    scorer = Scorer()

    # when validated, then nothing is raised and no provider is called
    analysis = {"metrics": [SKEW], "templates": [{"name": "scores"}], "startingStep": 2}
    analysis_checker(cluster, scorer).validate(context=rollout(analysis, steps=LATER_STEP))
    assert scorer.calls == 0


def test_a_controller_that_reads_no_secrets_does_not_ask_for_them() -> None:
    # given a web metric's Secret that does not exist, and a controller without --read-secrets
    # when validated, then nothing is raised: the web provider reports what it cannot read
    analysis_checker(Cluster(), reads_secrets=False).validate(context=rollout({"metrics": [SCORE]}))


def test_a_misspelt_placeholder_in_a_template_is_a_spec_error_found_before_a_missing_object() -> None:
    # given a template whose query says {{vresion}}, beside a web metric whose Secret is missing
    cluster = Cluster()
    typo = {**ERRORS, "provider": {"prometheus": {"query": 'errors{version="{{vresion}}"}'}}}
    cluster.templates["quality"] = {"metrics": [typo]}

    # when validated, then the spec error names the template and the field: the rollout would fail
    # on it anyway, so it does not wait for the Secret first
    with pytest.raises(SpecError) as raised:
        analysis_checker(cluster).validate(context=rollout({"metrics": [SCORE], "templates": [{"name": "quality"}]}))
    assert raised.value.field_path == "AnalysisTemplate quality: spec.metrics[0].provider.prometheus.query"
    assert "unknown template variable(s) vresion" in str(raised.value)


# ---------------------------------------------------------------------------------------------
# While traffic is shared: a look


def test_a_secret_deleted_mid_rollout_holds_the_look_naming_the_field_until_it_is_back() -> None:
    # given a rollout at its analyze step whose web metric's Secret was deleted
    cluster = Cluster()
    scorer = Scorer()
    checker = analysis_checker(cluster, scorer)
    context = analyzing(rollout({"metrics": [SCORE], "interval": "10s"}))

    # when a look is due, then it is a ReferenceProblem, not a measurement, and nothing is called
    with pytest.raises(ReferenceProblem) as raised:
        checker(context=context)
    assert str(raised.value) == MISSING_SECRET
    assert scorer.calls == 0

    # when the Secret is back, then the look is taken
    cluster.secrets["score-api"] = {"authorization": "Bearer t"}
    (measured,) = measurements(checker(context=context))
    assert (measured["verdict"], measured["candidateValue"]) == ("Successful", 0.5)


def test_a_secret_deleted_between_the_check_and_the_read_is_the_same_problem_and_is_read_again() -> None:
    # given a Secret the pass finds, and the web provider, reading later on the pool, does not
    cluster = Cluster()
    cluster.secrets["score-api"] = {"authorization": "Bearer t"}
    cluster.provider_secrets = {}
    answered = threading.Semaphore(0)
    pool = MeasurementPool(on_result=lambda namespace, name: answered.release())
    checker = analysis_checker(cluster, pool=pool)
    context = analyzing(rollout({"metrics": [SCORE], "interval": "10s"}))

    # when the look's reads are in, then it is the ReferenceProblem of a missing Secret, not a
    # permanent error of the metric
    assert measurements(checker(context=context)) == [], "the reads are submitted"
    assert answered.acquire(timeout=10)
    with pytest.raises(ReferenceProblem) as raised:
        checker(context=context)
    assert str(raised.value) == MISSING_SECRET

    # when the Secret is back, then the same look reads it again (the pool kept no answer saying
    # it is missing) and is taken
    cluster.provider_secrets = None
    assert measurements(checker(context=context)) == [], "the reads are submitted again"
    assert answered.acquire(timeout=10)
    (measured,) = measurements(checker(context=context))
    assert (measured["verdict"], measured["candidateValue"]) == ("Successful", 0.5)


def test_a_profile_deleted_mid_rollout_holds_the_look_and_a_malformed_one_is_an_error_of_the_metric() -> None:
    # given a rollout at its analyze step with the training-skew check, its profile deleted
    cluster = Cluster()
    checker = analysis_checker(cluster)
    context = analyzing(rollout({"metrics": [SKEW], "interval": "10s"}))

    # when a look is due, then it is a ReferenceProblem naming the field
    with pytest.raises(ReferenceProblem) as raised:
        checker(context=context)
    assert str(raised.value) == MISSING_PROFILE

    # when the ConfigMap is back but its profile is malformed, then the metric has a permanent
    # error: the object is there, what it holds is wrong
    cluster.configmaps["profile"] = {"profile.json": "{"}
    (measured,) = measurements(checker(context=context))
    assert measured["verdict"] == "Error" and "ConfigMap ml/profile key profile.json" in measured["reason"]

    # and with a good profile the look is taken
    cluster.configmaps["profile"] = {"profile.json": PROFILE_JSON}
    outcome = checker(context=context)
    (measured,) = measurements(outcome)
    assert measured["verdict"] != "Error"
    assert outcome is not None and outcome.verdict in (Verdict.RUNNING, Verdict.SUCCESSFUL)


def test_a_later_steps_template_deleted_mid_rollout_holds_the_look_rather_than_change_the_error_budget() -> None:
    # given an analyze step measuring now, and a later step whose template was deleted
    cluster = full_cluster()
    del cluster.templates["later"]
    context = analyzing(rollout({"metrics": [SKEW], "interval": "10s"}, steps=LATER_STEP))

    # when the checker runs, then the missing template is named where it is named
    with pytest.raises(ReferenceProblem, match=r"^spec\.steps\[3\]\.analyze\.templates: AnalysisTemplate 'later'"):
        analysis_checker(cluster)(context=context)
