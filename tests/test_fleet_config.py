"""The ``fleet:`` section of batond.yaml (docs/configuration.md, docs/fleet.md), the
partition function and the batch wire format both roles share."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from batond.errors import InputError
from batond.events import Event, Sample
from batond.fleet.partition import (
    batch_topic,
    partition_filter,
    partition_of,
    partition_topic_host,
)
from batond.fleet.wire import decode_batch, encode_batch
from batond.load.config import FleetConfig, FleetRole, JournalBackend, load_config
from support import config_problems as problems
from support import write_yaml


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "agent.key").write_text("s3cret-of-sixteen-bytes\n", encoding="utf-8")
    (tmp_path / "short.key").write_text("s3cret\n", encoding="utf-8")
    return write_yaml(tmp_path, text)


def test_absent_section_means_no_fleet(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "node: a\n")).fleet is None


def test_central_defaults(tmp_path: Path) -> None:
    text = "node: c1\nmqtt: {}\nfleet:\n  role: central\n  database: postgresql://pg/x\n"
    path = write(tmp_path, text)
    fleet = load_config(path).fleet
    assert fleet == FleetConfig(
        role=FleetRole.CENTRAL,
        host="c1",
        database="postgresql://pg/x",
        instance=f"c1-{os.getpid()}",
    )
    assert (fleet.prefix, fleet.partitions, fleet.heartbeat, fleet.lease) == (
        "batond/fleet",
        64,
        2.0,
        6.0,
    )


def test_agent_every_key(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        fleet:
          role: agent
          prefix: acme/fleet
          partitions: 128
          host: web-01
          batch_interval: 5s
          key_file: agent.key
          heartbeat: 1s
          lease: 3s
        mqtt: {}
        """,
    )
    fleet = load_config(path).fleet
    assert fleet is not None and fleet.role is FleetRole.AGENT and not fleet.is_central
    assert (fleet.prefix, fleet.partitions, fleet.host) == ("acme/fleet", 128, "web-01")
    assert (fleet.batch_interval, fleet.key_file) == (5.0, tmp_path / "agent.key")
    assert (fleet.heartbeat, fleet.lease, fleet.instance) == (1.0, 3.0, "")


CASES = {
    "no role": ("fleet:\n  partitions: 8\n", "2:3", "missing required key 'role'"),
    "unknown role": ("fleet:\n  role: leader\n", "2:9", "fleet role"),
    "unknown key": (
        "fleet:\n  role: central\n  database: postgresql://h/d\n  partition: 8\n",
        "4:3",
        "unknown key 'partition'",
    ),
    "too many partitions": (
        "fleet:\n  role: central\n  database: postgresql://h/d\n  partitions: 5000\n",
        "4:15",
        "at most 4096",
    ),
    "zero partitions": (
        "fleet:\n  role: central\n  database: postgresql://h/d\n  partitions: 0\n",
        "4:15",
        "at least 1",
    ),
    "central without database": ("fleet:\n  role: central\n", "2:3", "needs a database"),
    "agent without key": ("fleet:\n  role: agent\nmqtt: {}\n", "2:3", "needs a key_file"),
    "not a DSN": (
        "fleet:\n  role: central\n  database: mysql://h/d\n",
        "3:13",
        "database must be postgresql://",
    ),
    "bare number duration": (
        "fleet:\n  role: agent\n  key_file: agent.key\n  batch_interval: 10\nmqtt: {}\n",
        "4:19",
        "invalid duration",
    ),
    "agent key for central": (
        "fleet:\n  role: central\n  database: postgresql://h/d\n  key_file: agent.key\n",
        "4:3",
        "fleet.key_file is for role agent only",
    ),
    "central key for agent": (
        "fleet:\n  role: agent\n  key_file: agent.key\n  database: postgresql://h/d\nmqtt: {}\n",
        "4:3",
        "fleet.database is for role central only",
    ),
    "lease too short": (
        "fleet:\n  role: central\n  database: postgresql://h/d\n  lease: 3s\n",
        "4:10",
        "at least twice heartbeat",
    ),
    "agent without mqtt": (
        "node: a1\nfleet:\n  role: agent\n  key_file: agent.key\n",
        "2:1",
        "fleet role agent needs an mqtt: section",
    ),
    "key too short to sign": (
        "fleet:\n  role: agent\n  key_file: short.key\nmqtt: {}\n",
        "3:13",
        "a fleet key must be at least 16 bytes",
    ),
    "a host name with a wildcard": (
        "fleet:\n  role: agent\n  key_file: agent.key\n  host: web/#\nmqtt: {}\n",
        "4:9",
        "host name 'web/#': a host name is letters, digits and '-'",
    ),
    "a prefix with a wildcard": (
        "fleet:\n  role: agent\n  key_file: agent.key\n  prefix: fleet/+\nmqtt: {}\n",
        "4:11",
        "topic prefix 'fleet/+': topic levels joined by '/', without '+', '#'",
    ),
    "a node name that is no host name": (
        "node: web_01\nfleet:\n  role: agent\n  key_file: agent.key\nmqtt: {}\n",
        "2:1",
        "node 'web_01' cannot be this host's fleet name",
    ),
    "missing key file": (
        "fleet:\n  role: agent\n  key_file: nowhere.key\nmqtt: {}\n",
        "3:13",
        "cannot be read",
    ),
}


@pytest.mark.parametrize("text,at,fragment", CASES.values(), ids=CASES.keys())
def test_problems_at_their_spot(tmp_path: Path, text: str, at: str, fragment: str) -> None:
    central = "role: central" in text and "mqtt:" not in text
    extra = "mqtt: {}\n" if central else ""  # (a central instance needs its broker)
    path = write(tmp_path, text + extra)
    found = problems(path)
    assert len(found) == 1, found
    assert found[0].startswith(f"{path}:{at}: "), found
    assert fragment in found[0], found


# -- the partition function ----------------------------------------------------------
def test_partition_is_stable_across_processes() -> None:
    hosts = [f"host-{i:05d}" for i in range(200)]
    here = [partition_of(h, 64) for h in hosts]
    code = (
        "import sys; from batond.fleet.partition import partition_of;"
        "print([partition_of(f'host-{i:05d}', 64) for i in range(200)])"
    )
    # another interpreter with another hash seed computes the same partitions
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, check=True)
    assert orjson.loads(out.stdout) == here
    assert partition_of("web-01", 64) == 3642079253 % 64 == 21  # zlib.crc32, pinned


def test_partitions_spread_hosts() -> None:
    counts = [0] * 64
    for i in range(10_000):
        counts[partition_of(f"host-{i}", 64)] += 1
    assert min(counts) > 100 and max(counts) < 220, counts
    with pytest.raises(ValueError):
        partition_of("x", 0)


def test_topics() -> None:
    assert batch_topic("batond/fleet", 64, "web-01") == "batond/fleet/21/web-01"
    assert partition_filter("batond/fleet", 7) == "batond/fleet/7/+"
    assert partition_topic_host("batond/fleet", "batond/fleet/21/web-01") == (21, "web-01")
    for wrong in ("batond/fleet/x/web", "batond/fleet/3", "other/3/web", "batond/fleet/3/a/b"):
        assert partition_topic_host("batond/fleet", wrong) is None


# -- the wire format -----------------------------------------------------------------
def test_batch_round_trip() -> None:
    samples = [Sample("cpu", 93.5, 100.0, {"host": "web-01", "core": "0"})]
    events = [Event("process.exited", 101.0, {"host": "web-01", "code": "1"}, {"code": 1})]
    payload = encode_batch("web-01", 7, 102.0, samples, events)
    batch = decode_batch(payload, now=103.0)
    assert (batch.host, batch.seq, batch.sent, batch.errors) == ("web-01", 7, 102.0, [])
    sample, event = batch.items
    assert isinstance(sample, Sample) and isinstance(event, Event)
    assert (sample.metric, sample.value, sample.ts, sample.labels) == (
        "cpu",
        93.5,
        100.0,
        {"host": "web-01", "core": "0"},
    )
    assert (event.name, event.labels["code"], event.raw["code"]) == ("process.exited", "1", 1)
    assert sample.source == event.source == "fleet"


def test_batch_items_get_the_host_and_may_not_name_another() -> None:
    doc = {
        "v": 1,
        "host": "web-01",
        "seq": 1,
        "sent": 1.0,
        "samples": [{"metric": "a", "value": 1}, {"metric": "b", "value": 2, "host": "db-01"}],
        "events": [{"metric": "c", "value": 3}, {"event": "x", "ts": 1e12}],
    }
    batch = decode_batch(orjson.dumps(doc), now=5.0)
    assert [i.labels["host"] for i in batch.items] == ["web-01"]
    assert [e.reason for e in batch.errors] == ["host_mismatch", "wrong_list", "ts_in_future"]


@pytest.mark.parametrize(
    "payload,reason",
    [
        (b"{", "bad_json"),
        (b"[]", "bad_batch"),
        (b'{"v": 2, "host": "a"}', "bad_version"),
        (b'{"v": 1}', "bad_batch"),
        (b'{"v": 1, "host": "a", "seq": "1"}', "bad_batch"),
        (b'{"v": 1, "host": "a", "samples": {}}', "bad_batch"),
    ],
)
def test_unusable_batches(payload: bytes, reason: str) -> None:
    with pytest.raises(InputError) as info:
        decode_batch(payload, now=1.0)
    assert info.value.reason == reason


def test_journal_backend_defaults_to_sqlite(tmp_path: Path) -> None:
    journal = load_config(write(tmp_path, "node: a\n")).journal
    assert (journal.backend, journal.database_url) == (JournalBackend.SQLITE, None)


def test_journal_on_postgresql(tmp_path: Path) -> None:
    text = "journal:\n  backend: postgresql\n  database: postgresql://pg/j\n"
    journal = load_config(write(tmp_path, text)).journal
    assert (journal.backend, journal.database_url) == (
        JournalBackend.POSTGRESQL,
        "postgresql://pg/j",
    )
    alone = load_config(write(tmp_path, "journal:\n  database: postgresql://pg/k\n")).journal
    assert alone.database_url == "postgresql://pg/k"  # a database says which backend


def test_central_journal_is_the_fleet_database(tmp_path: Path) -> None:
    text = (
        "node: c1\nmqtt: {url: mqtt://127.0.0.1:1883}\n"
        "fleet:\n  role: central\n  database: postgresql://pg/fleet\n  instance: c1-a\n"
    )
    config = load_config(write(tmp_path, text))
    assert config.journal.database_url == "postgresql://pg/fleet"
    assert config.mqtt is not None and config.mqtt.client_id == "batond-c1-a"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "journal:\n  backend: postgresql\n",
            "batond.yaml:2:3: journal backend postgresql needs a database",
        ),
        (
            "journal:\n  backend: sqlite\n  database: postgresql://pg/j\n",
            "batond.yaml:3:3: journal.database is for backend postgresql",
        ),
        (
            "journal:\n  backend: mysql\n",
            "batond.yaml:2:12: journal backend must be one of postgresql, sqlite; got 'mysql'",
        ),
        (
            "journal:\n  database: mysql://x/y\n",
            "batond.yaml:2:13: database must be postgresql://[USER@]HOST[:PORT]/DBNAME,"
            " got 'mysql://x/y'",
        ),
        (
            "mqtt: {}\njournal:\n  backend: sqlite\n"
            "fleet:\n  role: central\n  database: postgresql://pg/f\n",
            "batond.yaml:3:3: a central instance's journal is in PostgreSQL (backend postgresql)",
        ),
        (
            "fleet:\n  role: central\n  database: postgresql://pg/f\n",
            "batond.yaml:1:1: fleet role central needs an mqtt: section (its broker)",
        ),
    ],
)
def test_journal_backend_mistakes(tmp_path: Path, text: str, expected: str) -> None:
    assert any(p.endswith(expected) for p in problems(write(tmp_path, text))), expected


def test_batond_check_says_an_agent_needs_mqtt(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"""
        node: a1
        state_dir: {tmp_path / "state"}
        fleet:
          role: agent
          key_file: {tmp_path / "agent.key"}
        """,
    )
    for command in ("check", "run"):
        done = subprocess.run(
            [sys.executable, "-m", "batond", command, "-c", str(path)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 1, done
        said = done.stdout + done.stderr
        assert f"{path}:3:1: fleet role agent needs an mqtt: section" in said, said
    assert not (tmp_path / "state" / "journal.db").exists()
