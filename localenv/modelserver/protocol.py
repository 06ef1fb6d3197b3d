"""Open Inference Protocol (KServe V2) REST messages: decoding requests, encoding answers.

Pure functions; the HTTP layer is in `app`.
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from localenv.modelserver.variants import OUTPUTS, Prediction, TensorSpec

LABEL_VALUE = re.compile(r"^[A-Za-z0-9_.:-]{1,63}$")
"""Slices and versions become Prometheus label values: short, printable, bounded."""
DEFAULT_SLICE = "all"
NUMPY_TYPES = {"FP64": np.float64, "FP32": np.float32}
"""The input datatypes these models accept, with how their values are rounded on arrival."""


class ProtocolError(Exception):
    """A request the server cannot act on; the message says what is wrong and where."""

    def __init__(self, message: str, *, status_code: int = 400) -> None:
        super().__init__(message)
        self.status_code = status_code


@dataclass(frozen=True, kw_only=True)
class InferRequest:
    """A decoded inference request."""

    request_id: str
    """The request's `id`, or a fresh one when it had none."""
    rows: NDArray[np.float64]
    """Shape (n, width) as declared by the model's input tensor."""


@dataclass(frozen=True, kw_only=True)
class Feedback:
    """The true label of one earlier prediction."""

    request_id: str | None
    """The `id` of the inference request, looked up among this server's recent predictions."""
    prediction: int | None
    """The predicted label, for feedback that may reach another server than the one that predicted."""
    version: str | None
    """The version that made the prediction (from the answer's `model_version`); None = this one."""
    label: int
    data_slice: str


def decode_infer_request(body: object, *, expected: TensorSpec) -> InferRequest:
    if not isinstance(body, Mapping):
        raise ProtocolError("the request body must be a JSON object with 'inputs'")
    inputs = body.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], Mapping):
        raise ProtocolError(f"'inputs' must be a list of exactly one tensor, {_describe(expected)}")
    tensor = inputs[0]
    if tensor.get("name") != expected.name:
        raise ProtocolError(f"unknown input tensor {tensor.get('name')!r}; expected {_describe(expected)}")
    if tensor.get("datatype") != expected.datatype:
        raise ProtocolError(
            f"input {expected.name!r} has datatype {tensor.get('datatype')!r}; expected {expected.datatype}"
        )
    shape = _shape(tensor.get("shape"), expected=expected)
    values = _flatten(tensor.get("data"))
    if len(values) != math.prod(shape):
        raise ProtocolError(f"input {expected.name!r} has {len(values)} values; shape {shape} needs {math.prod(shape)}")
    rows = np.asarray(values, dtype=NUMPY_TYPES[expected.datatype]).astype(np.float64).reshape(shape)
    request_id = body.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise ProtocolError("'id' must be a string")
    return InferRequest(request_id=request_id or uuid.uuid4().hex, rows=rows)


def _describe(spec: TensorSpec) -> str:
    return f"{spec.name!r} ({spec.datatype}, shape {list(spec.shape)})"


def _shape(raw: object, *, expected: TensorSpec) -> tuple[int, ...]:
    if not isinstance(raw, list) or not all(isinstance(dim, int) and not isinstance(dim, bool) for dim in raw):
        raise ProtocolError(f"input {expected.name!r}: 'shape' must be a list of integers")
    fits = len(raw) == len(expected.shape) and all(
        want in (-1, got) and got >= 0 for got, want in zip(raw, expected.shape, strict=True)
    )
    if not fits:
        raise ProtocolError(f"input {expected.name!r} has shape {raw}; expected {list(expected.shape)}")
    return tuple(raw)


def _flatten(data: object) -> list[float]:
    if isinstance(data, (int, float)) and not isinstance(data, bool):
        return [float(data)]
    if isinstance(data, list):
        return [value for item in data for value in _flatten(item)]
    raise ProtocolError(f"'data' must hold numbers (nested lists allowed), found {type(data).__name__}")


def infer_response(*, model_name: str, version: str, request_id: str, prediction: Prediction) -> dict[str, object]:
    label_spec, score_spec = OUTPUTS
    rows = len(prediction.labels)
    return {
        "model_name": model_name,
        "model_version": version,
        "id": request_id,
        "outputs": [
            {**label_spec.as_json(), "shape": [rows], "data": [int(label) for label in prediction.labels]},
            {**score_spec.as_json(), "shape": [rows], "data": [float(score) for score in prediction.scores]},
        ],
    }


def model_metadata(*, model_name: str, version: str, input_spec: TensorSpec) -> dict[str, object]:
    return {
        "name": model_name,
        "versions": [version],
        "platform": "scikit-learn",
        "inputs": [input_spec.as_json()],
        "outputs": [spec.as_json() for spec in OUTPUTS],
    }


def decode_feedback(body: object) -> Feedback:
    if not isinstance(body, Mapping):
        raise ProtocolError("the feedback body must be a JSON object")
    label = _optional_int(body, "label")
    if label is None:
        raise ProtocolError("feedback needs 'label'")
    request_id, prediction = body.get("id"), _optional_int(body, "prediction")
    if request_id is not None and not isinstance(request_id, str):
        raise ProtocolError("'id' must be a string")
    if request_id is None and prediction is None:
        raise ProtocolError("feedback needs 'id' (of the inference request) or 'prediction'")
    return Feedback(
        request_id=request_id,
        prediction=prediction,
        version=_optional_label_value(body, "version"),
        label=label,
        data_slice=_optional_label_value(body, "slice") or DEFAULT_SLICE,
    )


def _optional_int(body: Mapping[str, object], key: str) -> int | None:
    value = body.get(key)
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    raise ProtocolError(f"{key!r} must be an integer class label")


def _optional_label_value(body: Mapping[str, object], key: str) -> str | None:
    value = body.get(key)
    if value is None or (isinstance(value, str) and LABEL_VALUE.match(value)):
        return value
    raise ProtocolError(f"{key!r} must match {LABEL_VALUE.pattern}")
