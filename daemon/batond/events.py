"""What comes in: samples and events, and the parsers that make them.

A *sample* is a metric value (``{"metric": "cpu_percent", "value": 93.2, ...}``);
an *event* is a named happening (``{"event": "process.exited", ...}``). Every
other key is a label; label values are strings (numbers and booleans become
their JSON text). ``raw`` keeps the input as received, JSON types included: it
is what expressions see as ``event``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import orjson

from batond.errors import InputError

__all__ = [
    "MAX_FUTURE_S",
    "SOURCES",
    "Event",
    "Input",
    "Sample",
    "check_not_future",
    "item_from_json",
    "label_text",
    "parse_json_payload",
]

#: Values of the ``source`` label on the input metrics.
SOURCES = ("mqtt", "http", "alertmanager", "host", "schedule", "fleet")


@dataclass(slots=True)
class Sample:
    metric: str
    value: float
    ts: float
    labels: dict[str, str]
    raw: dict[str, Any] = field(default_factory=dict)
    source: str = ""


@dataclass(slots=True)
class Event:
    name: str
    ts: float
    labels: dict[str, str]
    raw: dict[str, Any] = field(default_factory=dict)
    source: str = ""


Input = Sample | Event


def label_text(value: object) -> str | None:
    """A JSON value as label text, or None when it cannot be a label (object, array, null)."""
    if isinstance(value, str):
        return value
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int | float):
        return orjson.dumps(value).decode()
    return None


#: How far ahead of the receiver's clock an input's ``ts`` may be. Beyond it the
#: input is rejected: one sender with a wrong clock would otherwise hold a group's
#: time windows in the future and blind its rules.
MAX_FUTURE_S = 300.0


def check_not_future(ts: float, now: float) -> float:
    if ts > now + MAX_FUTURE_S:
        raise InputError(
            "ts_in_future", f"ts {ts} is more than {MAX_FUTURE_S:.0f}s ahead of this host's clock"
        )
    return ts


def _timestamp(obj: dict[str, Any], now: float) -> float:
    ts = obj.get("ts")
    if ts is None:
        return now
    if isinstance(ts, bool) or not isinstance(ts, int | float) or not math.isfinite(ts):
        raise InputError("bad_ts", f"ts must be a finite number of epoch seconds, got {ts!r}")
    return check_not_future(float(ts), now)


def item_from_json(obj: object, now: float, source: str) -> Input:
    """One decoded JSON object as a Sample or Event; InputError says why not."""
    if not isinstance(obj, dict):
        raise InputError("not_object", "each item must be a JSON object")
    if "metric" in obj:
        if "event" in obj:
            raise InputError("ambiguous", "an item has either 'metric' or 'event', not both")
        return _sample(obj, now, source)
    if "event" in obj:
        return _event(obj, now, source)
    raise InputError("no_kind", "an item needs a 'metric' (sample) or an 'event' key")


def _sample(obj: dict[str, Any], now: float, source: str) -> Sample:
    metric = obj["metric"]
    if not isinstance(metric, str) or not metric:
        raise InputError("bad_metric", "'metric' must be a non-empty string")
    value = obj.get("value")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InputError("bad_value", f"'value' must be a finite number, got {value!r}")
    labels: dict[str, str] = {}
    for key, raw in obj.items():
        if key in ("metric", "value", "ts"):
            continue
        text = label_text(raw)
        if text is None:
            raise InputError("bad_label", f"label {key!r} of a sample must be a string or number")
        labels[key] = text
    return Sample(metric, float(value), _timestamp(obj, now), labels, obj, source)


def _event(obj: dict[str, Any], now: float, source: str) -> Event:
    name = obj["event"]
    if not isinstance(name, str) or not name:
        raise InputError("bad_event", "'event' must be a non-empty string")
    labels: dict[str, str] = {}
    for key, raw in obj.items():
        if key in ("event", "ts"):
            continue
        text = label_text(raw)
        if text is not None:
            labels[key] = text
    return Event(name, _timestamp(obj, now), labels, obj, source)


def parse_json_payload(
    payload: bytes, now: float, source: str
) -> tuple[list[Input], list[InputError]]:
    """A JSON object, a JSON array of objects, or newline-delimited JSON.

    Returns the valid items and one error per invalid item. A payload that is
    not JSON at all is a single ``bad_json`` error.
    """
    items: list[Input] = []
    errors: list[InputError] = []
    try:
        docs: list[object] = [orjson.loads(payload)]
    except orjson.JSONDecodeError as whole:
        docs = []
        lines = [line for line in payload.splitlines() if line.strip()]
        if len(lines) < 2:  # not newline-delimited: the whole payload is bad
            return [], [InputError("bad_json", str(whole) if lines else "empty payload")]
        for line in lines:  # one bad line costs only itself
            try:
                docs.append(orjson.loads(line))
            except orjson.JSONDecodeError as exc:
                errors.append(InputError("bad_json", str(exc)))
    for doc in docs:
        for obj in doc if isinstance(doc, list) else (doc,):
            try:
                items.append(item_from_json(obj, now, source))
            except InputError as exc:
                # no traceback: it would tie this frame (and all errors) into a cycle for the GC
                errors.append(exc.with_traceback(None))
    return items, errors
