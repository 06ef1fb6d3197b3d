"""The one error the gates raise on purpose: something they were given cannot be used."""

from __future__ import annotations

from typing import Any

QUOTE_LIMIT = 40
"""Characters of a bad value a message quotes: the value may come from a server's answer."""


def quoted(value: Any) -> str:
    """`repr(value)`, cut to QUOTE_LIMIT characters."""
    text = repr(value)
    return text if len(text) <= QUOTE_LIMIT else f"{text[: QUOTE_LIMIT - 3]}..."


class GateInputError(ValueError):
    """A contract, golden set or server answer is malformed; the message says what and where."""

    def __init__(self, where: str, problem: str) -> None:
        super().__init__(f"{where}: {problem}")
        self.where = where
        """Where the bad value is, e.g. `ConfigMap shop/golden key requests.json [3].inputs[0].shape`."""
        self.problem = problem
        """What is wrong with it, and the fix when there is an obvious one."""
