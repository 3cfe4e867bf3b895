"""The kinds of value a :class:`~batond.load.fields.Field` can hold.

Each kind reads its node through :class:`~batond.load.yamlfile.Reader` (so
the messages are the reader's) and describes itself in JSON Schema; the two
sit side by side so they cannot disagree. Kinds that only one file uses (the
``listen:`` address, a rule's ``match:``) live beside that file's sections.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from batond.engine.cron import parse_cron
from batond.engine.expr import RULE_NAMES, compile_expression
from batond.engine.templates import TEMPLATE_NAMES, text_of
from batond.errors import ConfigError
from batond.load.fields import INVALID, Fields, Kind, SchemaBuilder, Section, read_section
from batond.load.templating import compile_node
from batond.load.yamlfile import Node, Reader, ScalarNode, text_mark

__all__ = [
    "Choice",
    "Cron",
    "Data",
    "Duration",
    "Expr",
    "FilePath",
    "Flag",
    "Integer",
    "Later",
    "ListOf",
    "Name",
    "Nested",
    "Number",
    "OrTemplate",
    "Raw",
    "Size",
    "Switch",
    "Template",
    "Text",
    "Zone",
]

_DURATION_SCHEMA = {"type": "string", "pattern": r"^([0-9]+(ms|s|m|h|d))+$"}
_SIZE_SCHEMA = {"type": "string", "pattern": r"^\s*[0-9]+(B|KiB|MiB|GiB)\s*$"}
#: A string holding ``{{ }}``: what a templated key accepts besides its own type.
_TEMPLATE_STRING = {"type": "string", "pattern": r"\{\{"}
_NULL_TAG = "tag:yaml.org,2002:null"


def _keywords(schema: dict[str, Any], **keywords: Any) -> dict[str, Any]:
    """``schema`` and those of ``keywords`` that are set (not None)."""
    return {**schema, **{k: v for k, v in keywords.items() if v is not None}}


def _valid(value: Any) -> Any:
    """What a reader method returned: None (a problem was recorded) becomes INVALID."""
    return INVALID if value is None else value


@dataclass(frozen=True, slots=True)
class Text(Kind):
    """A string (numbers are read as their text)."""

    what: str = "string"
    empty_ok: bool = False

    def read(self, r: Reader, node: Node, key: str) -> Any:
        return _valid(r.string(node, self.what, self.empty_ok))

    def schema(self, s: SchemaBuilder) -> dict[str, Any]:
        return {"type": "string"}


@dataclass(frozen=True, slots=True)
class Name(Kind):
    """A non-empty string without surrounding whitespace, optionally of a pattern.

    A name that breaks ``pattern`` is reported but kept, so that later
    duplicates of it are still found.
    """

    what: str = "name"
    pattern: str = ""
    hint: str = ""

    def read(self, r: Reader, node: Node, key: str) -> Any:
        value = r.name(node, self.what)
        if value is None:
            return INVALID
        if self.pattern and not re.fullmatch(self.pattern, value):
            r.error(node, f"{self.what} {value!r}: {self.hint}")
        return value

    def schema(self, s: SchemaBuilder) -> dict[str, Any]:
        if self.pattern:
            return {"type": "string", "pattern": f"^{self.pattern}$"}
        return {"type": "string", "minLength": 1, "pattern": r"^\S(.*\S)?$"}


@dataclass(frozen=True, slots=True)
class Integer(Kind):
    """An integer of at least ``minimum`` and at most ``maximum`` (``over`` says so)."""

    minimum: int | None = None
    maximum: int | None = None
    over: str = "must be at most {maximum}, got {value}"

    def read(self, r: Reader, node: Node, key: str) -> Any:
        value = r.integer(node, self.minimum)
        if value is None:
            return INVALID
        if self.maximum is not None and value > self.maximum:
            r.error(node, self.over.format(maximum=self.maximum, value=value))
            return INVALID
        return value

    def schema(self, s: SchemaBuilder) -> dict[str, Any]:
        return _keywords({"type": "integer"}, minimum=self.minimum, maximum=self.maximum)


@dataclass(frozen=True, slots=True)
class Number(Kind):
    """A finite number in ``[low, high]``; ``*_open`` excludes a bound.

    Without ``message`` both bounds are inclusive and the reader's "must be
    between" is the message; with it, ``message`` (``{value}``) is.
    """

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    message: str = ""

    def read(self, r: Reader, node: Node, key: str) -> Any:
        if not self.message:
            return _valid(r.number(node, self.low, self.high))
        value = r.number(node)
        if value is None:
            return INVALID
        if not self._inside(value):
            r.error(node, self.message.format(value=value))
            return INVALID
        return value

    def _inside(self, value: float) -> bool:
        low, high = self.low, self.high
        above = low is None or value > low or (value == low and not self.low_open)
        below = high is None or value < high or (value == high and not self.high_open)
        return above and below

    def schema(self, s: SchemaBuilder) -> dict[str, Any]:
        low = "exclusiveMinimum" if self.low_open else "minimum"
        high = "exclusiveMaximum" if self.high_open else "maximum"
        return _keywords({"type": "number"}, **{low: self.low, high: self.high})


@dataclass(frozen=True, slots=True)
class Flag(Kind):
    """``true`` or ``false``."""

    def read(self, r: Reader, node: Node, key: str) -> Any:
        return _valid(r.boolean(node))

    def schema(self, s: SchemaBuilder) -> dict[str, Any]:
        return {"type": "boolean"}


@dataclass(frozen=True, slots=True)
class Duration(Kind):
    """Seconds written as ``30s``, ``1h30m``... (a bare number is an error)."""

    minimum: float = 0.0

    def read(self, r: Reader, node: Node, key: str) -> Any:
        return _valid(r.duration(node, self.minimum))

    def schema(self, s: SchemaBuilder) -> dict[str, Any]:
        return dict(_DURATION_SCHEMA)


@dataclass(frozen=True, slots=True)
class Size(Kind):
    """Bytes written as ``64KiB``, ``1GiB``..."""

    def read(self, r: Reader, node: Node, key: str) -> Any:
        return _valid(r.size(node))

    def schema(self, s: SchemaBuilder) -> dict[str, Any]:
        return dict(_SIZE_SCHEMA)


@dataclass(frozen=True, slots=True)
class FilePath(Kind):
    """A path; a relative one is taken relative to the folder of the file it is in."""

    def read(self, r: Reader, node: Node, key: str) -> Any:
        text = r.string(node, "path")
        return INVALID if text is None else Path(r.file).parent / text

    def schema(self, s: SchemaBuilder) -> dict[str, Any]:
        return {"type": "string"}


class _Parsed(Kind):
    """A string turned into its value by :meth:`parse`, whose ValueError is the message."""

    what = "string"

    def text(self, r: Reader, node: Node) -> str | None:
        return r.string(node, self.what)

    def parse(self, text: str) -> Any:
        raise NotImplementedError

    def read(self, r: Reader, node: Node, key: str) -> Any:
        text = self.text(r, node)
        if text is None:
            return INVALID
        try:
            return self.parse(text)
        except ValueError as exc:
            r.error(node, str(exc))
            return INVALID


class Zone(_Parsed):
    """An IANA time zone name (``Europe/Berlin``), as a tzinfo."""

    what = "time zone"

    def text(self, r: Reader, node: Node) -> str | None:
        return r.name(node, self.what)

    def parse(self, text: str) -> Any:
        try:
            return ZoneInfo(text)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {text!r} (an IANA name such as Europe/Berlin)"
            ) from None

    def schema(self, s: SchemaBuilder) -> dict[str, Any]:
        return {"type": "string", "description": "an IANA time zone, e.g. Europe/Berlin"}


class Cron(_Parsed):
    """A five-field cron expression (:mod:`batond.engine.cron`), parsed."""

    what = "cron expression"

    def parse(self, text: str) -> Any:
        return parse_cron(text)

    def schema(self, s: SchemaBuilder) -> dict[str, Any]:
        return {"type": "string"}


@dataclass(frozen=True, slots=True)
class Raw(Kind):
    """A value as plain data, for its section's ``build`` to judge with the keys beside it."""

    json: Mapping[str, Any]

    def read(self, r: Reader, node: Node, key: str) -> Any:
        return r.plain(node)

    def schema(self, s: SchemaBuilder) -> dict[str, Any]:
        return dict(self.json)


@dataclass(frozen=True, slots=True)
class Choice(Kind):
    """One of ``choices``; ``what`` (default: the key) names it in the message."""

    choices: tuple[str, ...]
    what: str = ""

    def read(self, r: Reader, node: Node, key: str) -> Any:
        return _valid(r.one_of(node, self.choices, self.what or key))

    def schema(self, s: SchemaBuilder) -> dict[str, Any]:
        return {"enum": list(self.choices)}

    def rendered(self, value: Any) -> Any:
        return text_of(value)


@dataclass(frozen=True, slots=True)
class ListOf(Kind):
    """A list of ``item`` values, as a tuple.

    ``min_items``/``max_items`` bound its length (``count_message``, with
    ``{n}``, says so); too short, its items are still checked, too long,
    not. ``partial`` keeps the valid items when some are not (the file is
    rejected anyway; fewer follow-on problems); otherwise any invalid item
    makes the list invalid, and ``stop`` stops at the first one.
    """

    item: Kind
    what: str = "list"
    min_items: int = 0
    max_items: int | None = None
    count_message: str = ""
    partial: bool = True
    stop: bool = False

    def read(self, r: Reader, node: Node, key: str) -> Any:
        items = r.seq(node, self.what)
        if items is None:
            return INVALID
        n = len(items)
        too_few, too_many = n < self.min_items, self.max_items is not None and n > self.max_items
        if too_few or too_many:
            r.error(node, self.count_message.format(n=n))
            if too_many:
                return INVALID
        out = []
        for item in items:
            value = self.item.read(r, item, key)
            if value is not INVALID:
                out.append(value)
            elif self.stop:
                return INVALID
        if too_few or (not self.partial and len(out) != n):
            return INVALID
        return tuple(out)

    def schema(self, s: SchemaBuilder) -> dict[str, Any]:
        own = {"type": "array", "items": s.kind(self.item)}
        return _keywords(own, minItems=self.min_items or None, maxItems=self.max_items)


@dataclass(frozen=True, slots=True)
class Data(Kind):
    """A mapping of any values, as plain data (a rule's ``params:``)."""

    what: str = "mapping"

    def read(self, r: Reader, node: Node, key: str) -> Any:
        if r.mapping(node, None, what=self.what) is None:
            return INVALID
        return r.plain(node)

    def schema(self, s: SchemaBuilder) -> dict[str, Any]:
        return {"type": "object"}


@dataclass(frozen=True, slots=True)
class Nested(Kind):
    """A mapping of its own section: what the section builds, or its :class:`Fields`."""

    section: Section

    def read(self, r: Reader, node: Node, key: str) -> Any:
        fields = read_section(r, node, self.section)
        if fields is None:
            return INVALID
        return fields if self.section.build is None else self.section.build(fields)

    def schema(self, s: SchemaBuilder) -> dict[str, Any]:
        return s.section(self.section)


@dataclass(frozen=True, slots=True)
class Expr(Kind):
    """An expression, compiled at load time for ``names``; errors point inside the text."""

    names: tuple[str, ...] = tuple(RULE_NAMES)
    wrong: str = "expected an expression (a string)"  # ``{key}``: the key
    empty: str = "expected an expression, got an empty string"
    types: tuple[str, ...] = ("string",)  # JSON types (``true`` is an expression too)

    def read(self, r: Reader, node: Node, key: str) -> Any:
        if not isinstance(node, ScalarNode) or node.tag == _NULL_TAG:
            r.error(node, self.wrong.replace("{key}", key))
            return INVALID
        text = str(node.value)
        if self.empty and not text.strip():
            r.error(node, self.empty)
            return INVALID
        try:
            return compile_expression(text, text_mark(r, node), self.names)
        except ConfigError as exc:
            r.problems.extend(exc.problems)
            return INVALID

    def schema(self, s: SchemaBuilder) -> dict[str, Any]:
        return {"type": self.types[0] if len(self.types) == 1 else list(self.types)}


#: Shapes of a templated value and the JSON Schema of each (without a template).
_SHAPES: dict[str, dict[str, Any]] = {
    "text": {"type": ["string", "number"]},
    "text_list": {"type": "array", "minItems": 1, "items": {"type": ["string", "number"]}},
    "text_map": {"type": "object", "additionalProperties": {"type": ["string", "number"]}},
    "data": {},
    "data_map": {"type": "object"},
}


@dataclass(frozen=True, slots=True)
class Template(Kind):
    """A value whose strings may hold ``{{ }}``, compiled with exact marks.

    ``shape``: ``text`` (one string: rendered, it stays one string),
    ``text_list`` (a non-empty list of strings, e.g. an argv), ``text_map``
    (string values), ``data`` (anything, JSON types kept), ``data_map``.
    A whole value may also be one template producing the shape. Text is taken
    as it is written: an unquoted ``010`` or ``1.50`` stays those characters.
    """

    shape: str

    def read(self, r: Reader, node: Node, key: str) -> Any:
        if isinstance(node, ScalarNode) and "{{" in str(node.value):
            return compile_node(r, node, TEMPLATE_NAMES)
        if self.shape == "text" and r.string(node, f"string for {key!r}") is None:
            return INVALID
        if self.shape == "text_list" and not self._strings(r, node, key):
            return INVALID
        if self.shape in ("text_map", "data_map"):
            fields = r.mapping(node, None, what=f"mapping for {key!r}")
            if fields is None:
                return INVALID
            for k, v in fields.items() if self.shape == "text_map" else ():
                if not isinstance(v, ScalarNode) or v.tag == _NULL_TAG:
                    r.error(v, f"value of {k!r} must be a string")
        return compile_node(r, node, TEMPLATE_NAMES, text=self.shape.startswith("text"))

    @staticmethod
    def _strings(r: Reader, node: Node, key: str) -> bool:
        items = r.seq(node, f"list of strings for {key!r}")
        if items is not None and not items:
            r.error(node, f"{key!r} needs at least one element")
        if not items:
            return False
        bad = [i for i in items if not isinstance(i, ScalarNode)]
        for item in bad:  # any scalar is its text as written
            r.error(item, f"expected a string in {key!r}, got a {type(item.value).__name__}")
        return not bad

    def schema(self, s: SchemaBuilder) -> dict[str, Any]:
        own = dict(_SHAPES[self.shape])
        if self.shape in ("text", "data"):
            return own  # a string is already one of these
        return {"anyOf": [own, _TEMPLATE_STRING]}

    def rendered(self, value: Any) -> Any:
        if self.shape == "text":
            return text_of(value)
        if self.shape == "text_list":
            return [text_of(v) for v in value]
        if self.shape == "text_map":
            return {str(k): text_of(v) for k, v in value.items()}
        return value


@dataclass(frozen=True, slots=True)
class OrTemplate(Kind):
    """``inner``, or a string holding ``{{ }}`` that renders to it at run time."""

    inner: Kind

    def read(self, r: Reader, node: Node, key: str) -> Any:
        if isinstance(node, ScalarNode) and "{{" in str(node.value):
            return compile_node(r, node, TEMPLATE_NAMES)
        return self.inner.read(r, node, key)

    def schema(self, s: SchemaBuilder) -> dict[str, Any]:
        return {"anyOf": [s.kind(self.inner), _TEMPLATE_STRING]}

    def rendered(self, value: Any) -> Any:
        return self.inner.rendered(value)


@dataclass(frozen=True, slots=True)
class Switch(Kind):
    """A value whose kind is chosen by the value of the sibling key ``on``.

    (A step's ``with:`` has the keys of its ``action:``.) While ``on`` is absent
    or not valid (reported at ``on``), the ``default`` case, or INVALID.
    """

    on: str
    cases: Mapping[str, Kind]
    default: str = ""

    def read(self, r: Reader, node: Node, key: str) -> Any:
        raise TypeError(f"{key!r} is read as part of its mapping (it depends on {self.on!r})")

    def read_in(self, fields: Fields, node: Node, key: str) -> Any:
        kind = self.cases.get(fields.get(self.on) or self.default)
        if kind is None:
            return INVALID
        return kind.read(fields.reader, node, key)

    def schema(self, s: SchemaBuilder) -> dict[str, Any]:
        return {"type": "object"}

    def section_schema(self, s: SchemaBuilder, key: str) -> dict[str, Any]:
        return {
            "allOf": [
                {"if": self._chosen(case), "then": {"properties": {key: s.kind(kind)}}}
                for case, kind in self.cases.items()
            ]
        }

    def _chosen(self, case: str) -> dict[str, Any]:
        """The schema of a mapping in which ``case`` is chosen (the default: also by absence)."""
        given = {"properties": {self.on: {"const": case}}, "required": [self.on]}
        if case != self.default:
            return given
        return {"anyOf": [given, {"not": {"required": [self.on]}}]}


@dataclass(frozen=True, slots=True)
class Later(Kind):
    """A kind defined after the kind that holds it (a step's branches hold steps)."""

    get: Callable[[], Kind]

    def read(self, r: Reader, node: Node, key: str) -> Any:
        return self.get().read(r, node, key)

    def schema(self, s: SchemaBuilder) -> dict[str, Any]:
        return s.kind(self.get())
