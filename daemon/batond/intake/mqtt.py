"""MQTT input (and the one MQTT connection that actions publish through).

- One persistent session: a fixed client id and ``clean_session=False``, so
  the broker keeps QoS 1 messages published while batond is away and delivers
  them on reconnect. Subscriptions are made again on every connection anyway
  (a broker without persistence forgets them).
- Reconnects forever, outside the client, with capped exponential backoff and
  jitter; ``batond_mqtt_connected`` and ``batond_mqtt_reconnects_total`` show it.
- Each message is parsed as it is read off the socket and its items go straight
  to the bus: no second queue inside the client whose content a disconnect
  could throw away after the broker already has its PUBACK. That, and reading
  through a buffer, takes private internals of aiomqtt 2.x: they live in
  ``mqtt_compat``, behind a version check, with a plain fallback.
- Backpressure: a message whose items do not all fit in the bus is held (what
  fits is queued), reading stops (``pause_reading``) and resumes once the bus
  has drained to half (``Bus.when_room``) and the held items are queued. The
  broker keeps the rest (TCP flow control; for QoS 1 also its in-flight window):
  nothing is dropped. Messages taken while something is held (the first of a new
  connection) wait behind it, so items and acknowledgements keep their order.
  The plain path cannot stop reading through aiomqtt's API: it drops and counts.
  A routed topic's handler (the fleet's partition batches) hands back the items
  it wants queued: they are queued, held and acknowledged the same way.
- With ``mqtt.ack: decided`` (the default) a QoS 1 message is acknowledged only
  once the bus says its items are decided and journaled (:class:`_Acks`, in
  arrival order per connection): a crash before that makes the broker deliver
  it again. A message the broker delivers again after a reconnection, whose
  acknowledgement the last connection still owed, is the same message: it is
  not queued twice, only acknowledged once its first copy is decided.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
import time
from collections import deque
from collections.abc import Awaitable, Callable

import aiomqtt

from batond.errors import ActionError, InputError
from batond.events import Input, parse_json_payload
from batond.intake import Rejections
from batond.intake.bus import Bus
from batond.intake.influx import parse_influx
from batond.intake.mqtt_compat import (
    ClientPath,
    choose_path,
    new_client,
    pause_reading,
    read_buffered,
    resume_reading,
    send_ack,
    session_present,
)
from batond.load.config import Ack, MqttConfig, Subscription, read_secret
from batond.metrics import Metrics

__all__ = ["MqttSource", "oversized", "topic_matches"]

log = logging.getLogger("batond.mqtt")

_Parser = Callable[[bytes, float, str], tuple[list[Input], list[InputError]]]
_PARSERS: dict[str, _Parser] = {"json": parse_json_payload, "influx": parse_influx}
_TOPIC_CACHE_MAX = 4096
#: A pause of reading (the bus full) is logged at most this often.
PAUSE_LOG_S = 10.0
#: Takes a message of a routed topic (not parsed as input): the topic and the payload;
#: returns the items it wants queued (None or []: none). They are queued like parsed
#: input (backpressure, acknowledgement after their decision), under the route's source.
Handler = Callable[[str, bytes], list[Input] | None]


def topic_matches(topic: str, pattern: str) -> bool:
    """MQTT topic filter matching (``+`` one level, ``#`` the rest, ``$share/G/`` ignored)."""
    levels = pattern.split("/")
    if levels[0] == "$share" and len(levels) > 2:
        levels = levels[2:]
    parts = topic.split("/")
    if topic.startswith("$") and levels[0] in ("+", "#"):
        return False  # wildcards never match $SYS and friends
    for i, level in enumerate(levels):
        if level == "#":
            return True
        if i >= len(parts) or (level != "+" and level != parts[i]):
            return False
    return len(parts) == len(levels)


class MqttSource:
    """The MQTT input; ``client_path`` forces one client (tests), else the guard chooses."""

    def __init__(
        self,
        cfg: MqttConfig,
        bus: Bus,
        metrics: Metrics,
        *,
        clock: Callable[[], float] = time.time,
        backoff_min: float = 0.5,
        backoff_max: float = 30.0,
        timeout: float = 10.0,
        client_path: ClientPath | None = None,
        keep_going: Callable[[], Awaitable[bool]] | None = None,
        counts_connection: bool = True,
    ) -> None:
        self._cfg = cfg
        # asked before each reconnection (a fleet partition's session: only while owned)
        self._keep_going = keep_going
        # the connection gauges are the daemon's one connection (not a partition's)
        self._counts = counts_connection
        self._bus = bus
        self._metrics = metrics
        self._clock = clock
        self._backoff = (backoff_min, backoff_max)
        self._timeout = timeout
        self._rejections = Rejections(metrics, "mqtt")
        self._client: aiomqtt.Client | None = None
        self._formats: dict[str, _Parser | None] = {}
        # topic filter -> (qos, handler, the source its items are counted under)
        self._routes: dict[str, tuple[int, Handler, str]] = {}
        self.connections = 0
        self._attempted = False
        self.client_path = choose_path(client_path)
        #: QoS 1 acknowledged after the decision (else paho's, on receipt)
        self.manual_ack = cfg.ack is Ack.DECIDED and self.client_path is ClientPath.BUFFERED
        self._acks: _Acks | None = None  # the current connection's, with manual_ack
        # what the last connection still owed an acknowledgement: mid -> (topic, payload)
        self._owed: dict[int, tuple[str, bytes]] = {}
        self._resumed: Callable[[], bool] = lambda: False  # the CONNACK's session flag
        self._current: aiomqtt.Client | None = None  # the connection reading (or connecting)
        # taken and not yet queued, the bus being full, in arrival order: while there is
        # any, reading is paused (self._paused, since self._paused_at)
        self._held: deque[_Held] = deque()
        self._paused: aiomqtt.Client | None = None
        self._paused_at = 0.0
        self._pause_logged_at = float("-inf")
        self._pauses_unlogged = 0
        # read when scraped: a gauge update per message cost a fifth of the intake's CPU
        if counts_connection:
            metrics.mqtt_unacked.set_function(lambda: len(self._acks or ()))

    def route(self, topic: str, qos: int, handler: Handler, source: str = "mqtt") -> None:
        """Subscribe to ``topic`` too (on every connection) and hand its messages to
        ``handler`` instead of parsing them as input (the fleet's requests, outcome
        reports and partition batches). What it returns is queued as input, counted
        under ``source``. Called before :meth:`run`."""
        self._routes[topic] = (qos, handler, source)

    @property
    def connected(self) -> bool:
        return self._client is not None

    @property
    def reads_buffered(self) -> bool:
        """Whether the current connection reads through mqtt_compat's buffer."""
        return self._client is not None and read_buffered(self._client)

    @property
    def state(self) -> str:
        """For status: connected, connecting (no attempt finished yet) or disconnected."""
        if self._client is not None:
            return "connected"
        return "disconnected" if self._attempted else "connecting"

    async def run(self, started: asyncio.Event) -> None:
        """Connect, subscribe and take messages until cancelled; reconnect on any failure."""
        failures = 0
        while True:
            before = self.connections
            try:
                await self._session(started)
            except aiomqtt.MqttError as exc:
                log.warning("MQTT %s: %s", self._cfg.url, exc or type(exc).__name__)
            except (OSError, ssl.SSLError) as exc:  # certificate or secret files
                log.error("MQTT %s: cannot connect: %s", self._cfg.url, exc)
            except Exception:  # whatever it is, input must keep trying to flow
                log.exception("MQTT %s: unexpected failure", self._cfg.url)
            finally:
                self._client = None
                self._attempted = True
                if self._acks is not None:
                    self._end_acks(connected=self.connections > before)
                if self._counts:
                    self._metrics.mqtt_connected.set(0)
            if self._keep_going is not None and not await self._keep_going():
                started.set()
                return
            if not started.is_set():
                log.warning(
                    "MQTT broker %s not reachable yet; retrying in the background", self._cfg.url
                )
                started.set()
            if self.connections > before:
                failures = 0  # the backoff grows only over failed attempts in a row
            delay = self._delay(failures)
            failures += 1
            await asyncio.sleep(delay)

    def _end_acks(self, *, connected: bool) -> None:
        """What the connection still owed, the broker delivers again on the next one.

        A connection that was never made received nothing: what the last one owed is
        still owed. One that was made had its redeliveries first: the rest is stale."""
        assert self._acks is not None
        owed = self._acks.close()
        self._owed = owed if connected else {**self._owed, **owed}
        self._acks = None

    def _delay(self, failures: int) -> float:
        low, high = self._backoff
        cap = min(high, low * 2.0**failures)
        return cap / 2 + random.uniform(0, cap / 2)  # equal jitter: never 0, never in step

    async def _session(self, started: asyncio.Event) -> None:
        client = self._current = self._new_client()
        async with client:
            self.connections += 1
            if self.connections > 1 and self._counts:
                self._metrics.mqtt_reconnects.inc()
            wanted = [(sub.topic, sub.qos) for sub in self._cfg.subscribe]
            wanted += [(topic, qos) for topic, (qos, _, _) in self._routes.items()]
            for topic, qos in wanted:
                granted = await client.subscribe(topic, qos=qos, timeout=self._timeout)
                codes = [code if isinstance(code, int) else code.value for code in granted]
                if any(code >= 0x80 for code in codes):  # e.g. an ACL: say so, keep the rest
                    log.error("MQTT broker refused the subscription to %r", topic)
            self._client = client
            if self._counts:
                self._metrics.mqtt_connected.set(1)
            (log.info if self._counts else log.debug)(
                "MQTT connected to %s as %s (%d subscriptions)",
                self._cfg.url,
                self._cfg.client_id,
                len(wanted),
            )
            started.set()
            # On the buffered path messages never wait in the client (they were
            # taken in the socket callback) and this only waits for the MqttError
            # of a disconnection; on the plain path they arrive here.
            async for message in client.messages:
                self._take(message)

    def _new_client(self) -> aiomqtt.Client:
        cfg = self._cfg
        password = read_secret(cfg.password_file) if cfg.password_file is not None else None
        client = new_client(
            self.client_path,
            self._take,
            manual_ack=self.manual_ack,
            hostname=cfg.hostname,
            port=cfg.port,
            identifier=cfg.client_id,
            clean_session=False,
            username=cfg.username,
            password=password,
            tls_context=self._tls_context() if cfg.tls else None,
            timeout=self._timeout,
            keepalive=30,
            max_inflight_messages=100,
            logger=log,
        )
        if self.manual_ack:
            self._acks = _Acks(send_ack(client), self._bus.when_decided)
            self._resumed = lambda: session_present(client)
        return client

    def _tls_context(self) -> ssl.SSLContext:
        cfg = self._cfg
        context = ssl.create_default_context(
            cafile=str(cfg.ca_file) if cfg.ca_file is not None else None
        )
        if cfg.cert_file is not None and cfg.key_file is not None:
            context.load_cert_chain(str(cfg.cert_file), str(cfg.key_file))
        return context

    def _take(self, message: aiomqtt.Message) -> None:
        acks = self._acks if message.qos == 1 else None
        pending = None
        if acks is not None:
            pending = acks.add(message.mid, message.topic.value, _raw(message.payload))
            # a message delivered again: its first copy is in the bus (or held), or decided
            if self._owed and self._again(message):
                if self._held:  # its first copy waits for room: its acknowledgement too
                    self._hold([], "mqtt", acks, pending)
                return
        items, source = self._handle(message)  # decided before its ack, if any
        if self._held:
            self._hold(items, source, acks, pending)  # behind what waits already: in order
        elif items:
            queued = self._bus.offer_upto(items, source)
            if queued < len(items):
                self._hold(items[queued:], source, acks, pending)

    def _again(self, message: aiomqtt.Message) -> bool:
        """Whether ``message`` is one the last connection took and still owed a PUBACK.

        The broker reuses no packet id it awaits a PUBACK for, so within a resumed
        session the same id, topic and payload are the same message."""
        if not self._resumed():
            self._owed.clear()  # a new session: nothing will come again
            return False
        owed = self._owed.pop(message.mid, None)
        if owed is None or owed != (message.topic.value, _raw(message.payload)):
            return False
        self._metrics.mqtt_redelivered.inc()
        return True

    def _handle(self, message: aiomqtt.Message) -> tuple[list[Input], str]:
        try:
            return self._on_message(message)
        except Exception:  # a bug must not stop the socket callback nor the session
            log.exception("MQTT message on %s could not be handled", message.topic)
            return [], "mqtt"

    def _on_message(self, message: aiomqtt.Message) -> tuple[list[Input], str]:
        """The items of ``message`` for the bus (none: refused, not input, or a route's
        handler wanted none) and the source they count under."""
        topic = message.topic.value
        if self._routes:
            route = self._route_of(topic)
            if route is not None:
                _, handler, source = route
                return handler(topic, _raw(message.payload)) or [], source
        parser = self._parser(topic)
        if parser is None:
            return [], "mqtt"  # a message for a subscription of an earlier configuration
        refused = oversized(message.payload, self._cfg.max_payload)
        if refused is not None:
            self._rejections.reject(refused, f"topic {topic}")
            return [], "mqtt"
        items, errors = parser(message.payload, self._clock(), "mqtt")
        if errors:
            self._rejections.reject_all(errors, f"topic {topic}")
        return items, "mqtt"

    def _hold(
        self, items: list[Input], source: str, acks: _Acks | None, pending: _Pending | None
    ) -> None:
        """Keep what the full bus could not take and stop reading until it has room; where
        reading cannot stop (the plain path), what does not fit is dropped and counted."""
        client = self._current
        if client is None or (self._paused is not client and not pause_reading(client)):
            self._bus.offer_many(items, source)  # never blocks: the drops are counted, logged
            return
        if self._paused is None:
            self._paused_now()
        self._paused = client
        if acks is not None and pending is not None:
            acks.defer(pending)  # its acknowledgement waits until its items are queued
        self._held.append(_Held(items, source, acks, pending))
        if len(self._held) == 1:
            self._bus.when_room(self._drain)

    def _paused_now(self) -> None:
        self._paused_at = time.monotonic()
        self._metrics.mqtt_reading_paused.inc()
        self._pauses_unlogged += 1
        if self._paused_at - self._pause_logged_at < PAUSE_LOG_S:
            return
        log.warning(
            "input queue full (%d items): MQTT %s as %s: reading paused until it drains to "
            "half, the broker keeps the rest (%d pause(s) since the last line; "
            "batond_mqtt_reading_paused)",
            self._bus.capacity,
            self._cfg.url,
            self._cfg.client_id,  # (a fleet instance has a connection per partition)
            self._pauses_unlogged,
        )
        self._pause_logged_at, self._pauses_unlogged = self._paused_at, 0

    def _drain(self) -> None:
        """The bus has room: queue what is held, in order; read again once all is queued."""
        held = self._held
        while held:
            first = held[0]
            if first.items:
                queued = self._bus.offer_upto(first.items, first.source)
                if queued < len(first.items):
                    first.items = first.items[queued:]
                    self._bus.when_room(self._drain)
                    return
            held.popleft()
            if first.acks is not None and first.pending is not None:
                first.acks.settle(first.pending)
        client, self._paused = self._paused, None
        if client is not None:
            self._metrics.mqtt_paused_seconds.inc(time.monotonic() - self._paused_at)
            self._metrics.mqtt_reading_paused.dec()
            resume_reading(client)  # (nothing if that connection ended meanwhile)

    def _route_of(self, topic: str) -> tuple[int, Handler, str] | None:
        for pattern, route in self._routes.items():
            if topic_matches(topic, pattern):
                return route
        return None

    def _parser(self, topic: str) -> _Parser | None:
        try:
            return self._formats[topic]
        except KeyError:
            pass
        sub = _first_match(self._cfg.subscribe, topic)
        parser = _PARSERS[sub.format] if sub is not None else None
        if len(self._formats) >= _TOPIC_CACHE_MAX:
            self._formats.clear()
        self._formats[topic] = parser
        return parser

    async def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        """Publish through batond's connection; ActionError when it is down or fails."""
        client = self._client
        if client is None:
            raise ActionError(f"MQTT is not connected to {self._cfg.url}")
        try:
            await client.publish(topic, payload, qos=qos, retain=retain, timeout=self._timeout)
        except aiomqtt.MqttError as exc:
            raise ActionError(f"MQTT publish to {topic!r} failed: {exc}") from None


class _Held:
    """Items of one message the full bus could not take yet (none: only its ack waits),
    and the source they count under."""

    __slots__ = ("acks", "items", "pending", "source")

    def __init__(
        self, items: list[Input], source: str, acks: _Acks | None, pending: _Pending | None
    ) -> None:
        self.items = items
        self.source = source
        self.acks = acks
        self.pending = pending


class _Pending:
    """One QoS 1 message of a connection waiting for its PUBACK."""

    __slots__ = ("decided", "mid", "payload", "topic")

    def __init__(self, mid: int, topic: str, payload: bytes) -> None:
        self.mid = mid
        self.topic = topic
        self.payload = payload  # to know it when it comes again
        self.decided = False


class _Acks:
    """The PUBACKs one connection owes, sent in arrival order, each once its message is
    decided: a later message decided first waits for the earlier ones.

    The messages of one socket read (a burst) wait for their decisions together: one
    ``when_decided`` for all, registered once the read is over (after their items are
    queued), instead of a callback each (which cost a third of the intake's CPU).
    """

    def __init__(
        self, send: Callable[[int, int], object], when_decided: Callable[[Callable[[], None]], None]
    ) -> None:
        self._send = send
        self._when_decided = when_decided
        self._pending: deque[_Pending] = deque()
        self._burst: list[_Pending] = []
        self._open = True

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, mid: int, topic: str, payload: bytes) -> _Pending:
        """A message taken; it is acknowledged once all queued until the burst's end are
        decided (whether it queued anything or not: the order is kept either way)."""
        pending = _Pending(mid, topic, payload)
        self._pending.append(pending)
        if not self._burst:
            asyncio.get_running_loop().call_soon(self._wait_for_burst)
        self._burst.append(pending)
        return pending

    def _wait_for_burst(self) -> None:
        burst, self._burst = self._burst, []
        if self._open and burst:
            self._when_decided(lambda: self.ready(*burst))

    def defer(self, pending: _Pending) -> None:
        """Not with its burst: ``pending``'s items are not all queued yet (the bus is full);
        :meth:`settle` once they are. (Its turn in the order is kept.)"""
        if pending in self._burst:
            self._burst.remove(pending)

    def settle(self, pending: _Pending) -> None:
        """The items of a deferred message are queued: acknowledge it once decided."""
        if self._open:
            self._when_decided(lambda: self.ready(pending))

    def ready(self, *decided: _Pending) -> None:
        """These are decided: acknowledge them and what follows them, once nothing before
        them waits."""
        for pending in decided:
            pending.decided = True
        queue = self._pending
        if not self._open or not queue or not queue[0].decided:
            return  # closed: the broker delivers them again; else an earlier one waits
        send = self._send
        while queue and queue[0].decided:
            send(queue.popleft().mid, 1)

    def close(self) -> dict[int, tuple[str, bytes]]:
        """The connection ended: what it still owed (mid -> topic, payload), forgotten here."""
        self._open = False
        owed = {p.mid: (p.topic, p.payload) for p in self._pending}
        self._pending.clear()
        return owed


def _raw(payload: object) -> bytes:
    return bytes(payload) if isinstance(payload, bytes | bytearray) else str(payload).encode()


def oversized(payload: object, limit: int) -> InputError | None:
    """Why a message is refused unparsed: one 3 MB payload held the loop for 7 s."""
    size = len(payload) if isinstance(payload, bytes | bytearray | str) else 0
    if size <= limit:
        return None
    return InputError("too_large", f"{size} bytes; mqtt.max_payload is {limit}")


def _first_match(subs: tuple[Subscription, ...], topic: str) -> Subscription | None:
    for sub in subs:
        if topic_matches(topic, sub.topic):
            return sub
    return None
