"""A journal batond cannot use gives a clear StateError and is never modified.

A newer schema and another program's database are refused on both backends
(``journal_factory``); the rest is about SQLite's file (corruption, not a
database, paths, the state directory's lock, file modes), and stays on SQLite.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import pwd
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from batond.errors import StateError
from batond.journal.db import MIGRATIONS
from batond.journal.facade import Journal
from journal_backends import JournalFactory


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


def untouched(journal_factory: JournalFactory) -> object:
    """What must not change: the file's bytes (SQLite), the tables and versions (PostgreSQL)."""
    if journal_factory.backend == "sqlite":
        return digest(journal_factory.state_dir / "journal.db")
    tables = journal_factory.rows(
        "SELECT table_name FROM information_schema.tables"
        " WHERE table_schema = current_schema() ORDER BY table_name"
    )
    versions = []
    if ("schema_version",) in tables:
        versions = journal_factory.rows("SELECT * FROM schema_version ORDER BY version")
    return tables, versions


async def test_newer_schema_is_refused_untouched(journal_factory: JournalFactory) -> None:
    j = journal_factory.open()
    await j.run_created(rule="r", playbook="p", key="k", params={}, labels={}, created_at=1.0)
    await j.close()
    journal_factory.execute(
        "INSERT INTO schema_version VALUES (?, 0, 'future')", [(len(MIGRATIONS) + 1,)]
    )
    before = untouched(journal_factory)
    with pytest.raises(StateError, match=rf"schema version {len(MIGRATIONS) + 1} is newer"):
        journal_factory.open()
    assert untouched(journal_factory) == before


async def test_database_of_another_program_is_refused(journal_factory: JournalFactory) -> None:
    journal_factory.state_dir.mkdir()
    journal_factory.execute("CREATE TABLE photos (id INTEGER PRIMARY KEY, name TEXT)")
    before = untouched(journal_factory)
    with pytest.raises(StateError, match="another program"):
        journal_factory.open()
    assert untouched(journal_factory) == before


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


# Root reads whatever the mode says, so as root the open runs in a child process
# as ``nobody``, on a state dir nobody owns: only the mode bits keep it from the file.
OPEN_JOURNAL = """
import asyncio, sys
from pathlib import Path
from batond.errors import StateError
from batond.journal.facade import Journal
try:
    journal = Journal.open(Path(sys.argv[1]))
except StateError as exc:
    sys.exit(f"StateError: {exc}")
asyncio.run(journal.close())
print("opened")
"""


async def open_as_nobody(state: Path) -> tuple[int | None, str]:
    nobody = pwd.getpwnam("nobody")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", OPEN_JOURNAL, str(state),
        user=nobody.pw_uid, group=nobody.pw_gid, extra_groups=[],
        env={"PYTHONDONTWRITEBYTECODE": "1"},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=120)
    return proc.returncode, out.decode()


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[Path]:
    """tmp_path, or as root a directory nobody can reach (pytest-of-root is 0700)."""
    if os.geteuid() != 0:
        yield tmp_path
        return
    with tempfile.TemporaryDirectory(prefix="batond-nobody-") as top:
        os.chmod(top, 0o755)
        state = Path(top) / "state"
        state.mkdir()
        yield state


def give_to_nobody(state: Path) -> None:
    nobody = pwd.getpwnam("nobody")
    for path in [state, *state.iterdir()]:
        os.chown(path, nobody.pw_uid, nobody.pw_gid)


async def test_unreadable_journal_is_reported(state_dir: Path) -> None:
    path = await make_journal(state_dir, runs=1)
    before = digest(path)
    path.chmod(0o200)
    try:
        if os.geteuid() == 0:
            give_to_nobody(state_dir)
            status, out = await open_as_nobody(state_dir)
            assert status == 1, out
            assert "StateError: " in out
            assert f"{path}: cannot read the journal: Permission denied" in out
        else:
            with pytest.raises(StateError, match="cannot read the journal: Permission denied"):
                Journal.open(state_dir)
    finally:
        path.chmod(0o600)
    assert digest(path) == before
    if os.geteuid() == 0:  # the control: with the mode back, the same child opens it
        assert await open_as_nobody(state_dir) == (0, "opened\n")
