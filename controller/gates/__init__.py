"""Pre-traffic gates: one module per gate, each exporting one `GatePlugin` (see `plugin`), found by
its key under spec.gates. Adding a gate is one module and one line below (docs/architecture.md,
"Adding a plug-in")."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from controller.gates import contract_gate, golden_set_gate
from controller.gates.plugin import GatePlugin
from controller.plugins import registry as keyed

__all__ = ["GATES", "GatePlugin", "registry"]


def registry(plugins: Iterable[GatePlugin]) -> Mapping[str, GatePlugin]:
    """The gates by key, in the order they run: the contract first, always (it fixes the tensors
    every later gate sends and compares), then `plugins` in the order given. A key given twice
    is a mistake in the tuple, caught at import."""
    return keyed((contract_gate.PLUGIN, *plugins), under="spec.gates")


GATES: Mapping[str, GatePlugin] = registry((golden_set_gate.PLUGIN,))
"""The key configuring a gate under spec.gates -> its plug-in, in the order the gates run."""
