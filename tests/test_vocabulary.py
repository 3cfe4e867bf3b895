"""The names users see: outcomes, states, statuses, suppression reasons, action kinds.

They are stored in the journal, shown by the API and the metrics, and
documented: the enums and the action registry are their one definition, and
these tests fail when the journal's schema or the docs drift from them.
"""

from __future__ import annotations

import re
import sqlite3
from enum import StrEnum
from pathlib import Path

import pytest

from batond.engine.types import NOT_RESOLVED, Outcome, Suppression
from batond.journal.backend import render_schema
from batond.journal.db import MIGRATIONS
from batond.remedy.actions import ACTIONS, action_keys, action_kinds
from batond.remedy.run import RunState, StepStatus

DOCS = Path(__file__).resolve().parent.parent / "docs"


def documented_names() -> set[str]:
    text = "\n".join(p.read_text(encoding="utf-8") for p in DOCS.glob("*.md"))
    return set(re.findall(r"`([a-z_]+)`", text))


@pytest.mark.parametrize("vocabulary", [Outcome, Suppression, RunState, StepStatus])
def test_every_name_is_documented(vocabulary: type[StrEnum]) -> None:
    missing = {v.value for v in vocabulary} - documented_names()
    assert not missing, f"{vocabulary.__name__}: not in docs/: {sorted(missing)}"


def test_the_journal_accepts_exactly_the_run_states() -> None:
    conn = sqlite3.connect(":memory:")
    for script in MIGRATIONS:
        conn.executescript(render_schema(script, "sqlite"))
    row = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'runs'").fetchone()
    checked = re.search(r"state IN \(([^)]*)\)", row[0])
    assert checked is not None
    assert re.findall(r"'([a-z_]+)'", checked.group(1)) == [s.value for s in RunState]


def test_values_are_the_stored_strings() -> None:
    # StrEnum members are their values wherever they are stored or compared
    assert Outcome.TIMED_OUT == "timed_out" and f"{Outcome.TIMED_OUT}" == "timed_out"
    assert {"unresolved", "failed", "timed_out"} == NOT_RESOLVED
    assert "failed" in NOT_RESOLVED and "cancelled" not in NOT_RESOLVED
    assert str(Suppression.CIRCUIT_OPEN) == "circuit_open"


def test_every_action_kind_and_its_keys_are_in_the_playbooks_table() -> None:
    text = (DOCS / "playbooks.md").read_text(encoding="utf-8")
    rows = {m.group(1): m.group(0) for m in re.finditer(r"^\| `([a-z_]+)` \|.*$", text, re.M)}
    for kind in action_kinds():
        assert kind in rows, kind
        keys = action_keys(kind)
        for key in keys.keys:
            assert f"`{key}`" in rows[kind], (kind, key)
        for key in keys.required:
            assert f"**`{key}`**" in rows[kind], (kind, key)


def test_the_registry_runs_every_kind_but_control_flow() -> None:
    assert set(action_kinds()) - set(ACTIONS) == {
        "playbook", "parallel", "assert", "set", "foreach", "wait_until",
    }  # fmt: skip
    with pytest.raises(KeyError):
        action_keys("shell")
