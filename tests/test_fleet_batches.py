"""The fleet agent's batcher (batond.fleet.agent): bounds, and what it says when it drops.

The broker is faked at the transport boundary only (``publish``: taken, or refused as
when the connection is down); the seq is kept in a real SQLite journal.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from batond.errors import ActionError
from batond.events import Event, Sample
from batond.fleet.agent import SEQ_STATE, Batcher
from batond.fleet.wire import decode_batch
from batond.journal.facade import Journal
from batond.metrics import Metrics


class Broker:
    """The publish function of the agent's MQTT connection, up or down."""

    def __init__(self) -> None:
        self.up = True
        self.got: list[tuple[str, bytes, int]] = []

    async def publish(self, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        if not self.up:
            raise ActionError("MQTT is not connected to mqtt://127.0.0.1:1883")
        self.got.append((topic, payload, qos))

    def seqs(self) -> list[int]:
        return [decode_batch(p, 2e9).seq for _, p, _ in self.got]


@pytest.fixture
async def journal(tmp_path: Path) -> AsyncIterator[Journal]:
    j = await asyncio.to_thread(Journal.open, tmp_path)
    yield j
    await j.close()


def make(journal: Journal, broker: Broker, **kw: int) -> tuple[Batcher, Metrics]:
    metrics = Metrics(CollectorRegistry())
    batcher = Batcher(
        host="web-01", node="n1", topic="f/3/web-01", interval=1.0, publish=broker.publish,
        seqs=journal, metrics=metrics, clock=lambda: 1000.0, **kw,
    )  # fmt: skip
    return batcher, metrics


def sample(i: int, host: str | None = "web-01") -> Sample:
    labels = {"host": host} if host is not None else {}
    return Sample("m", float(i), 999.0, labels, {"metric": "m", "value": i, **labels}, "mqtt")


def dropped(metrics: Metrics, reason: str) -> float:
    value = metrics.registry.get_sample_value(
        "batond_fleet_batch_dropped_total", {"reason": reason}
    )
    return value or 0.0


async def test_a_batch_per_interval_with_rising_seq_at_qos1(
    journal: Journal, caplog: pytest.LogCaptureFixture
) -> None:
    broker = Broker()
    batcher, metrics = make(journal, broker)
    batcher.take(sample(1))
    batcher.take(sample(2, host=None))  # no host label: this host's
    batcher.take(sample(3, host="n1"))  # the node name: this host, as the fleet calls it
    batcher.take(Event("deploy", 999.0, {}, {"event": "deploy"}, "http"))
    await batcher.close_batch()
    assert await batcher.send_pending() == 1
    await batcher.close_batch()  # an empty interval is a batch too
    await batcher.send_pending()
    assert [(t, q) for t, _, q in broker.got] == [("f/3/web-01", 1), ("f/3/web-01", 1)]
    assert broker.seqs() == [1, 2]
    first = decode_batch(broker.got[0][1], 2000.0)
    assert [i.labels["host"] for i in first.items] == ["web-01"] * 4
    assert [type(i).__name__ for i in first.items] == ["Sample"] * 3 + ["Event"]
    assert metrics.registry.get_sample_value("batond_fleet_batches_published_total") == 2
    assert await journal.load_state(SEQ_STATE) == {"seq": 2}


async def test_overflow_is_counted_and_logged_once_per_interval(
    journal: Journal, caplog: pytest.LogCaptureFixture
) -> None:
    broker = Broker()
    batcher, metrics = make(journal, broker, max_batch=3)
    caplog.set_level(logging.WARNING, "batond.fleet")
    for i in range(10):
        batcher.take(sample(i))
    batcher.take(sample(99, host="db-02"))  # another host's input is not this agent's
    await batcher.close_batch()
    await batcher.send_pending()
    batcher.log_dropped()
    batcher.log_dropped()  # nothing new: nothing more said
    assert [len(decode_batch(p, 2e9).items) for _, p, _ in broker.got] == [3]
    assert (dropped(metrics, "batch_full"), dropped(metrics, "other_host")) == (7, 1)
    lines = [r.getMessage() for r in caplog.records if "not published" in r.getMessage()]
    assert lines == ["fleet agent web-01: inputs not published: 7 batch_full, 1 other_host"]


async def test_batches_wait_for_the_broker_and_the_oldest_go_when_the_outbox_is_full(
    journal: Journal, caplog: pytest.LogCaptureFixture
) -> None:
    broker = Broker()
    batcher, metrics = make(journal, broker, max_pending=5)
    caplog.set_level(logging.INFO, "batond.fleet")
    broker.up = False
    for n in range(4):  # four intervals of two inputs while the broker is away
        batcher.take(sample(2 * n))
        batcher.take(sample(2 * n + 1))
        await batcher.close_batch()
        assert await batcher.send_pending() == 0
    assert batcher.buffered() == 4  # batches 1 and 2 went to make room
    assert dropped(metrics, "outbox_full") == 4
    refused = [r for r in caplog.records if "kept for later" in r.getMessage()]
    assert len(refused) == 1  # once per outage, not once per interval
    broker.up = True
    assert await batcher.send_pending() == 2
    assert broker.seqs() == [3, 4]  # in order; the gap says 1 and 2 are lost
    assert batcher.buffered() == 0
    assert any("took the batches kept meanwhile" in r.getMessage() for r in caplog.records)


async def test_what_is_left_at_stop_is_counted(journal: Journal) -> None:
    broker = Broker()
    batcher, metrics = make(journal, broker)
    batcher.take(sample(1))
    await batcher.stop(0.5)
    assert broker.seqs() == [1]  # the last batch went out
    broker.up = False
    batcher.take(sample(2))  # evaluated while stopping: counted, not kept
    assert dropped(metrics, "stopping") == 1
    other, metrics = make(journal, broker)
    other.take(sample(3))
    await other.stop(0.5)
    assert dropped(metrics, "stopping") == 1


class FlakyBroker(Broker):
    """Takes every publish but the ``fail``-th (a connection that drops mid-backlog)."""

    def __init__(self, fail: int) -> None:
        super().__init__()
        self.calls = 0
        self.fail = fail

    async def publish(self, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        self.calls += 1
        call = self.calls
        await asyncio.sleep(0)  # in flight together, as over a real connection
        if call == self.fail:
            raise ActionError("MQTT publish to 'f/3/web-01' failed: connection lost")
        await super().publish(topic, payload, qos, retain)


async def test_a_backlog_goes_out_in_windows_and_a_failure_keeps_only_what_failed(
    journal: Journal,
) -> None:
    broker = FlakyBroker(fail=5)
    batcher, metrics = make(journal, broker)
    broker.up = False
    for i in range(40):
        batcher.take(sample(i))
        await batcher.close_batch()
    await batcher.send_pending()
    broker.up = True
    broker.calls = 0
    sent = await batcher.send_pending()  # the 5th of the first window fails: 15 went
    assert sent == 15 and batcher.buffered() == 25
    assert await batcher.send_pending() == 25  # then the rest, the failed one first
    assert sorted(broker.seqs()) == list(range(1, 41))  # each once
    assert broker.seqs()[15] == 5
    assert metrics.registry.get_sample_value("batond_fleet_batches_published_total") == 40
