"""The match index: an input meets only the parts that can match it."""

from __future__ import annotations

from batond.engine.index import MatchIndex
from batond.engine.model import Match

ENTRIES = [
    (Match("metric", "cpu", (("host", "a"),)), "cpu-a"),
    (Match("metric", "cpu", (("host", "b"),)), "cpu-b"),
    (Match("metric", "cpu", (("host", "a"), ("role", "web"))), "cpu-a-web"),
    (Match("metric", "cpu", (("role", "db"),)), "cpu-db"),
    (Match("metric", "cpu"), "cpu-any"),
    (Match("event", "cpu"), "event-cpu"),
    (Match("event", "alert", (("status", ""),)), "alert-no-status"),
]
INDEX = MatchIndex(ENTRIES)


def test_lookup_is_equality_on_kind_name_and_labels() -> None:
    assert INDEX.lookup("metric", "cpu", {"host": "a", "role": "web"}) == [
        "cpu-a",
        "cpu-a-web",
        "cpu-any",
    ]
    assert INDEX.lookup("metric", "cpu", {"host": "c", "role": "db"}) == ["cpu-db", "cpu-any"]
    assert INDEX.lookup("event", "cpu", {"host": "a"}) == ["event-cpu"]
    assert INDEX.lookup("metric", "mem", {"host": "a"}) == []


def test_a_missing_label_equals_the_empty_string() -> None:
    assert INDEX.lookup("event", "alert", {}) == ["alert-no-status"]
    assert INDEX.lookup("event", "alert", {"status": "firing"}) == []


def test_the_most_pinned_label_is_the_dict_key() -> None:
    bucket = INDEX.metrics["cpu"]
    assert bucket.label == "host"
    assert set(bucket.table) == {"a", "b"}


def test_could_match_rules_out_raw_objects_cheaply() -> None:
    only_hosts = MatchIndex([(Match("metric", "cpu", (("host", "a"),)), 1)])
    assert only_hosts.could_match({"metric": "cpu", "host": "a", "value": 1})
    assert not only_hosts.could_match({"metric": "cpu", "host": "z", "value": 1})
    assert not only_hosts.could_match({"metric": "mem", "host": "a", "value": 1})
    assert not only_hosts.could_match({"event": "cpu", "host": "a"})
    assert only_hosts.could_match({"metric": "cpu", "host": 7})  # not text: decide later
    assert not only_hosts.could_match({"metric": ["cpu"], "host": "a"})
    assert INDEX.could_match({"metric": "cpu", "host": "z"})  # rules without a host pin
