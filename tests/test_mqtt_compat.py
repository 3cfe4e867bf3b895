"""The private ground under mqtt_compat's buffered path is still there.

These fail when an upgrade of aiomqtt or paho-mqtt changes what the buffered
path relies on; then re-read ``batond/intake/mqtt_compat.py``, adapt it (or
narrow its version window) and keep the plain path as the fallback. The
behaviour of both paths against a real broker is in test_mqtt_source.py.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import socket
from typing import Any

import aiomqtt
import pytest
from paho.mqtt import client as paho

from batond.intake import mqtt_compat
from batond.intake.mqtt_compat import ClientPath, ReadBuffer
from support import until


def test_the_installed_libraries_are_the_ones_the_buffered_path_is_written_for() -> None:
    assert mqtt_compat.internals_problems() == ()
    assert mqtt_compat.choose_path() is ClientPath.BUFFERED


def test_aiomqtt_still_opens_sockets_through_the_overridden_callback() -> None:
    params = list(inspect.signature(aiomqtt.Client._on_socket_open).parameters)
    assert params == ["self", "client", "userdata", "sock"]
    source = inspect.getsource(aiomqtt.Client._on_socket_open)
    # the reader callback keeps reading while the socket says bytes are pending, and a
    # failure ends the connection: what mqtt_compat's copy of it (_readable) does too
    assert "loop_read()" in source and "_sock.pending()" in source
    assert "self._disconnected.set_exception(exc)" in source
    assert "self._loop.add_reader, sock.fileno(), callback" in source  # (replaced after)


async def test_aiomqtt_hands_each_message_to_the_put_nowait_of_its_queue_type() -> None:
    taken: list[aiomqtt.Message] = []
    client = mqtt_compat.new_client(
        ClientPath.BUFFERED, taken.append, hostname="127.0.0.1", identifier="t"
    )
    message = paho.MQTTMessage(mid=1, topic=b"metrics/a")
    message.payload = b"{}"
    client._on_message(client._client, None, message)
    assert [(m.topic.value, m.payload) for m in taken] == [("metrics/a", b"{}")]
    assert len(client.messages) == 0  # nothing waits in the client


def test_paho_reads_packets_from_its_private_sock() -> None:
    class Sock:
        def recv(self, size: int) -> bytes:
            return b"x" * size

        def close(self) -> None:
            pass

    client = paho.Client(paho.CallbackAPIVersion.VERSION2)
    assert "_sock" in vars(client)
    client._sock = Sock()  # type: ignore[assignment]
    assert client._sock_recv(3) == b"xxx"


class FakeSocket:
    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self.reads = 0

    def recv(self, size: int) -> bytes:
        self.reads += 1
        if not self.chunks:
            raise BlockingIOError
        return self.chunks.pop(0)[:size]

    def fileno(self) -> int:
        return 42


def test_read_buffer_serves_small_reads_from_one_kernel_read_per_callback() -> None:
    sock = FakeSocket([b"abcdefgh", b"ij"])
    buffered = ReadBuffer(sock)
    assert [buffered.recv(1), buffered.recv(3), buffered.recv(10)] == [b"a", b"bcd", b"efgh"]
    assert sock.reads == 1
    assert buffered.pending() == 0
    with pytest.raises(BlockingIOError):  # the next refill waits for the next callback
        buffered.recv(1)
    assert buffered.recv(1) == b"i" and buffered.pending() == 1
    assert buffered.fileno() == 42  # everything else is the socket's


def test_a_paused_read_buffer_keeps_what_it_read_and_serves_nothing() -> None:
    sock = FakeSocket([b"abcdefgh", b"ij"])
    buffered = ReadBuffer(sock)
    assert buffered.recv(3) == b"abc"
    buffered.pause()
    assert buffered.pending() == 0  # aiomqtt's reader stops asking
    with pytest.raises(BlockingIOError):  # and paho's next packet read gets nothing
        buffered.recv(1)
    with pytest.raises(BlockingIOError):  # however often it tries: the socket is not read
        buffered.recv(1)
    assert sock.reads == 1
    buffered.resume()
    assert buffered.pending() == 5
    assert buffered.recv(10) == b"defgh"  # what was read before the pause, not lost
    assert buffered.recv(10) == b"ij" and sock.reads == 2


async def test_pausing_a_buffered_client_removes_its_reader_and_resuming_reads_again() -> None:
    """pause_reading/resume_reading on a real socket pair, through the loop's reader."""
    taken: list[aiomqtt.Message] = []
    client = mqtt_compat.new_client(
        ClientPath.BUFFERED, taken.append, hostname="127.0.0.1", identifier="t"
    )
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    inner = client._client
    inner._sock = ours  # (what paho's connect does) then the socket-open callback
    client._on_socket_open(inner, None, ours)
    await asyncio.sleep(0)  # (the callbacks are scheduled thread-safe)
    assert mqtt_compat.read_buffered(client)
    publish = b"\x30\x0c\x00\x03t/a" + b'{"v":1}'  # QoS 0 PUBLISH t/a {"v":1}
    try:
        theirs.sendall(publish)
        await until(lambda: len(taken) == 1)
        assert mqtt_compat.pause_reading(client)
        theirs.sendall(publish * 2)
        for _ in range(20):  # the loop turns: nothing is read
            await asyncio.sleep(0.005)
        assert len(taken) == 1
        # no reader left (else the readable socket would call it at every loop turn)
        assert not asyncio.get_running_loop().remove_reader(ours.fileno())
        mqtt_compat.resume_reading(client)
        await until(lambda: len(taken) == 3)
        assert [m.topic.value for m in taken] == ["t/a"] * 3
    finally:
        asyncio.get_running_loop().remove_reader(ours.fileno())
        ours.close()
        theirs.close()
    plain = mqtt_compat.new_client(ClientPath.PLAIN, lambda m: None, hostname="127.0.0.1")
    assert not mqtt_compat.pause_reading(plain)  # the fallback cannot: it says so


def test_a_guard_failure_selects_the_plain_path_and_says_why(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    versions = {"aiomqtt": "3.0.0a1", "paho-mqtt": "2.1.0"}

    def version(distribution: str) -> str:
        return versions[distribution]

    mqtt_compat.internals_problems.cache_clear()
    monkeypatch.setattr(mqtt_compat.metadata, "version", version)
    try:
        assert mqtt_compat.internals_problems() == ("aiomqtt 3.0 is outside >=2.3,<3",)
        with caplog.at_level(logging.WARNING, "batond.mqtt"):
            assert mqtt_compat.choose_path() is ClientPath.PLAIN
        assert "aiomqtt 3.0 is outside >=2.3,<3" in caplog.text
        assert mqtt_compat.choose_path(ClientPath.BUFFERED) is ClientPath.BUFFERED  # forced
    finally:
        mqtt_compat.internals_problems.cache_clear()


async def test_the_plain_path_is_a_stock_client_that_queues_messages() -> None:
    client = mqtt_compat.new_client(
        ClientPath.PLAIN, lambda m: pytest.fail("handled"), hostname="127.0.0.1", identifier="t"
    )
    assert type(client) is aiomqtt.Client
    message = paho.MQTTMessage(mid=1, topic=b"metrics/a")
    client._on_message(client._client, None, message)
    assert len(client.messages) == 1  # waits for the session loop
    got: Any = await asyncio.wait_for(anext(aiter(client.messages)), 5)
    assert got.topic.value == "metrics/a"


async def test_manual_acks_go_through_the_paho_client_aiomqtt_wraps() -> None:
    """aiomqtt has no acknowledgement API: the buffered path puts its private paho
    client (``_client``) in manual mode, and a QoS 1 PUBLISH then gets no PUBACK
    until ``send_ack`` says so."""
    client = mqtt_compat.new_client(
        ClientPath.BUFFERED, lambda m: None, manual_ack=True, hostname="127.0.0.1", identifier="t"
    )
    inner = client._client
    assert isinstance(inner, paho.Client)
    assert inner._manual_ack is True
    sent: list[int] = []
    inner._send_puback = sent.append  # type: ignore[method-assign]
    inner._in_packet = {"command": 0x32, "packet": b"\x00\x01a\x00\x07{}"}
    inner._protocol = paho.MQTTv311
    assert inner._handle_publish() == paho.MQTT_ERR_SUCCESS
    assert sent == []  # received, not acknowledged
    mqtt_compat.send_ack(client)(7, 1)
    assert sent == [7]
    plain = mqtt_compat.new_client(
        ClientPath.PLAIN, lambda m: None, hostname="127.0.0.1", identifier="t"
    )
    assert plain._client._manual_ack is False  # the fallback: paho's, on receipt


async def test_the_buffered_client_keeps_the_session_present_flag() -> None:
    client = mqtt_compat.new_client(ClientPath.BUFFERED, lambda m: None, hostname="127.0.0.1")
    assert not mqtt_compat.session_present(client)
    flags = paho.ConnectFlags(session_present=True)
    client._on_connect(
        client._client, None, flags, paho.ReasonCode(paho.PacketTypes.CONNACK, identifier=0)
    )
    assert mqtt_compat.session_present(client)
    params = list(inspect.signature(aiomqtt.Client._on_connect).parameters)
    assert params == ["self", "client", "userdata", "flags", "reason_code", "properties"]
