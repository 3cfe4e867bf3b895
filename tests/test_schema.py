"""``batond schema``: generated from the key tables that validate rule files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from batond.commands.schema import rule_file_schema
from batond.load.rulefiles import FILE_FIELDS, RULE_FIELDS, SCHEDULE_FIELDS

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "batond", "schema"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    parsed: dict[str, Any] = json.loads(done.stdout)
    return parsed


def test_cli_prints_the_generated_schema(schema: dict[str, Any]) -> None:
    assert schema == json.loads(json.dumps(rule_file_schema()))
    jsonschema.Draft202012Validator.check_schema(schema)


def test_keys_come_from_the_validating_tables(schema: dict[str, Any]) -> None:
    defs = schema["$defs"]
    assert set(schema["properties"]) == set(FILE_FIELDS)
    assert set(defs["rule"]["properties"]) == set(RULE_FIELDS)
    assert set(defs["schedule"]["properties"]) == set(SCHEDULE_FIELDS)
    assert defs["rule"]["required"] == ["name", "run"]
    assert defs["rule"]["additionalProperties"] is False


def test_shipped_files_validate(schema: dict[str, Any]) -> None:
    validator = jsonschema.Draft202012Validator(schema)
    files = sorted((REPO / "rules").glob("*.yaml"))
    assert files
    for path in files:
        errors = list(validator.iter_errors(yaml.safe_load(path.read_text()) or {}))
        assert errors == [], (path, [e.message for e in errors])


@pytest.mark.parametrize(
    "doc",
    [
        {"rules": [{"name": "r", "match": {"metric": "m"}, "wen": "x", "run": "fix"}]},
        {"rules": [{"name": "r", "match": {"metric": "m"}}]},
        {"rules": [{"name": "r", "match": {"metric": "m"}, "for": "5", "run": "fix"}]},
        {"rules": [{"name": "r", "match": {"host": "a"}, "run": "fix"}]},
        {"rules": [{"name": "r", "match": {"metric": "m"}, "group_by": ["value"], "run": "x"}]},
        {"rules": [{"name": "r", "match": {"event": "e"}, "severity": "urgent", "run": "x"}]},
        {"schedules": [{"name": "s", "run": "x"}]},
        {"playbooks": [{"name": "p"}]},
        {"rule": []},
    ],
)
def test_mistakes_that_check_reports_are_schema_errors_too(
    schema: dict[str, Any], doc: dict[str, Any]
) -> None:
    assert list(jsonschema.Draft202012Validator(schema).iter_errors(doc))
