"""Label selectors as the API server reads them (a shard owns the rollouts that match its selector),
and the Lease each shard competes for."""

from __future__ import annotations

import pytest

from controller.__main__ import parse_args
from controller.leader import DEFAULT_LEASE_NAME, default_lease_name
from controller.watch import LabelSelector

SHARD = "sharding.fluxcd.io/key"


@pytest.mark.parametrize(
    ("selector", "labels", "matches"),
    [
        ("", {}, True),
        ("", {"a": "b"}, True),
        (f"{SHARD}=shard1", {SHARD: "shard1"}, True),
        (f"{SHARD}=shard1", {SHARD: "shard2"}, False),
        (f"{SHARD}=shard1", {}, False),
        (f"{SHARD}==shard1", {SHARD: "shard1"}, True),
        (f"{SHARD}!=shard1", {SHARD: "shard2"}, True),
        (f"{SHARD}!=shard1", {}, True),
        (f"{SHARD}!=shard1", {SHARD: "shard1"}, False),
        (f"!{SHARD}", {}, True),
        (f"!{SHARD}", {SHARD: ""}, False),
        (SHARD, {SHARD: ""}, True),
        (SHARD, {}, False),
        (f"{SHARD} in (a, b)", {SHARD: "b"}, True),
        (f"{SHARD} in (a, b)", {SHARD: "c"}, False),
        (f"{SHARD} in (a, b)", {}, False),
        (f"{SHARD} notin (a,b)", {SHARD: "c"}, True),
        (f"{SHARD} notin (a,b)", {}, True),
        (f"{SHARD} notin (a,b)", {SHARD: "a"}, False),
        ("team=ml, tier in (gold)", {"team": "ml", "tier": "gold"}, True),
        ("team=ml, tier in (gold)", {"team": "ml", "tier": "silver"}, False),
        ("replicas>2", {"replicas": "3"}, True),
        ("replicas>2", {"replicas": "two"}, False),
        ("replicas<2", {}, False),
        ("env=", {"env": ""}, True),
        ("env=", {"env": "prod"}, False),
    ],
)
def test_a_selector_matches_as_the_api_server_does(selector: str, labels: dict[str, str], matches: bool) -> None:
    assert LabelSelector.parse(selector).matches(labels) is matches


def test_an_object_without_labels_is_matched_on_no_labels() -> None:
    assert LabelSelector.parse(f"!{SHARD}").matches_object({"metadata": {"name": "iris"}})
    assert not LabelSelector.parse(f"{SHARD}=a").matches_object({"metadata": {"labels": None}})


@pytest.mark.parametrize(
    ("selector", "complaint"),
    [
        ("a=b,", "ends with a comma"),
        (",a", "is not a label key"),
        ("a b", "unexpected 'b'"),
        ("a in ()", "at least one value"),
        ("a in x", "list in parentheses"),
        ("a in (x y)", "separated by commas"),
        ("a=b=c", "separated by commas"),
        ("a>x", "needs an integer"),
        ("-a=b", "is not a label key"),
        ("a=b!", "separated by commas"),
        ("a=-b", "is not a label value"),
        ("a in (x", "ends too early"),
    ],
)
def test_a_malformed_selector_is_refused_naming_the_problem(selector: str, complaint: str) -> None:
    with pytest.raises(ValueError, match="label selector") as refused:
        LabelSelector.parse(selector)
    assert complaint in str(refused.value)


def test_the_command_line_refuses_a_malformed_selector_at_start(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--watch-label-selector", "a in ()"])
    assert "--watch-label-selector" in capsys.readouterr().err
    assert parse_args([]).watch_label_selector == LabelSelector()
    assert parse_args(["--watch-label-selector", f"{SHARD}=shard1"]).watch_label_selector.text == f"{SHARD}=shard1"


def test_each_shard_has_its_own_readable_lease() -> None:
    names = {
        selector: default_lease_name(selector)
        for selector in ("", f"{SHARD}=shard1", f"{SHARD}=shard2", f"!{SHARD}", SHARD, "x" * 300)
    }
    assert names[""] == DEFAULT_LEASE_NAME
    assert names[f"{SHARD}=shard1"].startswith(f"{DEFAULT_LEASE_NAME}-sharding-fluxcd-io-key-shard1-")
    assert len(set(names.values())) == len(names), "two shards would share a Lease"
    for name in names.values():
        assert len(name) <= 80 and name == name.lower() and not name.endswith("-")
    assert default_lease_name(f"{SHARD}=shard1") == default_lease_name(f" {SHARD}=shard1 "), "stable per selector"
