"""The daemon's log: a level and a format (``text`` lines, or ``json`` lines).

Lines logged on the event loop are written together once per turn of the loop
(:class:`Batched`): a storm of decisions, each its own line, costs one write per turn,
not one per line. Elsewhere (threads, before or after the loop) a line is written at once.

``text`` is ``LEVEL logger: message``. ``json`` is one object per line with ``ts``,
``level``, ``logger``, ``message`` (and ``exception`` when there is one), what journald
and log shippers parse. The default format is ``json`` under journald (systemd sets
``JOURNAL_STREAM`` for a unit's stderr) and ``text`` elsewhere; ``log.format`` in the
config or nothing else chooses otherwise. ``--log-level`` beats ``log.level``.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import sys

import orjson

__all__ = ["LEVELS", "configure", "default_format"]

LEVELS = ("debug", "info", "warning", "error")
TEXT = "%(levelname)s %(name)s: %(message)s"


class JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "ts": round(record.created, 6),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(doc).decode()


def default_format() -> str:
    return "json" if os.environ.get("JOURNAL_STREAM") else "text"


class Batched(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler that writes the lines of one event loop turn in one write."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)
        self._lines: list[str] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is None:
            self._write([line])
            return
        if not self._lines or self._loop is not loop:
            self._loop = loop
            loop.call_soon(self._flush)
        self._lines.append(line)

    def _flush(self) -> None:
        lines, self._lines = self._lines, []
        if lines:
            self._write(lines)

    def _write(self, lines: list[str]) -> None:
        with self.lock:  # type: ignore[union-attr]
            try:
                self.stream.write("\n".join(lines) + "\n")
                self.stream.flush()
            except (OSError, ValueError):
                pass  # stderr gone (closed pipe): nowhere left to say it

    def close(self) -> None:
        self._flush()
        super().close()


_writer: Batched | None = None


def configure(level: str = "info", fmt: str | None = None) -> None:
    """Set the root logger's level and batond's one handler (stderr); again is fine."""
    global _writer
    root = logging.getLogger()
    if _writer is None:
        # no caller, thread or process lookups per record: nothing in batond's lines uses them
        logging._srcfile = None  # (the logging HOWTO's advice)
        logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
        _writer = Batched()
        for old in root.handlers[:]:
            root.removeHandler(old)
        root.addHandler(_writer)
        atexit.register(_writer._flush)  # what the last turn logged is written at exit
    chosen = fmt or default_format()
    _writer.setFormatter(JsonLines() if chosen == "json" else logging.Formatter(TEXT))
    root.setLevel(level.upper())
