"""The one vocabulary of every YAML file batond reads: fields, sections, kinds.

A :class:`Section` is the declared shape of one mapping: its :class:`Field`
s, each with a :class:`Kind` that knows how to read its value from a node
(reporting problems as ``FILE:LINE:COL: message``) and how to describe it in
JSON Schema. Configuration, rule, playbook, model and rule test files are
read through :func:`read_section`, and ``batond schema`` is generated from
the same sections by :class:`SchemaBuilder`, so the schema cannot drift from
the reader. Concrete kinds live in :mod:`batond.load.kinds` (and, where only one
file needs them, beside that file's sections).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Generic, TypeVar

from batond.errors import Mark
from batond.load.yamlfile import Node, Reader

__all__ = [
    "INVALID",
    "At",
    "Field",
    "Fields",
    "Kind",
    "SchemaBuilder",
    "Section",
    "read_section",
]

T = TypeVar("T")


class _Invalid:
    """The value of a node that was reported as a problem (None may be a valid value)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "INVALID"


#: What a kind returns after recording a problem.
INVALID: Final = _Invalid()


@dataclass(frozen=True, slots=True)
class At(Generic[T]):
    """A value and where it was written: positions travel typed, never as parse nodes."""

    value: T
    mark: Mark


class Kind:
    """How one value is read from its node and described in JSON Schema.

    ``read`` returns the value, or :data:`INVALID` after recording a problem
    on the reader; ``key`` is the key the value belongs to (for messages).
    """

    def read(self, r: Reader, node: Node, key: str) -> Any:
        raise NotImplementedError

    def read_in(self, fields: Fields, node: Node, key: str) -> Any:
        """Read as a value of ``fields`` (kinds that depend on a sibling override this)."""
        return self.read(fields.reader, node, key)

    def schema(self, s: SchemaBuilder) -> dict[str, Any]:
        raise NotImplementedError

    def section_schema(self, s: SchemaBuilder, key: str) -> dict[str, Any]:
        """Keywords this kind adds to the schema of the mapping that holds it."""
        return {}

    def rendered(self, value: Any) -> Any:
        """A templated value after rendering, as the kind's type (identity but for text)."""
        return value


@dataclass(frozen=True, slots=True)
class Field:
    """One key of a mapping: its kind, whether it must be given, and what it means."""

    name: str
    kind: Kind
    required: bool = False
    doc: str = ""


@dataclass(frozen=True, eq=False, repr=False)
class Section(Mapping[str, Field]):
    """The declared shape of one mapping: its fields by name (a read-only mapping).

    ``what`` names the mapping in messages ("expected a {what}, got ...").
    ``ref`` makes the schema a shared definition (``#/$defs/{ref}``).
    ``build`` turns the read :class:`Fields` into the typed object a
    :class:`~batond.load.kinds.Nested` kind returns (or INVALID).
    ``exactly_one`` names keys of which exactly one must be present.
    ``schema_extra`` adds keywords for key combinations that its reader checks.
    """

    what: str
    fields: tuple[Field, ...]
    ref: str = ""
    doc: str = ""
    build: Callable[[Fields], Any] | None = None
    exactly_one: tuple[str, ...] = ()
    schema_extra: Mapping[str, Any] = field(default_factory=dict)
    _by_name: dict[str, Field] = field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_name", {f.name: f for f in self.fields})

    def __repr__(self) -> str:
        return f"Section({self.what!r}: {', '.join(self)})"

    def __getitem__(self, name: str) -> Field:
        by_name: dict[str, Field] = self._by_name
        return by_name[name]

    def __iter__(self) -> Iterator[str]:
        return (f.name for f in self.fields)

    def __len__(self) -> int:
        return len(self.fields)

    @property
    def required(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields if f.required)


def read_section(r: Reader, node: Node, section: Section) -> Fields | None:
    """The keys of the mapping ``node`` checked against ``section``; None if not a mapping.

    Unknown keys (with "did you mean"), duplicate keys and missing required
    keys are reported here; values are read on demand by :meth:`Fields.get`.
    """
    nodes = r.mapping(node, section, section.required, section.what)
    return None if nodes is None else Fields(r, node, section, nodes)


class Fields:
    """The present keys of one mapping; each value is read once, by its field's kind.

    Reading on demand lets a reader skip what an earlier problem makes
    meaningless (a step with an unknown action has no ``with:`` keys to check).
    """

    def __init__(self, r: Reader, node: Node, section: Section, nodes: dict[str, Node]) -> None:
        self.reader = r
        self.node = node
        self.section = section
        self.nodes: Mapping[str, Node] = nodes
        self._values: dict[str, Any] = {}

    def __contains__(self, name: object) -> bool:
        return name in self.nodes

    def __iter__(self) -> Iterator[str]:
        return iter(self.nodes)

    @property
    def mark(self) -> Mark:
        """Where the mapping starts."""
        return self.reader.mark(self.node)

    def mark_of(self, name: str) -> Mark:
        """Where the value of ``name`` starts (the mapping if absent)."""
        return self.reader.mark(self.nodes.get(name, self.node))

    def key_node(self, name: str) -> Node:
        """The node of the key ``name`` itself, for problems about the key."""
        return self.reader.key_node(self.node, name)

    def read(self, name: str) -> Any:
        """The value of ``name``: INVALID if absent or after a problem."""
        if name not in self._values:
            node = self.nodes.get(name)
            if node is None:
                return INVALID
            self._values[name] = self.section[name].kind.read_in(self, node, name)
        return self._values[name]

    def get(self, name: str, default: Any = None) -> Any:
        """The value of ``name``, or ``default`` when absent or invalid."""
        value = self.read(name)
        return default if value is INVALID else value

    def valid(self, *names: str) -> bool:
        """Whether every present key (of ``names``, or all) has a valid value.

        Every one is read (no stop at the first invalid one), so all problems are reported.
        """
        values = [self.read(n) for n in names or self.nodes]
        return all(v is not INVALID for v in values)

    def values(self, rename: Mapping[str, str] | None = None) -> dict[str, Any]:
        """Every valid present value by key (renamed where ``rename`` says), for a constructor."""
        rename = rename or {}
        out = {}
        for name in self.nodes:
            value = self.read(name)
            if value is not INVALID:
                out[rename.get(name, name)] = value
        return out


class SchemaBuilder:
    """JSON Schema (draft 2020-12) of kinds and sections; shared sections go to ``defs``."""

    def __init__(self) -> None:
        self.defs: dict[str, dict[str, Any]] = {}

    def kind(self, kind: Kind) -> dict[str, Any]:
        return kind.schema(self)

    def define(self, name: str, schema: Mapping[str, Any]) -> dict[str, Any]:
        """A ``$ref`` to the shared definition ``name`` (added on first use)."""
        self.defs.setdefault(name, dict(schema))
        return {"$ref": f"#/$defs/{name}"}

    def section(self, section: Section) -> dict[str, Any]:
        """A ``$ref`` for a shared section (defined once), the object schema otherwise."""
        if not section.ref:
            return self.object(section)
        if section.ref not in self.defs:
            self.defs[section.ref] = {}  # reserved first: a section may contain itself
            self.defs[section.ref] = self.object(section)
        return {"$ref": f"#/$defs/{section.ref}"}

    def object(self, section: Section) -> dict[str, Any]:
        props = {}
        for f in section.fields:
            schema = self.kind(f.kind)
            if f.doc and "$ref" not in schema:
                schema["description"] = f.doc
            props[f.name] = schema
        out: dict[str, Any] = {"type": "object", "additionalProperties": False}
        if section.doc:
            out["description"] = section.doc
        out["properties"] = props
        if section.required:
            out["required"] = list(section.required)
        if section.exactly_one:
            out["oneOf"] = [{"required": [k]} for k in section.exactly_one]
        for f in section.fields:
            out.update(f.kind.section_schema(self, f.name))
        out.update(section.schema_extra)
        return out
