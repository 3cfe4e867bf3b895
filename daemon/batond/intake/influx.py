"""InfluxDB line protocol as samples.

``cpu,host=web-1 usage_idle=12.5,usage_user=3i 1700000000000000000`` gives the
samples ``cpu_usage_idle`` = 12.5 and ``cpu_usage_user`` = 3.0, each with the
label ``host`` = ``web-1`` and ``ts`` 1700000000.0 (the timestamp is nanoseconds;
without one, the arrival time).

- Field values: floats, integers (``12i``), unsigned integers (``12u``) and
  booleans (``t``/``true``/..., as 1.0 and 0.0) become samples. String fields
  (``msg="..."``) are not samples: they are skipped; a line whose fields are all
  strings is rejected with reason ``no_numeric_field``.
- Escapes: ``\\,``, ``\\=``, ``\\ `` in names, tag keys and values; ``\\"`` and
  ``\\\\`` inside string fields. Lines starting with ``#`` are comments.
- Every invalid line is one InputError with a short reason; the other lines
  of the payload still count. Nothing else is raised, whatever the bytes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator

from batond.errors import InputError
from batond.events import Input, Sample, check_not_future

__all__ = ["parse_influx"]

_TRUE = frozenset(("t", "T", "true", "True", "TRUE"))
_FALSE = frozenset(("f", "F", "false", "False", "FALSE"))
_UNESCAPE = re.compile(r"\\([,= \\\"])")


def parse_influx(payload: bytes, now: float, source: str) -> tuple[list[Input], list[InputError]]:
    """The samples of every valid line, and one error per invalid line."""
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        return [], [InputError("bad_encoding", f"line protocol must be UTF-8: {exc}")]
    items: list[Input] = []
    errors: list[InputError] = []
    for raw_line in text.split("\n"):
        line = raw_line.strip()
        if not line or line[0] == "#":
            continue
        try:
            _line(line, now, source, items)
        except InputError as exc:
            # no traceback: it would tie this frame (and all errors) into a cycle for the GC
            errors.append(exc.with_traceback(None))
    if not items and not errors:
        errors.append(InputError("empty", "no line protocol lines in the payload"))
    return items, errors


def _line(line: str, now: float, source: str, out: list[Input]) -> None:
    if "\\" not in line and '"' not in line:
        parts = [p for p in line.split(" ") if p]
        series = parts[0]
        rest = parts[1:]
        fields = rest[0].split(",") if rest else []
        stamp = rest[1] if len(rest) > 1 else None
        if len(rest) > 2:
            raise InputError("bad_line", f"more than three space-separated parts in {line[:80]!r}")
        series_parts = series.split(",")
    else:
        series, tail = _split_series(line)
        fields, stamp = _split_fields(tail.lstrip(" "), line)
        series_parts = _split_series_parts(series)
    if not fields:
        raise InputError("no_fields", f"a line needs fields after the measurement: {line[:80]!r}")
    measurement = _unescape(series_parts[0])
    if not measurement:
        raise InputError("bad_measurement", f"empty measurement in {line[:80]!r}")
    tags = _tags(series_parts[1:])
    ts = now if stamp is None else check_not_future(_timestamp(stamp), now)
    numeric = 0
    for field in fields:
        key, value = _pair(field, "bad_field")
        number = _number(value, key)
        if number is None:
            continue  # a string field: not a sample
        numeric += 1
        metric = f"{measurement}_{key}"
        raw: dict[str, object] = dict(tags)
        raw["metric"] = metric
        raw["value"] = number
        raw["ts"] = ts
        out.append(Sample(metric, number, ts, dict(tags), raw, source))
    if not numeric:
        raise InputError("no_numeric_field", f"only string fields in {line[:80]!r}")


def _unescaped(text: str, sep: str, start: int = 0) -> Iterator[int]:
    """Indexes of ``sep`` in ``text`` from ``start`` that no backslash escapes."""
    i = start
    n = len(text)
    while i < n:
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c == sep:
            yield i
        i += 1


def _split_series(line: str) -> tuple[str, str]:
    """The measurement+tags part (up to the first unescaped space) and the rest."""
    for i in _unescaped(line, " "):
        return line[:i], line[i + 1 :]
    return line, ""


def _split_series_parts(series: str) -> list[str]:
    """Measurement and ``key=value`` tags, split at unescaped commas."""
    parts: list[str] = []
    start = 0
    for i in _unescaped(series, ","):
        parts.append(series[start:i])
        start = i + 1
    parts.append(series[start:])
    return parts


def _split_fields(tail: str, line: str) -> tuple[list[str], str | None]:
    """The ``key=value`` fields and the timestamp text (or None).

    A double quote is special only where a field value starts: a string value
    runs to its closing unescaped quote, commas and spaces included.
    """
    fields: list[str] = []
    start = 0
    i = 0
    n = len(tail)
    in_value = False
    while i < n:
        c = tail[i]
        if c == "\\":
            i += 2
            continue
        if not in_value and c == "=":
            in_value = True
            if i + 1 < n and tail[i + 1] == '"':
                i = _closing_quote(tail, i + 2, line) + 1
                continue
        elif c == ",":
            fields.append(tail[start:i])
            start = i + 1
            in_value = False
        elif c == " ":
            fields.append(tail[start:i])
            stamp = tail[i + 1 :].strip(" ")
            if " " in stamp:
                raise InputError(
                    "bad_line", f"more than three space-separated parts in {line[:80]!r}"
                )
            return fields, stamp or None
        i += 1
    if n:
        fields.append(tail[start:])
    return fields, None


def _closing_quote(text: str, i: int, line: str) -> int:
    for end in _unescaped(text, '"', i):
        return end
    raise InputError("bad_string", f"unterminated string in {line[:80]!r}")


def _unescape(text: str) -> str:
    return _UNESCAPE.sub(r"\1", text) if "\\" in text else text


def _pair(text: str, reason: str) -> tuple[str, str]:
    """``key=value`` split at the first unescaped ``=``; the key unescaped."""
    i = text.find("=")
    while i > 0 and text[i - 1] == "\\" and not _escaped_backslash(text, i - 1):
        i = text.find("=", i + 1)
    if i <= 0:
        raise InputError(reason, f"expected key=value, got {text[:80]!r}")
    return _unescape(text[:i]), text[i + 1 :]


def _escaped_backslash(text: str, i: int) -> bool:
    """Whether the backslash at ``i`` is itself escaped (an odd run of them before it)."""
    run = 0
    while i - 1 - run >= 0 and text[i - 1 - run] == "\\":
        run += 1
    return run % 2 == 1


def _tags(parts: list[str]) -> dict[str, str]:
    tags: dict[str, str] = {}
    for part in parts:
        key, value = _pair(part, "bad_tag")
        if not value:
            raise InputError("bad_tag", f"tag {key!r} has an empty value")
        tags[key] = _unescape(value)
    return tags


def _number(text: str, key: str) -> float | None:
    """The field value as a float; None for a string field."""
    if not text:
        raise InputError("bad_value", f"field {key!r} has no value")
    if text[0] == '"':
        if len(text) < 2 or text[-1] != '"':
            raise InputError("bad_string", f"field {key!r}: unterminated string")
        return None
    if text in _TRUE:
        return 1.0
    if text in _FALSE:
        return 0.0
    try:
        last = text[-1]
        if last == "i":
            return float(int(text[:-1]))
        if last == "u":
            value = int(text[:-1])
            if value < 0:
                raise InputError("bad_value", f"field {key!r}: unsigned integer below 0")
            return float(value)
        number = float(text)
    except (ValueError, OverflowError):
        raise InputError("bad_value", f"field {key!r}: not a number: {text[:40]!r}") from None
    if not math.isfinite(number):
        raise InputError("bad_value", f"field {key!r}: not a finite number: {text[:40]!r}")
    return number


def _timestamp(text: str) -> float:
    try:
        return int(text) / 1e9
    except (ValueError, OverflowError):
        raise InputError(
            "bad_ts", f"timestamp must be integer nanoseconds: {text[:40]!r}"
        ) from None
