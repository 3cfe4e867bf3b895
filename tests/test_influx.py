"""InfluxDB line protocol parsing."""

from __future__ import annotations

import pytest

from batond.events import Sample
from batond.intake.influx import parse_influx

NOW = 4_000_000_000.0  # a receiver clock later than every stamp below


def parse(text: str | bytes) -> tuple[list[Sample], list[str]]:
    items, errors = parse_influx(text.encode() if isinstance(text, str) else text, NOW, "mqtt")
    assert all(isinstance(i, Sample) for i in items)
    return [i for i in items if isinstance(i, Sample)], [e.reason for e in errors]


def test_the_spec_example() -> None:
    (s,), errors = parse("cpu,host=web-1 usage_idle=12.5 1700000000000000000")
    assert errors == []
    assert (s.metric, s.value, s.labels, s.ts, s.source) == (
        "cpu_usage_idle",
        12.5,
        {"host": "web-1"},
        1700000000.0,
        "mqtt",
    )
    assert s.raw == {"metric": "cpu_usage_idle", "value": 12.5, "ts": 1700000000.0, "host": "web-1"}


def test_fields_types_and_optional_timestamp() -> None:
    samples, errors = parse(
        'disk,host=a,dev=sda used=1i,free=2u,ok=t,bad=FALSE,ratio=-1.5e3,note="x y, z=1"'
    )
    assert errors == []
    assert {s.metric: s.value for s in samples} == {
        "disk_used": 1.0,
        "disk_free": 2.0,
        "disk_ok": 1.0,
        "disk_bad": 0.0,
        "disk_ratio": -1500.0,
    }
    assert all(s.ts == NOW and s.labels == {"host": "a", "dev": "sda"} for s in samples)


def test_escapes() -> None:
    (s,), errors = parse(r"my\ meas\,ure,tag\ key=v\,a\=l\ ue field\=k\ ey=3 5000000000")
    assert errors == []
    assert s.metric == "my meas,ure_field=k ey"
    assert s.labels == {"tag key": "v,a=l ue"}
    assert s.ts == 5.0


def test_string_field_with_escaped_quote_and_spaces() -> None:
    (s,), errors = parse(r'log,app=x msg="he said \"hi there\" ok",n=2i 1000000000')
    assert errors == []
    assert (s.metric, s.value, s.ts) == ("log_n", 2.0, 1.0)


def test_many_lines_comments_blank_and_crlf() -> None:
    samples, errors = parse("# comment\r\n\r\ncpu v=1\r\nmem v=2 3000000000\n\n")
    assert errors == []
    assert [(s.metric, s.ts) for s in samples] == [("cpu_v", NOW), ("mem_v", 3.0)]


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("cpu", "no_fields"),
        ("cpu ", "no_fields"),
        (",host=a v=1", "bad_measurement"),
        ("cpu,host v=1", "bad_tag"),
        ("cpu,host= v=1", "bad_tag"),
        ("cpu v", "bad_field"),
        ("cpu =1", "bad_field"),
        ("cpu v=", "bad_value"),
        ("cpu v=abc", "bad_value"),
        ("cpu v=nan", "bad_value"),
        ("cpu v=inf", "bad_value"),
        ("cpu v=1.5i", "bad_value"),
        ("cpu v=-1u", "bad_value"),
        ('cpu v="open', "bad_string"),
        ('cpu msg="only text"', "no_numeric_field"),
        ("cpu v=1 notatime", "bad_ts"),
        ("cpu v=1 1 2", "bad_line"),
    ],
)
def test_invalid_lines_have_a_reason(line: str, reason: str) -> None:
    samples, errors = parse(line)
    assert (samples, errors) == ([], [reason])


def test_one_bad_line_does_not_spoil_the_others() -> None:
    samples, errors = parse("cpu v=1\ncpu v=oops\nmem v=2")
    assert [s.metric for s in samples] == ["cpu_v", "mem_v"]
    assert errors == ["bad_value"]


def test_not_utf8_and_empty() -> None:
    assert parse(b"\xff cpu v=1") == ([], ["bad_encoding"])
    assert parse(b"") == ([], ["empty"])
    assert parse(b"# only a comment\n") == ([], ["empty"])
