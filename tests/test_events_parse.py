"""Property-based tests: every input parser, fed anything, returns items and InputErrors only."""

from __future__ import annotations

import logging
import math
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from batond.errors import InputError
from batond.events import Event, Input, Sample, parse_json_payload
from batond.intake import Rejections
from batond.intake.http import parse_alertmanager
from batond.intake.influx import parse_influx
from batond.metrics import Metrics

PARSERS = [parse_json_payload, parse_influx, parse_alertmanager]
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
keys = st.sampled_from(
    [
        "metric",
        "value",
        "ts",
        "event",
        "host",
        "alerts",
        "labels",
        "status",
        "version",
        "annotations",
        "seq",
    ]
) | st.text(max_size=6)
objects = st.dictionaries(keys, json_values, max_size=6)

NOW = 5_000_000_000.0  # a receiver clock later than every generated stamp (2**62 ns)


def check(items: list[Input], errors: list[InputError]) -> None:
    assert all(isinstance(e, InputError) and e.reason for e in errors)
    for item in items:
        assert isinstance(item, Sample | Event)
        assert math.isfinite(item.ts)
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in item.labels.items())
        if isinstance(item, Sample):
            assert math.isfinite(item.value) and item.metric


def dumps(value: object) -> bytes:
    try:
        return orjson.dumps(value)
    except (orjson.JSONEncodeError, TypeError):
        return b"{}"


@pytest.mark.parametrize("parse", PARSERS)
@SETTINGS
@given(payload=st.binary(max_size=300))
def test_random_bytes(parse: Any, payload: bytes) -> None:
    check(*parse(payload, 1.0, "mqtt"))


@pytest.mark.parametrize("parse", PARSERS)
@SETTINGS
@given(
    doc=st.one_of(
        objects,
        st.lists(objects, max_size=4),
        json_values,
        st.fixed_dictionaries(
            {"version": st.just("4"), "alerts": st.lists(objects | json_values, max_size=4)}
        ),
    )
)
def test_random_json_documents(parse: Any, doc: object) -> None:
    check(*parse(dumps(doc), 1.0, "mqtt"))


@SETTINGS
@given(lines=st.lists(st.text(alphabet=' ,=\\"#tfiu0123456789.-eabc\n', max_size=40), max_size=5))
def test_line_protocol_shaped_noise(lines: list[str]) -> None:
    check(*parse_influx("\n".join(lines).encode(), 1.0, "mqtt"))


@SETTINGS
@given(docs=st.lists(objects, min_size=1, max_size=4))
def test_ndjson_counts_each_item_once(docs: list[dict[str, Any]]) -> None:
    payload = b"\n".join(dumps(d) for d in docs)
    items, errors = parse_json_payload(payload, 1.0, "http")
    check(items, errors)
    assert len(items) + len(errors) in (len(docs), 1)  # one bad_json line fails the lot


names = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters="\n\r\x00"), min_size=1, max_size=10
).filter(lambda s: s.strip() == s and not s.startswith("#"))
numbers = st.floats(allow_nan=False, allow_infinity=False, width=64)


def escape(text: str, specials: str) -> str:
    for ch in "\\" + specials:
        text = text.replace(ch, "\\" + ch)
    return text


@SETTINGS
@given(
    measurement=names,
    tags=st.dictionaries(names, names, max_size=3),
    fields=st.dictionaries(names, numbers, min_size=1, max_size=3),
    stamp=st.none() | st.integers(0, 2**62),
)
def test_line_protocol_round_trip(
    measurement: str, tags: dict[str, str], fields: dict[str, float], stamp: int | None
) -> None:
    series = escape(measurement, ", ") + "".join(
        f",{escape(k, ',= ')}={escape(v, ',= ')}" for k, v in tags.items()
    )
    body = ",".join(f"{escape(k, ',= ')}={v!r}" for k, v in fields.items())
    line = f"{series} {body}" + (f" {stamp}" if stamp is not None else "")
    items, errors = parse_influx(line.encode(), NOW, "mqtt")
    assert errors == []
    assert {i.metric: i.value for i in items if isinstance(i, Sample)} == {
        f"{measurement}_{k}": v for k, v in fields.items()
    }
    for item in items:
        assert item.labels == tags
        assert item.ts == (NOW if stamp is None else stamp / 1e9)


@SETTINGS
@given(
    metric=st.text(min_size=1, max_size=10),
    value=numbers,
    labels=st.dictionaries(
        st.text(max_size=8).filter(lambda k: k not in ("metric", "value", "ts", "event")),
        st.text(max_size=8) | st.integers(-(2**60), 2**60) | st.booleans(),
        max_size=4,
    ),
)
def test_json_sample_round_trip(metric: str, value: float, labels: dict[str, Any]) -> None:
    (item,), errors = parse_json_payload(
        dumps({"metric": metric, "value": value, **labels}), 3.0, "http"
    )
    assert errors == []
    assert isinstance(item, Sample)
    assert (item.metric, item.value, item.ts) == (metric, value, 3.0)
    assert item.labels == {
        k: v if isinstance(v, str) else orjson.dumps(v).decode() for k, v in labels.items()
    }


def test_rejections_are_counted_always_and_logged_once_a_minute(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    metrics = Metrics(CollectorRegistry())
    rejections = Rejections(metrics, "mqtt", clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="batond.intake"):
        for _ in range(5):
            rejections.reject(InputError("bad_json", "nope"))
        rejections.reject(InputError("bad_value", "x"))
        now[0] = 61.0
        rejections.reject(InputError("bad_json", "again"))
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 3
    assert "bad_json: nope" in messages[0] and "bad_value" in messages[1]
    assert "again" in messages[2] and "4 more" in messages[2]
    count = metrics.registry.get_sample_value(
        "batond_events_rejected_total", {"source": "mqtt", "reason": "bad_json"}
    )
    assert count == 6


def test_a_batch_of_rejections_is_one_update_and_one_line_per_reason(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    metrics = Metrics(CollectorRegistry())
    rejections = Rejections(metrics, "http", clock=lambda: now[0])
    errors = [InputError("not_object", "x" * 5000)] * 100_000 + [InputError("bad_ts", "t")]
    with caplog.at_level(logging.WARNING, logger="batond.intake"):
        rejections.reject_all(errors)
        rejections.reject_all(errors[:10])  # within the minute: counted, not logged
        now[0] = 61.0
        rejections.reject_all(errors[:1])
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 3
    assert "(and 99999 more like it" in messages[0] and len(messages[0]) < 500
    assert "bad_ts: t" in messages[1]
    assert "(and 10 more like it" in messages[2]
    count = metrics.registry.get_sample_value(
        "batond_events_rejected_total", {"source": "http", "reason": "not_object"}
    )
    assert count == 100_011


def test_a_ts_far_ahead_of_the_clock_is_rejected() -> None:
    now = 1_800_000_000.0
    items, errors = parse_json_payload(
        b'[{"metric": "m", "value": 1, "ts": 1800000200}, {"metric": "m", "value": 1, "ts": 1e12}]',
        now,
        "http",
    )
    assert [i.ts for i in items] == [1_800_000_200.0]  # a little ahead is fine
    assert [e.reason for e in errors] == ["ts_in_future"]


def test_one_bad_line_of_ndjson_costs_only_itself() -> None:
    items, errors = parse_json_payload(
        b'{"metric": "a", "value": 1}\n{bad\n{"metric": "b", "value": 2}\n', 5.0, "mqtt"
    )
    assert [i.metric for i in items if isinstance(i, Sample)] == ["a", "b"]
    assert [e.reason for e in errors] == ["bad_json"]


def test_a_single_bad_document_is_bad_json() -> None:
    items, errors = parse_json_payload(b'{"metric": "a", "value": 1', 5.0, "mqtt")
    assert items == []
    assert [e.reason for e in errors] == ["bad_json"]
