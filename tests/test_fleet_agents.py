"""Agents last seen: what a central instance notes of each batch and writes to the
fleet's journal at most once per batch interval per host, on both journal backends."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from batond.commands.client import format_fleet
from batond.engine.fleet import AgentSeen
from batond.events import Event, Sample
from batond.fleet.agents import SeenAgents, host_labels
from batond.journal.facade import Journal
from journal_backends import JournalFactory


def sample(**labels: str) -> Sample:
    return Sample(metric="cpu", value=1.0, ts=0.0, labels={"host": "web-1", **labels})


def test_host_labels_are_what_every_sample_shares_without_host() -> None:
    items = [sample(role="web", mount="/"), sample(role="web", mount="/var")]
    assert host_labels(items) == {"role": "web"}
    event = Event(name="process.exited", ts=0.0, labels={"host": "web-1"})
    assert host_labels([event]) is None  # no sample: nothing to say


def test_a_host_is_written_at_once_then_at_most_once_per_interval() -> None:
    seen = SeenAgents(10.0)
    seen.note("web-1", 3, 1, 100.0, {"role": "web"})
    assert [(r.host, r.seq) for r in seen.due(100.0)] == [("web-1", 1)]
    seen.note("web-1", 3, 2, 101.0, None)  # labels kept from the last batch with samples
    seen.note("web-1", 3, 3, 105.0, None)
    assert seen.due(105.0) == []  # written 5 s ago
    (row,) = seen.due(110.0)
    assert (row.seq, row.last_seen, dict(row.labels)) == (3, 105.0, {"role": "web"})
    assert seen.due(200.0) == []  # nothing seen since


def test_a_failed_write_is_due_again_and_a_released_partition_forgotten() -> None:
    seen = SeenAgents(10.0)
    seen.note("a", 1, 1, 0.0, {})
    seen.note("b", 2, 1, 0.0, {})
    rows = seen.due(0.0)
    seen.failed(rows)
    assert sorted(r.host for r in seen.due(1.0)) == ["a", "b"]
    seen.note("a", 1, 2, 20.0, {})
    seen.note("b", 2, 2, 20.0, {})
    seen.forget(2)
    assert [r.host for r in seen.due(20.0)] == ["a"]


@pytest.fixture
def journal(journal_factory: JournalFactory) -> Iterator[Journal]:
    j = journal_factory.open()  # on SQLite, then on PostgreSQL
    yield j
    j.close_sync()


async def test_agents_are_upserted_listed_newest_first_and_counted(journal: Journal) -> None:
    await journal.note_agents([AgentSeen("web-1", 3, 100.0, 1, {"role": "web"})])
    await journal.note_agents(
        [AgentSeen("web-1", 3, 130.0, 4, {"role": "web"}), AgentSeen("db-1", 7, 120.0, 9, {})]
    )
    listed = await journal.list_agents(1)
    assert listed["agent_count"] == 2
    assert listed["agents"] == [
        {"host": "web-1", "partition": 3, "last_seen": 130.0, "seq": 4, "labels": {"role": "web"}}
    ]
    agents, hosts = await journal.fleet_view("web-5xx", since=125.0)
    assert [a.host for a in agents] == ["web-1"] and hosts == set()


def test_fleet_status_shows_the_agents() -> None:
    doc = {
        "instance": "c0", "state": "connected", "partitions": 4, "held": [], "unowned": [],
        "members": [], "as_of": 0.0, "agent_count": 1,
        "agents": [{"host": "web-1", "partition": 3, "last_seen": 0.0, "seq": 4,
                    "labels": {"role": "web"}}],
    }  # fmt: skip
    text = format_fleet(doc)
    assert "agents     1" in text
    assert "web-1" in text and "role=web" in text
