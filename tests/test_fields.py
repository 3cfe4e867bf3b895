"""The field vocabulary (``load/fields.py``): one declaration both reads a file and describes it.

Every section of every file kind is walked: the keys its reader accepts are
exactly the keys its JSON Schema lists, so ``batond schema`` cannot drift from
``batond check``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from batond.errors import ConfigError
from batond.load.config import CONFIG_FIELDS
from batond.load.fields import Field, Kind, SchemaBuilder, Section, read_section
from batond.load.kinds import Integer, Later
from batond.load.modelfile import MODEL_FILE_FIELDS
from batond.load.playbooks import ACTION_KEYS
from batond.load.rulefiles import FILE_FIELDS, load_rules
from batond.load.ruletests import TEST_FILE_FIELDS
from batond.load.yamlfile import compose_text
from batond.remedy.actions import action_keys, action_kinds

REPO = Path(__file__).resolve().parent.parent
ROOTS = {
    "rules": FILE_FIELDS,
    "config": CONFIG_FIELDS,
    "models": MODEL_FILE_FIELDS,
    "tests": TEST_FILE_FIELDS,
}


def sections(root: Section) -> list[Section]:
    """Every section reachable from ``root`` (through nested, listed and switched kinds)."""
    found: dict[int, Section] = {}

    def walk(x: object) -> None:
        if isinstance(x, Section):
            if id(x) not in found:
                found[id(x)] = x
                for f in x.fields:
                    walk(f.kind)
        elif isinstance(x, Later):
            walk(x.get())
        elif isinstance(x, Mapping):
            for value in x.values():
                walk(value)
        elif isinstance(x, Kind):  # a kind's parts: the kinds and sections it holds
            for name in getattr(x, "__dataclass_fields__", {}):
                walk(getattr(x, name))

    walk(root)
    return list(found.values())


ALL = [(name, s) for name, root in ROOTS.items() for s in sections(root)]


def schema_of(root: Section) -> dict[str, Any]:
    s = SchemaBuilder()
    return {**s.object(root), "$defs": s.defs}


def test_every_file_kind_has_its_sections_walked() -> None:
    whats = {s.what for _, s in ALL}
    assert {"rule mapping", "step mapping", "with mapping of action 'exec'"} <= whats
    assert {"http mapping", "subscription mapping", "model", "params mapping"} <= whats
    assert {"test file", "test", "alert", "decision", "incident", "step check"} <= whats


@pytest.mark.parametrize("section", [s for _, s in ALL], ids=[f"{n}:{s.what}" for n, s in ALL])
def test_the_reader_accepts_exactly_the_keys_the_schema_lists(section: Section) -> None:
    schema = SchemaBuilder().object(section)
    assert list(schema["properties"]) == list(section)
    assert schema.get("required", []) == list(section.required)
    assert schema["additionalProperties"] is False
    # every declared key is accepted (nothing missing), and one more is not
    text = "".join(f"{key}: null\n" for key in section) + "zzz_not_a_key: 1\n"
    node, reader = compose_text(text, "f.yaml")
    assert node is not None
    fields = read_section(reader, node, section)
    assert fields is not None and set(fields) == set(section)
    keys = [str(p) for p in reader.problems]
    assert keys == [f"f.yaml:{len(section) + 1}:1: unknown key 'zzz_not_a_key'"], keys


@pytest.mark.parametrize("name", ROOTS)
def test_each_file_kind_has_a_valid_schema(name: str) -> None:
    jsonschema.Draft202012Validator.check_schema(schema_of(ROOTS[name]))


def shipped(pattern: str) -> list[Path]:
    files = sorted(REPO.glob(pattern))
    assert files, pattern
    return files


@pytest.mark.parametrize(
    ("name", "pattern"),
    [
        ("config", "batond.local.yaml"),
        ("config", "rules/examples/*/try/batond.yaml"),
        ("models", "models/*.yaml"),
        ("rules", "rules/*.yaml"),
        ("tests", "rules/tests/*.yaml"),
        ("tests", "rules/examples/*/tests/*.yaml"),
    ],
)
def test_shipped_files_validate_against_the_generated_schema(name: str, pattern: str) -> None:
    validator = jsonschema.Draft202012Validator(schema_of(ROOTS[name]))
    for path in shipped(pattern):
        errors = [e.message for e in validator.iter_errors(as_json(path))]
        assert errors == [], (path, errors)


def as_json(path: Path) -> Any:
    """The file as an editor's YAML language server sees it: an unquoted time is a string."""
    return json.loads(json.dumps(yaml.safe_load(path.read_text()), default=str))


#: A decision with both a playbook and a suppression: the reader says "either".
DECISION = {"at": "1m", "rule": "r", "key": "", "playbook": "p", "suppressed": "cooldown"}


@pytest.mark.parametrize(
    ("name", "doc"),
    [
        ("config", {"stat_dir": "/x"}),
        ("config", {"http": {"tokenfile": "t"}}),
        ("config", {"host": {"interval": 5}}),
        ("config", {"mode": "audit"}),
        ("config", {"mqtt": {"subscribe": [{"qos": 1}]}}),
        ("config", {"governor": {"max_runs": {"count": 0, "per": "1h"}}}),
        ("config", {"journal": {"record": {"max_size": "10MB"}}}),
        ("models", {"model": []}),
        ("models", {"models": [{"name": "a", "match": {"metric": "m"}, "thresold": 0.9}]}),
        ("models", {"models": [{"name": "a", "match": {"metric": "m"}, "sensitivity": 0}]}),
        ("models", {"models": [{"name": "a", "match": {"role": "web"}}]}),
        ("models", {"models": [{"name": "a", "match": {"metric": "m"}, "params": {"bins": 1}}]}),
        ("tests", {"rule_files": ["r.yaml"]}),
        ("tests", {"rule_files": "r.yaml", "tests": [{"name": "t", "interval": 60}]}),
        ("tests", {"rule_files": [], "tests": [{"name": "t", "series": {"9m": "1"}}]}),
        ("tests", {"rule_files": [], "tests": [{"name": "t", "events": [{"event": "e"}]}]}),
        ("tests", {"rule_files": [], "tests": [{"name": "t", "alerts": [{"at": "1m"}]}]}),
        ("tests", {"rule_files": [], "tests": [{"name": "t", "decisions": [DECISION]}]}),
        ("tests", {"rule_files": [], "tests": [{"name": "t", "steps": [{"at": "1m"}]}]}),
    ],
)
def test_mistakes_the_reader_reports_are_schema_errors_too(name: str, doc: dict[str, Any]) -> None:
    assert list(jsonschema.Draft202012Validator(schema_of(ROOTS[name])).iter_errors(doc))


def test_the_action_sections_are_what_each_action_declares() -> None:
    assert list(ACTION_KEYS) == list(action_kinds())
    for kind, section in ACTION_KEYS.items():
        declared = action_keys(kind)
        assert list(section) == list(declared.keys)
        assert set(section.required) == set(declared.required)
        assert section.exactly_one == declared.one_of


def test_every_problem_of_one_mapping_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    rule = "  - {name: r, match: {event: e}, count: {at_least: 0, within: 5}, run: p}"
    path.write_text(
        f"rules:\n{rule}\n"
        "playbooks:\n  - {name: p, steps: [{name: s, action: wait, with: {duration: 1s}}]}\n"
    )
    with pytest.raises(ConfigError) as info:
        load_rules([path])
    at_least, within = rule.index("0,") + 1, rule.index("5}") + 1
    assert [str(p) for p in info.value.problems] == [
        f"{path}:2:{at_least}: must be at least 1, got 0",
        f"{path}:2:{within}: invalid duration '5': "
        "expected <integer><unit>... with units ms, s, m, h, d",
    ]


def test_a_value_is_read_once_however_often_it_is_asked_for() -> None:
    section = Section("mapping", (Field("n", Integer(1)),))
    node, reader = compose_text("n: 0\n", "f.yaml")
    assert node is not None
    fields = read_section(reader, node, section)
    assert fields is not None
    assert fields.get("n") is None and fields.get("n", 7) == 7 and not fields.valid()
    assert [str(p) for p in reader.problems] == ["f.yaml:1:4: must be at least 1, got 0"]


def doc_tables(text: str) -> list[set[str]]:
    """The keys of each table (``| `key` | ...`` rows) of a Markdown text."""
    tables: list[set[str]] = []
    rows: set[str] = set()
    for line in [*text.splitlines(), ""]:
        if m := re.match(r"\| `(\w+)` \|", line):
            rows.add(m.group(1))
        elif not line.startswith("|") and rows:
            tables.append(rows)
            rows = set()
    return tables


def test_every_section_of_a_test_file_has_its_table_in_tuning_md() -> None:
    text = (REPO / "docs" / "tuning.md").read_text(encoding="utf-8")
    part = text.split("### Rule test files", 1)[1].split("\n### ", 1)[0]
    tables = doc_tables(part)
    missing = [s.what for s in sections(ROOTS["tests"]) if set(s) not in tables]
    assert not missing, f"test file sections without their table in docs/tuning.md: {missing}"
