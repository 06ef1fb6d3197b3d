"""The small JSON path subset the web provider reads values with: `$.a.b`, `$['a b']`, `$.items[0]`."""

from __future__ import annotations

import re
from typing import Any

_STEP = re.compile(r"\.([A-Za-z_][\w-]*)|\[(\d+)\]|\['([^']*)'\]|\[\"([^\"]*)\"\]")


class JsonPathError(ValueError):
    """The path is not written in the supported subset."""


def parse_json_path(path: str) -> tuple[str | int, ...]:
    """The keys (str) and list indexes (int) of `path`, in order."""
    if not path.startswith("$"):
        raise JsonPathError(f"{path!r} must start with $")
    steps: list[str | int] = []
    pos = 1
    while pos < len(path):
        match = _STEP.match(path, pos)
        if match is None:
            raise JsonPathError(
                f"{path!r} is not supported at {path[pos:]!r}; write keys as .name or ['name'] and list items as [0]"
            )
        name, index, single, double = match.groups()
        steps.append(int(index) if index is not None else next(s for s in (name, single, double) if s is not None))
        pos = match.end()
    return tuple(steps)


class _Missing:
    """Marks a path that leads nowhere in the document."""


MISSING = _Missing()


def lookup(document: Any, path: str) -> Any:
    """The value at `path` in `document`, or MISSING when a key or index is absent."""
    value = document
    for step in parse_json_path(path):
        value = _child(value, step)
        if value is MISSING:
            break
    return value


def _child(value: Any, step: str | int) -> Any:
    if isinstance(value, dict):
        return value.get(step, MISSING) if isinstance(step, str) else MISSING
    if isinstance(value, list) and isinstance(step, int) and step < len(value):
        return value[step]
    return MISSING
