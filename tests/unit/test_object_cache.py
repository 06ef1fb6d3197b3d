"""The informers' cache: the latest version of each object received, never older than what it held,
never holding an object deleted or left behind."""

from __future__ import annotations

from typing import Any

from controller.watch import ObjectCache

JSON = dict[str, Any]


def obj(name: str, version: str, **metadata: Any) -> JSON:
    return {"metadata": {"namespace": "ns", "name": name, "resourceVersion": version, **metadata}, "spec": {"x": 1}}


def version(cache: ObjectCache, name: str) -> str | None:
    found = cache.get("ns", name)
    return None if found is None else str(found["metadata"]["resourceVersion"])


def test_watch_events_store_the_latest_version_and_deleted_drops_it() -> None:
    cache = ObjectCache()
    cache.apply("ADDED", obj("a", "1"))
    cache.apply("MODIFIED", obj("a", "2"))
    assert version(cache, "a") == "2"
    cache.apply("DELETED", obj("a", "3"))
    assert cache.get("ns", "a") is None and len(cache) == 0


def test_a_list_replaces_everything_held() -> None:
    cache = ObjectCache()
    cache.apply("ADDED", obj("gone", "1"))
    cache.replace_all([obj("a", "5"), obj("b", "6")])
    assert sorted(cache.keys()) == [("ns", "a"), ("ns", "b")]


def test_objects_are_held_without_managed_fields_and_read_as_copies() -> None:
    cache = ObjectCache()
    received = obj("a", "1", managedFields=[{"manager": "kubectl"}], labels={"k": "v"})
    cache.apply("ADDED", received)
    found = cache.get("ns", "a")
    assert found is not None and "managedFields" not in found["metadata"] and found["metadata"]["labels"] == {"k": "v"}
    assert received["metadata"]["managedFields"], "the object received is not changed"
    found["spec"]["x"] = 2
    assert cache.get("ns", "a") == {**found, "spec": {"x": 1}}, "a reader's change does not reach the cache"


def test_only_the_objects_kept_are_held() -> None:
    cache = ObjectCache(keep=lambda o: o["metadata"]["name"] != "other")
    cache.replace_all([obj("mine", "1"), obj("other", "1")])
    cache.apply("ADDED", obj("other", "2"))
    assert cache.keys() == [("ns", "mine")]


def test_a_read_of_an_object_seen_before_it_was_kept_is_held() -> None:
    # given a route whose event came before the rollout naming it, so the cache did not keep it
    ours: set[str] = set()
    cache = ObjectCache(keep=lambda o: o["metadata"]["name"] in ours)
    cache.apply("ADDED", obj("route", "5"))
    assert cache.get("ns", "route") is None

    # when the rollout names it and its pass reads it with a GET
    ours.add("route")
    cache.put_read(obj("route", "5"))

    # then the cache holds it: the next passes read it without a GET
    assert version(cache, "route") == "5"


def test_a_read_never_brings_back_an_object_deleted_or_never_seen() -> None:
    # given a route seen and deleted, and a list that held only another object, none kept then
    ours: set[str] = set()
    cache = ObjectCache(keep=lambda o: o["metadata"]["name"] in ours)
    cache.apply("ADDED", obj("route", "5"))
    cache.apply("DELETED", obj("route", "6"))
    cache.replace_all([obj("other", "7")])

    # when rollouts name them and GETs that started earlier return them
    ours.update({"route", "unseen"})
    cache.put_read(obj("route", "5"))
    cache.put_read(obj("unseen", "8"))

    # then neither is held: only a watch event brings them in
    assert cache.keys() == []


def test_a_read_older_than_the_version_seen_is_not_held() -> None:
    ours: set[str] = set()
    cache = ObjectCache(keep=lambda o: o["metadata"]["name"] in ours)
    cache.replace_all([obj("route", "9")])
    ours.add("route")
    cache.put_read(obj("route", "8"))
    assert cache.get("ns", "route") is None
    cache.put_read(obj("route", "9"))
    assert version(cache, "route") == "9"


def test_a_written_version_replaces_only_an_older_one_held() -> None:
    cache = ObjectCache()
    cache.apply("ADDED", obj("a", "10"))
    cache.put_written(obj("a", "12"))
    assert version(cache, "a") == "12"
    cache.put_written(obj("a", "11"))
    assert version(cache, "a") == "12", "an older write result does not replace a newer event"
    cache.put_written(obj("a", "x13"))
    assert version(cache, "a") == "12", "a version that is not a number is left to the watch"


def test_a_written_version_never_brings_back_an_object_dropped() -> None:
    cache = ObjectCache()
    cache.apply("ADDED", obj("a", "1"))
    cache.apply("DELETED", obj("a", "2"))
    cache.put_written(obj("a", "3"))
    assert cache.get("ns", "a") is None
    cache.put_written(obj("never-seen", "4"))
    assert cache.get("ns", "never-seen") is None


def test_a_written_version_no_longer_kept_drops_the_object() -> None:
    cache = ObjectCache(keep=lambda o: (o["metadata"].get("labels") or {}).get("shard") == "a")
    cache.apply("ADDED", obj("r", "1", labels={"shard": "a"}))
    cache.put_written(obj("r", "2", labels={"shard": "b"}))
    assert cache.get("ns", "r") is None


def test_the_echo_of_the_controllers_own_write_is_not_news_but_other_events_are() -> None:
    # given an object the controller wrote over (version 12), then one it read with a GET (version 20)
    cache = ObjectCache()
    assert cache.apply("ADDED", obj("a", "10")) is True
    cache.put_written(obj("a", "12"))

    # when the watch brings the write's own event, then someone else's change
    echo = cache.apply("MODIFIED", obj("a", "12"))
    change = cache.apply("MODIFIED", obj("a", "13"))
    cache.put_read(obj("a", "20"))
    read_event = cache.apply("MODIFIED", obj("a", "20"))

    # then only the echo starts no pass: a version merely read is still news to the handler
    assert (echo, change, read_event) == (False, True, True)
    assert version(cache, "a") == "20"


def test_a_late_event_of_a_version_written_over_never_takes_the_cache_back() -> None:
    # given two writes in a row (versions 11 and 12), before the first one's event came
    cache = ObjectCache()
    cache.apply("ADDED", obj("a", "10"))
    cache.put_written(obj("a", "11"))
    cache.put_written(obj("a", "12"))

    # when the first write's event comes, then the second's
    late = cache.apply("MODIFIED", obj("a", "11"))

    # then the cache keeps the newer version, and neither event starts a pass
    assert late is False and version(cache, "a") == "12"
    assert cache.apply("MODIFIED", obj("a", "12")) is False
    # and a deletion is news whatever version it carries
    assert cache.apply("DELETED", obj("a", "12")) is True and cache.get("ns", "a") is None
