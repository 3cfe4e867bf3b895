"""YAML with positions: every value keeps its file, line and column.

Configuration, rule, playbook and model files are composed (not constructed)
so each node still knows where it came from; a :class:`Reader` then turns
nodes into typed values and collects every problem as ``FILE:LINE:COL:
message`` instead of stopping at the first one.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from batond.errors import ConfigError, Mark, Problem
from batond.units import format_duration, parse_duration, parse_size

__all__ = [
    "MAX_ALIAS_NODES",
    "MAX_DEPTH",
    "MAX_FILE_BYTES",
    "MappingNode",
    "Node",
    "Reader",
    "ScalarNode",
    "SequenceNode",
    "compose_file",
    "compose_text",
    "text_mark",
]

try:  # the C composer is several times faster on large rule sets
    _Loader: type = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - PyYAML without libyaml
    _Loader = yaml.SafeLoader


_INT_TAG = "tag:yaml.org,2002:int"
_FLOAT_TAG = "tag:yaml.org,2002:float"
_BOOL_TAG = "tag:yaml.org,2002:bool"
_NULL_TAG = "tag:yaml.org,2002:null"
_STR_TAG = "tag:yaml.org,2002:str"


#: Largest file read (configuration, rules, playbooks, models): a bigger one is refused.
MAX_FILE_BYTES = 8 << 20
#: Nodes that aliases may add beyond the nodes written: a 731-byte "billion laughs"
#: expands to 10^9; a file that shares a few blocks by ``&anchor``/``*alias`` stays far below.
MAX_ALIAS_NODES = 10_000
#: Deepest nesting of mappings and lists (libyaml stops at 1000; readers recurse).
MAX_DEPTH = 100


def compose_text(text: str, file: str) -> tuple[Node | None, Reader]:
    """Compose YAML text; a syntax error or a bomb becomes the reader's first problem."""
    reader = Reader(file)
    if len(text) > MAX_FILE_BYTES:
        reader.problems.append(Problem(file, 1, 1, _too_big(len(text), "characters")))
        return None, reader
    try:
        node = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        reader.problems.append(Problem(file, line, col, f"YAML syntax: {exc.problem or exc}"))
        return None, reader
    except yaml.YAMLError as exc:
        reader.problems.append(Problem(file, 1, 1, f"YAML: {exc}"))
        return None, reader
    if node is not None:
        problem = _bomb(node, file)
        if problem is not None:
            reader.problems.append(problem)
            return None, reader
    return node, reader


_PLAIN_TAGS = frozenset(
    f"tag:yaml.org,2002:{t}"
    for t in ("str", "int", "float", "bool", "null", "seq", "map", "timestamp")
)


def _too_big(size: int, unit: str) -> str:
    return f"file too large: {size} {unit}; the limit is {MAX_FILE_BYTES >> 20} MiB"


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def _bomb(root: Node, file: str) -> Problem | None:
    """A problem when aliases expand the tree too far, loop, or nesting is too deep.

    Composing shares an aliased node instead of copying it, so this walks each
    distinct node once (sizes memoised) and readers never see the expansion.
    """
    sizes: dict[int, int] = {}  # expanded node count of each distinct node
    on_path: set[int] = set()
    shared: dict[int, Node] = {}  # nodes reached a second time: the anchors
    stack: list[tuple[Node, int, bool]] = [(root, 1, False)]
    while stack:
        node, depth, done = stack.pop()
        key = id(node)
        if done:
            on_path.discard(key)
            sizes[key] = 1 + sum(sizes[id(k)] for k in _children(node))
            continue
        if key in on_path:
            return _at(file, node, "an alias refers to a node that contains it")
        if key in sizes:
            shared[key] = node
            continue
        if depth > MAX_DEPTH:
            return _at(file, node, f"nested deeper than {MAX_DEPTH} levels")
        if node.tag not in _PLAIN_TAGS:  # "!x", "!!python/...": nothing reads them
            return _at(file, node, f"unsupported YAML tag {node.tag!r}")
        on_path.add(key)
        stack.append((node, depth, True))
        stack.extend((k, depth + 1, False) for k in reversed(_children(node)))
    added = sizes[id(root)] - len(sizes)
    if added <= MAX_ALIAS_NODES:
        return None
    worst = max(shared.values(), key=lambda n: sizes[id(n)])
    return _at(
        file,
        worst,
        f"aliases expand this file by {added} nodes (limit {MAX_ALIAS_NODES}): "
        "a YAML bomb? the largest anchored node starts here",
    )


def _at(file: str, node: Node, message: str) -> Problem:
    return Problem(file, node.start_mark.line + 1, node.start_mark.column + 1, message)


def compose_file(path: str | Path) -> tuple[Node | None, Reader]:
    """Read and compose one file; an unreadable file is a problem at 1:1."""
    name = str(path)
    try:
        size = Path(path).stat().st_size
        if size > MAX_FILE_BYTES:  # refused before it is read into memory
            reader = Reader(name)
            reader.problems.append(Problem(name, 1, 1, _too_big(size, "bytes")))
            return None, reader
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reader = Reader(name)
        reader.problems.append(Problem(name, 1, 1, f"cannot read: {exc}"))
        return None, reader
    return compose_text(text, name)


class Reader:
    """Turns nodes of one file into typed values, collecting problems.

    Every accessor returns ``None`` after recording a problem, so a caller can
    keep going and report all problems of a file in one pass.
    """

    def __init__(self, file: str) -> None:
        self.file = file
        self.problems: list[Problem] = []

    # -- reporting -------------------------------------------------------
    def mark(self, node: Node) -> Mark:
        return Mark(self.file, node.start_mark.line + 1, node.start_mark.column + 1)

    def error(self, where: Node | Mark, message: str) -> None:
        mark = where if isinstance(where, Mark) else self.mark(where)
        self.problems.append(Problem(mark.file, mark.line, mark.col, message))

    def raise_if_problems(self) -> None:
        if self.problems:
            raise ConfigError(sorted(self.problems))

    # -- structure -------------------------------------------------------
    def mapping(
        self,
        node: Node,
        allowed: Collection[str] | None,
        required: Iterable[str] = (),
        what: str = "mapping",
    ) -> dict[str, Node] | None:
        """Keys to value nodes; unknown and duplicate keys are reported at the key."""
        if not isinstance(node, MappingNode):
            self.error(node, f"expected a {what}, got {_kind(node)}")
            return None
        out: dict[str, Node] = {}
        keys: dict[str, Node] = {}
        for knode, vnode in node.value:
            if not isinstance(knode, ScalarNode) or knode.tag == _NULL_TAG:
                self.error(knode, "keys must be strings")
                continue
            key = str(knode.value)
            if key in out:
                self.error(knode, f"duplicate key {key!r}")
                continue
            if allowed is not None and key not in allowed:
                self.error(knode, f"unknown key {key!r}{_suggest(key, allowed)}")
                continue
            out[key] = vnode
            keys[key] = knode
        for key in required:
            if key not in out and key not in keys:
                self.error(node, f"missing required key {key!r}")
        self._keys[id(node)] = keys
        return out

    def key_node(self, mapping_node: Node, key: str) -> Node:
        """The node of ``key`` itself (for errors about the key, not its value)."""
        return self._keys.get(id(mapping_node), {}).get(key, mapping_node)

    @property
    def _keys(self) -> dict[int, dict[str, Node]]:
        try:
            return self.__keys
        except AttributeError:
            self.__keys: dict[int, dict[str, Node]] = {}
            return self.__keys

    def seq(self, node: Node, what: str = "list") -> list[Node] | None:
        if not isinstance(node, SequenceNode):
            self.error(node, f"expected a {what}, got {_kind(node)}")
            return None
        return list(node.value)

    def seq_or_one(self, node: Node) -> list[Node]:
        """A list, or a single scalar/mapping read as a list of one."""
        return list(node.value) if isinstance(node, SequenceNode) else [node]

    # -- scalars ---------------------------------------------------------
    def string(self, node: Node, what: str = "string", empty_ok: bool = False) -> str | None:
        if not isinstance(node, ScalarNode) or node.tag not in (_STR_TAG, _INT_TAG, _FLOAT_TAG):
            self.error(node, f"expected a {what}, got {_kind(node)}")
            return None
        value = str(node.value)
        if not value and not empty_ok:
            self.error(node, f"expected a {what}, got an empty string")
            return None
        return value

    def name(self, node: Node, what: str = "name") -> str | None:
        """A non-empty string without surrounding whitespace."""
        value = self.string(node, what)
        if value is not None and value != value.strip():
            self.error(node, f"{what} {value!r} has surrounding whitespace")
            return None
        return value

    def integer(self, node: Node, minimum: int | None = None) -> int | None:
        value = self.plain(node)
        if isinstance(value, bool) or not isinstance(value, int):
            self.error(node, f"expected an integer, got {_kind(node)}")
            return None
        if minimum is not None and value < minimum:
            self.error(node, f"must be at least {minimum}, got {value}")
            return None
        return value

    def number(
        self, node: Node, minimum: float | None = None, maximum: float | None = None
    ) -> float | None:
        value = self.plain(node)
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            self.error(node, f"expected a number, got {_kind(node)}")
            return None
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            self.error(node, f"must be between {minimum} and {maximum}, got {value}")
            return None
        return float(value)

    def boolean(self, node: Node) -> bool | None:
        if not isinstance(node, ScalarNode) or node.tag != _BOOL_TAG:
            self.error(node, f"expected true or false, got {_kind(node)}")
            return None
        return bool(self.plain(node))

    def duration(self, node: Node, minimum: float = 0.0) -> float | None:
        """Seconds from ``30s``, ``1h30m``...; a bare number is an error."""
        if not isinstance(node, ScalarNode) or node.tag not in (_STR_TAG, _INT_TAG):
            self.error(node, f"expected a duration such as 30s or 5m, got {_kind(node)}")
            return None
        try:
            seconds = parse_duration(str(node.value))
        except ValueError as exc:
            self.error(node, str(exc))
            return None
        if seconds < minimum:
            self.error(node, f"duration must be at least {format_duration(minimum)}")
            return None
        return seconds

    def size(self, node: Node) -> int | None:
        if not isinstance(node, ScalarNode):
            self.error(node, f"expected a size such as 1MiB, got {_kind(node)}")
            return None
        try:
            return parse_size(str(node.value))
        except ValueError as exc:
            self.error(node, str(exc))
            return None

    def one_of(self, node: Node, choices: Collection[str], what: str = "value") -> str | None:
        value = self.string(node, what)
        if value is not None and value not in choices:
            self.error(node, f"{what} must be one of {', '.join(sorted(choices))}; got {value!r}")
            return None
        return value

    def str_list(self, node: Node, what: str = "list of strings") -> list[str] | None:
        items = self.seq(node, what)
        if items is None:
            return None
        out = []
        for item in items:
            value = self.string(item)
            if value is not None:
                out.append(value)
        return out

    def str_map(self, node: Node) -> dict[str, str] | None:
        """A flat mapping whose values are scalars, as strings (labels)."""
        fields = self.mapping(node, None)
        if fields is None:
            return None
        out: dict[str, str] = {}
        for key, vnode in fields.items():
            value = self.plain(vnode)
            if isinstance(value, dict | list) or value is None:
                self.error(vnode, f"value of {key!r} must be a string, number or boolean")
                continue
            out[key] = _label_text(value)
        return out

    def plain(self, node: Node) -> Any:
        """The node as ordinary Python data (dicts, lists, str, int, float, bool, None)."""
        if isinstance(node, ScalarNode):
            if node.tag == _STR_TAG:
                return node.value
            return yaml.SafeLoader(  # resolves ints, floats, bools, nulls, timestamps
                ""
            ).construct_object(node, deep=True)
        if isinstance(node, SequenceNode):
            return [self.plain(item) for item in node.value]
        if isinstance(node, MappingNode):
            return {str(self.plain(k)): self.plain(v) for k, v in node.value}
        return None  # pragma: no cover - no other node kinds


def _label_text(value: object) -> str:
    """Label values are strings; numbers and booleans become their JSON text."""
    if value is True:
        return "true"
    if value is False:
        return "false"
    return str(value)


def _kind(node: Node) -> str:
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    tag = node.tag.rsplit(":", 1)[-1]
    if tag == "null":
        return "nothing (null)"
    if tag == "str":
        return f"the string {node.value!r}"
    return f"{tag} {node.value}"


def _suggest(key: str, allowed: Collection[str]) -> str:
    import difflib

    close = difflib.get_close_matches(key, list(allowed), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def text_mark(reader: Reader, node: Node) -> Mark:
    """Where the text of a scalar starts (after the opening quote of a quoted scalar)."""
    mark = reader.mark(node)
    style = getattr(node, "style", None)
    if style in ("'", '"'):
        return Mark(mark.file, mark.line, mark.col + 1)
    if style in ("|", ">"):  # block scalar: the text starts on the next line, indented
        return Mark(mark.file, mark.line + 1, _block_indent(node))
    return mark


def _block_indent(node: Node) -> int:
    buf = getattr(node.start_mark, "buffer", None)
    if not buf:
        return 1
    rest = buf[node.start_mark.pointer :].split("\n", 2)
    return len(rest[1]) - len(rest[1].lstrip(" ")) + 1 if len(rest) > 1 else 1
