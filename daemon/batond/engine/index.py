"""The match index: an input meets only the rule parts that can match it.

Parts are bucketed by (kind, name). Inside a bucket, the label that most
parts pin (often ``host``) becomes a dict key, so one lookup narrows the
candidates; the few remaining label equalities are checked per candidate.
No expression is evaluated here.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Generic, TypeVar

from batond.engine.model import Match

__all__ = ["MatchIndex"]

T = TypeVar("T")
_Entry = tuple[tuple[tuple[str, str], ...], T]  # remaining label equalities, payload


class _Bucket(Generic[T]):
    __slots__ = ("label", "rest", "table")

    def __init__(self, items: list[tuple[Match, T]]) -> None:
        pins = Counter(k for m, _ in items for k, _v in m.labels)
        self.label: str | None = pins.most_common(1)[0][0] if pins else None
        self.table: dict[str, list[_Entry[T]]] = {}
        self.rest: list[_Entry[T]] = []
        for match, payload in items:
            labels = dict(match.labels)
            if self.label is not None and self.label in labels:
                value = labels.pop(self.label)
                self.table.setdefault(value, []).append((tuple(labels.items()), payload))
            else:
                self.rest.append((match.labels, payload))

    def lookup(self, labels: Mapping[str, str]) -> list[T]:
        out: list[T] = []
        if self.label is not None:
            for pins, payload in self.table.get(labels.get(self.label, ""), ()):
                if not pins or all(labels.get(k, "") == v for k, v in pins):
                    out.append(payload)
        for pins, payload in self.rest:
            if not pins or all(labels.get(k, "") == v for k, v in pins):
                out.append(payload)
        return out


class MatchIndex(Generic[T]):
    """Maps inputs to the payloads of the matches they satisfy, in insertion order."""

    def __init__(self, entries: Iterable[tuple[Match, T]]) -> None:
        grouped: dict[tuple[str, str], list[tuple[Match, T]]] = {}
        for match, payload in entries:
            grouped.setdefault((match.kind, match.name), []).append((match, payload))
        self.metrics: dict[str, _Bucket[T]] = {}
        self.events: dict[str, _Bucket[T]] = {}
        for (kind, name), items in grouped.items():
            (self.metrics if kind == "metric" else self.events)[name] = _Bucket(items)
        self._could_match = self.prefilter({}, _no_host, 0.0)

    def lookup(self, kind: str, name: str, labels: Mapping[str, str]) -> list[T]:
        bucket = (self.metrics if kind == "metric" else self.events).get(name)
        return bucket.lookup(labels) if bucket is not None else []

    def could_match(self, obj: Mapping[str, Any]) -> bool:
        """False only when the raw JSON object certainly meets no part (a cheap pre-filter)."""
        return self._could_match(obj, 0.0)

    def prefilter(
        self, hosts: Mapping[str, float], note_host: Callable[[str, float], None], every: float
    ) -> Callable[[Mapping[str, Any], float], bool]:
        """:meth:`could_match` as a function of ``(obj, now)`` that also hands each object's
        ``host`` to ``note_host`` when ``hosts`` last has it ``every`` seconds ago or more
        (the governor's fleet counts every input's host, matched or not).

        One closure over locals rather than two calls: it runs once per replayed line.
        """
        metrics, events = self.metrics, self.events

        def could_match(obj: Mapping[str, Any], now: float) -> bool:
            host = obj.get("host")
            if type(host) is str:
                last = hosts.get(host)
                if last is None or now - last >= every:
                    note_host(host, now)
            name = obj.get("metric")
            if name is not None:
                bucket = metrics.get(name) if type(name) is str else None
            else:
                name = obj.get("event")
                bucket = events.get(name) if type(name) is str else None
            if bucket is None:
                return False
            if bucket.rest or bucket.label is None:
                return True
            value = obj.get(bucket.label, "")
            return type(value) is not str or value in bucket.table

        return could_match


def _no_host(host: str, now: float) -> None:
    pass
