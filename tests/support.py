"""What every test may need: a free loopback port, and waiting with a deadline.

Waiting polls: it is for state that something outside the test's event loop
changes (a broker, a daemon, the kernel's process table, a file another
process writes), where there is no event to await. Where an event can be
awaited, tests await it instead (runner_support's ``ObservedStore.until``).

- :func:`poll` / :func:`apoll`: the first truthy value of ``check()`` within
  ``within`` seconds, or None (for "this must *not* happen" checks as well);
- :func:`wait_until` / :func:`until`: the same, failing the test on timeout;
- :class:`ManualClock`: a clock that moves only when the test sets ``now``.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import secrets
import socket
import textwrap
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

__all__ = [
    "PG_SERVER",
    "ManualClock",
    "apoll",
    "free_port",
    "pg_database",
    "poll",
    "until",
    "wait_until",
]

#: The machine's PostgreSQL (trust, user postgres); the test command starts it.
PG_SERVER = "postgresql://postgres@127.0.0.1:5432"


class ManualClock:
    """A clock for code that takes one: it reads ``now``, which the test moves."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@contextlib.contextmanager
def pg_database() -> Iterator[str]:
    """A private database on the machine's PostgreSQL for one test run: its URL.

    No skip: the test command's bootstrap has PostgreSQL running; a failure here says so.
    """
    import psycopg  # (bench/ scripts import this module without it)

    name = f"batond_test_{secrets.token_hex(4)}"
    with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"'.encode())
    try:
        yield f"{PG_SERVER}/{name}"
    finally:
        with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)'.encode())


T = TypeVar("T")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the kernel picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def poll(check: Callable[[], T], within: float, every: float = 0.05) -> T | None:
    """Call ``check`` until it returns something truthy, for ``within`` seconds at most."""
    deadline = time.monotonic() + within
    while True:
        found = check()
        if found or time.monotonic() >= deadline:
            return found or None
        time.sleep(every)


async def apoll(
    check: Callable[[], T | Awaitable[T]], within: float, every: float = 0.02
) -> T | None:
    """:func:`poll` without blocking the event loop; ``check`` may be a coroutine function."""
    deadline = time.monotonic() + within
    while True:
        found = check()
        if inspect.isawaitable(found):
            found = await found
        if found or time.monotonic() >= deadline:
            return found or None
        await asyncio.sleep(every)


def _timed_out(what: str, within: float) -> AssertionError:
    return AssertionError(f"timed out after {within:g} s waiting for {what}")


def wait_until(
    check: Callable[[], T], within: float = 30.0, what: str = "the condition", every: float = 0.05
) -> T:
    """:func:`poll`, failing the test when ``check`` stays falsy."""
    found = poll(check, within, every)
    if not found:
        raise _timed_out(what, within)
    return found


async def until(
    check: Callable[[], T | Awaitable[T]],
    within: float = 30.0,
    what: str = "the condition",
    every: float = 0.02,
) -> T:
    """:func:`apoll`, failing the test when ``check`` stays falsy."""
    found = await apoll(check, within, every)
    if not found:
        raise _timed_out(what, within)
    return found


def write_yaml(tmp_path: Path, text: str, name: str = "batond.yaml") -> Path:
    """``text`` (dedented) as ``tmp_path/name``: a config or rule file for a test."""
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def config_problems(path: Path) -> list[str]:
    """Every ``FILE:LINE:COL: message`` that loading the config at ``path`` reports."""
    # imported here: bench/ scripts import this module for free_port and poll only
    import pytest

    from batond.errors import ConfigError
    from batond.load.config import load_config

    with pytest.raises(ConfigError) as info:
        load_config(path)
    return [str(p) for p in info.value.problems]
