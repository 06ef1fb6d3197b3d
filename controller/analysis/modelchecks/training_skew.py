"""Training skew (Monitor 3): the candidate's live inputs against the training data's, feature by
feature, from a training profile kept in a ConfigMap (docs/checks/training-skew.md). The profile
is the one object a model check reads from the cluster: missing, the rollout waits for it;
malformed, the check's look is a permanent error."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, cast

from controller.analysis import fields
from controller.analysis.evaluate import Judgement, Reading, Result
from controller.analysis.evidence import CountQuery, Evidence, Segment, by_label
from controller.analysis.judges import (
    JSON,
    Budget,
    Look,
    ReferenceLoader,
    Versions,
    mismatch,
    no_data,
    rounded,
)
from controller.analysis.modelchecks.plugin import ModelCheckPlugin
from controller.analysis.presets import (
    INPUT_FEATURE_QUERY,
)
from controller.analysis.profile import TrainingProfile, parse_profile
from controller.analysis.providers.base import LABEL_VALUE_SEPARATOR
from controller.analysis.rows import Row, with_rows, worst_entries
from controller.analysis.sequential import (
    divergence_lower_bound,
    divergence_upper_bound,
    proportion_interval,
)
from controller.api import SpecError
from controller.checks import ReadConfigMap
from controller.errors import ReferenceProblem
from controller.figures import figure, interval
from controller.stats import (
    EMPTY_BUCKET_SHARE,
    bucket_counts,
    population_stability_index,
)

DEFAULT_MAX_SKEW_PSI = 0.2
"""Training skew tolerance per feature, on the same scale as prediction drift."""
DEFAULT_PROFILE_KEY = "profile.json"


@dataclass(frozen=True, kw_only=True)
class TrainingSkew:
    """The candidate's live inputs against the training data's, feature by feature (Monitor 3)."""

    key: ClassVar[str] = "trainingSkew"
    rubric_items: ClassVar[tuple[str, ...]] = ("Monitor 3",)
    address_field: ClassVar[str] = "trainingSkew.address"
    compares_baseline: ClassVar[bool] = False
    tests: ClassVar[int] = 1
    profile_config_map: str
    """ConfigMap in the rollout's namespace holding the training profile (docs/checks/training-skew.md)."""
    profile_key: str = DEFAULT_PROFILE_KEY
    max_psi: float = DEFAULT_MAX_SKEW_PSI
    """Tolerance: how far (population stability index) a feature's live distribution may be from
    the training one; live traffic always differs a little."""
    features: tuple[str, ...] = ()
    """The features judged; empty: every feature of the profile."""
    histogram_query: str = INPUT_FEATURE_QUERY
    address: str | None = None

    def judge(self, evidence: Evidence, *, budget: Budget, versions: Versions) -> Look:
        return _judge_skew(self, evidence, budget, versions)

    @property
    def queries(self) -> tuple[CountQuery, ...]:
        return (CountQuery(name="bucket", query=self.histogram_query, by="feature,le"),)

    def read_reference(
        self, *, namespace: str, metric_field: str, read_configmap: ReadConfigMap | None
    ) -> ReferenceLoader:
        """The profile's ConfigMap, which must hold its key (else ReferenceProblem naming the
        field: the rollout waits for it); parsing it raises ProfileError when it is malformed."""
        field_path = f"{metric_field}.{self.key}.profile"
        name = self.profile_config_map
        data = read_configmap(namespace, name) if read_configmap else None
        if data is None:
            raise ReferenceProblem(
                f"{field_path}.configMap: ConfigMap {namespace}/{name} does not exist; "
                "create it from the training pipeline's profile or fix the name"
            )
        if self.profile_key not in data:
            raise ReferenceProblem(
                f"{field_path}.key: ConfigMap {namespace}/{name} has no key {self.profile_key} "
                f"(it has {sorted(data)}); add it or fix the key"
            )
        where = f"ConfigMap {namespace}/{name} key {self.profile_key}"
        return lambda: parse_profile(data[self.profile_key], where=where)


def parse_config(raw: Mapping[str, Any], path: str) -> TrainingSkew:
    profile = raw.get("profile") or {}
    name = fields.text(profile, "configMap", f"{path}.profile") if isinstance(profile, Mapping) else ""
    features = raw.get("features") or []
    if not isinstance(features, list) or not all(isinstance(f, str) and f.strip() for f in features):
        raise SpecError(f"{path}.features", "is a list of feature names as the profile names them")
    if len(set(features)) != len(features):
        raise SpecError(f"{path}.features", "names a feature twice")
    return TrainingSkew(
        profile_config_map=name,
        profile_key=str(profile.get("key") or DEFAULT_PROFILE_KEY),
        **fields.given(max_psi=fields.number(raw, "maxPSI", path, minimum=0.0)),
        features=tuple(features),
        histogram_query=fields.query(raw, "query", path, default=INPUT_FEATURE_QUERY),
        address=fields.prometheus_address(raw, path),
    )


def _feature_counts(segments: Sequence[Segment], feature: str) -> dict[float, float]:
    """The candidate's per-bucket (not cumulative) counts of one feature, all segments together."""
    total: dict[float, float] = {}
    prefix = f"{feature}{LABEL_VALUE_SEPARATOR}"
    for segment in segments:
        cumulative = {
            float(key[len(prefix) :]): value
            for key, value in by_label(segment.candidate, "bucket").items()
            if key.startswith(prefix)
        }
        for bound, count in zip(sorted(cumulative), bucket_counts(cumulative), strict=True):
            total[bound] = total.get(bound, 0.0) + count
    return total


def _judge_skew(test: TrainingSkew, evidence: Evidence, budget: Budget, versions: Versions) -> Look:
    latest = evidence.segments[-1] if evidence.segments else None
    # What this check's read_reference parsed, put there by the checker before judging.
    profile = cast(TrainingProfile | None, evidence.reference)
    if latest is None or not by_label(latest.candidate, "bucket"):
        return no_data(versions, [f"candidate {versions.candidate} (input feature histograms)"])
    assert profile is not None, "the checker reads the profile before judging"
    unknown = [name for name in test.features if name not in profile]
    if unknown:
        return mismatch(versions, f"features {', '.join(unknown)} are not in the training profile; fix features")
    names = test.features or tuple(profile)
    try:
        counts = {name: _feature_counts(evidence.segments, name) for name in names}
    except ValueError as error:
        return mismatch(versions, f"a feature bucket bound is not a number: {error}")
    missing = [name for name in names if not counts[name]]
    if missing:
        return no_data(versions, [f"candidate {versions.candidate} features {', '.join(missing)}"])
    intervals_total = sum(len(profile[name].frequencies) for name in names)
    alpha = budget.false_rollback / intervals_total
    beta = budget.false_promotion / intervals_total
    features: list[JSON] = []
    failing: list[tuple[float, str]] = []
    safe = True
    for name in names:
        reference = profile[name]
        bounds = [*reference.edges, math.inf]
        if sorted(counts[name]) != bounds:
            return mismatch(
                versions,
                f"feature {name}: the server's buckets {sorted(counts[name])} are not the profile's edges "
                f"{reference.edges} (+Inf); bucket the feature at the profile's edges",
            )
        per_bucket = [counts[name][b] for b in bounds]
        total = sum(per_bucket)
        exact = [(f, f) for f in reference.frequencies]
        if total <= 0:
            features.append({"feature": name, "samples": 0, "psi": None, "psiInterval": [0.0, None]})
            safe = False
            continue
        low = divergence_lower_bound(exact, [proportion_interval(c, total, alpha=alpha) for c in per_bucket],
                                     measure="psi")  # fmt: skip
        high = divergence_upper_bound(
            exact, [proportion_interval(c, total, alpha=beta) for c in per_bucket], measure="psi",
            floor=EMPTY_BUCKET_SHARE,
        )  # fmt: skip
        psi = population_stability_index(baseline=reference.frequencies, candidate=per_bucket)
        verdict = Result.FAILED if low > test.max_psi else Result.SUCCESSFUL
        safe = safe and high <= test.max_psi
        if verdict is Result.FAILED:
            failing.append((low, name))
        features.append(
            {
                "feature": name,
                "samples": rounded(total, 3),
                "psi": rounded(psi, 4),
                "psiInterval": [rounded(low, 4), rounded(high, 4)],
                "verdict": verdict.value,
            }
        )
    worst = max(features, key=lambda f: f["psiInterval"][0] or 0.0)
    summary = with_feature_rows(
        {"test": "training-skew", "maxPSI": test.max_psi, "worstFeature": worst["feature"], "features": features}
    )
    samples = max((f["samples"] or 0.0) for f in features)
    candidate = Reading(version=versions.candidate, samples=samples)
    who = f"candidate {versions.candidate} inputs vs the training profile"
    if failing:
        detail = "; ".join(
            f"feature {name!r} PSI {next(f['psi'] for f in features if f['feature'] == name):.4f} (at least {low:.4f})"
            for low, name in sorted(failing, reverse=True)
        )
        reason = f"{who}: skew beyond tolerance {test.max_psi:g}: {detail}"
        judgement = Judgement(result=Result.FAILED, reason=reason)
    else:
        shown = "within tolerance shown" if safe else "no evidence of skew beyond tolerance"
        reason = (
            f"{who}: {shown} on {len(features)} features (largest PSI {worst['psi']}, feature {worst['feature']!r}; "
            f"tolerance {test.max_psi:g})"
        )
        judgement = Judgement(result=Result.SUCCESSFUL, reason=reason, safe=safe)
    return Look(judgement=judgement, baseline=Reading(version=versions.baseline), candidate=candidate, summary=summary)


def with_feature_rows(summary: JSON) -> JSON:
    """The summary with its rows for kubectl: the worst feature, then each skewed feature (the
    worst ones when there are many), else the worst feature, with PSI against the tolerance."""
    features = summary["features"]
    skewed = [f for f in features if f.get("verdict") == Result.FAILED.value] or [
        f for f in features if f["feature"] == summary["worstFeature"]
    ]
    rows = [
        Row(
            label=f"feature {entry['feature']}",
            verdict=entry.get("verdict"),
            candidate=f"{entry['samples']:.0f} rows",
            estimate=f"PSI {figure(entry['psi'])} {interval(entry['psiInterval'])}",
            tolerance=figure(summary["maxPSI"]),
        )
        for entry in worst_entries(skewed, badness="psiInterval")
    ]
    return with_rows(summary, columns=Row(estimate=f"worst feature {summary['worstFeature']}"), rows=rows)


PLUGIN = ModelCheckPlugin(key=TrainingSkew.key, parse_config=parse_config)
