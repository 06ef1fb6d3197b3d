"""Traffic generator: replays the breast-cancer test split against a model URL (a server or the
proxy in front of several) and sends each true label back as feedback, with the row's data slice.

Bounded in requests and in time, rate-limited, and stops by itself:

    python -m localenv.traffic --url http://127.0.0.1:8080 --rate 20 --max-requests 600 --max-seconds 60

Feedback goes to the same URL, naming the version that answered (the response's `model_version`),
so that behind a proxy it is counted for the right version whichever server receives it.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field

import httpx

from localenv.modelserver.dataset import load_dataset, slice_names
from localenv.modelserver.variants import DEFAULT_MODEL_NAME, STANDARD_INPUT


@dataclass(frozen=True, kw_only=True)
class TrafficSettings:
    """What to send, where, how fast and for how long."""

    url: str
    """Base URL of a model server or of the proxy, e.g. http://127.0.0.1:8080."""
    model_name: str = DEFAULT_MODEL_NAME
    rate_per_second: float = 20.0
    """Inference requests per second (each followed by its feedback)."""
    max_requests: int = 1000
    """Stop after this many inference requests..."""
    max_seconds: float = 60.0
    """...or after this long, whichever comes first."""
    seed: int = 0
    """Shuffles the replay order; the same seed sends the same rows in the same order."""
    request_timeout_seconds: float = 5.0


@dataclass(kw_only=True)
class SliceTally:
    """Client-side count for one version and slice."""

    answered: int = 0
    correct: int = 0


@dataclass(kw_only=True)
class TrafficSummary:
    """What was sent and what came back, as the client saw it."""

    sent: int = 0
    """Inference requests sent."""
    seconds: float = 0.0
    failures: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    """Failed inference requests or feedback posts, by reason ('HTTP 400', 'ConnectError', ...)."""
    by_version: dict[str, dict[str, SliceTally]] = field(default_factory=lambda: defaultdict(dict))
    """version -> slice -> answers and correct answers."""
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)
    """Guards `by_version` against a reader on another thread while the replay adds to it."""

    def count_answer(self, *, version: str, data_slice: str, correct: bool) -> None:
        with self._lock:
            tally = self.by_version[version].setdefault(data_slice, SliceTally())
            tally.answered += 1
            tally.correct += int(correct)

    def answers_by_version(self) -> dict[str, int]:
        """Answers per version so far, safe to call while the replay runs: which version each
        client was really answered by (the demo checks a shadowed candidate answered nobody)."""
        with self._lock:
            return {version: sum(t.answered for t in slices.values()) for version, slices in self.by_version.items()}

    def as_json(self) -> dict[str, object]:
        return {
            "sent": self.sent,
            "seconds": round(self.seconds, 2),
            "failures": dict(self.failures),
            "by_version": {
                version: {name: vars(tally) for name, tally in sorted(slices.items())}
                for version, slices in sorted(self.by_version.items())
            },
        }


def replay(
    settings: TrafficSettings, *, stop: threading.Event | None = None, summary: TrafficSummary | None = None
) -> TrafficSummary:
    """Send traffic until a bound is reached or `stop` is set; never raises for a failed request
    (servers come and go during a rollout), it counts them instead. Counts into `summary` when
    given, so another thread can watch the answers while the replay runs."""
    dataset = load_dataset()
    rows, labels = dataset.test_features, dataset.test_labels
    slices = slice_names(rows)
    order = list(range(len(rows)))
    random.Random(settings.seed).shuffle(order)
    stop = stop or threading.Event()
    summary = summary if summary is not None else TrafficSummary()
    started = time.monotonic()
    interval = 1.0 / settings.rate_per_second
    with httpx.Client(base_url=settings.url, timeout=settings.request_timeout_seconds) as client:
        for count in range(settings.max_requests):
            # Scheduled from the start, not from the last answer, so slow answers do not lower the rate.
            wait = started + count * interval - time.monotonic()
            if stop.wait(max(wait, 0.0)) or time.monotonic() - started >= settings.max_seconds:
                break
            row = order[count % len(order)]
            _send_one(
                client,
                settings=settings,
                request_id=f"traffic-{settings.seed}-{count}",
                features=rows[row].tolist(),
                label=int(labels[row]),
                data_slice=slices[row],
                summary=summary,
            )
            summary.sent += 1
    summary.seconds = time.monotonic() - started
    return summary


def _send_one(
    client: httpx.Client,
    *,
    settings: TrafficSettings,
    request_id: str,
    features: list[float],
    label: int,
    data_slice: str,
    summary: TrafficSummary,
) -> None:
    model_path = f"/v2/models/{settings.model_name}"
    tensor = {**STANDARD_INPUT.as_json(), "shape": [1, len(features)], "data": features}
    try:
        answer = client.post(f"{model_path}/infer", json={"id": request_id, "inputs": [tensor]})
        if answer.status_code != 200:
            summary.failures[f"infer HTTP {answer.status_code}"] += 1
            return
        body = answer.json()
        version = str(body["model_version"])
        prediction = int(next(output for output in body["outputs"] if output["name"] == "label")["data"][0])
        feedback = {"id": request_id, "prediction": prediction, "version": version, "label": label, "slice": data_slice}
        acknowledged = client.post(f"{model_path}/feedback", json=feedback)
        if acknowledged.status_code != 200:
            summary.failures[f"feedback HTTP {acknowledged.status_code}"] += 1
            return
    except httpx.HTTPError as error:
        summary.failures[type(error).__name__] += 1
        return
    summary.count_answer(version=version, data_slice=data_slice, correct=prediction == label)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m localenv.traffic", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--model-name", default=DEFAULT_MODEL_NAME)
    parser.add_argument("--rate", type=float, default=20.0, help="inference requests per second")
    parser.add_argument("--max-requests", type=int, default=1000)
    parser.add_argument("--max-seconds", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    settings = TrafficSettings(
        url=args.url,
        model_name=args.model_name,
        rate_per_second=args.rate,
        max_requests=args.max_requests,
        max_seconds=args.max_seconds,
        seed=args.seed,
    )
    stop = threading.Event()
    # Ctrl-C ends the replay early but still prints what was sent.
    signal.signal(signal.SIGINT, lambda signum, frame: stop.set())
    summary = replay(settings, stop=stop)
    print(json.dumps(summary.as_json(), indent=2))


if __name__ == "__main__":
    main()
