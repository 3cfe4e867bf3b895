"""Compiling the templates of a YAML value with the exact mark of each string."""

from __future__ import annotations

from collections.abc import Sequence

from batond.engine.templates import TEMPLATE_NAMES, CompiledValue, compile_template
from batond.errors import ConfigError
from batond.load.yamlfile import MappingNode, Node, Reader, ScalarNode, SequenceNode, text_mark

__all__ = ["compile_node"]


def compile_node(
    reader: Reader, node: Node, names: Sequence[str] = TEMPLATE_NAMES, *, text: bool = False
) -> CompiledValue:
    """Compile a YAML node (a whole ``with:`` mapping) with exact marks; problems go to reader.

    ``text``: the value is text (an argv, an environment): each scalar is taken as it
    is written, so an unquoted ``+0``, ``010``, ``0x10``, ``1.50`` or ``1_000`` stays
    those characters instead of becoming the number YAML reads (``0``, ``8``, ``16`` ...).
    """
    if isinstance(node, ScalarNode):
        value = str(node.value) if text else reader.plain(node)
        if isinstance(value, str) and "{{" in value:
            try:
                return compile_template(value, text_mark(reader, node), names)
            except ConfigError as exc:
                reader.problems.extend(exc.problems)
        return value
    if isinstance(node, SequenceNode):
        return [compile_node(reader, item, names, text=text) for item in node.value]
    if isinstance(node, MappingNode):
        return {
            str(reader.plain(k)): compile_node(reader, v, names, text=text) for k, v in node.value
        }
    return None  # pragma: no cover - no other node kinds
