"""Durations and sizes as operators write them: ``1h30m``, ``500ms``, ``64MiB``."""

from __future__ import annotations

import re

__all__ = ["MAX_DURATION", "format_duration", "parse_duration", "parse_size"]

_DURATION_PART = re.compile(r"(\d+)(ms|s|m|h|d)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_SIZE = re.compile(r"(\d+)(B|KiB|MiB|GiB)")
_SIZE_UNITS = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}


#: The longest duration accepted: 100 years (longer ones are typing mistakes, or overflow).
MAX_DURATION = 100 * 365 * 86400.0


def parse_duration(text: str) -> float:
    """``"1h30m"`` -> 5400.0 seconds; a bare number or unknown unit raises ValueError."""
    text = text.strip()
    pos = 0
    total = 0.0
    while pos < len(text):
        m = _DURATION_PART.match(text, pos)
        if m is None:
            break
        digits = m.group(1)
        if len(digits) > 12:  # int("9" * 400) * 1.0 would overflow
            total = float("inf")
        else:
            total += int(digits) * _DURATION_UNITS[m.group(2)]
        pos = m.end()
    if pos == 0 or pos != len(text) or not text.isascii():
        raise ValueError(
            f"invalid duration {text[:60]!r}: expected <integer><unit>... with units ms, s, m, h, d"
        )
    if total > MAX_DURATION:
        raise ValueError(f"duration {text[:60]!r} is longer than 100 years")
    return total


def format_duration(seconds: float) -> str:
    """The shortest duration text that parses back to ``seconds`` (ms precision)."""
    ms = round(seconds * 1000)
    if ms == 0:
        return "0s"
    parts = []
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms >= size:
            parts.append(f"{ms // size}{unit}")
            ms %= size
    if ms:
        parts.append(f"{ms}ms")
    return "".join(parts)


def parse_size(text: str) -> int:
    """``"1MiB"`` -> 1048576 bytes; ValueError otherwise."""
    m = _SIZE.fullmatch(text.strip())
    if m is None or not text.isascii() or len(m.group(1)) > 15:
        raise ValueError(
            f"invalid size {text!r}: expected <integer><unit> with units B, KiB, MiB, GiB"
        )
    return int(m.group(1)) * _SIZE_UNITS[m.group(2)]
