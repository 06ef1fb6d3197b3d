"""Retry meaning lives in the exception type.

Exception
 └── ReconcileError               anything a reconcile pass can raise on purpose
      ├── TemporaryError          try again after `delay` seconds (API hiccup, conflict, timeout)
      │    ├── RouteWriteLoop     one route written too often: something fights the controller
      │    ├── ProviderUnavailable   (analysis.providers) a metric provider did not answer now
      │    └── OipUnavailable        (gates.errors) a model server did not answer now: the gates wait
      └── PermanentError          retrying will not help until a person changes something
           ├── ReferenceProblem   a referenced object is missing or does not fit: the rollout waits
           │    │                 with ReferencesValid=False, no traffic change, until it is fixed
           │    │                 or the progress deadline passes
           │    └── RouteOwnedElsewhere   (routers.ownership) the route is claimed by another rollout
           ├── UnsafeTrafficSplit a route write that would break the traffic split, refused
           ├── InvalidQuery       (analysis.providers) a query or request a person must fix: the
           │                      metric's measurement is a permanent error
           ├── ProfileError       (analysis.profile) a training profile that cannot be used
           ├── GateInputError     (gates.errors) a contract, golden set or server answer that cannot
           │                      be used: the gates fail naming it
           └── EndpointRefused    (gates.errors) a model server's endpoint the outbound fence refuses

Whatever the object, a missing one is a ReferenceProblem, found where it is read: a Service,
Deployment or route by the reconciler and its router, an AnalysisTemplate, a ConfigMap (golden set,
training profile) or a Secret (web metric headers) by the checker that reads it, while the rollout
is Pending (`Checker.validate`) and again whenever it is read later.

Not in this tree: `controller.api.SpecError`, a mistake in the spec or in a template it names
(SpecValid=False: the rollout fails, all traffic on the stable version; checked while Pending, so
before any weight moves; nothing is retried until the spec changes or a person asks for a retry).
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
    """An object the rollout names that does not exist or does not fit: a route, backend, Service,
    Deployment, AnalysisTemplate, ConfigMap or Secret. The message names the object and the field
    to fix; the reconciler reports it as ReferencesValid=False and moves no traffic meanwhile."""


class UnsafeTrafficSplit(PermanentError):
    """A route write refused before it was sent: it would not give the versions 100 % between them."""

    reason = "UnsafeSplitRefused"
