"""Gateway API: backendRef weights of an HTTPRoute's rules.

The controller owns the `weight` of the backendRefs that point at the backends (Service and port)
of spec.versions, in the rules it manages (all rules, or those named in `ruleNames`). It adds a
backendRef for a version that must get traffic and has none yet, so shipping a new version needs
no edit of the route, and removes the backendRefs it added once they carry no traffic and belong
to neither the candidate nor a version with traffic: a model can ship any number of versions
through one route (the Gateway API allows 16 backendRefs per rule). What it added is listed in
an annotation on the route; backendRefs the user wrote are never removed. Any other backendRef
with a non-zero weight is a reference problem: the split would not be the one the rollout decided.

Mirror steps (`Mirrorer`): the controller adds one `RequestMirror` filter to each managed rule,
copying `percent` of its requests to the mirrored version's Service and port, and names that
backend in the annotation `rollouts.mlops.dev/mirror-backend`; it changes or removes only that
filter, never another filter of the rule. Gateway API v1.3+ (GEP-3171) has `percent`; Contour up
to at least v1.33 copies every request whatever it says (projectcontour/contour#7021).
"""

from __future__ import annotations

from collections.abc import Mapping
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

GROUP = "gateway.networking.k8s.io"
VERSION = "v1"
PLURAL = "httproutes"
GATEWAY_DEFAULT_WEIGHT = 1
"""Weight the Gateway API gives a backendRef that does not set one."""
ADDED_BACKENDS_ANNOTATION = f"{ROLLOUTS_GROUP}/added-backends"
"""`service:port` of each backendRef the controller added, comma-separated: only these are removed."""
MIRROR_ANNOTATION = f"{ROLLOUTS_GROUP}/mirror-backend"
"""`service:port` of the RequestMirror filter the controller added to each managed rule."""
REQUEST_MIRROR = "RequestMirror"

JSON = dict[str, Any]


CONFIG_PATH = "spec.trafficRouting.gatewayAPI"


@dataclass(frozen=True, kw_only=True)
class GatewayAPIRouting:
    http_route: str
    """Name of the HTTPRoute, in the rollout's namespace."""
    rule_names: tuple[str, ...] = ()
    """Rules (by `name`) whose backendRefs the controller manages; empty: every rule."""


def parse_config(raw: object) -> GatewayAPIRouting:
    """The typed value of spec.trafficRouting.gatewayAPI; raises SpecError naming the field."""
    if not isinstance(raw, Mapping):
        raise SpecError(CONFIG_PATH, "must be an object, e.g. {httpRoute: iris}")
    route = raw.get("httpRoute")
    if not isinstance(route, str) or not route:
        raise SpecError(f"{CONFIG_PATH}.httpRoute", "name the HTTPRoute to manage, a non-empty string")
    names = raw.get("ruleNames") or []
    if not isinstance(names, list) or not all(isinstance(name, str) and name for name in names):
        raise SpecError(f"{CONFIG_PATH}.ruleNames", "must be a list of rule names (non-empty strings)")
    return GatewayAPIRouting(http_route=route, rule_names=tuple(names))


def _config(spec: ModelRolloutSpec) -> GatewayAPIRouting:
    return config_of(spec, GatewayAPIRouting, parse_config)


def _is_service_ref(ref: Mapping[str, Any]) -> bool:
    return ref.get("group", "") in ("", "core") and ref.get("kind", "Service") == "Service"


def managed_rules(route: JSON, spec: ModelRolloutSpec) -> list[JSON]:
    rules: list[JSON] = route.get("spec", {}).get("rules", [])
    wanted = _config(spec).rule_names
    if not wanted:
        return rules
    named = [rule for rule in rules if rule.get("name") in wanted]
    missing = set(wanted) - {rule.get("name") for rule in named}
    if missing:
        raise ReferenceProblem(
            f"HTTPRoute {route['metadata']['name']} has no rule named {', '.join(sorted(missing))}; "
            "fix spec.trafficRouting.gatewayAPI.ruleNames or name the rules"
        )
    return named


def _version_of(ref: Mapping[str, Any], spec: ModelRolloutSpec) -> str | None:
    """The version whose backend (Service and port) a backendRef points at, if any. A ref without a
    port (the Gateway API requires one for a Service) is matched by its Service alone."""
    if not _is_service_ref(ref):
        return None
    for version in spec.versions:
        backend = version.routed_backend
        if ref.get("name") == backend.service and ref.get("port", backend.port) == backend.port:
            return version.version
    return None


def rule_weights(rule: JSON, spec: ModelRolloutSpec, route_name: str) -> dict[str, int]:
    """Percent per version in one rule."""
    raw: dict[str, int] = {v.version: 0 for v in spec.versions}
    total = 0
    for ref in rule.get("backendRefs", []):
        weight = int(ref.get("weight", GATEWAY_DEFAULT_WEIGHT))
        total += weight
        version = _version_of(ref, spec)
        if version is None:
            if weight:
                raise ReferenceProblem(
                    f"HTTPRoute {route_name} sends traffic (weight {weight}) to backendRef {ref.get('name')!r}, "
                    "which is not in spec.versions; set its weight to 0 or add the version"
                )
            continue
        raw[version] += weight
    if total == 0:
        return raw
    return {version: round(weight * 100 / total) for version, weight in raw.items()}


Backend = tuple[str, int]


def _backend_of(ref: Mapping[str, Any]) -> Backend:
    return (str(ref.get("name")), int(ref.get("port", 0)))


def set_rule_weights(rule: JSON, spec: ModelRolloutSpec, weights: Mapping[str, int], *, added: set[Backend]) -> None:
    """Sets the weights of one rule; adds a backendRef (recorded in `added`) for a version that
    must get traffic and has none, and removes a backendRef listed in `added` that is left with no
    traffic, unless it is the candidate's."""
    refs: list[JSON] = rule.setdefault("backendRefs", [])
    present = {_version_of(ref, spec) for ref in refs}
    for version in spec.versions:
        if version.version not in present and weights.get(version.version, 0) > 0:
            refs.append({"name": version.routed_backend.service, "port": version.routed_backend.port})
            added.add((version.routed_backend.service, version.routed_backend.port))
    kept: list[JSON] = []
    for ref in refs:
        version_name = _version_of(ref, spec)
        if version_name is not None:
            ref["weight"] = weights.get(version_name, 0)
            idle = ref["weight"] == 0 and version_name != spec.candidate
            if idle and _backend_of(ref) in added:
                continue
        kept.append(ref)
    rule["backendRefs"] = kept


def _added_backends(route: JSON) -> set[Backend]:
    raw = (route.get("metadata", {}).get("annotations") or {}).get(ADDED_BACKENDS_ANNOTATION, "")
    backends: set[Backend] = set()
    for entry in str(raw).split(","):
        service, _, port = entry.strip().rpartition(":")
        if service and port.isdigit():
            backends.add((service, int(port)))
    return backends


def _record_added_backends(route: JSON, rules: list[JSON], added: set[Backend]) -> None:
    """Keeps in the annotation the added backends that some managed rule still holds."""
    held = {_backend_of(ref) for rule in rules for ref in rule.get("backendRefs", [])}
    annotations = route.setdefault("metadata", {}).setdefault("annotations", {}) or {}
    route["metadata"]["annotations"] = annotations
    listed = sorted(added & held)
    if listed:
        annotations[ADDED_BACKENDS_ANNOTATION] = ",".join(f"{service}:{port}" for service, port in listed)
    else:
        annotations.pop(ADDED_BACKENDS_ANNOTATION, None)


def _mirror_backend(route: JSON) -> Backend | None:
    """The backend of the controller's RequestMirror filter, from the annotation; None: no filter."""
    raw = str((route.get("metadata", {}).get("annotations") or {}).get(MIRROR_ANNOTATION, ""))
    service, _, port = raw.rpartition(":")
    return (service, int(port)) if service and port.isdigit() else None


def _is_mirror_to(entry: Mapping[str, Any], backend: Backend) -> bool:
    if entry.get("type") != REQUEST_MIRROR or not isinstance(entry.get("requestMirror"), Mapping):
        return False
    ref = entry["requestMirror"].get("backendRef")
    return isinstance(ref, Mapping) and _is_service_ref(ref) and _backend_of(ref) == backend


def _mirrored_percent(entry: Mapping[str, Any]) -> int:
    """The share a RequestMirror filter copies: `percent`, or `fraction` in percent; 100 without either."""
    mirror = entry["requestMirror"]
    if "percent" in mirror:
        return int(mirror["percent"])
    fraction = mirror.get("fraction")
    if isinstance(fraction, Mapping):
        return round(int(fraction.get("numerator", 0)) * 100 / int(fraction.get("denominator", 100)))
    return 100


def route_mirror(route: JSON, spec: ModelRolloutSpec) -> Mirror | None:
    """The controller's mirror on the route's managed rules: None when there is none; percent -1
    when the rules disagree (a hand edit: the next write makes them agree)."""
    backend = _mirror_backend(route)
    if backend is None:
        return None
    version = next(
        (v.version for v in spec.versions if (v.routed_backend.service, v.routed_backend.port) == backend),
        # A version removed from spec.versions since: named by its Service, so that it is removed.
        backend[0],
    )
    per_rule = [
        next((_mirrored_percent(entry) for entry in rule.get("filters") or [] if _is_mirror_to(entry, backend)), None)
        for rule in managed_rules(route, spec)
    ]
    return agreed_mirror(version=version, percents=per_rule)


def set_rule_mirror(rule: JSON, *, previous: Backend | None, mirror: Backend | None, percent: int) -> None:
    """Replaces the controller's RequestMirror filter of one rule (to `previous`) by one copying
    `percent` of the requests to `mirror` (None: none); every other filter stays as it is."""
    filters = [entry for entry in rule.get("filters") or [] if previous is None or not _is_mirror_to(entry, previous)]
    if mirror is not None:
        service, port = mirror
        ref = {"name": service, "port": port}
        filters.append({"type": REQUEST_MIRROR, "requestMirror": {"backendRef": ref, "percent": percent}})
    if filters:
        rule["filters"] = filters
    else:
        rule.pop("filters", None)


class GatewayAPIRouter:
    def __init__(self, kube: Kube) -> None:
        self.kube = kube

    def _get(self, namespace: str, spec: ModelRolloutSpec) -> JSON:
        name = _config(spec).http_route
        route = self.kube.get_custom(group=GROUP, version=VERSION, plural=PLURAL, namespace=namespace, name=name)
        if route is None:
            raise ReferenceProblem(f"HTTPRoute {namespace}/{name} not found; create it or fix spec.trafficRouting")
        return route

    def _replace(self, route: JSON) -> JSON:
        return self.kube.replace_custom(group=GROUP, version=VERSION, plural=PLURAL, body=route)

    @staticmethod
    def _label(namespace: str, route: JSON) -> str:
        return f"HTTPRoute {namespace}/{route['metadata']['name']}"

    @staticmethod
    def _weights(route: JSON, spec: ModelRolloutSpec) -> dict[str, int]:
        name = route["metadata"]["name"]
        rules = managed_rules(route, spec)
        if not rules:
            raise ReferenceProblem(f"HTTPRoute {name} has no rules; add one whose backendRefs list the versions")
        per_rule = [rule_weights(rule, spec, name) for rule in rules]
        # Rules that disagree are reported as the first one; the next write makes them agree.
        first = per_rule[0]
        return first if all(w == first for w in per_rule) else {v: -1 for v in first}

    def read_weights(
        self, *, namespace: str, spec: ModelRolloutSpec, owner: str, replacing: str | None = None
    ) -> dict[str, int]:
        route = self._get(namespace, spec)
        ownership.check_owner(route, route=self._label(namespace, route), owner=owner, replacing=replacing)
        weights = self._weights(route, spec)
        if replacing is not None and ownership.claim(route, owner=owner):
            self._replace(route)
        return weights

    def write_weights(
        self, *, namespace: str, spec: ModelRolloutSpec, weights: Mapping[str, int], owner: str
    ) -> dict[str, int]:
        route = self._get(namespace, spec)
        label = self._label(namespace, route)
        ownership.check_owner(route, route=label, owner=owner)
        ownership.claim(route, owner=owner)
        added = _added_backends(route)
        rules = managed_rules(route, spec)
        for rule in rules:
            set_rule_weights(rule, spec, weights, added=added)
        _record_added_backends(route, rules, added)
        # Checked on the body about to be sent, so that a mistake in building it is refused too.
        refuse_unsafe_split(spec=spec, weights=self._weights(route, spec), route=label)
        return self._weights(self._replace(route), spec)

    def read_mirror(self, *, namespace: str, spec: ModelRolloutSpec, owner: str) -> Mirror | None:
        route = self._get(namespace, spec)
        ownership.check_owner(route, route=self._label(namespace, route), owner=owner)
        return route_mirror(route, spec)

    def write_mirror(
        self, *, namespace: str, spec: ModelRolloutSpec, mirror: Mirror | None, owner: str
    ) -> Mirror | None:
        route = self._get(namespace, spec)
        label = self._label(namespace, route)
        ownership.check_owner(route, route=label, owner=owner)
        ownership.claim(route, owner=owner)
        previous = _mirror_backend(route)
        target = None
        if mirror is not None:
            backend = spec.version(mirror.version).routed_backend
            target = (backend.service, backend.port)
        rules = managed_rules(route, spec)
        if target is not None and target != previous:
            for rule in rules:
                if any(_is_mirror_to(entry, target) for entry in rule.get("filters") or []):
                    raise ReferenceProblem(
                        f"{label} already has a RequestMirror filter to {target[0]}:{target[1]} that the controller "
                        "did not add; remove it, and the mirror step adds its own"
                    )
        for rule in rules:
            set_rule_mirror(rule, previous=previous, mirror=target, percent=mirror.percent if mirror else 0)
        annotations = route["metadata"]["annotations"]
        if target is None:
            annotations.pop(MIRROR_ANNOTATION, None)
        else:
            annotations[MIRROR_ANNOTATION] = f"{target[0]}:{target[1]}"
        return route_mirror(self._replace(route), spec)

    def release(self, *, namespace: str, spec: ModelRolloutSpec, owner: str) -> None:
        try:
            route = self._get(namespace, spec)
        except ReferenceProblem:
            return
        if ownership.release(route, owner=owner):
            self._replace(route)

    def reference_problem(self, *, namespace: str, spec: ModelRolloutSpec, versions: tuple[str, ...]) -> str | None:
        return service_problem(self.kube, namespace=namespace, spec=spec, versions=versions)


PLUGIN = RouterPlugin(
    key="gatewayAPI",
    kind=RoutedKind(group=GROUP, version=VERSION, plural=PLURAL),
    parse_config=parse_config,
    object_name=lambda config: config.http_route,
    build=GatewayAPIRouter,
    mirror=GatewayAPIRouter,
)
