"""Five-field cron expressions (``minute hour day-of-month month day-of-week``).

Fields take ``*``, numbers, ranges ``a-b``, steps ``*/n`` and ``a-b/n``,
lists ``a,b``, and names for months (``jan``) and weekdays (``mon``; 0 and 7
are Sunday). As in cron, when both day fields are restricted a day matching
either one is due. Times are evaluated in the schedule's time zone (the
machine's local zone unless one is named).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo

__all__ = ["Cron", "parse_cron"]

_MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
_DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
_FIELDS = (  # name, low, high, names
    ("minute", 0, 59, None),
    ("hour", 0, 23, None),
    ("day of month", 1, 31, None),
    ("month", 1, 12, _MONTHS),
    ("day of week", 0, 7, _DAYS),
)
_SEARCH_DAYS = 366 * 5  # a date like Feb 30 never comes; give up after this


@dataclass(frozen=True, slots=True)
class Cron:
    text: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    dom_any: bool
    dow_any: bool

    def _day_ok(self, d: datetime) -> bool:
        dom = d.day in self.days
        dow = (d.isoweekday() % 7) in self.weekdays
        if self.dom_any or self.dow_any:
            return dom and dow
        return dom or dow

    def next_after(self, ts: float, tz: tzinfo | None = None) -> float | None:
        """The first due time strictly after ``ts`` (epoch seconds), or None if never."""
        start = datetime.fromtimestamp(ts, tz).replace(second=0, microsecond=0)
        if start.tzinfo is None:
            start = start.astimezone()
        t = start + timedelta(minutes=1)
        limit = t + timedelta(days=_SEARCH_DAYS)
        while t < limit:
            if t.month not in self.months or not self._day_ok(t):
                t = (t + timedelta(days=1)).replace(hour=0, minute=0)
                continue
            if t.hour not in self.hours:
                t = (t + timedelta(hours=1)).replace(minute=0)
                continue
            if t.minute not in self.minutes:
                t += timedelta(minutes=1)
                continue
            return t.timestamp()
        return None


def _value(text: str, low: int, high: int, names: list[str] | None) -> int:
    if names is not None and text.lower() in names:
        return names.index(text.lower()) + (1 if names is _MONTHS else 0)
    if not text.isdigit():
        raise ValueError(f"{text!r} is not a number")
    value = int(text)
    if not low <= value <= high:
        raise ValueError(f"{value} is out of range {low}-{high}")
    return value


def _field(text: str, low: int, high: int, names: list[str] | None) -> set[int]:
    out: set[int] = set()
    for item in text.split(","):
        base, _, step_text = item.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) == 0:
                raise ValueError(f"bad step {step_text!r}")
            step = int(step_text)
        if base == "*":
            lo, hi = low, high
        elif "-" in base:
            a, _, b = base.partition("-")
            lo, hi = _value(a, low, high, names), _value(b, low, high, names)
            if lo > hi:
                raise ValueError(f"range {base!r} goes backwards")
        else:
            lo = _value(base, low, high, names)
            hi = high if step_text else lo
        out.update(range(lo, hi + 1, step))
    return out


def parse_cron(text: str) -> Cron:
    """Parse five fields; ValueError says which field is wrong and why."""
    fields = text.split()
    if len(fields) != 5:
        raise ValueError(f"cron needs 5 fields (minute hour day month weekday), got {len(fields)}")
    sets = []
    for raw, (name, low, high, names) in zip(fields, _FIELDS, strict=True):
        try:
            sets.append(_field(raw, low, high, names))
        except ValueError as exc:
            raise ValueError(f"cron {name} field {raw!r}: {exc}") from None
    weekdays = {d % 7 for d in sets[4]}
    return Cron(
        text=" ".join(fields),
        minutes=frozenset(sets[0]),
        hours=frozenset(sets[1]),
        days=frozenset(sets[2]),
        months=frozenset(sets[3]),
        weekdays=frozenset(weekdays),
        dom_any=fields[2] == "*",
        dow_any=fields[4] == "*",
    )
