"""Reading ``playbooks:`` lists into :class:`~batond.load.playbooks.model.Playbook` s.

The keys and their kinds are the sections of
:mod:`batond.load.playbooks.sections`; what is read here is what one key
cannot say alone: step names unique within a playbook (branches included),
``when:`` naming only earlier steps, ``max:`` only with a mode that queues.
Templates and ``when:`` are compiled at load time.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from batond.engine.expr import Expression
from batond.errors import Mark
from batond.load.fields import INVALID, Fields
from batond.load.playbooks.model import DEFAULT_MAX, DEFAULT_RUN_TIMEOUT, Playbook, Step
from batond.load.playbooks.sections import ACTION_KEYS, PLAYBOOK_LIST
from batond.load.yamlfile import Node, Reader
from batond.remedy.actions import action_keys

__all__ = ["build_playbooks", "read_playbooks"]

_STEP_REF = re.compile(r"\bsteps\s*\.\s*([A-Za-z_][A-Za-z0-9_]*)")


def read_playbooks(reader: Reader, node: Node) -> list[Playbook]:
    """The playbooks of one ``playbooks:`` list; problems go to ``reader``.

    Names unique across files and the existence of ``escalate:`` and nested
    ``playbook`` targets are for the caller: :func:`check_references`.
    """
    items = PLAYBOOK_LIST.read(reader, node, "playbooks")
    return build_playbooks(reader, () if items is INVALID else items)


def build_playbooks(reader: Reader, items: Sequence[Fields]) -> list[Playbook]:
    """The playbooks of a read ``playbooks:`` list, each name once."""
    out: list[Playbook] = []
    seen: set[str] = set()
    for fields in items:
        pb = _playbook(fields)
        if pb is None:
            continue
        if pb.name in seen:
            reader.error(pb.mark, f"duplicate playbook name {pb.name!r}")
            continue
        seen.add(pb.name)
        out.append(pb)
    return out


def _playbook(f: Fields) -> Playbook | None:
    name = f.get("name")
    if name is None:
        return None  # without a name nothing else of it is checked
    kw: dict[str, Any] = {"mode": f.get("mode", "single")}
    if "description" in f:
        kw["description"] = f.get("description") or ""
    if "max" in f:
        if kw["mode"] not in ("queued", "parallel"):
            f.reader.error(f.key_node("max"), "max applies to mode queued or parallel")
        kw["max"] = f.get("max") or DEFAULT_MAX
    if "timeout" in f:
        kw["timeout"] = f.get("timeout") or DEFAULT_RUN_TIMEOUT
    for key in ("on_interrupt", "escalate"):
        kw[key] = f.get(key)
    if kw["escalate"] == name:
        f.reader.error(f.nodes["escalate"], f"playbook {name!r} cannot escalate to itself")
    kw["verify_within"] = f.get("verify")
    names: dict[str, Mark] = {}  # step names of the whole playbook
    for key in ("steps", "on_failure"):
        if key in f:
            kw[key] = _steps(f.get(key, ()), names)
    for key in ("outputs", "params", "only_within"):
        kw[key] = f.get(key)
    kw = {k: v for k, v in kw.items() if v is not None}
    return Playbook(name=name, mark=f.mark_of("name"), **kw)


def _steps(items: Sequence[Fields], names: dict[str, Mark]) -> tuple[Step, ...]:
    steps = (_step(f, names) for f in items)
    return tuple(s for s in steps if s is not None)


def _step(f: Fields, names: dict[str, Mark]) -> Step | None:
    if "name" not in f or "action" not in f:
        return None  # reported as missing; nothing else of it is checked
    name, action = f.get("name"), f.get("action")
    if name is not None and name in names:
        f.reader.error(f.nodes["name"], f"duplicate step name {name!r} (first at {names[name]})")
    when = f.get("when")
    if when is not None:
        _check_step_refs(f.reader, when, names)  # `when:` sees only the steps before it
    if name is not None:
        names.setdefault(name, f.mark_of("name"))
    if name is None or action is None:
        return None
    keys = ("timeout", "retry", "continue_on_error", "idempotent", "only_within")
    kw = {k: f.get(k) for k in keys}
    args, branches = _with(f, action, names)
    kw = {k: v for k, v in kw.items() if v is not None}
    return Step(name, action, f.mark_of("name"), args=args, when=when, branches=branches, **kw)


def _check_step_refs(reader: Reader, when: Expression, names: dict[str, Mark]) -> None:
    text, mark = when.text, when.mark
    for m in _STEP_REF.finditer(text):
        if m.group(1) not in names:
            at = Mark(mark.file, mark.line, mark.col + m.start(1)) if "\n" not in text else mark
            reader.error(at, f"no earlier step named {m.group(1)!r}")


def _with(
    f: Fields, action: str, names: dict[str, Mark]
) -> tuple[dict[str, Any], tuple[tuple[Step, ...], ...]]:
    """The compiled ``with:`` values of a step, and the steps of its branches."""
    section = ACTION_KEYS[action]
    if "with" not in f:
        needs = section.required or section.exactly_one
        if needs:
            f.reader.error(f.node, f"action {action!r} needs with: {', '.join(needs)}")
        return {}, ()
    w = f.get("with")
    if not isinstance(w, Fields):  # invalid, or set's NAME: value pairs
        return w or {}, ()
    one_of = section.exactly_one
    if one_of and sum(k in w for k in one_of) != 1:
        w.reader.error(w.node, f"action {action!r} needs exactly one of: {', '.join(one_of)}")
    args = w.values()
    blocks: tuple[Sequence[Fields], ...] = ()
    for key, declared in action_keys(action).keys.items():
        if key in args and declared.kind == "branches":  # parallel: lists of steps
            blocks = args.pop(key)
        elif key in args and declared.kind == "steps":  # foreach's body, wait_until's checks
            blocks = (args.pop(key),)
    return args, tuple(_steps(block, names) for block in blocks)
