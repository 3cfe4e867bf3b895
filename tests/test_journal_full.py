"""A journal that cannot write (disk full) says so, and writes again by itself (issue 14, 8).

The disk is made full inside SQLite: ``PRAGMA max_page_count`` on the
writing connection makes every commit that needs a new page fail with
SQLITE_FULL ("database or disk is full"), exactly as a full file system does.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from batond.errors import StateError
from batond.journal.facade import Journal


def fill_the_disk(journal: Journal, full: bool) -> None:
    conn = journal._db._wconn  # the fault is injected at SQLite itself
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages if full else 1 << 30}")


async def new_run(journal: Journal, i: int) -> int:
    return await journal.run_created(
        rule="r", playbook="p", key=f"host=h{i}", params={"pad": "x" * 20_000},
        labels={}, created_at=float(i),
    )  # fmt: skip


async def test_trouble_shows_while_the_disk_is_full_and_clears_when_space_returns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    journal = Journal.open(tmp_path / "state")
    try:
        await new_run(journal, 0)
        assert journal.trouble == ""
        fill_the_disk(journal, True)
        with caplog.at_level(logging.ERROR, logger="batond.journal"):
            for i in range(1, 6):
                with pytest.raises(StateError, match="database or disk is full"):
                    await new_run(journal, i)
        assert "database or disk is full" in journal.trouble
        assert len([r for r in caplog.records if "cannot write" in r.getMessage()]) == 1
        fill_the_disk(journal, False)
        assert await new_run(journal, 6) > 0  # no restart needed
        assert journal.trouble == ""
        runs = (await journal.list_runs(20))["runs"]
        assert len(runs) == 2
    finally:
        await journal.close()
