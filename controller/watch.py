"""Watching: list, then watch from that resourceVersion, with bookmarks and a re-list on 410.

An `Informer` may keep an `ObjectCache`: the latest version of each object it received, as
received but for `metadata.managedFields` (which the controller never reads), dropped on DELETED,
so that a reconcile pass reads its rollout and route without an API call. Memory per rollout is
the rollout and its route as compact JSON compressed with zlib, nothing more. A rollout's status
mid-analysis (bench/data/status-sample.json) is 12.8 kB of compact JSON, 2.4 kB compressed (its
parsed dicts would take 46 kB); compressing and decompressing it take about 40 and 20
microseconds, against about 90 for the parse every read makes anyway. The route cache keeps only
the routes some owned rollout names. The cache is updated before the handler runs, so a key
enqueued by an event is read at least at that event's version. The handler runs on the watch
thread and must be quick: it only enqueues keys.

A `Resource` may carry a label selector (a shard of the controller owns the ModelRollouts that
match it): the API server then filters the list and the watch, and sends DELETED for an object
relabelled out of the selector and ADDED for one relabelled into it. `LabelSelector` evaluates
the same selector on an object the controller holds, so that a pass can tell that the object it
reads no longer belongs to this shard.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

log = logging.getLogger(__name__)

JSON = dict[str, Any]

WATCH_TIMEOUT_SECONDS = 300
"""Server-side timeout of one watch request; the watch then resumes from the last version."""
ERROR_BACKOFF_SECONDS = 2.0
"""Pause before listing again after an unexpected error."""
NOT_SERVED_RETRY_SECONDS = 60.0
"""Pause before listing again a kind the API server does not serve (CRD not installed) or forbids."""


PACK_LEVEL = 1
"""zlib level of the objects an ObjectCache holds: the fastest, already about a fifth of the JSON."""

Key = tuple[str, str]
"""(namespace, name)"""


def _object_key(obj: Mapping[str, Any]) -> Key:
    meta = obj["metadata"]
    return str(meta.get("namespace", "")), str(meta["name"])


def _version(obj: Mapping[str, Any] | None) -> int | None:
    """The resourceVersion as a number, or None when absent or not a number."""
    raw = None if obj is None else (obj.get("metadata") or {}).get("resourceVersion")
    return int(raw) if isinstance(raw, str) and raw.isdigit() else None


class ObjectCache:
    """The latest version of each object an informer received, by (namespace, name).

    Safe by construction rather than by freshness: every write the controller makes carries the
    resourceVersion it read, so a stale object can only make a write fail with a conflict (and the
    pass run again), never make one land on a state it did not see. To keep those conflicts rare,
    the result of the controller's own writes is stored too (`put_written`), but only over an older
    version of an object still held, and a conflict drops the object (`drop`), so that the pass
    that runs again reads it fresh (a cache miss is a GET) until its next watch event. The cache
    never goes back to an older version than it holds (the event of a version the controller
    already wrote over comes late), and it tells its informer which events are echoes of the
    controller's own writes, which start no pass: the pass that wrote has acted on them."""

    def __init__(self, *, keep: Callable[[JSON], bool] = lambda obj: True) -> None:
        self._keep = keep
        """Whether to hold an object at all (the routes some owned rollout names, the rollouts of
        this shard); evaluated outside the cache's lock, so it may take other locks."""
        self._lock = threading.Lock()
        self._objects: dict[Key, _Held] = {}
        self._declined: dict[Key, int | None] = {}
        """The version of each object the informer saw and `keep` refused, until its DELETED: a
        route's event can come before the rollout naming it, and the GET that pass makes then
        fills the cache (otherwise every pass would GET it until the route's next event)."""

    def __len__(self) -> int:
        with self._lock:
            return len(self._objects)

    def get(self, namespace: str, name: str) -> JSON | None:
        """The object, parsed for this caller (who may change it), or None when not held."""
        with self._lock:
            found = self._objects.get((namespace, name))
        return None if found is None else dict(json.loads(zlib.decompress(found.packed)))

    def replace_all(self, items: Iterable[JSON]) -> None:
        """A list's result: exactly these objects (those kept)."""
        kept: dict[Key, _Held] = {}
        declined: dict[Key, int | None] = {}
        for obj in items:
            if self._keep(obj):
                kept[_object_key(obj)] = _held(obj)
            else:
                declined[_object_key(obj)] = _version(obj)
        with self._lock:
            self._objects = kept
            self._declined = declined

    def apply(self, kind: str, obj: JSON) -> bool:
        """A watch event: ADDED and MODIFIED store the object (or drop it when not kept), DELETED
        drops it. Returns whether the event is news: False for the echo of the controller's own
        write (the version `put_written` holds), which the pass that wrote has acted on already."""
        key = _object_key(obj)
        kept = kind != "DELETED" and self._keep(obj)
        held = _held(obj) if kept else _Held(version=None, packed=b"")
        with self._lock:
            before = self._objects.get(key)
            if kept and before is not None and _older(held, than=before):
                # The event of a version the controller wrote over before its event came: what
                # the cache holds is newer (passes read it), and has its own event coming.
                return False
            if kept:
                self._objects[key] = held
                self._declined.pop(key, None)
            else:
                self._objects.pop(key, None)
                if kind == "DELETED":
                    self._declined.pop(key, None)
                else:
                    self._declined[key] = _version(obj)
        echo = kept and before is not None and before.written and before.version == held.version
        return not echo

    def put_written(self, obj: JSON) -> None:
        """What a write of the controller returned: held only over an older version of an object
        still held, or of one seen and not kept then (a DELETED seen meanwhile is not undone, a
        newer event is not overwritten)."""
        self._put(obj, written=True)

    def put_read(self, obj: JSON) -> None:
        """What a GET returned, held like a write's result; its watch event is still news."""
        self._put(obj, written=False)

    def _put(self, obj: JSON, *, written: bool) -> None:
        key = _object_key(obj)
        kept = self._keep(obj)
        fresh = _held(obj, written=written)
        with self._lock:
            held = self._objects.get(key)
            if fresh.version is None:
                return
            if held is None:
                if kept and key in self._declined and _not_older(fresh.version, than=self._declined[key]):
                    del self._declined[key]
                    self._objects[key] = fresh
                return
            if not kept:
                del self._objects[key]
                self._declined[key] = fresh.version
                return
            if _older(held, than=fresh):
                self._objects[key] = fresh

    def drop(self, namespace: str, name: str) -> None:
        with self._lock:
            self._objects.pop((namespace, name), None)

    def keys(self) -> list[Key]:
        with self._lock:
            return list(self._objects)


@dataclass(frozen=True, kw_only=True, slots=True)
class _Held:
    version: int | None
    """The resourceVersion as a number."""
    packed: bytes
    """The object as compact JSON, compressed (zlib, level PACK_LEVEL)."""
    written: bool = False
    """Whether it is the result of the controller's own write (its watch event is an echo)."""


def _older(held: _Held, *, than: _Held) -> bool:
    return held.version is not None and than.version is not None and held.version < than.version


def _not_older(version: int, *, than: int | None) -> bool:
    return than is None or version >= than


def _held(obj: JSON, *, written: bool = False) -> _Held:
    """What the cache holds of an object: without metadata.managedFields (often the larger part
    of a small object)."""
    meta = obj.get("metadata")
    if isinstance(meta, dict) and "managedFields" in meta:
        obj = {**obj, "metadata": {k: v for k, v in meta.items() if k != "managedFields"}}
    text = json.dumps(obj, separators=(",", ":")).encode()
    return _Held(version=_version(obj), packed=zlib.compress(text, PACK_LEVEL), written=written)


class _Gone(Exception):
    """The resourceVersion is too old (HTTP 410): list again."""


CORE_LISTS: dict[str, tuple[str, str]] = {"services": ("list_namespaced_service", "list_service_for_all_namespaces")}
"""The core kinds an informer can watch: plural -> (namespaced list, list across namespaces) of CoreV1Api."""


@dataclass(frozen=True, kw_only=True)
class Resource:
    group: str
    """API group; empty for the core group (a kind of CORE_LISTS)."""
    version: str
    plural: str
    namespace: str | None = None
    """Watch one namespace; None watches all."""
    label_selector: str = ""
    """Watch only the objects whose labels match this Kubernetes label selector; empty: all."""


class Informer:
    def __init__(
        self,
        *,
        api_client: client.ApiClient,
        resource: Resource,
        on_event: Callable[[str, JSON], None],
        on_list: Callable[[Iterable[JSON]], None],
        cache: ObjectCache | None = None,
    ) -> None:
        self.resource = resource
        self.on_event = on_event
        self.on_list = on_list
        self.cache = cache
        """With a cache, the handler is handed news only: not the echoes of the controller's own
        writes, nor late events of versions written over (ObjectCache.apply)."""
        self.synced = threading.Event()
        self._custom = client.CustomObjectsApi(api_client)
        self._core = client.CoreV1Api(api_client)
        self._watch: watch.Watch | None = None

    def _list_call(self) -> Callable[..., Any]:
        r = self.resource
        namespace = r.namespace
        selector: dict[str, Any] = {"label_selector": r.label_selector} if r.label_selector else {}
        if not r.group:
            namespaced, everywhere = CORE_LISTS[r.plural]
            if namespace:
                return lambda **kw: getattr(self._core, namespaced)(namespace, **selector, **kw)
            return lambda **kw: getattr(self._core, everywhere)(**selector, **kw)
        if namespace:
            return lambda **kw: self._custom.list_namespaced_custom_object(
                r.group, r.version, namespace, r.plural, **selector, **kw
            )
        return lambda **kw: self._custom.list_cluster_custom_object(r.group, r.version, r.plural, **selector, **kw)

    def run(self, stop: threading.Event) -> None:
        list_call = self._list_call()
        while not stop.is_set():
            try:
                # As JSON, for every kind: the typed models of core kinds cost far more to build.
                listed = json.loads(list_call(_preload_content=False).data)
                items = listed.get("items", [])
                if self.cache is not None:
                    self.cache.replace_all(items)
                self.on_list(items)
                self.synced.set()
                self._watch_from(list_call, listed["metadata"]["resourceVersion"], stop)
            except _Gone:
                log.info("watch expired; listing again", extra={"resource": self.resource.plural})
            except Exception as error:
                if stop.is_set():
                    return
                if isinstance(error, ApiException) and error.status in (403, 404):
                    self._not_served(error)
                    stop.wait(NOT_SERVED_RETRY_SECONDS)
                    continue
                log.exception("watch failed; listing again", extra={"resource": self.resource.plural})
                stop.wait(ERROR_BACKOFF_SECONDS)

    def _not_served(self, error: ApiException) -> None:
        """The kind is not installed (a router's CRD absent from this cluster) or not granted:
        nothing of it is cached, so a rollout naming such an object reads it with a GET, finds it
        missing and waits, saying so. The informer counts as synced meanwhile (the controller is
        ready), and lists again later."""
        log.warning(
            "cannot list this kind; objects of it are read one by one",
            extra={"resource": self.resource.plural, "status": error.status},
        )
        if self.cache is not None:
            self.cache.replace_all([])
        self.synced.set()

    def _watch_from(self, list_call: Callable[..., Any], resource_version: str, stop: threading.Event) -> None:
        while not stop.is_set():
            self._watch = watch.Watch(return_type="object")  # type: ignore[no-untyped-call]
            try:
                for event in self._watch.stream(  # type: ignore[no-untyped-call]
                    list_call,
                    resource_version=resource_version,
                    allow_watch_bookmarks=True,
                    timeout_seconds=WATCH_TIMEOUT_SECONDS,
                ):
                    kind, obj = event["type"], event["object"]
                    if kind == "ERROR":
                        if obj.get("code") == 410:
                            raise _Gone
                        raise RuntimeError(f"watch error: {obj}")
                    resource_version = obj["metadata"]["resourceVersion"]
                    if kind != "BOOKMARK":
                        news = self.cache.apply(kind, obj) if self.cache is not None else True
                        if news:
                            self.on_event(kind, obj)
                    if stop.is_set():
                        return
            except ApiException as error:
                if error.status == 410:
                    raise _Gone from error
                raise

    def stop(self) -> None:
        if self._watch is not None:
            self._watch.stop()  # type: ignore[no-untyped-call]


# Label selectors ---------------------------------------------------------------------------------

_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_KEY = re.compile(rf"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?{_NAME}$")
_VALUE = re.compile(rf"^({_NAME})?$")
_TOKEN = re.compile(r"\s*(==|!=|=|!|,|\(|\)|>|<|[^\s=!,()<>]+)")
_OPERATORS = ("==", "!=", "=", "!", ",", "(", ")", ">", "<")


@dataclass(frozen=True, kw_only=True)
class Requirement:
    key: str
    operator: str
    """One of: exists, !exists, in, notin, gt, lt (= and == are `in` with one value, != is `notin`)."""
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        if self.operator == "exists":
            return present
        if self.operator == "!exists":
            return not present
        if self.operator == "in":
            return present and labels[self.key] in self.values
        if self.operator == "notin":
            return not present or labels[self.key] not in self.values
        (bound,) = self.values
        try:
            value = int(labels[self.key]) if present else None
        except ValueError:
            return False
        if value is None:
            return False
        return value > int(bound) if self.operator == "gt" else value < int(bound)


@dataclass(frozen=True, kw_only=True)
class LabelSelector:
    """A Kubernetes label selector in its string form (`kubectl get -l`, `labelSelector=` of a list),
    evaluated as the API server does: requirements separated by commas, all of which must hold.
    Empty selects everything."""

    text: str = ""
    requirements: tuple[Requirement, ...] = ()

    @classmethod
    def parse(cls, text: str) -> LabelSelector:
        """Raises ValueError, naming what is wrong, for a selector the API server would refuse."""
        tokens = _tokens(text)
        requirements: list[Requirement] = []
        position = 0

        def take() -> str:
            nonlocal position
            if position >= len(tokens):
                raise ValueError(f"label selector {text!r} ends too early")
            position += 1
            return tokens[position - 1]

        def peek() -> str | None:
            return tokens[position] if position < len(tokens) else None

        while position < len(tokens):
            first = take()
            if first == "!":
                requirements.append(Requirement(key=_key(take(), text), operator="!exists"))
            else:
                key = _key(first, text)
                following = peek()
                if following in (None, ","):
                    requirements.append(Requirement(key=key, operator="exists"))
                elif following in ("=", "==", "!="):
                    take()
                    value = "" if peek() in (None, ",") else _value(take(), text)
                    operator = "notin" if following == "!=" else "in"
                    requirements.append(Requirement(key=key, operator=operator, values=frozenset({value})))
                elif following in ("in", "notin"):
                    take()
                    requirements.append(Requirement(key=key, operator=following, values=_set(take, text)))
                elif following in (">", "<"):
                    take()
                    bound = take()
                    if not re.fullmatch(r"-?[0-9]+", bound):
                        raise ValueError(f"label selector {text!r}: {key}{following} needs an integer, not {bound!r}")
                    operator = "gt" if following == ">" else "lt"
                    requirements.append(Requirement(key=key, operator=operator, values=frozenset({bound})))
                else:
                    raise ValueError(f"label selector {text!r}: unexpected {following!r} after {key!r}")
            if peek() is not None:
                if take() != ",":
                    raise ValueError(f"label selector {text!r}: requirements are separated by commas")
                if peek() is None:
                    raise ValueError(f"label selector {text!r} ends with a comma")
        return cls(text=text.strip(), requirements=tuple(requirements))

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        found = labels or {}
        return all(requirement.matches(found) for requirement in self.requirements)

    def matches_object(self, obj: Mapping[str, Any]) -> bool:
        return self.matches((obj.get("metadata") or {}).get("labels"))


def _tokens(text: str) -> list[str]:
    tokens: list[str] = []
    position = 0
    stripped = text.rstrip()
    while position < len(stripped):
        match = _TOKEN.match(stripped, position)
        if match is None:  # pragma: no cover - the pattern matches any non-space character
            raise ValueError(f"label selector {text!r}: cannot read it at {stripped[position:]!r}")
        tokens.append(match.group(1))
        position = match.end()
    return tokens


def _key(token: str, text: str) -> str:
    if token in _OPERATORS or token in ("in", "notin") or not _KEY.match(token) or len(token) > 316:
        raise ValueError(f"label selector {text!r}: {token!r} is not a label key")
    prefix, _, _ = token.rpartition("/")
    if len(prefix) > 253:
        raise ValueError(f"label selector {text!r}: the prefix of {token!r} is longer than 253 characters")
    return token


def _value(token: str, text: str) -> str:
    if token in _OPERATORS or not _VALUE.match(token):
        raise ValueError(f"label selector {text!r}: {token!r} is not a label value")
    return token


def _set(take: Callable[[], str], text: str) -> frozenset[str]:
    """The values of `in (a, b)` / `notin (a, b)`; as in the API server, an empty place between
    commas is the empty value, and the list must not be empty."""
    if take() != "(":
        raise ValueError(f"label selector {text!r}: in and notin take a list in parentheses")
    values: set[str] = set()
    expecting_value, after_comma = True, False
    while (token := take()) != ")":
        if token == ",":
            if expecting_value:
                values.add("")
            expecting_value, after_comma = True, True
        elif expecting_value:
            values.add(_value(token, text))
            expecting_value = False
        else:
            raise ValueError(f"label selector {text!r}: values in parentheses are separated by commas")
    if expecting_value and after_comma:
        values.add("")
    if not values:
        raise ValueError(f"label selector {text!r}: in and notin need at least one value")
    return frozenset(values)
