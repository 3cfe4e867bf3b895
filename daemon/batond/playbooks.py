"""Playbook model and validation (frozen types built from rule files).

STUB: the playbooks work (issue 5) replaces this with the full model. The
rule-file loader calls ``read_playbooks`` for every ``playbooks:`` key.
"""

from __future__ import annotations

from dataclasses import dataclass

from batond.yamlfile import Mark, Node, Reader

__all__ = ["Playbook", "read_playbooks"]


@dataclass(frozen=True, slots=True)
class Playbook:
    name: str
    mark: Mark


def read_playbooks(reader: Reader, node: Node) -> list[Playbook]:
    """The playbooks of one ``playbooks:`` list; problems go to ``reader``."""
    out = []
    for item in reader.seq(node, "list of playbooks") or []:
        fields = reader.mapping(item, None, ("name",), "playbook mapping")
        if fields and "name" in fields:
            name = reader.name(fields["name"], "playbook name")
            if name:
                out.append(Playbook(name, reader.mark(fields["name"])))
    return out
