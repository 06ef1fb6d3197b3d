"""Retry meaning lives in the exception type.

Exception
 └── ReconcileError           anything a reconcile pass can raise on purpose
      ├── TemporaryError      try again after `delay` seconds (API hiccup, conflict, timeout)
      │    └── RouteWriteLoop one route written too often: something fights the controller
      └── PermanentError      retrying will not help until a person changes something
           ├── ReferenceProblem   a referenced object is missing or does not fit
           └── UnsafeTrafficSplit a route write that would break the traffic split, refused
"""

from __future__ import annotations

DEFAULT_TEMPORARY_DELAY_SECONDS = 5.0


class ReconcileError(Exception):
    """Base of the errors a reconcile pass raises on purpose."""

    reason = "ReconcileFailed"
    """The reason of the condition and Warning Event that report the error on the rollout."""


class TemporaryError(ReconcileError):
    def __init__(self, message: str, *, delay: float = DEFAULT_TEMPORARY_DELAY_SECONDS) -> None:
        super().__init__(message)
        self.delay = delay


class RouteWriteLoop(TemporaryError):
    """Writes to one route stopped for a while: too many within a minute."""

    reason = "RouteWriteLoop"


class PermanentError(ReconcileError):
    """Needs a person: reported in a condition and an Event, not retried in a tight loop."""


class ReferenceProblem(PermanentError):
    """A route, backend, Service or Deployment that does not exist or does not fit."""


class UnsafeTrafficSplit(PermanentError):
    """A route write refused before it was sent: it would not give the versions 100 % between them."""

    reason = "UnsafeSplitRefused"
