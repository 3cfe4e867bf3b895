"""Agents last seen: what a central instance notes of each batch and writes to the
fleet's journal at most once per batch interval per host, on both journal backends."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest

from batond.anomaly import DEFAULT_SPEC, ModelSet
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
        {"host": "web-1", "partition": 3, "last_seen": 130.0, "seq": 4, "labels": {"role": "web"},
         "anomalous": {}}
    ]  # fmt: skip
    agents, hosts = await journal.fleet_view("web-5xx", since=125.0)
    assert [a.host for a in agents] == ["web-1"] and hosts == set()


async def test_an_agents_anomalous_metrics_are_kept_and_read_back(journal: Journal) -> None:
    row = AgentSeen("web-1", 3, 100.0, 1, {"role": "web"}, {"cpu": 99.5, "mem": 42.0})
    await journal.note_agents([row])
    await journal.note_agents([AgentSeen("web-1", 3, 110.0, 2, {"role": "web"}, {"cpu": 109.0})])
    (agent,), _ = await journal.fleet_view("", since=0.0)
    assert dict(agent.anomalous) == {"cpu": 109.0}  # the row's latest, replaced whole
    listed = await journal.list_agents()
    assert listed["agents"][0]["anomalous"] == {"cpu": 109.0}


async def test_agents_not_seen_for_a_day_or_the_retention_are_pruned(journal: Journal) -> None:
    now = 1_000_000.0
    day = 86400.0
    await journal.note_agents(
        [
            AgentSeen("gone", 1, now - day - 1, 1, {}),  # older than a day
            AgentSeen("quiet", 2, now - 3600.0, 1, {}),  # an hour ago
            AgentSeen("here", 3, now - 1.0, 1, {}),
        ]
    )
    counts = await journal.prune(30 * day, now)  # retention 30 days: agents go after a day
    assert counts["fleet_agents"] == 1
    assert sorted(a["host"] for a in (await journal.list_agents())["agents"]) == ["here", "quiet"]
    assert (await journal.prune(600.0, now))["fleet_agents"] == 1  # a shorter retention wins
    assert [a["host"] for a in (await journal.list_agents())["agents"]] == ["here"]


def test_an_agents_row_carries_its_hosts_anomalous_metrics_when_written() -> None:
    seen = SeenAgents(10.0)
    asked: list[str] = []

    def anomalous(host: str) -> dict[str, float]:
        asked.append(host)
        return {"cpu": 99.0} if host == "web-1" else {}

    seen.anomalous = anomalous
    for _ in range(5):  # five batches, one row: the models are asked once, when written
        seen.note("web-1", 3, 1, 100.0, {"role": "web"})
    seen.note("web-2", 4, 1, 100.0, {"role": "web"})
    rows = {r.host: dict(r.anomalous) for r in seen.due(100.0)}
    assert rows == {"web-1": {"cpu": 99.0}, "web-2": {}}
    assert sorted(asked) == ["web-1", "web-2"]


def test_the_models_note_a_hosts_anomalous_metrics_as_they_score() -> None:
    models = ModelSet([replace(DEFAULT_SPEC, name="cpu", match_metrics=("cpu",), warmup=30)])

    def score(host: str, i: int, value: float | None = None) -> float:
        v = 5.0 + (i % 3) * 0.5 if value is None else value  # a regular pattern
        return models.observe(Sample("cpu", v, 1000.0 + i, {"host": host, "role": "web"}))

    for host in ("a", "b"):
        for i in range(40):  # the warm-up, then the first fit
            score(host, i)
    for job in models.training_jobs(1050.0):
        job()()
    assert [s["fitted"] for s in models.series()] == [True, True]
    quiet = [score(host, i) for host in ("a", "b") for i in range(40, 80)]
    assert max(quiet) < DEFAULT_SPEC.threshold
    assert models.anomalous("a") == models.anomalous("b") == {}
    assert score("a", 80, 95.0) >= DEFAULT_SPEC.threshold  # a spike on a only
    assert models.anomalous("a") == {"cpu": 1080.0} and models.anomalous("b") == {}
    assert score("a", 81) < DEFAULT_SPEC.threshold  # (the detector rests after it)
    assert models.anomalous("a") == {"cpu": 1080.0}  # the latest anomalous score's ts stays


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
