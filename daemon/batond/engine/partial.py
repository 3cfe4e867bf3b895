"""A part of the engine's exported state: the incident keys one selects, and merging it back.

A fleet's central instance checkpoints the rule state of each partition it owns
(the keys of that partition's hosts) and a new owner merges that part into its
own engine; an instance that gives a partition up drops those keys. These are
pure functions over :meth:`Engine.export_state` documents: what is keyed by
incident key (open incidents, ``for:`` timers pending, windows, cooldowns, the
last inputs) is selected key by key; what belongs to a rule as a whole (its
counters) stays with the instance. The governor's scopes of the same keys travel
beside it (``Governor.export_scopes``/``merge_scopes``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["KEYED", "drop_keys", "merge_keys", "take_keys"]

#: The fields of a rule state's dump that are maps keyed by incident key.
KEYED = frozenset(
    {"open", "context", "held", "quiet", "last_run", "pending", "latest", "windows", "seen",
     "last", "slots"}
)  # fmt: skip

Select = Callable[[str], bool]


def take_keys(state: Mapping[str, Any], select: Select) -> dict[str, Any]:
    """The keyed parts of ``state``'s rules for the keys ``select`` takes (rules with none
    left out), with each rule's fingerprint: a rule changed since is not merged."""
    rules: dict[str, Any] = {}
    for name, data in state.get("rules", {}).items():
        part = {f: _only(v, select) for f, v in data.items() if f in KEYED and isinstance(v, dict)}
        if any(part.values()):
            rules[name] = {"fingerprint": data.get("fingerprint"), **part}
    return {"version": state.get("version"), "rules": rules}


def merge_keys(state: Mapping[str, Any], part: Mapping[str, Any]) -> dict[str, Any]:
    """``state`` with the keys of ``part`` added (``part`` wins for a key both have); a
    rule whose fingerprint differs, or a part of another version, adds nothing."""
    if part.get("version") != state.get("version"):
        return dict(state)
    rules = dict(state.get("rules", {}))
    for name, data in part.get("rules", {}).items():
        mine = rules.get(name)
        if mine is None or mine.get("fingerprint") != data.get("fingerprint"):
            continue
        merged = dict(mine)
        for f, v in data.items():
            if f in KEYED and isinstance(v, dict):
                merged[f] = {**mine.get(f, {}), **v}
        rules[name] = merged
    return {**state, "rules": rules}


def drop_keys(state: Mapping[str, Any], select: Select) -> dict[str, Any]:
    """``state`` without the keys ``select`` takes."""
    rules = {}
    for name, data in state.get("rules", {}).items():
        rules[name] = {
            f: _only(v, lambda k: not select(k)) if f in KEYED and isinstance(v, dict) else v
            for f, v in data.items()
        }
    return {**state, "rules": rules}


def _only(keyed: Mapping[str, Any], select: Select) -> dict[str, Any]:
    return {k: v for k, v in keyed.items() if select(k)}
