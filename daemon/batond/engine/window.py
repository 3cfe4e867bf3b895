"""Time windows (``only_within:``): when a playbook or a step may act.

A window is either a cron expression (every minute it matches is inside:
``"* 2-4 * * sat,sun"``) or days of the week and a span of the day
(``days: [sat, sun], hours: "02:00-05:30"``; a span that ends before it
starts runs over midnight, ``"22:00-02:00"``), in a named time zone (the
machine's by default). Pure: the caller gives the time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo

from batond.engine.cron import Cron

__all__ = ["DAY_NAMES", "Window", "parse_span"]

DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_SEARCH_DAYS = 8  # a days/hours window opens within a week, or never


def parse_span(text: str) -> tuple[int, int]:
    """``"HH:MM-HH:MM"`` to minutes of the day (end may be 24:00); ValueError if not."""
    start, sep, end = text.replace(" ", "").partition("-")
    if not sep:
        raise ValueError(f'hours must be "HH:MM-HH:MM", got {text!r}')
    return _minute(start, 23), _minute(end, 24)


def _minute(text: str, max_hour: int) -> int:
    hh, sep, mm = text.partition(":")
    if not (sep and hh.isdigit() and mm.isdigit() and len(mm) == 2):
        raise ValueError(f"{text!r} is not HH:MM")
    hour, minute = int(hh), int(mm)
    if hour > max_hour or minute > 59 or (hour == 24 and minute):
        raise ValueError(f"{text!r} is not a time of day")
    return hour * 60 + minute


@dataclass(frozen=True, slots=True)
class Window:
    text: str  # as written, for messages
    cron: Cron | None = None
    days: frozenset[int] = frozenset(range(7))  # 0 = Sunday
    start: int = 0  # minute of the day, inclusive
    end: int = 24 * 60  # minute of the day, exclusive
    tz: tzinfo | None = None

    def contains(self, ts: float) -> bool:
        local = datetime.fromtimestamp(ts, self.tz)
        if self.cron is not None:
            return self.cron.next_after(ts - 60, self.tz) == _minute_start(local).timestamp()
        minute = local.hour * 60 + local.minute
        weekday = local.isoweekday() % 7
        if self.start <= self.end:
            return weekday in self.days and self.start <= minute < self.end
        # over midnight: the evening of a listed day, or the morning after it
        yesterday = (weekday - 1) % 7
        return (weekday in self.days and minute >= self.start) or (
            yesterday in self.days and minute < self.end
        )

    def next_open(self, ts: float) -> float | None:
        """``ts`` when inside, else the start of the next minute inside; None if never."""
        if self.contains(ts):
            return ts
        if self.cron is not None:
            return self.cron.next_after(ts, self.tz)
        local = datetime.fromtimestamp(ts, self.tz)
        midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
        for day in range(_SEARCH_DAYS):  # the next listed day's start of the span
            opens = (midnight + timedelta(days=day)).replace(hour=self.start // 60)
            opens += timedelta(minutes=self.start % 60)
            if (opens.isoweekday() % 7) in self.days and opens.timestamp() > ts:
                return opens.timestamp()
        return None


def _minute_start(local: datetime) -> datetime:
    return local.replace(second=0, microsecond=0)
