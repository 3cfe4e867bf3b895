"""A journal batond cannot use gives a clear StateError and is never modified."""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
from pathlib import Path

import pytest

from batond.errors import StateError
from batond.journal.db import MIGRATIONS
from batond.journal.facade import Journal


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def make_journal(state: Path, runs: int = 300) -> Path:
    j = Journal.open(state)
    for i in range(runs):
        run_id = await j.run_created(
            rule="r", playbook="p", key=f"host=h{i}", params={"n": i}, labels={"host": f"h{i}"},
            created_at=float(i),
        )  # fmt: skip
        step = await j.step_started(run_id, "s", "exec", 1, float(i))
        await j.step_finished(step, status="ok", ended_at=i + 0.5, stdout="out " * 100)
    await j.close()  # the last close checkpoints the WAL into journal.db
    assert not (state / "journal.db-wal").exists()
    return state / "journal.db"


async def test_garbage_in_the_middle_is_reported_and_untouched(tmp_path: Path) -> None:
    original = await make_journal(tmp_path / "good")
    broken_dir = tmp_path / "broken"
    broken_dir.mkdir()
    broken = broken_dir / "journal.db"
    shutil.copy(original, broken)
    data = bytearray(broken.read_bytes())
    assert len(data) > 40000
    data[8192:24576] = b"\xa5" * 16384  # pages 3-6 overwritten with garbage
    broken.write_bytes(bytes(data))
    before = digest(broken)
    with pytest.raises(StateError, match=r"corrupted.*left untouched"):
        Journal.open(broken_dir)
    assert digest(broken) == before


async def test_not_a_database_is_reported_and_untouched(tmp_path: Path) -> None:
    (tmp_path / "journal.db").write_bytes(b"this is a text file, not a journal\n" * 100)
    before = digest(tmp_path / "journal.db")
    with pytest.raises(StateError, match="not a SQLite database"):
        Journal.open(tmp_path)
    assert digest(tmp_path / "journal.db") == before


async def test_newer_schema_is_refused_untouched(tmp_path: Path) -> None:
    path = await make_journal(tmp_path, runs=3)
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO schema_version VALUES (?, 0, 'future')", (len(MIGRATIONS) + 1,))
    conn.commit()
    conn.close()
    before = digest(path)
    with pytest.raises(StateError, match=rf"schema version {len(MIGRATIONS) + 1} is newer"):
        Journal.open(tmp_path)
    assert digest(path) == before


async def test_database_of_another_program_is_refused(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "journal.db")
    conn.execute("CREATE TABLE photos (id INTEGER PRIMARY KEY, name TEXT)")
    conn.commit()
    conn.close()
    before = digest(tmp_path / "journal.db")
    with pytest.raises(StateError, match="another program"):
        Journal.open(tmp_path)
    assert digest(tmp_path / "journal.db") == before


async def test_unusable_paths_give_clear_errors(tmp_path: Path) -> None:
    (tmp_path / "journal.db").mkdir()
    with pytest.raises(StateError, match="is a directory"):
        Journal.open(tmp_path)
    (tmp_path / "file").write_text("x")
    with pytest.raises(StateError, match="cannot create the state directory"):
        Journal.open(tmp_path / "file" / "state")


async def test_second_process_on_the_same_state_dir_is_refused(tmp_path: Path) -> None:
    j = Journal.open(tmp_path)
    try:
        with pytest.raises(StateError, match="in use by another batond"):
            Journal.open(tmp_path)
    finally:
        await j.close()
    await Journal.open(tmp_path).close()  # the lock went with the first journal


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads and writes whatever the mode says")
async def test_unreadable_journal_is_reported(tmp_path: Path) -> None:
    path = await make_journal(tmp_path, runs=1)
    before = digest(path)
    path.chmod(0o200)
    try:
        with pytest.raises(StateError, match="cannot read the journal"):
            Journal.open(tmp_path)
    finally:
        path.chmod(0o600)
    assert digest(path) == before
