"""The controller's own sinks, told about every rollout it owns: `--notifications-config FILE`.

The file is YAML (or JSON), normally a key of a Secret mounted into the controller's pod (the
chart's `notifications.secretName`), so the URLs and headers, which are credentials, stay in a
Secret and the controller needs no right to read Secrets for them:

    sinks:
      - name: oncall-slack
        type: slack                      # or webhook: the notification as JSON
        url: https://hooks.slack.com/services/T000/B000/XXXX
        kinds: [RolledBack, Failed, Aborted, PausedForPerson]   # leave out for every kind
      - name: incident-bot
        type: webhook
        url: https://bot.example/hooks/rollouts
        headers: {Authorization: Bearer s3cret}

It is read once, at start: a mistake stops the controller with an error naming the field (never
a URL or a header's value). A changed Secret takes effect when the controller restarts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from controller.notify.notification import Kind
from controller.notify.sinks import SINK_TYPES, Sink

KINDS = ", ".join(kind.value for kind in Kind)


class ConfigError(ValueError):
    """The notifications config cannot be used; the message names the file and the field."""


@dataclass(frozen=True, kw_only=True)
class ControllerSink:
    """A sink of the controller's config."""

    sink: Sink
    """Where notifications go; its name is the config's `name`."""
    kinds: frozenset[Kind] = frozenset()
    """Kinds sent to it; empty sends every kind."""


def load_config(path: Path) -> tuple[ControllerSink, ...]:
    """The sinks of the file at `path`; ConfigError when it cannot be read or used."""
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"{path}: cannot be read as YAML: {type(error).__name__}") from None
    return parse_config(raw, source=str(path))


def parse_config(raw: object, *, source: str) -> tuple[ControllerSink, ...]:
    """The sinks of a config document; ConfigError naming `source` and the field."""
    if not isinstance(raw, Mapping) or not isinstance(raw.get("sinks"), list):
        raise ConfigError(f"{source}: sinks: is required, a list of {{name, type, url}}; see docs/incidents.md")
    sinks = []
    names: set[str] = set()
    for index, item in enumerate(raw["sinks"]):
        where = f"{source}: sinks[{index}]"
        if not isinstance(item, Mapping):
            raise ConfigError(f"{where}: must be an object with name, type and url")
        name = item.get("name")
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{where}.name: is required: names the sink in Events, logs and metrics")
        if name in names:
            raise ConfigError(f"{where}.name: {name!r} names another sink too; give each its own name")
        names.add(name)
        kind = item.get("type")
        if not isinstance(kind, str) or kind not in SINK_TYPES:
            raise ConfigError(f"{where}.type: {kind!r} is not one of {', '.join(SINK_TYPES)}")
        url = item.get("url")
        headers = item.get("headers") or {}
        if not isinstance(url, str):
            raise ConfigError(f"{where}.url: is required, the sink's http:// or https:// URL")
        if not isinstance(headers, Mapping) or not all(isinstance(v, str) for v in headers.values()):
            raise ConfigError(f"{where}.headers: must map header names to strings")
        try:
            sink = SINK_TYPES[kind](name=name, url=url, headers={str(k): v for k, v in headers.items()})
        except ValueError as error:
            # The sinks' own errors name no part of the URL or of a header's value.
            raise ConfigError(f"{where}: {error}") from None
        sinks.append(ControllerSink(sink=sink, kinds=parse_kinds(item.get("kinds"), where=f"{where}.kinds")))
    return tuple(sinks)


def parse_kinds(raw: object, *, where: str) -> frozenset[Kind]:
    """`kinds`: notification kinds by name; absent or empty is every kind."""
    if raw is None:
        return frozenset()
    if not isinstance(raw, list):
        raise ConfigError(f"{where}: must be a list of kinds, e.g. [RolledBack, Failed]")
    known = {kind.value: kind for kind in Kind}
    unknown = [name for name in raw if name not in known]
    if unknown:
        raise ConfigError(f"{where}: {unknown[0]!r} is not a kind; use some of {KINDS}")
    return frozenset(known[name] for name in raw)
