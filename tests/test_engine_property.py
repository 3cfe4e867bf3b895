"""Property: on random sample streams the engine's incidents equal a naive reference model
of docs/rules.md (level rules with and without ``for:``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from batond.engine.engine import Engine
from batond.engine.governor import Governor
from batond.events import item_from_json
from batond.load.rulefiles import load_rules
from engine_support import GENEROUS, write_rules

HOSTS = ("a", "b", "c")
streams = st.lists(
    st.tuples(st.sampled_from(HOSTS), st.integers(0, 100), st.integers(0, 20)),
    max_size=60,
)


def reference(stream: list[tuple[str, int, int]], for_s: float) -> list[tuple[Any, ...]]:
    """Walk the clock input by input; a pending for: fires when the clock reaches it."""
    out: list[tuple[Any, ...]] = []
    open_: set[str] = set()
    pending: dict[str, float] = {}
    now = 0.0
    for host, value, gap in stream:
        now += gap
        for h, first in sorted(pending.items(), key=lambda kv: kv[1]):  # ties: first pending
            if first + for_s <= now:
                out.append(("D", first + for_s, h))
                open_.add(h)
                del pending[h]
        key = f"host={host}"
        if value > 50:
            if key in open_ or key in pending:
                continue
            if for_s == 0:
                out.append(("D", now, key))
                open_.add(key)
            else:
                pending[key] = now
        else:
            pending.pop(key, None)
            if key in open_:
                open_.discard(key)
                out.append(("R", now, key))
    return out


def run_engine(engine: Engine, stream: list[tuple[str, int, int]]) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    now = 0.0
    for host, value, gap in stream:
        now += gap
        item = item_from_json({"metric": "m", "value": value, "host": host, "ts": now}, now, "t")
        for o in engine.tick(now) + engine.evaluate(item, now):
            out.append(("D" if hasattr(o, "playbook") else "R", o.ts, o.key))
            if hasattr(o, "playbook") and o.playbook:
                engine.record_outcome(o.rule, o.playbook, o.key, "unresolved", now)
    return out


def _engine(tmp_path: Path, for_s: int) -> Engine:
    rule = f"{{name: r, match: {{metric: m}}, when: value > 50, for: {for_s}s, run: fix}}"
    text = f"rules:\n  - {rule}\n"
    return Engine(load_rules([write_rules(tmp_path, text)]), Governor(GENEROUS))


@settings(max_examples=150, deadline=None)
@given(stream=streams, for_s=st.sampled_from([0, 5, 30]))
def test_level_rules_match_the_reference(tmp_path_factory: Any, stream: Any, for_s: int) -> None:
    engine = _engine(tmp_path_factory.mktemp("r"), for_s)
    assert run_engine(engine, stream) == reference(stream, float(for_s))
