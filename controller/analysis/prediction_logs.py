"""Reading a version's prediction log from its model server (docs/model-metrics.md, "The
prediction log"): the I/O edge of the paired check. The join is pure (controller.analysis.pairing).

The server is the version's `spec.versions[].endpoint`, the same base URL the pre-traffic gates
call; requests go through the outbound fence (controller.outbound) like every request a rollout
asks for.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import httpx

from controller.analysis.pairing import LoggedPrediction, MalformedPredictionLog, parse_prediction_log
from controller.analysis.providers import InvalidQuery, ProviderUnavailable
from controller.outbound import DEFAULT_POLICY, OutboundPolicy, OutboundRefused, fenced_transport

PREDICTION_LOG_PATH = "/v2/models/{model}/predictions"
DEFAULT_TIMEOUT_SECONDS = 10.0
MAX_PAGES = 20
"""Pages read per log and look (a server answers at most 50 000 rows a page): a mirror step of an
hour at 250 requests/s; a longer window is judged on its first million rows."""


@runtime_checkable
class JudgedOnPredictionLogs(Protocol):
    """A sequential test whose counts are the baseline's and the candidate's prediction logs joined
    request by request, read from the versions' model servers rather than from Prometheus. The
    analysis checker reads both logs over the look's segment and keeps what `pair` makes of them
    as the look's counts."""

    def pair(
        self, *, candidate: Sequence[LoggedPrediction], baseline: Sequence[LoggedPrediction]
    ) -> tuple[dict[str, float], dict[str, float]]:
        """The counts of one look, (candidate's, baseline's), from the rows both logs hold."""
        ...


@dataclass(frozen=True, kw_only=True)
class PredictionLogReader:
    outbound: OutboundPolicy = DEFAULT_POLICY
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS
    transport: httpx.BaseTransport | None = None
    """None: the real network (tests may pass an httpx.MockTransport); fenced either way."""

    def read(self, *, endpoint: str, model: str, since: float) -> list[LoggedPrediction]:
        """Every row the server logged at or after `since` (Unix seconds), oldest first.
        ProviderUnavailable when it cannot answer now; InvalidQuery when its answer breaks the
        convention or the fence refuses the endpoint (a person must fix either)."""
        url = endpoint.rstrip("/") + PREDICTION_LOG_PATH.format(model=model)
        rows: list[LoggedPrediction] = []
        start = since
        transport = fenced_transport(self.outbound, transport=self.transport)
        with httpx.Client(transport=transport, timeout=self.timeout_seconds) as client:
            for _ in range(MAX_PAGES):
                page = _page(client, url, since=start)
                rows.extend(page.rows)
                if not page.truncated or page.last_time <= start:
                    break
                # The next page starts at the last row's time; rows of that very moment come
                # again, and the join keeps one row per request id.
                start = page.last_time
        return rows


@dataclass(frozen=True, kw_only=True)
class _Page:
    rows: list[LoggedPrediction]
    truncated: bool
    """The server left rows out: read on from `last_time`."""
    last_time: float


def _page(client: httpx.Client, url: str, *, since: float) -> _Page:
    try:
        answer = client.get(url, params={"since": f"{since:.3f}"})
    except OutboundRefused as refused:
        raise InvalidQuery(f"prediction log {url}: {refused}") from refused
    except httpx.HTTPError as error:
        raise ProviderUnavailable(f"prediction log {url}: {type(error).__name__}: {error}") from error
    if answer.status_code >= 500 or answer.status_code in (408, 425, 429):
        raise ProviderUnavailable(f"prediction log {url}: HTTP {answer.status_code}")
    if answer.status_code != 200:
        raise InvalidQuery(
            f"prediction log {url}: HTTP {answer.status_code}; does the model server log predictions "
            "(docs/model-metrics.md, the prediction log)?"
        )
    try:
        body = answer.json()
        rows = parse_prediction_log(body)
    except (ValueError, MalformedPredictionLog) as error:
        raise InvalidQuery(f"prediction log {url}: {error}") from error
    last = body["predictions"][-1].get("time") if rows else None
    last_time = float(last) if isinstance(last, int | float) and not isinstance(last, bool) else since
    return _Page(rows=rows, truncated=body.get("truncated") is True, last_time=last_time)
