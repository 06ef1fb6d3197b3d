"""Parsers the gates' configurations share. Pure; raise GateInputError naming the field."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from controller.gates.errors import GateInputError


def block(raw: Any, where: str) -> Mapping[str, Any]:
    """An object at `where`; absent (null) is an empty one."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise GateInputError(where, "must be an object")
    return raw


def number(raw: Mapping[str, Any], key: str, where: str, default: float | None) -> float | None:
    """`raw[key]` as a float, `default` when absent."""
    value = raw.get(key, default)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise GateInputError(f"{where}.{key}", f"{value!r} is not a number")
    return None if value is None else float(value)
