"""Guards every HTTP request of batond's server shares: the API and the input endpoints.

* a body over the limit is refused by its ``Content-Length`` (413) before a
  byte of it is read, and ``Expect: 100-continue`` is answered 413 instead of
  ``100 Continue`` for such a body;
* a body must arrive within :data:`BODY_READ_TIMEOUT` (else 408), and headers
  within :data:`HEADER_TIMEOUT` of the connection or the last answer (the
  server closes an idle or half-open connection then);
* a body the client compressed wrongly (``Content-Encoding: gzip`` on garbage)
  is a 400, not a 500;
* aiohttp's own reports of malformed requests become one line each, without
  a traceback, at most one per :data:`LOG_INTERVAL` per kind.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

__all__ = [
    "BODY_READ_TIMEOUT",
    "HEADER_TIMEOUT",
    "BodyRefused",
    "RateLimitedLog",
    "expect_handler",
    "handler_args",
    "read_body",
]

#: Seconds a client has to send its whole body once the headers are in.
BODY_READ_TIMEOUT = 10.0
#: Seconds a connection may sit without a complete request (half-open, slow headers, idle).
HEADER_TIMEOUT = 10.0
#: Seconds the rest of a refused body is read and dropped before the connection closes.
LINGER = 2.0
#: One line per kind of malformed request per this many seconds.
LOG_INTERVAL = 60.0


class BodyRefused(Exception):
    """A request body batond will not read: ``status`` and a reason for the client."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _too_large(size: int | None, limit: int) -> BodyRefused:
    what = f"{size} bytes" if size is not None else "the body"
    return BodyRefused(413, f"{what} is over the limit of {limit} bytes (http.max_body)")


async def read_body(request: web.Request) -> bytes:
    """The whole body, or BodyRefused: 413 by Content-Length first, 408, 400 for bad encoding."""
    limit = request.client_max_size
    if request.content_length is not None and request.content_length > limit:
        raise _too_large(request.content_length, limit)
    try:
        async with asyncio.timeout(BODY_READ_TIMEOUT):
            return await request.read()
    except TimeoutError:
        raise BodyRefused(408, f"the body did not arrive within {BODY_READ_TIMEOUT:g}s") from None
    except web.HTTPRequestEntityTooLarge:  # chunked, no Content-Length: found while reading
        raise _too_large(None, limit) from None
    except web.RequestPayloadError as exc:
        message = " ".join(str(exc).split())
        raise BodyRefused(400, f"the body cannot be read: {message}") from None


async def expect_handler(request: web.Request) -> web.StreamResponse | None:
    """``Expect: 100-continue``: 413 for a body over the limit, else ``100 Continue``."""
    expect = request.headers.get("Expect", "")
    if expect.lower() != "100-continue":
        raise web.HTTPExpectationFailed(text=f"unknown Expect: {expect}")
    limit = request.client_max_size
    if request.content_length is not None and request.content_length > limit:
        resp = web.json_response(
            {"error": str(_too_large(request.content_length, limit))}, status=413
        )
        resp.force_close()  # the client must not send the body on this connection
        return resp
    if request.version >= (1, 1):
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    return None


class RateLimitedLog(logging.Filter):
    """Turns aiohttp's report of a malformed request into one line, rate-limited per kind.

    A flood of garbage must not flood the journal with 700-byte tracebacks,
    yet the first of each kind is shown, with how many were not.
    """

    def __init__(
        self, interval: float = LOG_INTERVAL, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self._interval = interval
        self._clock = clock
        self._last: dict[str, float] = {}
        self._hidden: dict[str, int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        kind = type(exc).__name__ if exc is not None else record.getMessage()[:80]
        now = self._clock()
        last = self._last.get(kind)
        if last is not None and now - last < self._interval:
            self._hidden[kind] = self._hidden.get(kind, 0) + 1
            return False
        self._last[kind] = now
        hidden = self._hidden.pop(kind, 0)
        detail = " ".join(str(exc).split())[:200] if exc is not None else ""
        record.args = (
            record.getMessage(),
            f": {kind}: {detail}" if exc is not None else "",
            f" (and {hidden} more like it since the last report)" if hidden else "",
        )
        record.msg = "%s%s%s"
        record.exc_info = None
        record.exc_text = None
        record.stack_info = None
        return True


_server_log = logging.getLogger("batond.http.server")
_server_log.addFilter(RateLimitedLog())


def handler_args() -> dict[str, Any]:
    """What ``web.Application(handler_args=...)`` needs for the guards above."""
    return {
        "keepalive_timeout": HEADER_TIMEOUT,
        # after an early answer (413, 408), the rest of a body is drained this long at most,
        # so the client still reads the answer instead of a reset, and no one holds a slot
        "lingering_time": LINGER,
        "logger": _server_log,
    }
