"""What the gates raise, in the retry-meaning tree of `controller.errors`.

* `GateInputError` (a `PermanentError`): something the gates were given cannot be used (a
  malformed spec.gates, golden set, contract or server answer); the gates fail naming it.
* `OipUnavailable` (a `TemporaryError`): a model server could not answer now; the gates wait.
* `EndpointRefused` (a `PermanentError`): the outbound fence refused a version's endpoint; the
  gates fail naming the endpoint field.

A golden set's ConfigMap that is missing is none of these: it is a
`controller.errors.ReferenceProblem`, raised out of the checker, so the rollout waits for it with
ReferencesValid=False like for any missing object.
"""

from __future__ import annotations

from typing import Any

from controller.errors import PermanentError, TemporaryError
from controller.outbound import OutboundRefused

QUOTE_LIMIT = 40
"""Characters of a bad value a message quotes: the value may come from a server's answer."""


def quoted(value: Any) -> str:
    """`repr(value)`, cut to QUOTE_LIMIT characters."""
    text = repr(value)
    return text if len(text) <= QUOTE_LIMIT else f"{text[: QUOTE_LIMIT - 3]}..."


class GateInputError(PermanentError, ValueError):
    """A contract, golden set or server answer is malformed; the message says what and where.

    Also a ValueError: the spec parsers' backstop (`controller.api.refusing_malformed`) raises
    this type for spec.gates, and it raises ValueErrors."""

    reason = "GateInputInvalid"

    def __init__(self, where: str, problem: str) -> None:
        super().__init__(f"{where}: {problem}")
        self.where = where
        """Where the bad value is, e.g. `ConfigMap shop/golden key requests.json [3].inputs[0].shape`."""
        self.problem = problem
        """What is wrong with it, and the fix when there is an obvious one."""


class OipUnavailable(TemporaryError):
    """A model server could not answer now (connection, timeout, 503); retrying may help."""

    reason = "ModelServerUnavailable"


class EndpointRefused(PermanentError):
    """The outbound fence refused a request to a model server before it was sent
    (`controller.outbound.OutboundRefused`); changing the endpoint or the allow list fixes it."""

    reason = "EndpointRefused"

    def __init__(self, refused: OutboundRefused) -> None:
        super().__init__(str(refused))
        self.host = refused.host
        """The endpoint's host, as written."""
        self.why = refused.reason
        """Why it was refused, e.g. `it is a cloud metadata address (169.254.169.254/32)`."""
