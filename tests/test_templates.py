"""``{{ }}`` templates: one value per string, types kept, never split, exact error marks."""

from __future__ import annotations

from typing import Any

import pytest

from batond.engine.templates import Template, compile_template, compile_value, render_value, text_of
from batond.errors import ConfigError, Mark
from batond.load.templating import compile_node
from batond.load.yamlfile import compose_text

MARK = Mark("p.yaml", 3, 9)
CTX: dict[str, Any] = {
    "labels": {"host": "web-1; rm -rf /", "mount": "/var"},
    "params": {"unit": "nginx.service", "n": 3, "ports": [80, 443]},
    "steps": {"check": {"ok": False, "exit_code": 2, "json": {"status": "down"}}},
    "value": 97.5,
}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{{ params.n }}", 3),  # a single expression keeps its JSON type
        ("{{ params.ports }}", [80, 443]),
        ("{{ steps.check.ok }}", False),
        ("{{ value }}", 97.5),
        ("{{ event.missing }}", None),
        ("n={{ params.n }}", "n=3"),
        ("{{ params.n }} ", "3 "),  # anything around it makes a string
        ("ok={{ steps.check.ok }} ports={{ params.ports }}", "ok=false ports=[80,443]"),
        ("restart {{ params.unit }} on {{ host }}", "restart nginx.service on web-1; rm -rf /"),
        ("{{ steps.check.json.status }}!", "down!"),
        ("none={{ event.missing }}", "none="),
        ("plain text", "plain text"),
    ],
)
def test_render(text: str, expected: Any) -> None:
    assert compile_template(text, MARK).render(CTX) == expected


def test_a_rendered_value_is_one_argv_element() -> None:
    compiled = compile_value(["echo", "{{ labels.host }}", "--unit={{ params.unit }}"], MARK)
    assert render_value(compiled, CTX) == ["echo", "web-1; rm -rf /", "--unit=nginx.service"]


def test_compile_value_walks_mappings_and_keeps_plain_strings() -> None:
    compiled = compile_value({"a": {"b": ["x", "{{ params.n }}"]}, "c": 5, "d": "plain"}, MARK)
    assert compiled["d"] == "plain" and isinstance(compiled["a"]["b"][1], Template)
    assert render_value(compiled, CTX) == {"a": {"b": ["x", 3]}, "c": 5, "d": "plain"}


@pytest.mark.parametrize(
    ("text", "col", "message"),
    [
        ("x {{ value + }}", 21, "expression syntax"),  # just after the "+"
        ("{{ _secret }}", 12, "names starting with '_'"),
        ("a {{ }}", 11, "empty {{ }} in template"),
        ("a {{ value", 11, "unclosed {{ in template"),
    ],
)
def test_template_errors_point_inside_the_string(text: str, col: int, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        compile_template(text, MARK)
    (problem,) = info.value.problems
    assert (problem.line, problem.col) == (3, col), problem
    assert message in problem.message


def test_every_bad_template_of_a_value_is_reported() -> None:
    with pytest.raises(ConfigError) as info:
        compile_value({"a": "{{ _x }}", "b": ["{{ 1 + }}"]}, MARK)
    assert len(info.value.problems) == 2


def test_compile_node_uses_the_position_of_each_string() -> None:
    text = 'with:\n  argv: [echo, "{{ _bad }}"]\n  url: http://{{ labels.host + }}/\n'
    node, reader = compose_text(text, "p.yaml")
    assert node is not None
    compile_node(reader, node.value[0][1])
    found = sorted((p.line, p.col) for p in reader.problems)
    # "{{ _bad }}" is quoted: the text starts after the quote (col 17), _bad at col 20;
    # the plain scalar starts at col 8, the expression breaks just after "+" (col 31)
    assert found == [(2, 20), (3, 31)], reader.problems


def test_text_of() -> None:
    assert [text_of(v) for v in (None, True, False, 1.5, "s", {"a": [1]})] == [
        "",
        "true",
        "false",
        "1.5",
        "s",
        '{"a":[1]}',
    ]
