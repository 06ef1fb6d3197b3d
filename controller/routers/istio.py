"""Istio: weights of the destinations of a VirtualService's HTTP routes.

Configuration, under spec.trafficRouting.istio (everything in the rollout's namespace):

    istio:
      virtualService: iris            # required
      routes: [predict]               # optional: names (http[].name) of the HTTP routes to manage;
                                      # left out: every HTTP route that forwards (no redirect,
                                      # directResponse or delegate)
      destinationRule: {name: iris}   # optional: tell the versions apart by subset (below)

The versions are told apart in one of two ways, per rollout:

- By host (no destinationRule): each version has a Service of its own,
  spec.versions[].backend.service. A destination is a version's when its host names that Service,
  as a short name (`iris-v2`, which Istio reads in the VirtualService's namespace) or as
  `iris-v2.NAMESPACE.svc.<cluster domain>`, and its port.number, when set, is the backend's port.
- By subset (destinationRule: {name: DR}): one host, the DestinationRule's spec.host, with one
  subset per version named after the version label (subset `v2` for version v2), the layout of
  Istio's own documentation. A destination is a version's when its host is the DestinationRule's
  host and its subset is the version's label; its port is not looked at. Before a version gets
  traffic the controller checks that the DestinationRule has its subset: Istio answers 503 for a
  subset that does not exist. The DestinationRule is read, never written.

Why subset = version label, and not Argo Rollouts' `destinationRule: {name, canarySubsetName,
stableSubsetName}`: Argo has exactly two subsets and rewrites their pod selectors at every
rollout; here a model has any number of versions, each served by workloads of its own that its
subset selects, and steps and status name versions by label, so the subset named after the
version is the mapping nobody has to write or keep in sync. The cost: in subset mode version
labels must be valid subset names (DNS-1123 labels: lower-case letters, digits and '-').
spec.versions[].backend stays required and distinct per version in both modes (the Service
checks, readiness and gates use it).

The controller owns the `weight` of the destinations that are a version's, in the managed
routes. Like the Gateway API router, it adds a destination for a version that must get traffic and
has none (so shipping a new version needs no edit of the VirtualService), and removes a
destination it added once it carries no traffic and is not the candidate's; what it added is
listed in the annotation `rollouts.mlops.dev/added-destinations`, and destinations the user wrote
are never removed. A new destination copies the host form (short or fully qualified) and port of
a version's destination already in the route. Any other destination with a non-zero weight (or
alone in its route, where Istio gives it all traffic whatever its weight) is a reference problem:
the split would not be the one the rollout decided. TCP and TLS routes are never touched.

Istio's weights are relative (a destination gets weight / sum of weights; a route's only
destination gets everything); the controller writes percentages that sum to 100 over the
versions and reads any weights back as percentages.

Mirror steps (`Mirrorer`): the controller sets each managed route's `mirror` (the mirrored
version's destination, written exactly as the route's weighted destination of that version, or
as a destination it would add for it) and `mirrorPercentage: {value: percent}`, which Istio
honours. An HTTP route has one `mirror`, so the destinations the controller mirrors to are listed
in the annotation `rollouts.mlops.dev/mirror-destinations`: it changes or removes only a mirror
listed there (both fields), and a mirror step on a route that already mirrors elsewhere (`mirror`
or `mirrors` the controller did not set) is a reference problem rather than an overwrite.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from controller.api import GROUP as ROLLOUTS_GROUP
from controller.api import Mirror, ModelRolloutSpec, SpecError
from controller.errors import ReferenceProblem
from controller.kube import Kube
from controller.routers import ownership
from controller.routers.plugin import RoutedKind, RouterPlugin, agreed_mirror, config_of
from controller.routers.safety import refuse_unsafe_split
from controller.routers.services import service_problem

GROUP = "networking.istio.io"
VERSION = "v1"
"""The storage version of VirtualService and DestinationRule in istio.io/api v1.32.0 (v1beta1
and v1alpha3 are served too, with the same schema)."""
PLURAL = "virtualservices"
DESTINATION_RULES = "destinationrules"
ADDED_DESTINATIONS_ANNOTATION = f"{ROLLOUTS_GROUP}/added-destinations"
"""Each destination the controller added, comma-separated as `host[/subset][:port]`: only these
are removed."""
MIRROR_ANNOTATION = f"{ROLLOUTS_GROUP}/mirror-destinations"
"""Each destination the controller set as a managed route's `mirror`, comma-separated as
`host[/subset][:port]`: only these mirrors are changed or removed."""
MIRROR_KEYS = ("mirror", "mirrorPercentage")
"""The fields of an HTTP route that make the controller's mirror; removed together."""
CONFIG_PATH = "spec.trafficRouting.istio"
NOT_FORWARDING = ("redirect", "directResponse", "delegate")
"""Keys of an HTTP route that answers or delegates instead of forwarding to weighted destinations."""
DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")

JSON = dict[str, Any]


# ---------------------------------------------------------------------------------------------
# Configuration


@dataclass(frozen=True, kw_only=True)
class IstioRouting:
    virtual_service: str
    """Name of the VirtualService, in the rollout's namespace."""
    routes: tuple[str, ...] = ()
    """HTTP routes (by `name`) whose destinations the controller manages; empty means every HTTP
    route that forwards."""
    destination_rule: str | None = None
    """Name of the DestinationRule whose subsets (named after the versions) tell the versions
    apart; None: each version is told apart by its Service as host."""


def _name(raw: object, field_path: str, what: str) -> str:
    if not isinstance(raw, str) or not raw:
        raise SpecError(field_path, f"must be the name of {what}, a non-empty string")
    return raw


def parse_config(raw: object) -> IstioRouting:
    """The typed value of spec.trafficRouting.istio; raises SpecError naming the field."""
    if not isinstance(raw, Mapping):
        raise SpecError(CONFIG_PATH, "must be an object, e.g. {virtualService: iris}")
    virtual_service = _name(raw.get("virtualService"), f"{CONFIG_PATH}.virtualService", "the VirtualService")
    routes_raw = raw.get("routes") or []
    if not isinstance(routes_raw, list):
        raise SpecError(f"{CONFIG_PATH}.routes", "must be a list of HTTP route names")
    routes = tuple(_name(r, f"{CONFIG_PATH}.routes[{i}]", "an HTTP route") for i, r in enumerate(routes_raw))
    if len(set(routes)) != len(routes):
        raise SpecError(f"{CONFIG_PATH}.routes", "names a route twice; list each route once")
    rule_raw = raw.get("destinationRule")
    destination_rule = None
    if rule_raw is not None:
        if not isinstance(rule_raw, Mapping):
            raise SpecError(f"{CONFIG_PATH}.destinationRule", "must be an object, e.g. {name: iris}")
        destination_rule = _name(rule_raw.get("name"), f"{CONFIG_PATH}.destinationRule.name", "the DestinationRule")
    return IstioRouting(virtual_service=virtual_service, routes=routes, destination_rule=destination_rule)


def _config(spec: ModelRolloutSpec) -> IstioRouting:
    return config_of(spec, IstioRouting, parse_config)


# ---------------------------------------------------------------------------------------------
# Hosts and destinations


def service_of(host: str, namespace: str) -> str | None:
    """The Service of `namespace` that `host` names, as Istio reads it in a VirtualService of that
    namespace: a short name, or NAME.NAMESPACE.svc.<cluster domain>; None for any other host."""
    if "." not in host:
        return host or None
    parts = host.split(".")
    if len(parts) >= 4 and parts[1] == namespace and parts[2] == "svc" and all(parts[3:]):
        return parts[0]
    return None


def _same_host(a: str, b: str, namespace: str) -> bool:
    service_a, service_b = service_of(a, namespace), service_of(b, namespace)
    if service_a is not None or service_b is not None:
        return service_a == service_b
    return a == b


def _destination(entry: Mapping[str, Any]) -> Mapping[str, Any]:
    destination = entry.get("destination")
    return destination if isinstance(destination, Mapping) else {}


def _port(entry: Mapping[str, Any]) -> int | None:
    port = _destination(entry).get("port")
    number = port.get("number") if isinstance(port, Mapping) else None
    return int(number) if number is not None else None


def destination_key(entry: Mapping[str, Any]) -> str:
    """`host[/subset][:port]`: how the added-destinations annotation names a destination."""
    destination = _destination(entry)
    key = str(destination.get("host", ""))
    if destination.get("subset"):
        key += f"/{destination['subset']}"
    port = _port(entry)
    return f"{key}:{port}" if port is not None else key


class Versions:
    """Which version a destination is (by host), and what a new one for a version looks like."""

    def __init__(self, spec: ModelRolloutSpec, namespace: str) -> None:
        self.spec = spec
        self.namespace = namespace

    @property
    def labels(self) -> list[str]:
        return [version.version for version in self.spec.versions]

    def version_of(self, entry: Mapping[str, Any]) -> str | None:
        service = service_of(str(_destination(entry).get("host", "")), self.namespace)
        port = _port(entry)
        found = [
            version.version
            for version in self.spec.versions
            if service == version.routed_backend.service and port in (None, version.routed_backend.port)
        ]
        if len(found) > 1:
            raise ReferenceProblem(
                f"destination host {_destination(entry).get('host')} without a port is the Service of versions "
                f"{' and '.join(found)}; set destination.port.number to tell them apart"
            )
        return found[0] if found else None

    def new_destination(self, version_name: str, siblings: Sequence[Mapping[str, Any]]) -> JSON:
        """A destination for the version's Service and port, its host written in the form (short
        or fully qualified) of a version's destination already in the route."""
        backend = self.spec.version(version_name).routed_backend
        host = backend.service
        for sibling in siblings:
            sibling_version = self.version_of(sibling)
            sibling_host = str(_destination(sibling).get("host", ""))
            if sibling_version is not None and "." in sibling_host:
                host = f"{backend.service}.{sibling_host.split('.', 1)[1]}"
                break
        return {"destination": {"host": host, "port": {"number": backend.port}}}

    def unserved(self, weights: Mapping[str, int]) -> str | None:
        """Why some of `weights` would reach no workload, or None (by host: the Service checks of
        the reconciler cover it)."""
        return None


class SubsetVersions(Versions):
    """Versions told apart by the subsets of a DestinationRule, named after the versions."""

    def __init__(self, spec: ModelRolloutSpec, namespace: str, *, rule: JSON) -> None:
        super().__init__(spec, namespace)
        self.rule_name = str(rule["metadata"]["name"])
        host = (rule.get("spec") or {}).get("host")
        if not host:
            raise ReferenceProblem(f"DestinationRule {namespace}/{self.rule_name} has no spec.host")
        self.host = str(host)
        self.subsets = {str(s.get("name")) for s in (rule.get("spec") or {}).get("subsets") or [] if s.get("name")}

    def version_of(self, entry: Mapping[str, Any]) -> str | None:
        destination = _destination(entry)
        if not _same_host(str(destination.get("host", "")), self.host, self.namespace):
            return None
        subset = destination.get("subset")
        return str(subset) if subset in self.labels else None

    def new_destination(self, version_name: str, siblings: Sequence[Mapping[str, Any]]) -> JSON:
        """A destination for the version's subset on the DestinationRule's host, written like a
        version's destination already in the route (host form, port), if there is one."""
        destination: JSON = {"host": self.host, "subset": version_name}
        for sibling in siblings:
            if self.version_of(sibling) is not None:
                written = _destination(sibling)
                destination["host"] = written["host"]
                if isinstance(written.get("port"), Mapping):
                    destination["port"] = dict(written["port"])
                break
        return {"destination": destination}

    def unserved(self, weights: Mapping[str, int]) -> str | None:
        missing = [v for v, weight in weights.items() if weight > 0 and v not in self.subsets]
        if not missing:
            return None
        invalid = [v for v in missing if not DNS1123_LABEL.match(v)]
        hint = (
            f"; {', '.join(invalid)} cannot be a subset name (a DNS-1123 label): rename the version" if invalid else ""
        )
        return (
            f"DestinationRule {self.namespace}/{self.rule_name} has no subset named {', '.join(missing)}, so Istio "
            f"would answer 503 for that traffic; add a subset per version, named after the version{hint}"
        )


# ---------------------------------------------------------------------------------------------
# Routes


def managed_routes(vs: JSON, config: IstioRouting) -> list[JSON]:
    """The HTTP routes whose destinations the controller manages."""
    name = vs["metadata"]["name"]
    routes: list[JSON] = (vs.get("spec") or {}).get("http") or []
    if not config.routes:
        forwarding = [route for route in routes if not any(key in route for key in NOT_FORWARDING)]
        if not forwarding:
            raise ReferenceProblem(
                f"VirtualService {name} has no HTTP route that forwards to destinations; add one whose "
                "route lists the versions"
            )
        return forwarding
    named = [route for route in routes if route.get("name") in config.routes]
    missing = set(config.routes) - {route.get("name") for route in named}
    if missing:
        raise ReferenceProblem(
            f"VirtualService {name} has no HTTP route named {', '.join(sorted(missing))}; "
            f"fix {CONFIG_PATH}.routes or name the routes (http[].name)"
        )
    for route in named:
        answering = [key for key in NOT_FORWARDING if key in route]
        if answering:
            raise ReferenceProblem(
                f"HTTP route {route['name']} of VirtualService {name} has {answering[0]}, so no weights to set; "
                f"remove it from {CONFIG_PATH}.routes"
            )
    return named


def route_weights(route: JSON, versions: Versions, vs_name: str) -> dict[str, int]:
    """Percent per version in one HTTP route."""
    raw: dict[str, int] = {label: 0 for label in versions.labels}
    destinations: list[JSON] = route.get("route") or []
    alone = len(destinations) == 1
    total = 0
    for entry in destinations:
        # Istio sends all of a route's traffic to its only destination, whatever its weight.
        weight = 100 if alone else int(entry.get("weight") or 0)
        total += weight
        version = versions.version_of(entry)
        if version is None:
            if weight:
                raise ReferenceProblem(
                    f"VirtualService {vs_name} sends traffic (weight {weight}) to destination "
                    f"{destination_key(entry)!r}, which is no version of spec.versions; set its weight to 0 "
                    "or add the version"
                )
            continue
        raw[version] += weight
    if total == 0:
        return raw
    return {version: round(weight * 100 / total) for version, weight in raw.items()}


def set_route_weights(
    route: JSON, versions: Versions, weights: Mapping[str, int], *, candidate: str, added: set[str]
) -> None:
    """Sets the weights of one HTTP route; adds a destination (recorded in `added`) for a version
    that must get traffic and has none, and removes a destination listed in `added` that is left
    with no traffic, unless it is the candidate's. A version with two destinations gets its share
    on the first and 0 on the others."""
    destinations: list[JSON] = route.setdefault("route", [])
    present = {versions.version_of(entry) for entry in destinations}
    for label in versions.labels:
        if label not in present and weights.get(label, 0) > 0:
            entry = versions.new_destination(label, destinations)
            destinations.append(entry)
            added.add(destination_key(entry))
    kept: list[JSON] = []
    seen: set[str] = set()
    for entry in destinations:
        version = versions.version_of(entry)
        if version is not None:
            entry["weight"] = 0 if version in seen else weights.get(version, 0)
            seen.add(version)
            idle = entry["weight"] == 0 and version != candidate
            if idle and destination_key(entry) in added:
                continue
        kept.append(entry)
    route["route"] = kept


def _added_destinations(vs: JSON) -> set[str]:
    raw = (vs.get("metadata", {}).get("annotations") or {}).get(ADDED_DESTINATIONS_ANNOTATION, "")
    return {entry.strip() for entry in str(raw).split(",") if entry.strip()}


def _record_added_destinations(vs: JSON, routes: list[JSON], added: set[str]) -> None:
    """Keeps in the annotation the added destinations that some managed route still holds."""
    held = {destination_key(entry) for route in routes for entry in route.get("route") or []}
    annotations = vs.setdefault("metadata", {}).setdefault("annotations", {}) or {}
    vs["metadata"]["annotations"] = annotations
    listed = sorted(added & held)
    if listed:
        annotations[ADDED_DESTINATIONS_ANNOTATION] = ",".join(listed)
    else:
        annotations.pop(ADDED_DESTINATIONS_ANNOTATION, None)


def vs_weights(vs: JSON, config: IstioRouting, versions: Versions) -> dict[str, int]:
    """Percent per version over the managed routes; -1 everywhere when they disagree."""
    name = vs["metadata"]["name"]
    per_route = [route_weights(route, versions, name) for route in managed_routes(vs, config)]
    # Routes that disagree are reported as -1; the next write makes them agree.
    first = per_route[0]
    return first if all(w == first for w in per_route) else {v: -1 for v in first}


# ---------------------------------------------------------------------------------------------
# Mirror


def mirror_destination(route: JSON, *, versions: Versions, version_name: str) -> JSON:
    """The destination copies of the route's requests go to for `version_name`: the version's
    weighted destination in the route as written there (the first, if several), or the one the
    weights would add for it (a candidate at weight 0 may have none yet)."""
    destinations: list[JSON] = route.get("route") or []
    for entry in destinations:
        if versions.version_of(entry) == version_name:
            return copy.deepcopy(dict(_destination(entry)))
    return dict(versions.new_destination(version_name, destinations)["destination"])


def _mirror_key(destination: Mapping[str, Any]) -> str:
    return destination_key({"destination": destination})


def _mirror_percent(route: Mapping[str, Any]) -> int:
    """The share of requests the route's `mirror` gets: Istio mirrors all of them without
    mirrorPercentage (a double in the API; the controller writes whole numbers)."""
    percentage = route.get("mirrorPercentage")
    if isinstance(percentage, Mapping) and percentage.get("value") is not None:
        return round(float(percentage["value"]))
    return 100


def _mirror_destinations(vs: JSON) -> set[str]:
    raw = (vs.get("metadata", {}).get("annotations") or {}).get(MIRROR_ANNOTATION, "")
    return {entry.strip() for entry in str(raw).split(",") if entry.strip()}


def route_mirror(route: JSON, *, ours: set[str]) -> Mapping[str, Any] | None:
    """The route's `mirror` when the controller set it (listed in `ours`), else None."""
    mirror = route.get("mirror")
    return mirror if isinstance(mirror, Mapping) and _mirror_key(mirror) in ours else None


def set_route_mirror(route: JSON, *, ours: set[str], mirror: JSON | None, percent: int, vs_name: str) -> None:
    """Replaces the controller's mirror of one HTTP route (a `mirror` listed in `ours`) by copies
    of `percent` of the requests to `mirror` (None: no copies); every other field stays. A route
    that mirrors elsewhere is left as it is when no mirror is asked, and refused when one is:
    Istio has one `mirror` per route, and overwriting it would lose the user's copies."""
    if route_mirror(route, ours=ours) is not None:
        for key in MIRROR_KEYS:
            route.pop(key, None)
    if mirror is None:
        return
    theirs = next((key for key in ("mirror", "mirrors") if route.get(key)), None)
    if theirs is not None:
        raise ReferenceProblem(
            f"HTTP route {route.get('name') or '(unnamed)'} of VirtualService {vs_name} already has {theirs}, "
            "which the controller did not set, and Istio allows one mirror per route; remove it for the "
            "mirror step, and the step sets its own"
        )
    route["mirror"] = mirror
    route["mirrorPercentage"] = {"value": percent}


def vs_mirror(vs: JSON, *, config: IstioRouting, versions: Versions) -> Mirror | None:
    """The controller's mirror over the managed routes: None when there is none; percent -1 when
    the routes disagree (a hand edit: the next write makes them agree)."""
    ours = _mirror_destinations(vs)
    if not ours:
        return None
    routes = managed_routes(vs, config)
    mirrors = [route_mirror(route, ours=ours) for route in routes]
    found = next((mirror for mirror in mirrors if mirror is not None), None)
    if found is None:
        return None
    # A version removed from spec.versions since is named by its destination, so that it is removed.
    version = versions.version_of({"destination": found}) or _mirror_key(found)
    percents = [
        _mirror_percent(route) if mirror is not None and _mirror_key(mirror) == _mirror_key(found) else None
        for route, mirror in zip(routes, mirrors, strict=True)
    ]
    return agreed_mirror(version=version, percents=percents)


def set_vs_mirror(vs: JSON, *, config: IstioRouting, versions: Versions, mirror: Mirror | None) -> None:
    """Sets the controller's mirror on every managed route and records its destinations."""
    ours = _mirror_destinations(vs)
    name = vs["metadata"]["name"]
    written: set[str] = set()
    for route in managed_routes(vs, config):
        destination = (
            None if mirror is None else mirror_destination(route, versions=versions, version_name=mirror.version)
        )
        set_route_mirror(route, ours=ours, mirror=destination, percent=mirror.percent if mirror else 0, vs_name=name)
        if destination is not None:
            written.add(_mirror_key(destination))
    annotations = vs.setdefault("metadata", {}).setdefault("annotations", {}) or {}
    vs["metadata"]["annotations"] = annotations
    if written:
        annotations[MIRROR_ANNOTATION] = ",".join(sorted(written))
    else:
        annotations.pop(MIRROR_ANNOTATION, None)


# ---------------------------------------------------------------------------------------------
# The router


class IstioRouter:
    def __init__(self, kube: Kube) -> None:
        self.kube = kube

    def _get(self, namespace: str, config: IstioRouting) -> JSON:
        name = config.virtual_service
        found = self.kube.get_custom(group=GROUP, version=VERSION, plural=PLURAL, namespace=namespace, name=name)
        if found is None:
            raise ReferenceProblem(
                f"VirtualService {namespace}/{name} not found; create it or fix {CONFIG_PATH}.virtualService"
            )
        return found

    def _versions(self, namespace: str, spec: ModelRolloutSpec, config: IstioRouting) -> Versions:
        if config.destination_rule is None:
            return Versions(spec, namespace)
        rule = self.kube.get_custom(
            group=GROUP, version=VERSION, plural=DESTINATION_RULES, namespace=namespace, name=config.destination_rule
        )
        if rule is None:
            raise ReferenceProblem(
                f"DestinationRule {namespace}/{config.destination_rule} not found; create it or fix "
                f"{CONFIG_PATH}.destinationRule.name"
            )
        return SubsetVersions(spec, namespace, rule=rule)

    def _replace(self, vs: JSON) -> JSON:
        return self.kube.replace_custom(group=GROUP, version=VERSION, plural=PLURAL, body=vs)

    @staticmethod
    def _label(namespace: str, vs: JSON) -> str:
        return f"VirtualService {namespace}/{vs['metadata']['name']}"

    def read_weights(
        self, *, namespace: str, spec: ModelRolloutSpec, owner: str, replacing: str | None = None
    ) -> dict[str, int]:
        config = _config(spec)
        vs = self._get(namespace, config)
        ownership.check_owner(vs, route=self._label(namespace, vs), owner=owner, replacing=replacing)
        weights = vs_weights(vs, config, self._versions(namespace, spec, config))
        if replacing is not None and ownership.claim(vs, owner=owner):
            self._replace(vs)
        return weights

    def write_weights(
        self, *, namespace: str, spec: ModelRolloutSpec, weights: Mapping[str, int], owner: str
    ) -> dict[str, int]:
        config = _config(spec)
        vs = self._get(namespace, config)
        label = self._label(namespace, vs)
        ownership.check_owner(vs, route=label, owner=owner)
        # Istio's weights are relative: 80 and 10 would land as 89 and 11, so the asked weights are
        # checked as well as the body.
        refuse_unsafe_split(spec=spec, weights=weights, route=label)
        ownership.claim(vs, owner=owner)
        versions = self._versions(namespace, spec, config)
        unserved = versions.unserved(weights)
        if unserved is not None:
            raise ReferenceProblem(unserved)
        added = _added_destinations(vs)
        routes = managed_routes(vs, config)
        for route in routes:
            set_route_weights(route, versions, weights, candidate=spec.candidate, added=added)
        _record_added_destinations(vs, routes, added)
        # Checked on the body about to be sent, so that a mistake in building it is refused too.
        refuse_unsafe_split(spec=spec, weights=vs_weights(vs, config, versions), route=label)
        return vs_weights(self._replace(vs), config, versions)

    def read_mirror(self, *, namespace: str, spec: ModelRolloutSpec, owner: str) -> Mirror | None:
        config = _config(spec)
        vs = self._get(namespace, config)
        ownership.check_owner(vs, route=self._label(namespace, vs), owner=owner)
        if not _mirror_destinations(vs):
            # No mirror of the controller's: no DestinationRule to read.
            return None
        return vs_mirror(vs, config=config, versions=self._versions(namespace, spec, config))

    def write_mirror(
        self, *, namespace: str, spec: ModelRolloutSpec, mirror: Mirror | None, owner: str
    ) -> Mirror | None:
        config = _config(spec)
        vs = self._get(namespace, config)
        ownership.check_owner(vs, route=self._label(namespace, vs), owner=owner)
        ownership.claim(vs, owner=owner)
        versions = self._versions(namespace, spec, config)
        if mirror is not None:
            # Copies to a subset that does not exist would all be answered 503 by Istio.
            unserved = versions.unserved({mirror.version: mirror.percent})
            if unserved is not None:
                raise ReferenceProblem(unserved)
        set_vs_mirror(vs, config=config, versions=versions, mirror=mirror)
        return vs_mirror(self._replace(vs), config=config, versions=versions)

    def release(self, *, namespace: str, spec: ModelRolloutSpec, owner: str) -> None:
        try:
            vs = self._get(namespace, _config(spec))
        except ReferenceProblem:
            return
        if ownership.release(vs, owner=owner):
            self._replace(vs)

    def reference_problem(self, *, namespace: str, spec: ModelRolloutSpec, versions: tuple[str, ...]) -> str | None:
        """By host, the versions' Services; by subset, the DestinationRule and the versions' subsets
        (a subset that does not exist is refused by the write itself, see SubsetVersions)."""
        config = _config(spec)
        if config.destination_rule is None:
            return service_problem(self.kube, namespace=namespace, spec=spec, versions=versions)
        try:
            self._versions(namespace, spec, config)
        except ReferenceProblem as error:
            return str(error)
        return None


PLUGIN = RouterPlugin(
    key="istio",
    kind=RoutedKind(group=GROUP, version=VERSION, plural=PLURAL),
    parse_config=parse_config,
    object_name=lambda config: config.virtual_service,
    build=IstioRouter,
    mirror=IstioRouter,
)
