"""Real model-server processes on 127.0.0.1 (localenv.modelserver): the Open Inference Protocol
endpoints, the model-metrics convention and the behaviour each variant promises."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from localenv.modelserver import RunningServer, Variant, start_model_server
from localenv.modelserver.dataset import load_dataset, slice_names
from localenv.modelserver.metrics import SCORE_BUCKETS
from localenv.traffic import TrafficSettings, replay

pytestmark = pytest.mark.integration

MODEL = "breast-cancer"
ServerOf = Callable[[Variant], RunningServer]
REPO_ROOT = Path(__file__).resolve().parents[2]
PARENT_THAT_DIES = """
import time
from localenv.modelserver import Variant, start_model_server
server = start_model_server(variant=Variant.GOOD, version="orphan")
print(server.process.pid, flush=True)
time.sleep(60)
"""


@pytest.fixture(scope="module")
def server_of() -> Iterator[ServerOf]:
    """Starts each variant once for the module (as version 'v-<variant>'), stops them all at the end."""
    running: dict[Variant, RunningServer] = {}

    def get(variant: Variant) -> RunningServer:
        if variant not in running:
            running[variant] = start_model_server(variant=variant, model_name=MODEL, version=f"v-{variant}")
        return running[variant]

    yield get
    for server in running.values():
        server.stop()


def scrape(server: RunningServer) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of the server's /metrics, keyed by (sample name, labels)."""
    text = httpx.get(server.metrics_url).text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


class Movement:
    """How much a server's samples moved across a `with metrics_moved(server)` block."""

    def __init__(self, server: RunningServer) -> None:
        self.server = server
        self.before = scrape(server)
        self.after = self.before

    def __call__(self, name: str, *, version: str | None = None, **labels: str) -> float:
        """`name`'s change for the server's model and version (or `version`) and `labels`."""
        selected = {"model": MODEL, "version": version or self.server.version, **labels}
        return value(self.after, name, **selected) - value(self.before, name, **selected)


@contextmanager
def metrics_moved(server: RunningServer) -> Iterator[Movement]:
    movement = Movement(server)
    yield movement
    movement.after = scrape(server)


def infer(server: RunningServer, rows: np.ndarray, *, request_id: str | None = None) -> httpx.Response:
    body: dict[str, Any] = {
        "inputs": [{"name": "features", "datatype": "FP64", "shape": list(rows.shape), "data": rows.tolist()}]
    }
    if request_id is not None:
        body["id"] = request_id
    return httpx.post(server.infer_url, json=body)


def outputs(response: httpx.Response) -> dict[str, list[Any]]:
    return {tensor["name"]: tensor["data"] for tensor in response.json()["outputs"]}


def test_health_and_metadata_describe_the_served_contract(server_of: ServerOf) -> None:
    # given a baseline server and one exported with another signature
    good, renamed = server_of(Variant.GOOD), server_of(Variant.NEW_CONTRACT)
    # when their health and metadata are read
    # then both are live and ready, and the metadata declares each one's own input tensor
    for server in (good, renamed):
        assert httpx.get(f"{server.url}/v2/health/live").status_code == 200
        assert httpx.get(f"{server.url}/v2/health/ready").status_code == 200
        assert httpx.get(f"{server.url}/v2/models/{MODEL}/ready").json() == {"name": MODEL, "ready": True}
    good_metadata = httpx.get(f"{good.url}/v2/models/{MODEL}").json()
    assert good_metadata["versions"] == ["v-good"]
    assert good_metadata["inputs"] == [{"name": "features", "datatype": "FP64", "shape": [-1, 30]}]
    assert good_metadata["outputs"] == [
        {"name": "label", "datatype": "INT64", "shape": [-1]},
        {"name": "score", "datatype": "FP64", "shape": [-1]},
    ]
    renamed_inputs = httpx.get(f"{renamed.url}/v2/models/{MODEL}").json()["inputs"]
    assert renamed_inputs == [{"name": "input_1", "datatype": "FP32", "shape": [-1, 10]}]
    # and a model or version it does not serve is 404
    assert httpx.get(f"{good.url}/v2/models/other").status_code == 404
    assert httpx.get(f"{good.url}/v2/models/{MODEL}/versions/v-good/ready").status_code == 200
    assert httpx.get(f"{good.url}/v2/models/{MODEL}/versions/v9/ready").status_code == 404


def test_infer_answers_every_row_and_better_beats_the_baseline(server_of: ServerOf) -> None:
    # given the whole test split in one request
    dataset = load_dataset()
    accuracy = {}
    for variant in (Variant.GOOD, Variant.BETTER):
        # when each version scores it
        response = infer(server_of(variant), dataset.test_features, request_id="whole-split")
        # then it answers one label and one probability per row, naming itself
        assert response.status_code == 200
        assert response.json()["model_version"] == f"v-{variant}"
        assert response.json()["id"] == "whole-split"
        answer = outputs(response)
        assert len(answer["label"]) == len(answer["score"]) == len(dataset.test_labels)
        assert all(0.0 <= score <= 1.0 for score in answer["score"])
        accuracy[variant] = float(np.mean(np.array(answer["label"]) == dataset.test_labels))
    # and both are real models: v1 about 0.92, v2 better
    assert accuracy[Variant.GOOD] > 0.9
    assert accuracy[Variant.BETTER] > accuracy[Variant.GOOD]


def test_metrics_count_requests_errors_latency_and_predictions(server_of: ServerOf) -> None:
    # given a server
    server = server_of(Variant.GOOD)
    rows = load_dataset().test_features[:7]
    # when it answers three good requests of 7 rows and one with the wrong tensor name
    with metrics_moved(server) as moved:
        for _ in range(3):
            assert infer(server, rows).status_code == 200
        wrong_tensor = {"name": "x", "datatype": "FP64", "shape": [1, 30], "data": [0.0] * 30}
        refused = httpx.post(server.infer_url, json={"inputs": [wrong_tensor]})
    # then the refusal says what was expected, and every metric of the convention moved by as much
    assert refused.status_code == 400
    assert "expected 'features' (FP64, shape [-1, 30])" in refused.json()["error"]
    assert moved("model_requests_total", code="200") == 3
    assert moved("model_requests_total", code="400") == 1
    assert moved("model_request_errors_total") == 1
    assert moved("model_request_duration_seconds_count") == 4
    assert moved("model_predictions_count") == 21
    assert moved("model_predictions_bucket", le="+Inf") == 21
    assert moved("model_nonfinite_outputs_total") == 0
    assert moved("model_input_invariant_violations_total") == 0
    # and the prediction buckets are the documented ones
    buckets = {dict(labels)["le"] for name, labels in moved.after if name == "model_predictions_bucket"}
    assert buckets == {*(str(bound) for bound in SCORE_BUCKETS), "+Inf"}


def test_feedback_by_request_id_and_for_another_version(server_of: ServerOf) -> None:
    # given a prediction the server remembers by id
    server = server_of(Variant.BETTER)
    predicted = outputs(infer(server, load_dataset().test_features[:1], request_id="fb-1"))["label"][0]
    feedback_url = f"{server.url}/v2/models/{MODEL}/feedback"
    # when its true label arrives by id, and feedback about another version's prediction arrives too
    with metrics_moved(server) as moved:
        by_id = httpx.post(feedback_url, json={"id": "fb-1", "label": predicted, "slice": "probe"})
        relayed = httpx.post(feedback_url, json={"prediction": 1, "version": "v-other", "label": 0, "slice": "probe"})
        unknown = httpx.post(feedback_url, json={"id": "never-sent", "label": 0})
    # then each is counted for the version that made the prediction, correct or not
    assert by_id.json() == {"version": "v-better", "slice": "probe", "correct": True}
    assert relayed.json() == {"version": "v-other", "slice": "probe", "correct": False}
    assert moved("model_feedback_total", slice="probe") == 1
    assert moved("model_feedback_correct_total", slice="probe") == 1
    assert moved("model_feedback_total", version="v-other", slice="probe") == 1
    assert moved("model_feedback_correct_total", version="v-other", slice="probe") == 0
    # and an id it never saw, without a prediction, is refused
    assert unknown.status_code == 404


def test_traffic_feedback_shows_the_slice_regression_only_on_its_slice(server_of: ServerOf) -> None:
    # given the baseline and the candidate with a broken threshold for 'borderline' tumours
    dataset = load_dataset()
    slices = slice_names(dataset.test_features)
    accuracy: dict[Variant, dict[str, float]] = {}
    for variant in (Variant.GOOD, Variant.SLICE_REGRESSION):
        server = server_of(variant)
        # when the traffic generator replays the test split once against each
        settings = TrafficSettings(
            url=server.url, rate_per_second=2000, max_requests=len(dataset.test_labels), max_seconds=60, seed=3
        )
        with metrics_moved(server) as moved:
            summary = replay(settings)
        assert summary.sent == len(dataset.test_labels)
        assert not summary.failures
        # then the server counted one feedback per row, by slice, as the client saw it
        tallies = summary.by_version[server.version]
        assert set(tallies) == set(slices)
        for name, tally in tallies.items():
            assert moved("model_feedback_total", slice=name) == slices.count(name) == tally.answered
            assert moved("model_feedback_correct_total", slice=name) == tally.correct
        accuracy[variant] = {
            "all": sum(tally.correct for tally in tallies.values()) / len(slices),
            "borderline": tallies["borderline"].correct / tallies["borderline"].answered,
        }
    # and the candidate is better on average but clearly worse on the borderline slice
    assert accuracy[Variant.SLICE_REGRESSION]["all"] > accuracy[Variant.GOOD]["all"]
    assert accuracy[Variant.SLICE_REGRESSION]["borderline"] < accuracy[Variant.GOOD]["borderline"] - 0.1


def test_nan_variant_answers_nan_and_counts_nonfinite_outputs(server_of: ServerOf) -> None:
    # given the variant with an unguarded 0/0 feature, and the rows without concavity
    server = server_of(Variant.NAN_OUTPUTS)
    rows = load_dataset().test_features
    without_concavity = int(np.sum(rows[:, 6] == 0))
    assert without_concavity > 0
    # when it scores the whole test split
    with metrics_moved(server) as moved:
        scores = outputs(infer(server, rows))["score"]
    # then exactly those rows score NaN, are counted as non-finite and as invariant violations,
    # and stay out of the prediction histogram
    assert sum(math.isnan(score) for score in scores) == without_concavity
    assert moved("model_nonfinite_outputs_total") == without_concavity
    assert moved("model_input_invariant_violations_total") == without_concavity
    assert moved("model_predictions_count") == len(rows) - without_concavity


def test_unscaled_variant_breaks_the_input_invariants_on_every_row(server_of: ServerOf) -> None:
    # given the variant served without its scaler
    server = server_of(Variant.UNSCALED)
    # when it scores 20 rows
    with metrics_moved(server) as moved:
        assert infer(server, load_dataset().test_features[:20]).status_code == 200
    # then every row falls outside the range the estimator was fitted on
    assert moved("model_input_invariant_violations_total") == 20


def prediction_shares(server: RunningServer, rows: np.ndarray) -> np.ndarray:
    """Share of `rows` in each model_predictions bucket, read from the server's /metrics
    (Prometheus buckets are cumulative: differenced back here). Half a count is added to every
    bucket so that empty ones keep the PSI finite."""
    with metrics_moved(server) as moved:
        assert infer(server, rows).status_code == 200
    cumulative = [moved("model_predictions_bucket", le=str(bound)) for bound in SCORE_BUCKETS]
    counts = np.diff([0.0, *cumulative]) + 0.5
    return np.asarray(counts / counts.sum())


def population_stability_index(baseline: np.ndarray, candidate: np.ndarray) -> float:
    return float(np.sum((candidate - baseline) * np.log(candidate / baseline)))


def test_drifted_variant_moves_the_prediction_histogram_and_better_does_not(server_of: ServerOf) -> None:
    # given the baseline, the good candidate and the drifted one
    rows = load_dataset().test_features
    # when each scores the whole test split
    variants = (Variant.GOOD, Variant.BETTER, Variant.DRIFTED)
    shares = {variant: prediction_shares(server_of(variant), rows) for variant in variants}
    # then, measured from /metrics, only the drifted one crosses the usual PSI limit of 0.2
    assert population_stability_index(shares[Variant.GOOD], shares[Variant.BETTER]) < 0.1
    assert population_stability_index(shares[Variant.GOOD], shares[Variant.DRIFTED]) > 0.3


def test_stop_leaves_no_process_behind() -> None:
    # given a running server
    server = start_model_server(variant=Variant.GOOD, model_name=MODEL, version="v-stop")
    pid = server.process.pid
    # when it is stopped
    server.stop()
    # then the process is gone and the port refuses connections
    assert server.process.poll() is not None
    assert not os.path.exists(f"/proc/{pid}")
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{server.url}/v2/health/live")


def test_a_killed_parent_takes_its_servers_with_it(tmp_path: Path) -> None:
    # given a Python process that started a server and then is killed without cleaning up
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT_THAT_DIES], stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT
    )
    assert parent.stdout is not None
    server_pid = int(parent.stdout.readline())
    assert os.path.exists(f"/proc/{server_pid}")
    # when the parent is killed
    parent.kill()
    parent.wait()
    # then the server ends too (the kernel sends it SIGTERM)
    deadline = time.monotonic() + 10
    while os.path.exists(f"/proc/{server_pid}") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not os.path.exists(f"/proc/{server_pid}")
