"""Every action's ``with:`` keys, as sections of the load vocabulary.

Each action module declares its kind and keys beside its code
(:mod:`batond.remedy.actions`: ``ActionKind``, ``ActionKeys``, ``Key``), in
the registry's own few words, since it sits below ``load`` and cannot use
:mod:`batond.load.fields`. This module is the one place where those key kinds
become :class:`~batond.load.fields.Field` s: the playbook reader checks a
step's ``with:`` against them, ``batond schema`` describes them, and at run
time each kind turns a rendered template back into the key's type.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from batond.engine.expr import TEMPLATE_NAMES
from batond.load.fields import INVALID, Field, Kind, SchemaBuilder, Section
from batond.load.kinds import Choice, Duration, Expr, Flag, Integer, OrTemplate, Template
from batond.load.templating import compile_node
from batond.load.yamlfile import Node, Reader, ScalarNode
from batond.remedy.actions import ActionKeys, Key, action_keys, action_kinds

__all__ = ["with_sections"]


class _Status(Kind):
    """An HTTP status (100..599), or a list of them."""

    def read(self, r: Reader, node: Node, key: str) -> Any:
        codes = []
        for item in r.seq_or_one(node):
            code = r.integer(item, minimum=100)
            if code is None:
                return INVALID
            if code > 599:
                r.error(item, f"HTTP status must be 100..599, got {code}")
                return INVALID
            codes.append(code)
        return codes if len(codes) != 1 or not isinstance(node, ScalarNode) else codes[0]

    def schema(self, s: SchemaBuilder) -> dict[str, Any]:
        code = {"type": "integer", "minimum": 100, "maximum": 599}
        return {"anyOf": [code, {"type": "array", "items": code}]}


class _Ref(Kind):
    """A playbook name, or a template naming one (checked against the loaded set later)."""

    def read(self, r: Reader, node: Node, key: str) -> Any:
        name = r.name(node, "playbook name")
        if name is not None and "{{" in name:
            return compile_node(r, node, TEMPLATE_NAMES, text=True)
        return INVALID if name is None else name

    def schema(self, s: SchemaBuilder) -> dict[str, Any]:
        return {"type": "string"}


def _kinds(branches: Kind, block: Kind) -> dict[str, Kind]:
    """The kind of each key kind a :class:`Key` may name (``choice`` is made per key).

    The template shapes take ``{{ }}`` anywhere in their strings; a templated
    key of another kind takes a literal, or one ``{{ }}`` string for it.
    """
    return {
        "text": Template("text"),
        "text_list": Template("text_list"),
        "text_map": Template("text_map"),
        "data": Template("data"),
        "data_map": Template("data_map"),
        "int": Integer(1),
        "status": _Status(),
        "qos": Integer(0, 2, "qos must be 0, 1 or 2; got {value}"),
        "bool": Flag(),
        "duration": Duration(),
        "ref": _Ref(),
        "expression": Expr(TEMPLATE_NAMES, "{key}: expected an expression", "", STRING_OR_BOOL),
        "branches": branches,
        "steps": block,
    }


#: JSON types of an expression key (``that: true`` is one).
STRING_OR_BOOL = ("string", "boolean")


def with_sections(branches: Kind, block: Kind, required_block: Kind) -> Mapping[str, Section]:
    """Action kind -> the section of its ``with:`` keys, for every kind of the registry.

    The caller defines the kinds that hold steps: ``branches`` (``parallel``'s
    lists of steps) and ``block`` (one list of steps: ``foreach``'s body, which
    is required and so ``required_block``, not empty; ``wait_until``'s checks).
    """
    kinds = _kinds(branches, block)
    required = {**kinds, "steps": required_block}
    return {
        action: _section(action, action_keys(action), kinds, required) for action in action_kinds()
    }


def _section(
    action: str, keys: ActionKeys, kinds: Mapping[str, Kind], required: Mapping[str, Kind]
) -> Section:
    fields = tuple(
        Field(
            name,
            _kind(key, required if name in keys.required else kinds),
            name in keys.required,
            key.description,
        )
        for name, key in keys.keys.items()
    )
    return Section(f"with mapping of action {action!r}", fields, exactly_one=keys.one_of)


def _kind(key: Key, kinds: Mapping[str, Kind]) -> Kind:
    kind = Choice(key.choices) if key.kind == "choice" else kinds[key.kind]
    if key.templated and not isinstance(kind, Template):
        return OrTemplate(kind)
    return kind
