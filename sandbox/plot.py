"""The picture of one rollout: traffic weight and key metrics of baseline and candidate over time,
with the decision (and any other moment worth seeing, such as an alert firing) marked. Metric
series come from the sandbox's Prometheus (query_range); the weight, the mirror, the clients'
answers and the candidate server's request count from what the demo sampled each second."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt

QUERY_STEP_SECONDS = 2.0
SMOOTHING_SAMPLES = 5
"""Shares of requests are drawn over this many one-second samples: at 100 requests/s a single
second's share wobbles by several points."""
SELECTOR = 'model="{model}",version="{version}"'


@dataclass(frozen=True, kw_only=True)
class Marker:
    """A failed measurement: when, which metric, the candidate's value."""

    seconds: float
    metric: str
    value: float | None


@dataclass(frozen=True, kw_only=True)
class Moment:
    """Something that happened, drawn as a vertical line across every panel and named in the first."""

    seconds: float
    """Since the rollout started."""
    label: str
    colour: str
    """A matplotlib colour: green for a promotion, red for what returned traffic, grey for the rest."""


@dataclass(frozen=True, kw_only=True)
class TrafficSample:
    """What the demo saw at one moment; counts are cumulative."""

    seconds: float
    """Since the rollout started."""
    weight: int
    """The candidate's weight in status."""
    mirror_percent: int
    """The share of requests the route copies to the candidate (status.routeMirror); 0 for none."""
    candidate_requests: int | None
    """Requests the candidate's server has answered, mirrored copies included (its own counter)."""
    client_answers: int
    """Answers the clients have got, from any version."""
    client_answers_by_candidate: int
    """Of those, the candidate's."""
    client_failures: int = 0
    """Requests of the clients that failed (no answer, or an error status), from any version."""


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
    moments: Sequence[Moment]
    """The decision, and for an undone promotion the promotion, the fault, the alert and the undo."""
    failed: Sequence[Marker] = ()
    samples: Sequence[TrafficSample] = ()
    alert_error_share: float | None = None
    """The share of failed requests above which the environment's alert fires, drawn as a line
    in the errors panel (None: not drawn)."""


def mirror_spans(samples: Sequence[TrafficSample]) -> list[tuple[float, float]]:
    """(start, end) seconds of each stretch during which the route copied requests to the candidate."""
    spans: list[tuple[float, float]] = []
    start: float | None = None
    for sample in samples:
        if sample.mirror_percent > 0 and start is None:
            start = sample.seconds
        elif sample.mirror_percent == 0 and start is not None:
            spans.append((start, sample.seconds))
            start = None
    if start is not None and samples:
        spans.append((start, samples[-1].seconds))
    return spans


def request_shares(samples: Sequence[TrafficSample]) -> tuple[list[float], list[float], list[float]]:
    """Over a sliding window of samples: seconds, the candidate's share of the clients' answers
    (%), and the requests the candidate's server answered per client request, answered or failed
    (%; copies included, so about 100 during a full mirror at weight 0)."""
    times: list[float] = []
    client_share: list[float] = []
    served: list[float] = []
    # Each point looks back up to SMOOTHING_SAMPLES samples, fewer at the start, so a rollout
    # decided in seconds (a candidate rolled back at its first look) still gets its line.
    for index in range(1, len(samples)):
        earlier, later = samples[max(0, index - SMOOTHING_SAMPLES)], samples[index]
        answers = later.client_answers - earlier.client_answers
        if answers <= 0:
            continue
        times.append(later.seconds)
        client_share.append(100 * (later.client_answers_by_candidate - earlier.client_answers_by_candidate) / answers)
        requests = answers + later.client_failures - earlier.client_failures
        if later.candidate_requests is not None and earlier.candidate_requests is not None:
            served.append(100 * (later.candidate_requests - earlier.candidate_requests) / requests)
        else:
            served.append(float("nan"))
    return times, client_share, served


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
        "accuracy": f"sum(rate(model_feedback_correct_total{{{selector}}}[30s])) "
        f"/ sum(rate(model_feedback_total{{{selector}}}[30s]))",
        "borderline": f"sum(rate(model_feedback_correct_total{{{borderline}}}[60s])) "
        f"/ sum(rate(model_feedback_total{{{borderline}}}[60s]))",
        "latency": "1000 * histogram_quantile(0.99, sum by (le) "
        f"(rate(model_request_duration_seconds_bucket{{{selector}}}[10s])))",
        "errors": f"100 * sum(rate(model_request_errors_total{{{selector}}}[10s])) "
        f"/ sum(rate(model_requests_total{{{selector}}}[10s]))",
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

    figure, (traffic, accuracy, errors, latency) = plt.subplots(
        4, 1, figsize=(10, 11), sharex=True, gridspec_kw={"height_ratios": [1, 1.4, 0.8, 0.8]}
    )
    figure.suptitle(picture.title, fontsize=13 if len(picture.title) <= 80 else 10, fontweight="bold")

    weight_times = [t for t, _ in picture.weights]
    for number, (start_mirror, end_mirror) in enumerate(mirror_spans(picture.samples)):
        traffic.axvspan(
            start_mirror, end_mirror, color="tab:purple", alpha=0.12,
            label=f"mirror step: every request copied to {picture.candidate}" if number == 0 else None,
        )  # fmt: skip
    traffic.step(
        weight_times, [w for _, w in picture.weights], where="post", color="black", label="weight set on route"
    )
    times, client_share, served = request_shares(picture.samples)
    if times:
        traffic.plot(
            times, served, color="tab:purple", linestyle="--", alpha=0.8,
            label=f"requests {picture.candidate}'s server answered, mirrored copies included (% of client requests)",
        )  # fmt: skip
        traffic.plot(
            times, client_share, color=colours["candidate"], alpha=0.9,
            label=f"share of client answers from {picture.candidate}",
        )  # fmt: skip
    traffic.set_ylabel("candidate traffic %")
    traffic.set_ylim(-5, 115)
    traffic.legend(loc="upper left", fontsize=7)

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
    accuracy.set_ylim(0.3, 1.02)
    accuracy.legend(loc="lower left", fontsize=8, ncol=2)

    for role in ("baseline", "candidate"):
        times, values = series[role]["errors"]
        errors.plot(seconds(times), values, color=colours[role], label=f"{labels[role]} (10 s)")
    if picture.alert_error_share is not None:
        errors.axhline(
            100 * picture.alert_error_share, color="red", linestyle="--", alpha=0.6,
            label=f"the alert fires above {picture.alert_error_share:.0%}",
        )  # fmt: skip
    errors.set_ylabel("failed requests %")
    errors.set_ylim(-2, 50)
    errors.legend(loc="upper left", fontsize=8)

    for role in ("baseline", "candidate"):
        times, values = series[role]["latency"]
        latency.plot(seconds(times), values, color=colours[role], label=labels[role])
    latency.set_ylabel("p99 latency (ms)")
    latency.set_xlabel("seconds since the rollout started")
    latency.legend(loc="upper left", fontsize=8)

    for axis in (traffic, accuracy, errors, latency):
        axis.grid(alpha=0.3)
        for moment in picture.moments:
            axis.axvline(moment.seconds, color=moment.colour, linestyle=":")
    # Labels one under the other: an alert and the undo it causes can be under a second apart.
    for number, moment in enumerate(picture.moments):
        traffic.annotate(
            moment.label, (moment.seconds, 50 - 14 * number), textcoords="offset points", xytext=(-8, 0),
            ha="right", color=moment.colour, fontweight="bold", fontsize=8 if len(picture.moments) > 1 else 10,
        )  # fmt: skip
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
