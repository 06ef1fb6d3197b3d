"""The plugin's edge: the Kubernetes API calls it makes, returning the stored JSON as dicts."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from kubernetes import client, config, watch

from controller.api import (
    ACTION_ANNOTATION,
    GROUP,
    KIND,
    PLURAL,
    UNDO_ANNOTATION,
    UNDO_TO_VERSION_ANNOTATION,
    VERSION,
    Action,
)

JSON = dict[str, Any]

# The client's annotations vary between releases (some untyped, some typed as `object` where the
# server returns JSON); the plugin treats its results as the JSON the server sent.
_new_client_from_config: Any = config.new_client_from_config
_list_kube_config_contexts: Any = config.list_kube_config_contexts
_Watch: Any = watch.Watch


@dataclass(frozen=True, kw_only=True)
class Target:
    """Which cluster and namespace, chosen the way kubectl chooses them."""

    kubeconfig: str | None
    """--kubeconfig; None reads KUBECONFIG (a colon-separated list) or ~/.kube/config."""
    context: str | None
    """--context; None uses the kubeconfig's current context."""
    namespace: str | None
    """-n/--namespace; None uses the context's namespace, else `default`."""


class RolloutAPI:
    """ModelRollouts and their Events, read and annotated through the official client."""

    def __init__(self, *, target: Target) -> None:
        self._api_client = _new_client_from_config(config_file=target.kubeconfig, context=target.context)
        self._custom: Any = client.CustomObjectsApi(self._api_client)
        self._core: Any = client.CoreV1Api(self._api_client)
        self.namespace = target.namespace or _context_namespace(target)

    def list_rollouts(self, *, all_namespaces: bool) -> list[JSON]:
        if all_namespaces:
            found = self._custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)
        else:
            found = self._custom.list_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL)
        items: list[JSON] = found.get("items", [])
        return sorted(items, key=lambda r: (r["metadata"].get("namespace", ""), r["metadata"]["name"]))

    def get(self, name: str) -> JSON:
        found: JSON = self._custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name)
        return found

    def events(self, rollout: JSON) -> list[JSON]:
        metadata = rollout["metadata"]
        selector = f"involvedObject.kind={KIND},involvedObject.name={metadata['name']}"
        response = self._core.list_namespaced_event(
            metadata["namespace"], field_selector=selector, _preload_content=False
        )
        items: list[JSON] = json.loads(response.data).get("items", [])
        return [e for e in items if e.get("involvedObject", {}).get("uid") in (None, metadata.get("uid"))]

    def request(self, name: str, action: Action) -> JSON:
        """Sets the action annotation; the controller carries it out and removes it."""
        patch = {"metadata": {"annotations": {ACTION_ANNOTATION: action.value}}}
        updated: JSON = self._custom.patch_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name, patch)
        return updated

    def undo(self, name: str, *, token: str, to_version: str | None) -> JSON:
        """Sets the undo annotation to a new token (and the version to go back to, or removes a
        stale one): the controller undoes the promotion once per token and keeps the annotation."""
        annotations = {UNDO_ANNOTATION: token, UNDO_TO_VERSION_ANNOTATION: to_version}
        patch = {"metadata": {"annotations": annotations}}
        updated: JSON = self._custom.patch_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name, patch)
        return updated

    def changes(self, name: str, *, deadline: float | None) -> Iterator[JSON]:
        """The rollout now, then each new version of it until `deadline` (a time.monotonic value).

        Watches re-open after the server ends them, so a long wait survives watch timeouts.
        """
        current = self.get(name)
        yield current
        while deadline is None or time.monotonic() < deadline:
            remaining = None if deadline is None else max(1, int(deadline - time.monotonic()))
            stream = _Watch().stream(
                self._custom.list_namespaced_custom_object,
                GROUP,
                VERSION,
                self.namespace,
                PLURAL,
                field_selector=f"metadata.name={name}",
                resource_version=current["metadata"]["resourceVersion"],
                timeout_seconds=min(remaining or 60, 60),
            )
            try:
                for event in stream:
                    if event["type"] in ("ADDED", "MODIFIED"):
                        current = event["object"]
                        yield current
                    elif event["type"] == "DELETED":
                        raise LookupError(f"modelrollout {name} was deleted while waiting")
            except client.ApiException as error:
                if error.status != 410:
                    raise
                current = self.get(name)
                yield current


def _context_namespace(target: Target) -> str:
    contexts, active = _list_kube_config_contexts(config_file=target.kubeconfig)
    chosen = next((c for c in contexts if c["name"] == target.context), active) if target.context else active
    namespace: str = (chosen or {}).get("context", {}).get("namespace") or "default"
    return namespace
