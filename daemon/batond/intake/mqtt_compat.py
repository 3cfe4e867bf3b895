"""The one place batond relies on private internals of aiomqtt and paho-mqtt.

There are two ways to build batond's MQTT client (:class:`ClientPath`):

``buffered``, the primary path, written for aiomqtt 2.x over paho-mqtt 2.x:

- Reads through a buffer. paho-mqtt reads a packet in three or more ``recv``
  calls on its private ``_sock``; aiomqtt reads one packet per readiness
  callback but keeps reading while ``_sock.pending()`` says bytes are buffered
  (meant for TLS). Overriding aiomqtt's private ``_on_socket_open`` to put a
  64 KiB read buffer (:class:`ReadBuffer`) in place of ``_sock`` turns a burst
  of N packets into one callback and a few syscalls instead of N loop
  iterations and 3N syscalls.
- Takes each message as it is read. aiomqtt hands every message to the
  ``put_nowait`` of a queue built from its ``queue_type`` argument, inside
  the socket callback; the queue class given here handles the message right
  there instead of storing it. That saves a task hop per message and, more
  important, nothing waits in memory between paho's PUBACK and batond's bus.

- Stops reading when batond's queue is full (:func:`pause_reading`,
  :func:`resume_reading`): the loop's reader for the socket is removed and the
  :class:`ReadBuffer` keeps what it read but serves nothing and reports
  nothing pending, so neither aiomqtt's loop nor paho parses another packet;
  the kernel's receive buffer fills and TCP flow control holds the broker
  back. The reader put back on resumption is this module's copy of aiomqtt's
  (:meth:`_BufferedClient._readable`, which replaces it from the start, so one
  reader is in use throughout): aiomqtt's is a closure nothing can reach.
- Acknowledges QoS 1 messages when batond says so (``mqtt.ack: decided``, the
  default): aiomqtt has no API for it, so the paho client it wraps (its
  private ``_client``) is put in paho's documented manual-acknowledgement
  mode (``manual_ack_set(True)``) and :func:`send_ack` hands out its
  ``ack(mid, qos)``. A message is then acknowledged once its decisions are
  journaled; a crash before that makes the broker deliver it again.
  :func:`session_present` (the CONNACK's flag, kept by the ``_on_connect``
  override) tells whether the broker resumed the session, so that a message
  it delivers again after a reconnection is known for the same one.

``plain``, the fallback, uses only aiomqtt's documented API: a stock
``aiomqtt.Client`` whose messages the session loop takes from
``client.messages``. It loses, against ``buffered``:

- speed: one packet per loop iteration, three or more syscalls per packet,
  and a task hop per message (``bench/bench_mqtt.py --plain`` measures it);
- at-least-once across a disconnection: a QoS 1 message sits in aiomqtt's
  queue from paho's PUBACK until the session loop takes it; a connection that
  drops in between ends aiomqtt's message iterator and the queued messages go
  with the client, while the broker believes them delivered. The window is a
  few loop iterations (the handler never blocks), but it is there;
- acknowledgement after the decision: paho acknowledges each QoS 1 message
  as it is read, so a crash before its decision is journaled loses it
  (at-most-once after receipt, whatever ``mqtt.ack`` says).
- backpressure: aiomqtt's client reads (and paho acknowledges) whatever the
  session loop does, into an unbounded queue, so a full bus cannot stop
  reading; what does not fit is dropped and counted.

``buffered`` is chosen when :func:`internals_problems` finds nothing (the
installed versions are in the window below and the private names have the
shapes used here); otherwise ``plain`` is chosen and a warning says why.
``tests/test_mqtt_compat.py`` fails when an upgrade moves the ground under
the buffered path; the MQTT suite runs both paths against a real broker.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
from collections.abc import Callable
from enum import StrEnum
from importlib import metadata
from typing import Any

import aiomqtt

__all__ = [
    "TESTED",
    "ClientPath",
    "ReadBuffer",
    "choose_path",
    "internals_problems",
    "new_client",
    "pause_reading",
    "read_buffered",
    "resume_reading",
    "send_ack",
    "session_present",
]

log = logging.getLogger("batond.mqtt")

#: distribution -> (lowest version, first version not supported) of the buffered path
TESTED: dict[str, tuple[tuple[int, int], tuple[int, int]]] = {
    "aiomqtt": ((2, 3), (3, 0)),
    "paho-mqtt": ((2, 0), (3, 0)),
}
_READ_SIZE = 65536


class ClientPath(StrEnum):
    BUFFERED = "buffered"
    PLAIN = "plain"


def _version(distribution: str) -> tuple[int, int] | None:
    try:
        text = metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None
    parts = text.split(".")
    try:
        return int(parts[0]), int("".join(c for c in parts[1] if c.isdigit()) or 0)
    except (IndexError, ValueError):
        return None


def _parameters(func: Any) -> list[str] | None:
    try:
        return list(inspect.signature(func).parameters)
    except (TypeError, ValueError):
        return None


def _shape_problems() -> list[str]:
    from paho.mqtt import client as paho

    problems = []
    if _parameters(getattr(aiomqtt.Client, "_on_socket_open", None)) != [
        "self",
        "client",
        "userdata",
        "sock",
    ]:
        problems.append("aiomqtt.Client._on_socket_open(self, client, userdata, sock) is gone")
    if "queue_type" not in (_parameters(aiomqtt.Client.__init__) or []):
        problems.append("aiomqtt.Client() takes no queue_type")
    if not callable(getattr(paho.Client, "_sock_recv", None)):
        problems.append("paho.mqtt.client.Client._sock_recv is gone")
    if not _reads_like_ours():
        problems.append("aiomqtt's socket reader is not loop_read() while _sock.pending()")
    if _parameters(getattr(aiomqtt.Client, "_on_connect", None)) != _ON_CONNECT:
        problems.append("aiomqtt.Client._on_connect(self, client, userdata, flags, ...) is gone")
    if _parameters(getattr(paho.Client, "manual_ack_set", None)) != ["self", "on"]:
        problems.append("paho.mqtt.client.Client.manual_ack_set(self, on) is gone")
    if _parameters(getattr(paho.Client, "ack", None)) != ["self", "mid", "qos"]:
        problems.append("paho.mqtt.client.Client.ack(self, mid, qos) is gone")
    return problems


_ON_CONNECT = ["self", "client", "userdata", "flags", "reason_code", "properties"]


def _reads_like_ours() -> bool:
    """Whether aiomqtt's reader callback is the one :meth:`_BufferedClient._readable`
    copies (it is replaced by that copy) and reports failures to ``_disconnected``."""
    try:
        source = inspect.getsource(aiomqtt.Client._on_socket_open)
    except (OSError, TypeError):
        return True  # no source installed: the version window above decides alone
    return all(
        part in source
        for part in ("client.loop_read()", "_sock.pending()", "_disconnected.set_exception")
    )


@functools.cache
def internals_problems() -> tuple[str, ...]:
    """Why the buffered path cannot be trusted with the installed libraries (empty: it can)."""
    problems = []
    for distribution, (low, high) in TESTED.items():
        found = _version(distribution)
        if found is None or not low <= found < high:
            shown = "unknown" if found is None else ".".join(map(str, found))
            want = f">={low[0]}.{low[1]},<{high[0]}"
            problems.append(f"{distribution} {shown} is outside {want}")
    if not problems:  # a wrong major version may not even import the same modules
        problems += _shape_problems()
    return tuple(problems)


def choose_path(requested: ClientPath | None = None) -> ClientPath:
    """``requested`` when given (tests, benchmarks), else buffered unless the guard refuses."""
    if requested is not None:
        return requested
    problems = internals_problems()
    if problems:
        log.warning(
            "MQTT: using aiomqtt's plain client (slower; QoS 1 acknowledged on receipt, so a "
            "crash or disconnection can lose the messages not yet decided): %s",
            "; ".join(problems),
        )
        return ClientPath.PLAIN
    return ClientPath.BUFFERED


def new_client(
    path: ClientPath,
    handle: Callable[[aiomqtt.Message], None],
    *,
    manual_ack: bool = False,
    **options: Any,
) -> aiomqtt.Client:
    """An ``aiomqtt.Client(**options)``; on the buffered path ``handle`` takes every message,
    and with ``manual_ack`` QoS 1 messages wait for :func:`send_ack`.

    On the plain path messages wait in the client for ``client.messages`` and
    paho acknowledges them as it reads them (``manual_ack`` cannot apply);
    ``options`` are aiomqtt's public constructor arguments either way.
    """
    if path is ClientPath.PLAIN:
        return aiomqtt.Client(**options)
    client = _BufferedClient(queue_type=_intake_queue(handle), **options)
    if manual_ack:
        client._client.manual_ack_set(True)  # before the connection: no message slips by
    return client


def send_ack(client: aiomqtt.Client) -> Callable[[int, int], object]:
    """``ack(mid, qos)`` of a buffered client made with ``manual_ack``: sends the PUBACK.

    Call it on the event loop's thread (paho's socket writes are the loop's there).
    """
    ack: Callable[[int, int], object] = client._client.ack
    return ack


def session_present(client: aiomqtt.Client) -> bool:
    """Whether the broker resumed the session at connection (buffered path; else False)."""
    return bool(getattr(client, "resumed", False))


def pause_reading(client: aiomqtt.Client) -> bool:
    """Stop reading the connected ``client``'s socket (what it read already stays in its
    buffer) until :func:`resume_reading`; False when this client cannot (the plain path,
    no :class:`ReadBuffer`, no connection): then nothing changed.

    Call it on the loop's thread, for instance from the message handler: the packet
    being handled is the last one parsed."""
    return isinstance(client, _BufferedClient) and client.pause_reading()


def resume_reading(client: aiomqtt.Client) -> None:
    """Read again what :func:`pause_reading` stopped; nothing if the connection is gone."""
    if isinstance(client, _BufferedClient):
        client.resume_reading()


def read_buffered(client: aiomqtt.Client) -> bool:
    """Whether the connected ``client`` reads through a :class:`ReadBuffer`."""
    return isinstance(getattr(getattr(client, "_client", None), "_sock", None), ReadBuffer)


class _BufferedClient(aiomqtt.Client):
    """aiomqtt's client reading through a :class:`ReadBuffer`, keeping the CONNACK's
    session-present flag (``resumed``)."""

    resumed = False

    def _on_connect(
        self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any = None
    ) -> None:
        self.resumed = bool(getattr(flags, "session_present", False))
        super()._on_connect(client, userdata, flags, reason_code, properties)

    def _on_socket_open(self, client: Any, userdata: Any, sock: Any) -> None:
        # Where paho keeps the socket elsewhere, the plain socket is used as is.
        if getattr(client, "_sock", None) is sock and hasattr(sock, "recv"):
            sock = ReadBuffer(sock)
            client._sock = sock
        super()._on_socket_open(client, userdata, sock)
        if isinstance(sock, ReadBuffer):  # (from paho's connecting thread, as aiomqtt does)
            # after aiomqtt's add_reader (same queue): its reader replaced by this one
            self._loop.call_soon_threadsafe(self._loop.add_reader, sock.fileno(), self._readable)

    def _readable(self) -> None:
        """aiomqtt's reader callback: read packets while the socket says bytes are pending
        (a failure is the connection's end)."""
        client = self._client
        try:
            while True:
                client.loop_read()
                sock = client._sock  # (None once the connection is lost)
                if not isinstance(sock, ReadBuffer) or sock.pending() <= 0:
                    break
        except Exception as exc:  # (aiomqtt's: BrokenPipe and friends end the connection)
            if not self._disconnected.done():
                self._disconnected.set_exception(exc)

    def pause_reading(self) -> bool:
        sock = self._client._sock
        if not isinstance(sock, ReadBuffer) or sock.fileno() < 0:
            return False
        if not sock.paused:
            sock.pause()
            self._loop.remove_reader(sock.fileno())
        return True

    def resume_reading(self) -> None:
        sock = self._client._sock
        if not isinstance(sock, ReadBuffer) or not sock.paused or sock.fileno() < 0:
            return  # (a connection that ended: the next one reads from the start)
        sock.resume()
        self._loop.add_reader(sock.fileno(), self._readable)
        if sock.pending():  # what the buffer kept: the socket may never be readable again
            self._loop.call_soon(self._readable)


class ReadBuffer:
    """A socket whose ``recv`` serves from 64 KiB reads; everything else is the socket's.

    One kernel read per readiness callback: the next refill pretends the socket
    is drained (BlockingIOError, as a real non-blocking socket would), so a
    broker streaming a backlog never starves the event loop.

    :meth:`pause` sets the unread rest of the buffer aside: ``recv`` then
    serves nothing (BlockingIOError) and :meth:`pending` says 0, so whoever
    reads stops at once; :meth:`resume` serves it again. The test costs only
    the refill, not the reads served from the buffer.
    """

    __slots__ = ("_aside", "_buffer", "_pos", "_refilled", "_sock", "paused")

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self._buffer = b""
        self._pos = 0
        self._refilled = False
        self.paused = False
        self._aside = b""

    def pause(self) -> None:
        if not self.paused:
            self.paused = True
            self._aside, self._buffer, self._pos = self._buffer[self._pos :], b"", 0

    def resume(self) -> None:
        if self.paused:
            self.paused = False
            self._buffer, self._pos, self._aside = self._aside, 0, b""
            self._refilled = False  # a new readiness callback follows

    def recv(self, size: int) -> bytes:
        if self._pos >= len(self._buffer):
            if self._refilled or self.paused:
                self._refilled = False
                raise BlockingIOError  # back to the event loop; the socket stays readable
            self._refilled = True
            data: bytes = self._sock.recv(_READ_SIZE)  # BlockingIOError passes through
            if len(data) <= size:
                return data
            self._buffer, self._pos = data, 0
        start = self._pos
        self._pos = min(start + size, len(self._buffer))
        return self._buffer[start : self._pos]

    def pending(self) -> int:
        if self.paused:
            return 0  # (what TLS decrypted waits in the SSL socket, unread)
        inner = self._sock.pending() if hasattr(self._sock, "pending") else 0
        return len(self._buffer) - self._pos + int(inner)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def _intake_queue(handle: Callable[[aiomqtt.Message], None]) -> Any:
    """A queue class for aiomqtt whose ``put_nowait`` hands the message to ``handle`` at once."""

    class _Intake(asyncio.Queue[aiomqtt.Message]):
        def put_nowait(self, item: aiomqtt.Message) -> None:
            handle(item)

    return _Intake
