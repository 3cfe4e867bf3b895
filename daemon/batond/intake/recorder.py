"""The input recorder: every accepted input as one JSON line, for ``batond replay``.

Files live in ``state_dir/record/`` and are named ``inputs-<ms>.jsonl``,
``<ms>`` being the epoch milliseconds at which the file was started, zero-padded
to 13 digits so that name order is time order: ``cat record/*.jsonl`` is the
history in order, and each file is a valid ``batond replay`` input on its own.
Each line is the input as received (its JSON types kept) with ``ts`` filled in.

Lines are buffered and written whole with one ``write()`` once 64 KiB are
pending or a second after the first buffered line (a timer on the running
event loop), so the cost per input is about one ``orjson.dumps``. A SIGKILL
loses at most that unwritten second. A file is closed at ``file_size``
bytes; files whose last write is older than ``max_age``, and the oldest files
beyond ``max_size`` in total, are deleted (checked at each rotation and at
least every minute).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from batond.errors import StateError
from batond.events import Event, Input, Sample
from batond.load.config import RecordConfig

__all__ = [
    "FLUSH_BYTES",
    "FLUSH_SECONDS",
    "Recorder",
    "input_json",
    "record_dir",
    "recorded_files",
]

log = logging.getLogger("batond.intake.recorder")

FLUSH_BYTES = 64 * 1024
FLUSH_SECONDS = 1.0
#: How often, at most, the age and size bounds are checked between rotations.
ENFORCE_SECONDS = 60.0
_PREFIX = "inputs-"
_SUFFIX = ".jsonl"


def record_dir(state_dir: Path) -> Path:
    """Where the daemon records its inputs (``batond replay --recorded`` reads them)."""
    return Path(state_dir) / "record"


def recorded_files(directory: Path) -> list[Path]:
    """The recorded files of ``directory``, oldest first."""
    return sorted(directory.glob(f"{_PREFIX}*{_SUFFIX}"))


def input_json(item: Input) -> dict[str, Any]:
    """The input as received, with ``ts`` filled in (the form ``replay`` reads)."""
    if item.raw:
        return item.raw if item.raw.get("ts") == item.ts else {**item.raw, "ts": item.ts}
    if isinstance(item, Sample):
        return {"metric": item.metric, "value": item.value, "ts": item.ts, **item.labels}
    assert isinstance(item, Event)
    return {"event": item.name, "ts": item.ts, **item.labels}


class Recorder:
    def __init__(
        self,
        directory: Path,
        config: RecordConfig,
        *,
        clock: Callable[[], float] = time.time,
        file_size: int | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.max_age = config.max_age
        self.max_size = config.max_size
        # a tenth of the budget per file, so deleting one file frees a tenth, not all
        self.file_size = file_size or max(64 * 1024, min(64 << 20, config.max_size // 10))
        self._clock = clock
        self._buffer: list[bytes] = []
        self._pending = 0
        self._timer: asyncio.TimerHandle | None = None
        self._last_enforce = time.monotonic()
        self._fd: int | None = None
        self._path: Path | None = None
        self._written = 0
        self._last_error = -1e9
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StateError(
                f"{self.directory}: cannot create the record directory: {exc}"
            ) from None
        self.enforce_bounds()

    def append(self, item: Input) -> None:
        raw = item.raw
        if raw and "ts" not in raw:
            # the common case (ts from arrival): splice ts in rather than copy the dict
            line = b'%s,"ts":%r}\n' % (orjson.dumps(raw)[:-1], item.ts)
        else:
            line = orjson.dumps(input_json(item), option=orjson.OPT_APPEND_NEWLINE)
        if not self._buffer:
            self._schedule_flush()
        self._buffer.append(line)
        self._pending += len(line)
        if self._pending >= FLUSH_BYTES:
            self.flush()

    def _schedule_flush(self) -> None:
        """Buffered lines reach the file within a second even if no more input comes."""
        if self._timer is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a script, a test): flush() and close() still write
            return

        def due() -> None:
            self._timer = None
            self.flush()

        self._timer = loop.call_later(FLUSH_SECONDS, due)

    def flush(self) -> None:
        """Write what is buffered; rotate and enforce the bounds when due."""
        if time.monotonic() - self._last_enforce >= ENFORCE_SECONDS:
            self.enforce_bounds()  # ages pass even when files fill slowly
        if not self._buffer:
            return
        data = b"".join(self._buffer)
        self._buffer.clear()
        self._pending = 0
        try:
            self._write(data)
        except OSError as exc:  # a full disk must not stop the daemon: drop and say so
            self._close_file()
            if time.monotonic() - self._last_error > 60.0:
                self._last_error = time.monotonic()
                log.warning("input recorder: %d bytes dropped: %s", len(data), exc)

    def _write(self, data: bytes) -> None:
        if self._fd is None:
            self._open_next()
        assert self._fd is not None
        os.write(self._fd, data)
        self._written += len(data)
        if self._written >= self.file_size:
            self._close_file()
            self.enforce_bounds()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.flush()
        self._close_file()

    def enforce_bounds(self) -> None:
        """Delete files past ``max_age``, then the oldest beyond ``max_size``."""
        self._last_enforce = time.monotonic()
        now = self._clock()
        files = []
        for path in recorded_files(self.directory):
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            files.append((path, st.st_mtime, st.st_size))
        current = self._path
        total = sum(size for _, _, size in files)
        for path, mtime, size in files:  # oldest first
            if path == current:
                continue
            if now - mtime > self.max_age or total > self.max_size:
                path.unlink(missing_ok=True)
                total -= size

    def _open_next(self) -> None:
        ms = int(self._clock() * 1000)
        while (path := self.directory / f"{_PREFIX}{ms:013d}{_SUFFIX}").exists():
            ms += 1  # two files started within one millisecond
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
        self._path = path
        self._written = 0

    def _close_file(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
            self._path = None
