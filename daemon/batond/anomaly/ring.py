"""A fixed-capacity ring of floats in one ``array('d')``: 8 bytes a value.

A ``deque`` of floats costs about 32 bytes a value (a float object and a
pointer); at a history of 17,280 points per series that is the difference
between ~140 KB and ~550 KB.  The ring grows by appending until it is full,
then drops its growth slack and overwrites its oldest value in place.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Iterator

__all__ = ["Ring"]


class Ring:
    """The last ``capacity`` values appended, oldest first when read."""

    __slots__ = ("_buf", "_head", "capacity")

    def __init__(self, capacity: int, values: Iterable[float] = ()) -> None:
        if capacity < 1:
            raise ValueError("ring capacity must be at least 1")
        self.capacity = capacity
        kept = array("d", values)[-capacity:]
        # a full ring is sized exactly; a partial one grows by appending
        self._buf = array("d", kept) if len(kept) == capacity else kept
        self._head = 0 if len(kept) == capacity else -1  # full: index of the oldest; -1: filling

    def __len__(self) -> int:
        return len(self._buf)

    def __iter__(self) -> Iterator[float]:
        buf, head = self._buf, max(self._head, 0)
        yield from buf[head:]
        yield from buf[:head]

    def append(self, value: float) -> float | None:
        """Add ``value``; return the value it pushed out, None while not full."""
        buf = self._buf
        head = self._head
        if head < 0:  # still filling
            buf.append(value)
            if len(buf) == self.capacity:
                self._buf = array("d", buf)  # exact size: no growth slack kept for life
                self._head = 0
            return None
        old = buf[head]
        buf[head] = value
        head += 1
        self._head = head if head < self.capacity else 0
        return old

    def oldest(self) -> float:
        return self._buf[max(self._head, 0)]

    def to_array(self) -> array[float]:
        """A chronological copy (a memcpy, not a Python loop)."""
        buf, head = self._buf, self._head
        return buf[head:] + buf[:head] if head > 0 else array("d", buf)

    def last(self, n: int) -> array[float]:
        """The newest ``n`` values, oldest first."""
        if n <= 0:
            return array("d")
        return self.to_array()[-n:]
