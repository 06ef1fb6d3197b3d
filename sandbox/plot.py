"""The picture of one rollout: traffic weight and key metrics of baseline and candidate over time,
with the decision marked. Series come from the sandbox's Prometheus (query_range), the weight
from the rollout's status as the demo saw it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt

QUERY_STEP_SECONDS = 2.0
SELECTOR = 'model="{model}",version="{version}"'


@dataclass(frozen=True, kw_only=True)
class Marker:
    """A failed measurement: when, which metric, the candidate's value."""

    seconds: float
    metric: str
    value: float | None


@dataclass(frozen=True, kw_only=True)
class RolloutPicture:
    """What one picture shows; times are seconds since the rollout started."""

    title: str
    model: str
    baseline: str
    candidate: str
    start_unix: float
    """Wall-clock start of the rollout, for the Prometheus queries."""
    end_unix: float
    weights: Sequence[tuple[float, int]]
    """(seconds, candidate weight %) as sampled from status."""
    decision_seconds: float | None
    decision_label: str
    failed: Sequence[Marker] = ()


def _range(prometheus_url: str, query: str, *, start: float, end: float) -> tuple[list[float], list[float]]:
    response = httpx.get(
        f"{prometheus_url}/api/v1/query_range",
        params={"query": query, "start": start, "end": end, "step": QUERY_STEP_SECONDS},
        timeout=10.0,
    )
    response.raise_for_status()
    result = response.json()["data"]["result"]
    if not result:
        return [], []
    points = result[0]["values"]
    return [float(t) for t, _ in points], [float(v) for _, v in points]


def _queries(model: str, version: str) -> Mapping[str, str]:
    selector = SELECTOR.format(model=model, version=version)
    borderline = f'{selector},slice="borderline"'
    return {
        "requests": f"sum(rate(model_requests_total{{{selector}}}[10s]))",
        "accuracy": f"sum(rate(model_feedback_correct_total{{{selector}}}[30s])) "
        f"/ sum(rate(model_feedback_total{{{selector}}}[30s]))",
        "borderline": f"sum(rate(model_feedback_correct_total{{{borderline}}}[60s])) "
        f"/ sum(rate(model_feedback_total{{{borderline}}}[60s]))",
        "latency": "1000 * histogram_quantile(0.99, sum by (le) "
        f"(rate(model_request_duration_seconds_bucket{{{selector}}}[10s])))",
    }


def draw(picture: RolloutPicture, *, prometheus_url: str, path: Path) -> Path:
    """Queries Prometheus for both versions and writes the PNG to `path`."""
    start, end = picture.start_unix - 10, picture.end_unix + 5
    series = {
        role: {
            name: _range(prometheus_url, query, start=start, end=end)
            for name, query in _queries(picture.model, version).items()
        }
        for role, version in (("baseline", picture.baseline), ("candidate", picture.candidate))
    }
    colours = {"baseline": "tab:blue", "candidate": "tab:orange"}
    labels = {"baseline": f"baseline {picture.baseline}", "candidate": f"candidate {picture.candidate}"}

    def seconds(times: list[float]) -> list[float]:
        return [t - picture.start_unix for t in times]

    figure, (traffic, accuracy, latency) = plt.subplots(
        3, 1, figsize=(10, 9), sharex=True, gridspec_kw={"height_ratios": [1, 1.4, 1]}
    )
    figure.suptitle(picture.title, fontsize=13, fontweight="bold")

    weight_times = [t for t, _ in picture.weights]
    traffic.step(
        weight_times, [w for _, w in picture.weights], where="post", color="black", label="weight set on route"
    )
    base_t, base_rps = series["baseline"]["requests"]
    cand_t, cand_rps = series["candidate"]["requests"]
    by_time = dict(zip(base_t, base_rps, strict=True))
    shares = [
        (t, 100 * rps / (rps + by_time[t]))
        for t, rps in zip(cand_t, cand_rps, strict=True)
        if rps + by_time.get(t, 0) > 0
    ]
    if shares:
        traffic.plot(
            seconds([t for t, _ in shares]),
            [s for _, s in shares],
            color=colours["candidate"],
            alpha=0.8,
            label=f"share of requests served by {picture.candidate} (Prometheus)",
        )
    traffic.set_ylabel("candidate traffic %")
    traffic.set_ylim(-5, 105)
    traffic.legend(loc="upper left", fontsize=8)

    for role in ("baseline", "candidate"):
        times, values = series[role]["accuracy"]
        accuracy.plot(seconds(times), values, color=colours[role], label=f"{labels[role]}: all slices (30 s)")
        times, values = series[role]["borderline"]
        accuracy.plot(
            seconds(times),
            values,
            color=colours[role],
            linestyle="--",
            label=f"{labels[role]}: borderline slice (60 s)",
        )
    for marker in picture.failed:
        if marker.value is not None:
            accuracy.scatter([marker.seconds], [marker.value], color="red", marker="x", s=80, zorder=5)
            accuracy.annotate(
                f"{marker.metric} failed", (marker.seconds, marker.value), textcoords="offset points", xytext=(6, -12),
                color="red", fontsize=8,
            )  # fmt: skip
    accuracy.set_ylabel("accuracy on labelled feedback")
    accuracy.set_ylim(0.4, 1.02)
    accuracy.legend(loc="lower left", fontsize=8, ncol=2)

    for role in ("baseline", "candidate"):
        times, values = series[role]["latency"]
        latency.plot(seconds(times), values, color=colours[role], label=labels[role])
    latency.set_ylabel("p99 latency (ms)")
    latency.set_xlabel("seconds since the rollout started")
    latency.legend(loc="upper left", fontsize=8)

    for axis in (traffic, accuracy, latency):
        axis.grid(alpha=0.3)
        if picture.decision_seconds is not None:
            axis.axvline(picture.decision_seconds, color="red" if picture.failed else "green", linestyle=":")
    if picture.decision_seconds is not None:
        traffic.annotate(
            picture.decision_label,
            (picture.decision_seconds, 50),
            textcoords="offset points",
            xytext=(-8, 0),
            ha="right",
            color="red" if picture.failed else "green",
            fontweight="bold",
        )
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
