"""``batond schema``: the JSON Schema (draft 2020-12) of rule and playbook files.

Generated from the sections that validate the files
(:data:`batond.load.rulefiles.FILE_FIELDS` and the sections it holds, the
playbook and action sections included), so editors and ``batond check``
cannot disagree about which keys exist.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from batond.load.fields import SchemaBuilder
from batond.load.rulefiles import FILE_FIELDS

__all__ = ["main", "rule_file_schema"]


def rule_file_schema() -> dict[str, Any]:
    s = SchemaBuilder()
    body = s.object(FILE_FIELDS)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://batond.dev/schema/rule-file.json",
        "title": body.pop("description"),
        **body,
        "$defs": s.defs,
    }


def main(args: argparse.Namespace) -> int:
    print(json.dumps(rule_file_schema(), indent=2))
    return 0
