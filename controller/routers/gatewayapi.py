"""Gateway API: backendRef weights of an HTTPRoute's rules.

The controller owns the `weight` of the backendRefs that point at the backends (Service and port)
of spec.versions, in the rules it manages (all rules, or those named in `ruleNames`). It adds a
backendRef for a version that must get traffic and has none yet, so shipping a new version needs
no edit of the route. Any other backendRef with a non-zero weight is a reference problem: the
split would not be the one the rollout decided.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from controller.api import ModelRolloutSpec
from controller.errors import ReferenceProblem
from controller.kube import Kube
from controller.routers.safety import refuse_unsafe_split

GROUP = "gateway.networking.k8s.io"
VERSION = "v1"
PLURAL = "httproutes"
GATEWAY_DEFAULT_WEIGHT = 1
"""Weight the Gateway API gives a backendRef that does not set one."""

JSON = dict[str, Any]


def _route_name(spec: ModelRolloutSpec) -> str:
    name = spec.traffic_routing.config.get("httpRoute")
    if not name:
        raise ReferenceProblem("spec.trafficRouting.gatewayAPI.httpRoute is empty; name the HTTPRoute to manage")
    return str(name)


def _is_service_ref(ref: Mapping[str, Any]) -> bool:
    return ref.get("group", "") in ("", "core") and ref.get("kind", "Service") == "Service"


def managed_rules(route: JSON, spec: ModelRolloutSpec) -> list[JSON]:
    rules: list[JSON] = route.get("spec", {}).get("rules", [])
    wanted = tuple(spec.traffic_routing.config.get("ruleNames") or ())
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
        if ref.get("name") == version.backend.service and ref.get("port", version.backend.port) == version.backend.port:
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


def set_rule_weights(rule: JSON, spec: ModelRolloutSpec, weights: Mapping[str, int]) -> None:
    refs: list[JSON] = rule.setdefault("backendRefs", [])
    present = {_version_of(ref, spec) for ref in refs}
    for version in spec.versions:
        if version.version not in present and weights.get(version.version, 0) > 0:
            refs.append({"name": version.backend.service, "port": version.backend.port})
    for ref in refs:
        version_name = _version_of(ref, spec)
        if version_name is not None:
            ref["weight"] = weights.get(version_name, 0)


class GatewayAPIRouter:
    def __init__(self, kube: Kube) -> None:
        self.kube = kube

    def _get(self, namespace: str, spec: ModelRolloutSpec) -> JSON:
        name = _route_name(spec)
        route = self.kube.get_custom(group=GROUP, version=VERSION, plural=PLURAL, namespace=namespace, name=name)
        if route is None:
            raise ReferenceProblem(f"HTTPRoute {namespace}/{name} not found; create it or fix spec.trafficRouting")
        return route

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

    def read_weights(self, *, namespace: str, spec: ModelRolloutSpec) -> dict[str, int]:
        return self._weights(self._get(namespace, spec), spec)

    def write_weights(self, *, namespace: str, spec: ModelRolloutSpec, weights: Mapping[str, int]) -> dict[str, int]:
        route = self._get(namespace, spec)
        for rule in managed_rules(route, spec):
            set_rule_weights(rule, spec, weights)
        # Checked on the body about to be sent, so that a mistake in building it is refused too.
        refuse_unsafe_split(
            spec=spec, weights=self._weights(route, spec), route=f"HTTPRoute {namespace}/{route['metadata']['name']}"
        )
        stored = self.kube.replace_custom(group=GROUP, version=VERSION, plural=PLURAL, body=route)
        return self._weights(stored, spec)

    def watched_route(self, *, spec: ModelRolloutSpec) -> tuple[str, str] | None:
        name = spec.traffic_routing.config.get("httpRoute")
        return (PLURAL, str(name)) if name else None
