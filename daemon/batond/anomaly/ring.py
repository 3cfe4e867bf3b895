"""A fixed-capacity ring of numbers in one ``array``: 1 to 8 bytes a value.

A ``deque`` of floats costs about 32 bytes a value (a float object and a
pointer).  The ring grows by appending until it is full, then drops its
growth slack and overwrites its oldest value in place.  ``typecode`` is an
``array`` typecode: ``"d"`` (float64) by default, ``"f"`` (float32) where 7
digits are enough, ``"H"``/``"B"`` for the detector's quantised history and
integer novelty counts.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Iterator
from typing import Any

__all__ = ["Ring"]


class Ring:
    """The last ``capacity`` values appended, oldest first when read."""

    __slots__ = ("_buf", "_head", "capacity")

    def __init__(self, capacity: int, values: Iterable[Any] = (), typecode: str = "d") -> None:
        if capacity < 1:
            raise ValueError("ring capacity must be at least 1")
        self.capacity = capacity
        kept = array(typecode, values)[-capacity:]
        # a full ring is sized exactly; a partial one grows by appending
        self._buf = array(typecode, kept) if len(kept) == capacity else kept
        self._head = 0 if len(kept) == capacity else -1  # full: index of the oldest; -1: filling

    @property
    def typecode(self) -> str:
        return self._buf.typecode

    def __len__(self) -> int:
        return len(self._buf)

    def __iter__(self) -> Iterator[Any]:
        buf, head = self._buf, max(self._head, 0)
        yield from buf[head:]
        yield from buf[:head]

    def append(self, value: Any) -> Any:
        """Add ``value``; return the value it pushed out, None while not full."""
        buf = self._buf
        head = self._head
        if head < 0:  # still filling
            buf.append(value)
            if len(buf) == self.capacity:
                self._buf = array(buf.typecode, buf)  # exact size: no growth slack kept for life
                self._head = 0
            return None
        old = buf[head]
        buf[head] = value
        head += 1
        self._head = head if head < self.capacity else 0
        return old

    def oldest(self) -> Any:
        return self._buf[max(self._head, 0)]

    def newest(self) -> Any:
        head = self._head
        return self._buf[head - 1 if head > 0 else -1]

    def slide(self, value: int, k: int) -> tuple[int, int]:
        """Append ``value``; return (the value it pushed out, the value ``k`` places before it).

        Each is 0 where there is none (not full yet; fewer than ``k + 1`` values). One call
        for a window that trails the newest ``k`` values: what leaves it, what joins it.
        """
        buf = self._buf
        head = self._head
        if head < 0:  # still filling
            buf.append(value)
            size = len(buf)
            if size == self.capacity:
                self._buf = array(buf.typecode, buf)
                self._head = 0
            return 0, buf[size - 1 - k] if size > k else 0
        old = buf[head]
        buf[head] = value
        joined = buf[head - k]  # a negative index wraps round: k < capacity
        head += 1
        self._head = head if head < self.capacity else 0
        return old, joined

    def to_array(self) -> array[Any]:
        """A chronological copy (a memcpy, not a Python loop)."""
        buf, head = self._buf, self._head
        return buf[head:] + buf[:head] if head > 0 else array(buf.typecode, buf)

    def last(self, n: int) -> array[Any]:
        """The newest ``n`` values, oldest first."""
        if n <= 0:
            return array(self._buf.typecode)
        return self.to_array()[-n:]

    def nbytes(self) -> int:
        """Bytes of the values (the array's allocation, growth slack included)."""
        return self._buf.buffer_info()[1] * self._buf.itemsize
