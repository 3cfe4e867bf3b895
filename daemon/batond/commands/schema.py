"""``batond schema``: the JSON Schema (draft 2020-12) of rule and playbook files.

Generated from the key tables that validate the files
(:mod:`batond.load.rulefiles` for rules and schedules,
:data:`batond.load.playbooks.PLAYBOOK_SCHEMA` for playbooks), so editors and
``batond check`` cannot disagree about which keys exist.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from typing import Any

from batond.load.rulefiles import (
    COUNT_FIELDS,
    FILE_FIELDS,
    LIMITS_FIELDS,
    ORDERS,
    PART_FIELDS,
    RATE_FIELDS,
    RULE_FIELDS,
    SCHEDULE_FIELDS,
    SEVERITIES,
    Field,
)

__all__ = ["main", "rule_file_schema"]

_DURATION = {
    "type": "string",
    "pattern": r"^([0-9]+(ms|s|m|h|d))+$",
    "description": "e.g. 500ms, 30s, 5m, 1h30m, 7d",
}
_NAME = {"type": "string", "minLength": 1, "pattern": r"^\S(.*\S)?$"}
_MATCH = {
    "type": "object",
    "description": "metric or event name, plus labels that must be equal",
    "additionalProperties": {"type": ["string", "number", "boolean"]},
    "oneOf": [{"required": ["metric"]}, {"required": ["event"]}],
}


def _kind_schema(kind: str) -> dict[str, Any]:
    ref = {"part": "part", "match": "match"}
    if kind in ref:
        return {"$ref": f"#/$defs/{ref[kind]}"}
    if kind == "count":
        return _object(COUNT_FIELDS)
    if kind == "rate":
        return _object(RATE_FIELDS)
    if kind == "limits":
        return _object(LIMITS_FIELDS)
    kinds: dict[str, dict[str, Any]] = {
        "name": _NAME,
        "text": {"type": "string"},
        "expr": {"type": "string", "description": "safe expression (Python-like syntax)"},
        "duration": _DURATION,
        "int": {"type": "integer", "minimum": 1},
        "severity": {"enum": list(SEVERITIES)},
        "order": {"enum": list(ORDERS)},
        "params": {"type": "object"},
        "labels": {
            "type": "array",
            "items": {"type": "string", "not": {"enum": ["metric", "value", "event", "ts"]}},
        },
        "run": {
            "anyOf": [
                {"type": "string", "minLength": 1},
                {"type": "array", "minItems": 1, "items": {"type": "string", "minLength": 1}},
            ]
        },
        "cron": {"type": "string", "description": "minute hour day-of-month month day-of-week"},
        "parts": {"type": "array", "minItems": 2, "items": {"$ref": "#/$defs/part"}},
        "rules": {"type": "array", "items": {"$ref": "#/$defs/rule"}},
        "schedules": {"type": "array", "items": {"$ref": "#/$defs/schedule"}},
        "playbooks": {"$ref": "#/$defs/playbooks"},
        "playbook": _NAME,
        "zone": {"type": "string", "description": "an IANA time zone, e.g. Europe/Berlin"},
        "bool": {"type": "boolean"},
    }
    return dict(kinds[kind])


def _object(table: Mapping[str, Field]) -> dict[str, Any]:
    props = {}
    for key, field in table.items():
        schema = _kind_schema(field.kind)
        if field.description and "$ref" not in schema:
            schema["description"] = field.description
        props[key] = schema
    out: dict[str, Any] = {"type": "object", "additionalProperties": False, "properties": props}
    required = [k for k, f in table.items() if f.required]
    if required:
        out["required"] = required
    return out


def _playbooks() -> tuple[dict[str, Any], dict[str, Any]]:
    """The playbooks schema and its definitions (hoisted to the root, where $refs point)."""
    from batond.load.playbooks import PLAYBOOK_SCHEMA

    schema = dict(PLAYBOOK_SCHEMA)
    defs = dict(schema.pop("$defs", {}))
    return schema, defs


def rule_file_schema() -> dict[str, Any]:
    playbooks, playbook_defs = _playbooks()
    rule = _object(RULE_FIELDS)
    rule["anyOf"] = [{"required": ["match"]}, {"required": ["all", "within"]}]
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://batond.dev/schema/rule-file.json",
        "title": "batond rule and playbook file",
        **_object(FILE_FIELDS),
        "$defs": {
            **playbook_defs,
            "match": _MATCH,
            "part": _object(PART_FIELDS),
            "rule": rule,
            "schedule": _object(SCHEDULE_FIELDS),
            "playbooks": playbooks,
        },
    }


def main(args: argparse.Namespace) -> int:
    print(json.dumps(rule_file_schema(), indent=2))
    return 0
