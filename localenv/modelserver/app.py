"""The HTTP server: Open Inference Protocol REST endpoints, feedback and /metrics (Starlette)."""

from __future__ import annotations

import json
import time
from collections import OrderedDict

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from localenv.modelserver.fault import PATH as FAULT_PATH
from localenv.modelserver.fault import FaultSwitch, error_rate_from
from localenv.modelserver.metrics import ModelMetrics
from localenv.modelserver.predictionlog import MAX_ANSWERED_ROWS, PredictionLog, request_id
from localenv.modelserver.protocol import (
    ProtocolError,
    decode_feedback,
    decode_infer_request,
    infer_response,
    model_metadata,
)
from localenv.modelserver.variants import ServedModel

REMEMBERED_PREDICTIONS = 100_000
"""Predicted labels kept by request id for feedback that names only the id (oldest dropped)."""


def _json(content: object, *, status_code: int = 200) -> Response:
    # allow_nan: a broken model's NaN scores go out as the JavaScript literal NaN (which Python's
    # json, httpx and numpy read) instead of failing the request; the point is to see them.
    return Response(json.dumps(content, allow_nan=True), status_code=status_code, media_type="application/json")


def _error(message: str, *, status_code: int) -> Response:
    return _json({"error": message}, status_code=status_code)


class ModelServer:
    """One model version behind the OIP endpoints. Endpoints are async and run on the event-loop
    thread, so the state below needs no lock (scoring a batch takes microseconds)."""

    def __init__(self, *, model: ServedModel, model_name: str, version: str) -> None:
        self.model = model
        self.model_name = model_name
        self.version = version
        self.metrics = ModelMetrics(model_name=model_name, version=version, profile=model.profile)
        self._predicted_labels: OrderedDict[str, int] = OrderedDict()
        self.predictions = PredictionLog()
        self.fault = FaultSwitch()

    def routes(self) -> list[Route]:
        model_paths = ("/v2/models/{name}", "/v2/models/{name}/versions/{version}")
        return [
            Route("/v2", self.server_metadata),
            Route("/v2/health/live", self.live),
            Route("/v2/health/ready", self.live),
            *(Route(path, self.metadata) for path in model_paths),
            *(Route(f"{path}/ready", self.model_ready) for path in model_paths),
            *(Route(f"{path}/infer", self.infer, methods=["POST"]) for path in model_paths),
            Route("/v2/models/{name}/feedback", self.feedback, methods=["POST"]),
            Route("/v2/models/{name}/training-profile", self.training_profile),
            Route("/v2/models/{name}/predictions", self.prediction_log),
            Route("/metrics", self.prometheus_metrics),
            Route(FAULT_PATH, self.fault_switch, methods=["GET", "POST"]),
        ]

    def _unknown_model(self, request: Request) -> Response | None:
        name, version = request.path_params["name"], request.path_params.get("version", self.version)
        if (name, version) == (self.model_name, self.version):
            return None
        return _error(f"model {name!r} version {version!r} is not served here", status_code=404)

    async def server_metadata(self, request: Request) -> Response:
        return _json({"name": "localenv-modelserver", "version": "1", "extensions": []})

    async def live(self, request: Request) -> Response:
        # The model is trained before the socket opens: a server that answers is ready.
        return _json({"live": True, "ready": True})

    async def metadata(self, request: Request) -> Response:
        return self._unknown_model(request) or _json(
            model_metadata(model_name=self.model_name, version=self.version, input_spec=self.model.input_spec)
        )

    async def model_ready(self, request: Request) -> Response:
        return self._unknown_model(request) or _json({"name": self.model_name, "ready": True})

    async def infer(self, request: Request) -> Response:
        unknown = self._unknown_model(request)
        if unknown is not None:
            return unknown
        started = time.perf_counter()
        response = self._injected_fault() or await self._answer_infer(request)
        self.metrics.record_request(status_code=response.status_code, seconds=time.perf_counter() - started)
        return response

    async def _answer_infer(self, request: Request) -> Response:
        try:
            decoded = decode_infer_request(await _body(request), expected=self.model.input_spec)
        except ProtocolError as error:
            return _error(str(error), status_code=error.status_code)
        prediction = self.model.predict(decoded.rows)
        scores = [float(score) for score in prediction.scores]
        self.metrics.record_rows(
            scores=scores,
            invariant_violations=int(prediction.invariant_violations.sum()),
            features=prediction.features,
        )
        self.predictions.record(
            request_id=request_id(headers=request.headers, body_id=decoded.request_id),
            time=time.time(),
            labels=[int(label) for label in prediction.labels],
            scores=scores,
        )
        if len(prediction.labels) == 1:
            self._remember(decoded.request_id, int(prediction.labels[0]))
        return _json(
            infer_response(
                model_name=self.model_name, version=self.version, request_id=decoded.request_id, prediction=prediction
            )
        )

    def _injected_fault(self) -> Response | None:
        """The failure the fault switch asks for this request, if any (counted like any other)."""
        if not self.fault.fails_next():
            return None
        share = f"{self.fault.error_rate:.0%}"
        return _error(f"injected fault: failing {share} of inference requests ({FAULT_PATH})", status_code=500)

    def _remember(self, request_id: str, label: int) -> None:
        self._predicted_labels[request_id] = label
        if len(self._predicted_labels) > REMEMBERED_PREDICTIONS:
            self._predicted_labels.popitem(last=False)

    async def training_profile(self, request: Request) -> Response:
        """The training reference profile (docs/checks/training-skew.md), as a training pipeline
        would publish it next to the model: what a ConfigMap for the trainingSkew check holds."""
        return self._unknown_model(request) or _json({"features": [bins.as_json() for bins in self.model.profile]})

    async def prediction_log(self, request: Request) -> Response:
        """What this version predicted since `?since=` (Unix seconds, default 0), by request id,
        oldest first, at most `?limit=` rows (docs/model-metrics.md, "The prediction log")."""
        unknown = self._unknown_model(request)
        if unknown is not None:
            return unknown
        try:
            start = float(request.query_params.get("since", "0"))
            limit = int(request.query_params.get("limit", str(MAX_ANSWERED_ROWS)))
        except ValueError:
            return _error("since is Unix seconds and limit a whole number", status_code=400)
        if not (0 < limit <= MAX_ANSWERED_ROWS):
            return _error(f"limit is from 1 to {MAX_ANSWERED_ROWS}", status_code=400)
        rows, truncated = self.predictions.since(start, limit=limit)
        return _json(
            {
                "model_name": self.model_name,
                "model_version": self.version,
                "predictions": [row.as_json() for row in rows],
                "truncated": truncated,
            }
        )

    async def feedback(self, request: Request) -> Response:
        unknown = self._unknown_model(request)
        if unknown is not None:
            return unknown
        try:
            feedback = decode_feedback(await _body(request))
        except ProtocolError as error:
            return _error(str(error), status_code=error.status_code)
        remembered = self._predicted_labels.get(feedback.request_id) if feedback.request_id else None
        if remembered is not None:
            prediction, version = remembered, self.version
        elif feedback.prediction is not None:
            prediction, version = feedback.prediction, feedback.version or self.version
        else:
            missing = f"no prediction remembered for id {feedback.request_id!r}; send 'prediction'"
            return _error(missing, status_code=404)
        correct = prediction == feedback.label
        self.metrics.record_feedback(version=version, data_slice=feedback.data_slice, correct=correct)
        return _json({"version": version, "slice": feedback.data_slice, "correct": correct})

    async def fault_switch(self, request: Request) -> Response:
        """GET: the share of inference requests failed on purpose; POST `{"errorRate": 0.3}`: set it
        (localenv/modelserver/fault.py)."""
        if request.method == "POST":
            try:
                error_rate = error_rate_from(await _body(request))
            except (ProtocolError, ValueError) as error:
                return _error(str(error), status_code=400)
            self.fault.set(error_rate)
            print(f"{FAULT_PATH}: failing {error_rate:.0%} of inference requests from now on", flush=True)
        return _json({"errorRate": self.fault.error_rate})

    async def prometheus_metrics(self, request: Request) -> Response:
        return Response(generate_latest(self.metrics.registry), media_type=CONTENT_TYPE_LATEST)


async def _body(request: Request) -> object:
    try:
        return json.loads(await request.body())
    except ValueError as error:
        raise ProtocolError(f"the body is not JSON: {error}") from error


def build_app(*, model: ServedModel, model_name: str, version: str) -> Starlette:
    return Starlette(routes=ModelServer(model=model, model_name=model_name, version=version).routes())
