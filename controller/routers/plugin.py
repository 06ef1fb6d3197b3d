"""What a router plug-in is: one object per module, listed once in `controller.routers.ROUTERS`.

    RouterPlugin
      key           the key under spec.trafficRouting ("gatewayAPI", "istio", ...)
      kind          the kind it writes weights on: the manager watches and caches it, and a change
                    of a routed object brings its rollouts back
      parse_config  spec.trafficRouting.<key> -> the router's typed configuration; SpecError
                    naming the field (checked while the spec is parsed, before any weight moves)
      object_name   the typed configuration -> the name of the routed object (same namespace)
      build         Kube -> the Router that does the I/O
      versions      (only a router whose routed object names the versions: KServe) the Router, the
                    namespace and the typed configuration -> the `RoutedVersions` found there; the
                    spec then lists no versions, and the reconciler fills them in each pass
      applied_later True when the object shows a write only once another controller applied it
                    (KServe): after a write, the pass waits for the object's next change (watched)
                    instead of passing again at once
      mirror        (only a router that can copy requests to a version: Gateway API, Istio) Kube -> the
                    `Mirrorer` doing it; without it, a spec with a mirror step is a SpecError

A `Router` reads and writes the share of traffic each model version gets, and nothing else on
the objects it touches but the owner annotation (see `ownership`); it also says what it needs to
exist before traffic can move (`reference_problem`). Weights are percentages per version label of
spec.versions; `owner` is the name of the ModelRollout acting.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from controller.api import Mirror, ModelRolloutSpec, SpecError
from controller.errors import ReferenceProblem
from controller.kube import Kube

Config = TypeVar("Config")


@dataclass(frozen=True, kw_only=True)
class RoutedKind:
    """The kind of object a router writes weights on."""

    group: str
    version: str
    plural: str


@dataclass(frozen=True, kw_only=True)
class RoutedVersions:
    """The versions a routed object names (KServe: an InferenceService's predictor revisions)."""

    stable: str
    """The version the object serves in full when no rollout runs (KServe: the rolled-out revision)."""
    candidate: str | None
    """The newest version, to roll out; None when the newest is `stable`: nothing to roll out."""
    guarded: bool = True
    """False when the object would send the candidate all traffic on its own once it is ready
    (KServe: canaryTrafficPercent absent): a rollout that has not moved traffic yet writes the
    stable split at once."""


class Router(Protocol):
    def read_weights(
        self, *, namespace: str, spec: ModelRolloutSpec, owner: str, replacing: str | None = None
    ) -> dict[str, int]:
        """Percent per version as the route has it; raises ReferenceProblem when it cannot read,
        RouteOwnedElsewhere when another rollout owns the route. An unowned route is claimed for
        `owner` by its first `write_weights`; one owned by `replacing` (an owner found to be gone)
        is claimed at once."""
        ...

    def write_weights(
        self, *, namespace: str, spec: ModelRolloutSpec, weights: Mapping[str, int], owner: str
    ) -> dict[str, int]:
        """Sets the split (versions not named get 0), claiming the route for `owner` in the same
        write, and returns the split as stored by the API server."""
        ...

    def release(self, *, namespace: str, spec: ModelRolloutSpec, owner: str) -> None:
        """Removes `owner`'s claim from the route, if it is there (the route may be gone)."""
        ...

    def reference_problem(self, *, namespace: str, spec: ModelRolloutSpec, versions: tuple[str, ...]) -> str | None:
        """What must exist before `versions` get traffic and does not (a Service, a port, a
        subset), said with the field to fix; None when nothing is missing."""
        ...


class Mirrorer(Protocol):
    """The optional capability of a router to copy a share of the routed requests to one version
    (shadow traffic); the copies' answers are discarded. It reads and writes only the mirror it
    owns on the object, under the same rules as the weights: the owner annotation, claimed by the
    first write, and writes guarded by the resourceVersion read."""

    def read_mirror(self, *, namespace: str, spec: ModelRolloutSpec, owner: str) -> Mirror | None:
        """The mirror the controller set on the route (None: none); raises ReferenceProblem when
        the route cannot be read, RouteOwnedElsewhere when another rollout owns it."""
        ...

    def write_mirror(
        self, *, namespace: str, spec: ModelRolloutSpec, mirror: Mirror | None, owner: str
    ) -> Mirror | None:
        """Sets the mirror (None removes the controller's), leaving everything else on the route as
        it is, and returns it as the API server stored it."""
        ...


@dataclass(frozen=True, kw_only=True)
class RouterPlugin:
    key: str
    """The key under spec.trafficRouting."""
    kind: RoutedKind
    """The kind of the routed object: watched, cached, and a change of one brings back its rollouts."""
    parse_config: Callable[[Any], object]
    """spec.trafficRouting.<key> (raw JSON) -> the typed configuration; raises SpecError."""
    object_name: Callable[[Any], str]
    """The typed configuration -> the routed object's name."""
    build: Callable[[Kube], Router]
    """The Router doing this plug-in's I/O."""
    versions: Callable[[Any, str, Any], RoutedVersions] | None = None
    """(the Router built, namespace, typed configuration) -> the versions the routed object names,
    raising ReferenceProblem when it cannot be read; None for routers whose versions the spec lists."""
    applied_later: bool = False
    """The routed object shows a write only once another controller has applied it."""
    mirror: Callable[[Kube], Mirrorer] | None = None
    """The Mirrorer copying requests to a version on the routed object; None: this router cannot
    mirror, and a spec with a mirror step is refused (SpecError naming the step and the router)."""

    def routed_object(self, raw: object) -> str | None:
        """The routed object's name from a raw configuration, None when it does not parse."""
        try:
            return self.object_name(self.parse_config(raw))
        except SpecError:
            return None


def config_of(spec: ModelRolloutSpec, kind: type[Config], parse: Callable[[Any], Config]) -> Config:
    """The router's typed configuration: the one parsed with the spec, or parsed now (a spec built
    by other code); a configuration that does not parse is a reference problem here, since the
    reconciler refuses it as a spec error before any router is called."""
    parsed = spec.traffic_routing.parsed
    if isinstance(parsed, kind):
        return parsed
    try:
        return parse(spec.traffic_routing.config)
    except SpecError as error:
        raise ReferenceProblem(str(error)) from error


def agreed_mirror(*, version: str, percents: Sequence[int | None]) -> Mirror | None:
    """The mirror to `version` read over the managed parts of a routed object (rules, routes), given
    the percent each copies (None: that part has no mirror of the controller's): None when none
    has one; percent -1 when they disagree (a hand edit: the next write makes them agree)."""
    if all(percent is None for percent in percents):
        return None
    first = percents[0]
    agreed = first is not None and all(percent == first for percent in percents)
    return Mirror(version=version, percent=first if agreed and first is not None else -1)
