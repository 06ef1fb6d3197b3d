"""The prediction log: what the server predicted for each request, by request id, served at
`GET /v2/models/{name}/predictions` (docs/model-metrics.md, "The prediction log").

A paired check joins the baseline's and the candidate's logs by request id: during a mirror step
both versions answer the very same requests (the gateway copies each one, `x-request-id`
included), so each request the two logs share is one paired comparison. Pure; the HTTP layer is
in `app`.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

REQUEST_ID_HEADER = "x-request-id"
"""The join key a gateway sets on every request it routes and keeps on its mirrored copies."""
KEPT_PREDICTIONS = 100_000
"""Rows kept, newest last (about 15 minutes at 100 requests/s); older ones are dropped."""
MAX_ANSWERED_ROWS = 50_000
"""Most rows one answer carries; a reader wanting more asks again from the last time it got."""


@dataclass(frozen=True, kw_only=True)
class LoggedPrediction:
    request_id: str
    row: int
    """The row's index within its request (0 for the usual one-row request)."""
    time: float
    """When the answer was made, Unix seconds."""
    label: int
    score: float | None
    """The score of the class of interest; None when it was not finite (JSON has no NaN)."""

    def as_json(self) -> dict[str, object]:
        return {"requestId": self.request_id, "row": self.row, "time": round(self.time, 3), "label": self.label,
                "score": self.score}  # fmt: skip


def request_id(*, headers: Mapping[str, str], body_id: str) -> str:
    """The id a paired check joins on: the gateway's `x-request-id` when the request came through
    one (a copy carries the original's), else the request's own `id`."""
    return headers.get(REQUEST_ID_HEADER) or body_id


class PredictionLog:
    """The last KEPT_PREDICTIONS rows predicted, oldest first. Written and read on the event-loop
    thread only (see app.ModelServer), so it needs no lock."""

    def __init__(self, *, kept: int = KEPT_PREDICTIONS) -> None:
        self._rows: deque[LoggedPrediction] = deque(maxlen=kept)

    def record(self, *, request_id: str, time: float, labels: Sequence[int], scores: Sequence[float]) -> None:
        for row, (label, score) in enumerate(zip(labels, scores, strict=True)):
            finite = score if math.isfinite(score) else None
            self._rows.append(LoggedPrediction(request_id=request_id, row=row, time=time, label=label, score=finite))

    def since(self, start: float, *, limit: int = MAX_ANSWERED_ROWS) -> tuple[list[LoggedPrediction], bool]:
        """Rows predicted at or after `start`, oldest first, at most `limit`; and whether more were left out."""
        found = [entry for entry in self._rows if entry.time >= start]
        return found[:limit], len(found) > limit
