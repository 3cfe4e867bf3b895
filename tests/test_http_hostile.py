"""Hostile HTTP against a real ``batond run`` (issue 14): never a stall, a 500 or a traceback.

Raw sockets where the client must misbehave (half-open connections, bodies
that never arrive, a Content-Length or Expect the body will not honour).
"""

from __future__ import annotations

import asyncio
import gzip
import socket
import time
from collections.abc import Iterator

import pytest

from batond.intake.httpguard import BODY_READ_TIMEOUT, HEADER_TIMEOUT, LINGER
from daemon_proc import DaemonProcess, http, write_config
from support import free_port

TOKEN = "hostile-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    folder = tmp_path_factory.mktemp("hostile")
    port = free_port()
    config = write_config(folder, port, token=TOKEN, http_extra="max_body: 1MiB")
    d = DaemonProcess(config, port)
    try:
        d.wait_ready()
        yield d
    finally:
        assert d.stop() == 0, d.log()


def raw(daemon: DaemonProcess, request: bytes, within: float = 5.0) -> bytes:
    """Send ``request`` as is; what the server answers before closing or ``within``."""
    with socket.create_connection(("127.0.0.1", daemon.port), timeout=within) as sock:
        sock.sendall(request)
        got = b""
        deadline = time.monotonic() + within
        try:
            while time.monotonic() < deadline and b"\r\n\r\n" not in got:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                got += chunk
        except TimeoutError:
            pass
    return got


def head(path: str, extra: str) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n"
        f"Content-Type: application/json\r\n{extra}\r\n"
    ).encode()


def test_a_huge_content_length_gets_413_before_any_body(daemon: DaemonProcess) -> None:
    t0 = time.monotonic()
    answer = raw(daemon, head("/api/v1/events", f"Content-Length: {5 << 20}\r\n"))
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert time.monotonic() - t0 < 3.0  # not when the (never sent) body would have arrived


@pytest.mark.parametrize("path", ["/api/v1/events", "/api/v1/silences"])
def test_expect_100_continue_for_a_huge_body_is_413_not_continue(
    daemon: DaemonProcess, path: str
) -> None:
    answer = raw(daemon, head(path, f"Content-Length: {50 << 20}\r\nExpect: 100-continue\r\n"))
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"100 Continue" not in answer


def test_expect_100_continue_for_a_small_body_continues(daemon: DaemonProcess) -> None:
    body = b'{"event": "e", "host": "h"}'
    with socket.create_connection(("127.0.0.1", daemon.port), timeout=5) as sock:
        sock.sendall(
            head("/api/v1/events", f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\n")
        )
        assert sock.recv(100).startswith(b"HTTP/1.1 100 Continue")
        sock.sendall(body)
        assert sock.recv(4096).startswith(b"HTTP/1.1 202")


async def test_half_open_connections_and_slow_bodies_are_cut_and_never_stall(
    daemon: DaemonProcess,
) -> None:
    """50 connections that send half a request line, 5 that never finish their body."""
    loop = asyncio.get_running_loop()

    async def half_open() -> float:
        reader, writer = await asyncio.open_connection("127.0.0.1", daemon.port)
        t0 = loop.time()
        writer.write(b"POST /api/v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-")
        await writer.drain()
        async with asyncio.timeout(HEADER_TIMEOUT + 15):
            await reader.read()  # the server closes it
        writer.close()
        return loop.time() - t0

    async def slow_body() -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", daemon.port)
        writer.write(head("/api/v1/events", "Content-Length: 100\r\n") + b'{"event": ')
        await writer.drain()
        t0 = loop.time()
        async with asyncio.timeout(BODY_READ_TIMEOUT + 15):
            answer = await reader.read()
        assert loop.time() - t0 < BODY_READ_TIMEOUT + LINGER + 5
        writer.close()
        return answer

    tasks = [asyncio.ensure_future(half_open()) for _ in range(50)]
    tasks += [asyncio.ensure_future(slow_body()) for _ in range(5)]
    await asyncio.sleep(0.5)
    # meanwhile the daemon serves as usual
    ok = await loop.run_in_executor(None, lambda: daemon.get("/healthz").status)
    assert ok == 200
    results = await asyncio.gather(*tasks)
    held = [r for r in results if isinstance(r, float)]
    assert len(held) == 50 and max(held) < HEADER_TIMEOUT + 10
    for answer in results[50:]:
        assert isinstance(answer, bytes) and answer.startswith(b"HTTP/1.1 408"), answer[:200]


def test_more_valid_items_than_the_queue_holds_is_413_with_the_limit(
    daemon: DaemonProcess,
) -> None:
    body = ("\n".join('{"metric":"m","value":1}' for _ in range(10_001))).encode()
    r = http("POST", daemon.url + "/api/v1/events", body=body, headers=AUTH)
    assert r.status == 413
    assert r.json()["error"] == "10001 valid items; at most 10000 per request"


def test_a_flood_of_bad_items_is_counted_in_bulk_with_bounded_reasons(
    daemon: DaemonProcess,
) -> None:
    before = (
        daemon.metric("batond_events_rejected_total", {"source": "http", "reason": "bad_item"})
        or 0.0
    )
    body = ("[" + ",".join(["1"] * 100_000) + "]").encode()  # 10^5 items, none an object
    r = http("POST", daemon.url + "/api/v1/events", body=body, headers=AUTH)
    assert r.status == 400
    got = r.json()
    assert got["rejected"] == 100_000 and len(got["reasons"]) == 1
    reason = got["reasons"][0].split(":")[0]
    after = daemon.metric("batond_events_rejected_total", {"source": "http", "reason": reason})
    assert (after or 0.0) - (before if reason == "bad_item" else 0.0) == 100_000
    assert daemon.get("/healthz").status == 200


def test_gzip_garbage_is_400(daemon: DaemonProcess) -> None:
    headers = {**AUTH, "Content-Encoding": "gzip"}
    r = http("POST", daemon.url + "/api/v1/events", body=b"not gzip at all", headers=headers)
    assert r.status == 400 and "cannot be read" in r.json()["error"]
    good = gzip.compress(b'{"event": "e", "host": "h"}')
    assert http("POST", daemon.url + "/api/v1/events", body=good, headers=headers).status == 202


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/runs/%D9%A3",  # ARABIC-INDIC DIGIT THREE: int() reads 3
        "/api/v1/runs/9223372036854775808",  # SQLite's largest integer + 1
        "/api/v1/runs/" + "9" * 40,
        "/api/v1/runs/0",
        "/api/v1/runs?limit=%D9%A3",
        "/api/v1/runs?limit=-5",
    ],
)
def test_ids_and_limits_beyond_range_or_ascii_are_400(daemon: DaemonProcess, path: str) -> None:
    r = daemon.get(path)
    assert r.status == 400, (r.status, r.body)
    assert "must be" in r.json()["error"]


def test_an_absurd_silence_duration_is_400(daemon: DaemonProcess) -> None:
    for duration in ("9" * 400 + "s", "٣m", "99999999999d"):
        body = {"matchers": {"host": "h"}, "reason": "r", "duration": duration}
        r = daemon.post("/api/v1/silences", body, token=TOKEN)
        assert r.status == 400, (duration, r.status, r.body)
        assert r.json()["error"].startswith('"duration": ')


def test_malformed_requests_log_one_line_each_kind_without_traceback(
    daemon: DaemonProcess,
) -> None:
    for _ in range(30):
        raw(daemon, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 garbage\r\n\r\n", within=2)
        raw(daemon, b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\n\r\n", within=2)
    assert daemon.get("/healthz").status == 200
    log = daemon.log()
    assert "Traceback" not in log
    lines = [line for line in log.splitlines() if "Error handling request" in line]
    assert 1 <= len(lines) <= 4, lines  # one per kind, then silence for LOG_INTERVAL
