"""The pieces every part of an analysis configuration is parsed with: numbers, durations, texts,
PromQL queries and their template variables, each raising `SpecError` naming the field.

Kept apart from `spec` so that the plug-ins (metric providers, model checks) parse their own
blocks with the same rules and messages as the rest of a metric, without importing `spec`, which
imports their registries.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from controller.api import SpecError, check_http_url, parse_duration

TEMPLATE_VARIABLES = frozenset({"model", "version", "namespace", "window", "service", "port"})
"""What `{{...}}` may name in a query, URL or body. `service` and `port` are the backend of the
version measured (spec.versions[].backend), so only rollouts whose versions have one can use them."""
_TEMPLATE_VARIABLE = re.compile(r"\{\{\s*([A-Za-z_]\w*)\s*\}\}")
PROMETHEUS_URL_EXAMPLE = "http://prometheus.monitoring:9090"


def render_template(text: str, variables: Mapping[str, str]) -> str:
    """`text` with every `{{name}}` replaced by `variables[name]`."""
    return _TEMPLATE_VARIABLE.sub(lambda match: variables[match.group(1)], text)


def promql_string(text: str) -> str:
    """`text` as it may stand between the double quotes of a PromQL string."""
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def check_template(text: str, field_path: str) -> str:
    unknown = sorted({m.group(1) for m in _TEMPLATE_VARIABLE.finditer(text)} - TEMPLATE_VARIABLES)
    if unknown:
        raise SpecError(
            field_path,
            f"unknown template variable(s) {', '.join(unknown)}; use only "
            + ", ".join(f"{{{{{name}}}}}" for name in sorted(TEMPLATE_VARIABLES)),
        )
    return text


def number(raw: Mapping[str, Any], key: str, path: str, *, minimum: float | None = None) -> float | None:
    value = raw.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise SpecError(f"{path}.{key}", f"{value!r} is not a number")
    if minimum is not None and value < minimum:
        raise SpecError(f"{path}.{key}", f"{value!r} is below {minimum:g}; give {minimum:g} or more")
    return float(value)


def whole(raw: Mapping[str, Any], key: str, path: str, *, minimum: int) -> int | None:
    value = raw.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SpecError(f"{path}.{key}", f"{value!r} is not a whole number of at least {minimum}")
    return value


def whole_or(raw: Mapping[str, Any], key: str, path: str, *, default: int, minimum: int) -> int:
    value = whole(raw, key, path, minimum=minimum)
    return default if value is None else value


def text(raw: Mapping[str, Any], key: str, path: str) -> str:
    value = raw.get(key)
    if not isinstance(value, str) or not value.strip():
        raise SpecError(f"{path}.{key}", "is required (a non-empty string)")
    return value


def duration(raw: Mapping[str, Any], key: str, path: str) -> float | None:
    value = raw.get(key)
    if value is None:
        return None
    seconds = parse_duration(str(value), field_path=f"{path}.{key}")
    if seconds <= 0:
        raise SpecError(f"{path}.{key}", "must be longer than 0s")
    return seconds


def prometheus_address(raw: Mapping[str, Any], path: str) -> str | None:
    """`address` in `raw`, the base URL of another Prometheus; None for the controller's default."""
    value = raw.get("address")
    if value is None:
        return None
    return check_http_url(value, field_path=f"{path}.address", example=PROMETHEUS_URL_EXAMPLE)


def query(raw: Mapping[str, Any], key: str, path: str, *, default: str) -> str:
    value = raw.get(key)
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise SpecError(f"{path}.{key}", "is a PromQL query (a non-empty string)")
    return check_template(value or default, f"{path}.{key}")


def fraction(raw: Mapping[str, Any], key: str, path: str) -> float | None:
    value = number(raw, key, path, minimum=0.0)
    if value is not None and value > 1:
        raise SpecError(f"{path}.{key}", f"{value:g} is above 1; give a share between 0 and 1")
    return value


def given(**values: float | None) -> dict[str, float]:
    """The keyword arguments that were given, so the dataclass defaults stand for the rest."""
    return {key: value for key, value in values.items() if value is not None}
