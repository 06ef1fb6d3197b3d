"""What a model-check plug-in is: one object per module, listed once in
`controller.analysis.modelchecks.MODEL_CHECKS`.

    ModelCheckPlugin
      key           the key in a metric that configures the check ("predictionDrift", ...)
      parse_config  metric.<key> (raw JSON) and its field path -> the check's typed `ModelCheck`;
                    SpecError naming the field (checked while the spec is parsed, before any
                    weight moves)

The typed check is a `SequentialTest` (controller.analysis.judges): the counts it reads per
version, `judge` (its evidence -> the verdict of one look, with the figures kubectl shows) and
`read_reference` (what it judges against that lives in the cluster, such as a training profile's
ConfigMap). The analysis checker reads, judges and keeps status for every check the same way; it
never looks at a check's type.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from controller.analysis.judges import SequentialTest


class ModelCheck(SequentialTest, Protocol):
    """A model-aware check's typed configuration."""

    key: ClassVar[str]
    """The key in a metric that configures it."""
    rubric_items: ClassVar[tuple[str, ...]]
    """The ML Test Score items (`Monitor 7`) a measurement of the check verifies."""


@dataclass(frozen=True, kw_only=True)
class ModelCheckPlugin:
    key: str
    """The key in a metric that configures the check."""
    parse_config: Callable[[Mapping[str, Any], str], ModelCheck]
    """metric.<key> (raw JSON) and its field path -> the typed check; raises SpecError."""
