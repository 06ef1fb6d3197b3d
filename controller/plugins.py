"""The registries of plug-ins: a tuple of plug-in objects, each found by its key.

Metric providers, model checks and gates are each one module exporting one plug-in object, listed
once in their package's registry tuple (docs/architecture.md, "Adding a plug-in")."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol, TypeVar


class Keyed(Protocol):
    @property
    def key(self) -> str:
        """Where the spec configures the plug-in: the key of its block."""
        ...


Plugin = TypeVar("Plugin", bound=Keyed)


def registry(plugins: Iterable[Plugin], *, under: str) -> Mapping[str, Plugin]:
    """Plug-ins by key, in the order given (the order the spec's keys are listed in messages); a
    key given twice is a mistake in the tuple, caught at import. `under` says where the keys sit
    in the spec, for that message."""
    table: dict[str, Plugin] = {}
    for plugin in plugins:
        if plugin.key in table:
            raise ValueError(f"two plug-ins under {under}.{plugin.key}")
        table[plugin.key] = plugin
    return table
