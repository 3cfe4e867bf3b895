"""Input sources: MQTT, HTTP (events and Alertmanager), host metrics and process watch.

Each long-running source is a class with ``async def run(self, started)``: it runs
until cancelled, sets ``started`` once it serves, never raises on bad input and
reconnects by itself. What they share lives here: counting and rate-limited
logging of rejected input.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from batond.errors import InputError
from batond.metrics import Metrics

__all__ = ["Rejections", "Tally"]

log = logging.getLogger("batond.intake")


@dataclass(slots=True)
class Tally:
    """The rejections of one batch, counted: how many of each reason and the first of each."""

    counts: dict[str, int] = field(default_factory=dict)
    first: dict[str, InputError] = field(default_factory=dict)

    @classmethod
    def of(cls, errors: Iterable[InputError]) -> Tally:
        tally = cls()
        counts, first = tally.counts, tally.first
        for error in errors:
            reason = error.reason
            if reason in counts:
                counts[reason] += 1
            else:
                counts[reason] = 1
                first[reason] = error
        return tally

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def reasons(self, limit: int = 10) -> list[str]:
        """The first error of each reason as text (bounded), at most ``limit`` of them."""
        return [_bounded(str(e)) for e in list(self.first.values())[:limit]]


class Rejections:
    """Counts every rejected input and logs each reason at most once per ``interval``.

    A flood of one malformed publisher must not flood the log, yet the first
    instance of every kind of problem is shown with its detail.
    """

    def __init__(
        self,
        metrics: Metrics,
        source: str,
        *,
        interval: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        logger: logging.Logger = log,
    ) -> None:
        self._metrics = metrics
        self._source = source
        self._interval = interval
        self._clock = clock
        self._log = logger
        self._last: dict[str, float] = {}
        self._unlogged: dict[str, int] = {}

    def reject(self, error: InputError, where: str = "") -> None:
        self._metrics.events_rejected.labels(self._source, error.reason).inc()
        self._report(error, where)

    def reject_all(self, errors: Iterable[InputError], where: str = "") -> None:
        """Count many at once: one counter update and at most one log line per reason.

        A body of 10^5 bad items costs one pass over them, not 10^5 labelled
        increments and log decisions.
        """
        self.reject_tally(Tally.of(errors), where)

    def reject_tally(self, tally: Tally, where: str = "") -> None:
        """Count what :meth:`Tally.of` counted (perhaps in a worker thread)."""
        for reason, n in tally.counts.items():
            self._metrics.events_rejected.labels(self._source, reason).inc(n)
            self._report(tally.first[reason], where, n - 1)

    def _report(self, error: InputError, where: str, more: int = 0) -> None:
        """Log ``error`` unless its reason was logged within ``interval``; ``more`` alike."""
        reason = error.reason
        now = self._clock()
        last = self._last.get(reason)
        if last is not None and now - last < self._interval:
            self._unlogged[reason] = self._unlogged.get(reason, 0) + 1 + more
            return
        self._last[reason] = now
        hidden = self._unlogged.pop(reason, 0) + more
        self._log.warning(
            "%s input rejected%s: %s%s",
            self._source,
            f" ({where})" if where else "",
            _bounded(str(error)),
            f" (and {hidden} more like it since the last report)" if hidden else "",
        )


#: The most of one rejection's text that is logged: an item can quote a megabyte of input.
MAX_REASON_CHARS = 300


def _bounded(text: str) -> str:
    if len(text) <= MAX_REASON_CHARS:
        return text
    return text[:MAX_REASON_CHARS] + f"... ({len(text)} characters)"
