"""The fault switch: makes a model server fail a share of its inference requests, on demand.

The sandbox's demo turns it on after a promotion to cause a real incident (the promoted version's
error rate rises in Prometheus, an alerting rule fires, Alertmanager tells the controller):

    curl -X POST http://127.0.0.1:<port>/admin/fault -d '{"errorRate": 0.3}'   # 0 turns it off

It lives at `/admin/fault`, outside the Open Inference Protocol's `/v2/...` paths, so the Gateway
(which routes only `/v2/models/<model>`) never exposes it; the server listens on 127.0.0.1 only.
"""

from __future__ import annotations

from collections.abc import Mapping

PATH = "/admin/fault"
FIELD = "errorRate"
ROUNDING = 1e-9


class FaultSwitch:
    """How many inference requests to fail. The failures are spread evenly (at 0.3, three requests
    in every ten, never two runs of luck): the error rate Prometheus sees is the one asked for.
    Used from the server's event-loop thread only, so it needs no lock."""

    def __init__(self) -> None:
        self.error_rate = 0.0
        """Share of inference requests answered with HTTP 500; 0 serves every one."""
        self._owed = 0.0
        """Failures owed so far: one is due each time it reaches a whole request."""

    def set(self, error_rate: float) -> None:
        self.error_rate = error_rate
        self._owed = 0.0

    def fails_next(self) -> bool:
        """Whether the request now arriving is to fail."""
        self._owed += self.error_rate
        # Less a rounding error: ten steps of 0.3 add up to 2.9999999999999996, not 3.
        if self._owed < 1.0 - ROUNDING:
            return False
        self._owed -= 1.0
        return True


def error_rate_from(body: object) -> float:
    """The share asked for by a `POST /admin/fault` body, `{"errorRate": 0.3}`; ValueError saying
    what to send otherwise."""
    value = body.get(FIELD) if isinstance(body, Mapping) else None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
        raise ValueError(
            f"{FIELD} must be a number from 0 to 1, the share of inference requests to fail "
            f'(e.g. {{"{FIELD}": 0.3}}; 0 turns the fault off); got {body!r}'
        )
    return float(value)
