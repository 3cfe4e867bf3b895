"""The collection, text and time functions of the expression language, and their bounds."""

from __future__ import annotations

import time
from typing import Any

import pytest

from batond.engine.expr import TEMPLATE_NAMES, EvalError, compile_expression, suggest
from batond.engine.functions import MAX_ITEMS, MAX_TEXT
from batond.errors import ConfigError, Mark

MARK = Mark("playbooks.yaml", 3, 9)
ITEMS = [
    {"sku": "b-2", "qty": 2, "size": {"kg": 1.5}},
    {"sku": "a-1", "qty": 5, "size": {"kg": 0.2}},
    {"sku": "c-3", "qty": 1},
]


def ev(text: str, **ctx: Any) -> Any:
    return compile_expression(text, MARK, TEMPLATE_NAMES).evaluate(
        {"event": {"items": ITEMS, "csv": "x,y,,z"}, "params": {"tags": ["a", "b"]}, **ctx}
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('join(params.tags, ",")', "a,b"),
        ("join([1, true, null, 2.5])", "1true2.5"),
        ('split(event.csv, ",")', ["x", "y", "", "z"]),
        ('split("a b  c")', ["a", "b", "c"]),
        ('split(event.csv, ",", 1)', ["x", "y,,z"]),
        ("split(null)", []),
        ('[i.sku for i in sorted(event.items, key="sku")]', ["a-1", "b-2", "c-3"]),
        ('[i.qty for i in sorted(event.items, key="qty", reverse=true)]', [5, 2, 1]),
        ('[i.sku for i in sorted(event.items, key="size.kg")]', ["a-1", "b-2", "c-3"]),
        ("sorted([3, 1, 2])", [1, 2, 3]),
        ('max(event.items, key="qty").sku', "a-1"),
        ('min(event.items, key="size.kg").sku', "a-1"),
        ("max([4, 9, 2]) + min(4, 9, 2)", 11),
        ("max([])", None),
        ("first(params.tags) + last(params.tags)", "ab"),
        ("first([]) is None and last(null) is None", True),
        ('keys({"a": 1, "b": 2})', ["a", "b"]),
        ('values({"a": 1, "b": 2})', [1, 2]),
        ("sum([i.qty for i in event.items])", 8),
        ("any([i.qty > 4 for i in event.items])", True),
        ("all([i.qty > 1 for i in event.items])", False),
        ("[i.sku for i in event.items if i.qty >= 2]", ["b-2", "a-1"]),
        ("[[i.sku, t] for i in event.items if i.qty > 1 for t in params.tags]",
         [["b-2", "a"], ["b-2", "b"], ["a-1", "a"], ["a-1", "b"]]),
        ('[i.sku for i in event.items if i.sku not in ["c-3"]]', ["b-2", "a-1"]),
        ("[x for x in null]", []),
        ('int("42") + int("ff", 16) + float("0.5")', 297.5),
        ('str([1, "a"]) + str(2)', '[1,"a"]2'),
        ('strftime(86400 * 365, "%Y-%m-%dT%H:%M")', "1971-01-01T00:00"),
        ('strftime(0, "%H:%M %Z", "Asia/Tokyo")', "09:00 JST"),
        ('parse_time("1970-01-02T00:00:00Z")', 86400.0),
        ('parse_time("1970-01-01T01:00:00+01:00")', 0.0),
        ('parse_time("1970-01-01 00:01")', 60.0),
    ],
)  # fmt: skip
def test_values(text: str, expected: Any) -> None:
    assert ev(text) == expected


def test_clock_is_the_callers_live_time_and_now_is_what_the_caller_gives() -> None:
    before = time.time()
    assert before <= ev("clock()", clock=time.time) <= time.time()
    assert ev("now", now=12.5) == 12.5
    with pytest.raises(ConfigError, match="must be called"):
        compile_expression("clock", MARK, TEMPLATE_NAMES)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[x for x in event.csv]", "expected a list, got str"),
        ('strftime("soon", "%Y")', "expected seconds since the epoch"),
        ('strftime(0, "%Y", "Mars/Olympus")', "unknown time zone"),
        ('parse_time("yesterday")', "not an ISO 8601 time"),
        ("keys(params.tags)", "expected a mapping, got list"),
        ('split(event.csv, "")', "empty separator"),
    ],
)
def test_misuse_is_an_eval_error(text: str, message: str) -> None:
    with pytest.raises(EvalError, match=message):
        ev(text)


def test_a_quadratic_comprehension_over_event_data_runs_out_of_budget_quickly() -> None:
    big = list(range(MAX_ITEMS))
    t0 = time.perf_counter()
    with pytest.raises(EvalError, match="steps of work"):
        ev("[y for x in event.big for y in event.big]", event={"big": big})
    with pytest.raises(EvalError, match="steps of work"):
        ev("[x for x in event.big if x in event.big]", event={"big": big})
    assert time.perf_counter() - t0 < 2.0
    # a single walk over the same data is well within the budget, every evaluation anew
    expr = compile_expression("len([x for x in event.big if x % 2])", MARK, TEMPLATE_NAMES)
    for _ in range(3):
        assert expr.evaluate({"event": {"big": big}}) == MAX_ITEMS // 2


def test_collections_and_strings_have_a_size_limit() -> None:
    with pytest.raises(EvalError, match="more than"):
        ev("sorted(event.big)", event={"big": list(range(MAX_ITEMS + 1))})
    with pytest.raises(EvalError, match="too long"):
        ev('join(event.big, "x" * 100000)', event={"big": ["a"] * 20})
    with pytest.raises(EvalError, match="too long"):
        ev("split(event.s)", event={"s": "a " * (MAX_TEXT // 2 + 1)})


def test_rules_keep_their_hot_path_without_a_budget_reset() -> None:
    expr = compile_expression("value > 90", MARK)
    assert "__b_start" not in expr.fn.__code__.co_names
    bounded = compile_expression("len([x for x in event.a]) > 1", MARK)
    assert "__b_start" in bounded.fn.__code__.co_names


def test_bare_names_are_recorded_with_their_position_for_typo_hints() -> None:
    expr = compile_expression("valeu > 90 and host == 'a'", MARK)
    assert [(n, m.col) for n, m in expr.bare_names] == [("valeu", 9), ("host", 24)]
    known = ("value", "metric", "labels", "event", "anomaly", "now")
    assert suggest("valeu", known) == "value"  # two letters swapped: one edit
    assert suggest("vale", known) == "value"
    assert suggest("host", known) is None
    assert suggest("nw", ("now", "new")) is None  # ambiguous: no guess


def test_a_comprehension_variable_is_local_to_it() -> None:
    with pytest.raises(ConfigError, match="unknown name 'x'"):
        compile_expression("[x for x in steps] + [x]", MARK, ("steps",))
