"""Watched processes: ``process.exited`` the moment one exits, ``process.started`` for new ones.

Each running process of a watched name gets a pidfd (``os.pidfd_open``, Linux
5.3+) registered with the event loop: the kernel makes it readable when the
process exits (a zombie included), so the event is on the bus within the same
loop iteration, with no polling. A scan every ``interval`` finds new processes
of watched names (``process.started``). Where pidfds are unavailable, watched
pids are polled every 50 ms instead.

A process matches a watched name when the name equals

- its kernel name (``psutil.Process.name()``, which psutil completes beyond
  the 15 characters of ``comm``), or
- the basename of its ``argv[0]`` (so ``exec -a NAME`` works), or
- for an interpreter (python, perl, ruby, node, sh, bash, ...), the basename of
  ``argv[1]``, with or without its extension (``python3 /opt/app/worker.py``
  matches ``worker.py`` and ``worker``).

Events carry labels ``host``, ``name``, ``pid``; ``process.exited`` also has
``exit_code``: the exit status (negative signal number when killed) if the
process was batond's child, read without reaping it (so the runner's own wait
still gets it), else null. At start, a watched name with no running process
gives ``process.exited`` with ``exit_code`` null.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import psutil

from batond.events import Event
from batond.intake.bus import Bus
from batond.metrics import Metrics

__all__ = ["ProcessWatch", "process_names"]

log = logging.getLogger("batond.procwatch")

_INTERPRETER = re.compile(
    r"^(python[0-9.]*|pypy[0-9.]*|perl[0-9.]*|ruby[0-9.]*|node|nodejs|php[0-9.]*|"
    r"sh|bash|dash|zsh|ksh|java|lua[0-9.]*|Rscript|tclsh[0-9.]*)$"
)
_POLL = 0.05
_CHUNK = 8  # processes read between two yields to the loop (~0.5 ms)
_ATTRS = ["name", "cmdline", "create_time", "status"]


def process_names(name: str, cmdline: list[str] | None) -> set[str]:
    """Every name a process answers to (see the module docstring)."""
    names = {name} if name else set()
    if cmdline:
        first = os.path.basename(cmdline[0])
        names.add(first)
        if len(cmdline) > 1 and _INTERPRETER.match(first):
            script = os.path.basename(cmdline[1])
            if script and not cmdline[1].startswith("-"):
                names.add(script)
                names.add(os.path.splitext(script)[0])
    return names


@dataclass(slots=True)
class _Watched:
    name: str
    pid: int
    create_time: float
    fd: int | None = None  # the pidfd, None when polled
    poller: asyncio.Task[None] | None = field(default=None)


class ProcessWatch:
    def __init__(
        self,
        names: Iterable[str],
        node: str,
        bus: Bus,
        metrics: Metrics,
        *,
        interval: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._names = tuple(dict.fromkeys(names))
        self._node = node
        self._bus = bus
        self._metrics = metrics
        self._interval = interval
        self._clock = clock
        self._watched: dict[int, _Watched] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pidfd = hasattr(os, "pidfd_open")

    def watched(self) -> dict[int, str]:
        """pid -> name of the processes watched now."""
        return {pid: w.name for pid, w in self._watched.items()}

    async def run(self, started: asyncio.Event) -> None:
        if not self._names:
            started.set()
            await asyncio.Future()  # nothing to watch; stay as a well-behaved task
        self._loop = asyncio.get_running_loop()
        try:
            running = self._adopt(await self._scan(), announce=False)
            for name in self._names:
                if name not in running:
                    self._emit("process.exited", name, None, None)
            log.info(
                "process watch: %s (%s)",
                ", ".join(self._names),
                "pidfd" if self._pidfd else "polling",
            )
            started.set()
            while True:
                await asyncio.sleep(self._interval)
                try:
                    found = await self._scan()
                except Exception:
                    log.exception("process scan failed")
                    continue
                self._adopt(found, announce=True)
        finally:
            for pid in list(self._watched):
                self._forget(pid)

    async def _scan(self) -> list[tuple[str, int, float]]:
        """(watched name, pid, create time) of each live process of a watched name.

        It runs in the loop, a few processes at a time: in a worker thread it
        would hold the GIL for milliseconds and delay the pidfd callbacks that
        make exits immediate; here they wait for one chunk at most.
        """
        wanted = set(self._names)
        me = os.getpid()
        out: list[tuple[str, int, float]] = []
        for i, proc in enumerate(psutil.process_iter(_ATTRS)):
            if i % _CHUNK == _CHUNK - 1:
                await asyncio.sleep(0)
            info = proc.info
            if proc.pid == me or info.get("status") == psutil.STATUS_ZOMBIE:
                continue
            hits = wanted & process_names(info.get("name") or "", info.get("cmdline"))
            for name in self._names:
                if name in hits:
                    out.append((name, proc.pid, info.get("create_time") or 0.0))
                    break
        return out

    def _adopt(self, found: list[tuple[str, int, float]], *, announce: bool) -> set[str]:
        """Watch the newly found processes; the names that have a live one."""
        running: set[str] = set()
        for name, pid, created in found:
            known = self._watched.get(pid)
            if known is not None and known.create_time == created:
                running.add(name)
                continue
            if known is not None:  # the pid was reused before we saw the exit
                self._exited(pid)
            if self._watch(name, pid, created):
                running.add(name)
                if announce:
                    self._emit("process.started", name, pid, None)
        return running

    def _watch(self, name: str, pid: int, created: float) -> bool:
        watched = _Watched(name, pid, created)
        assert self._loop is not None
        if self._pidfd:
            try:
                watched.fd = os.pidfd_open(pid)
            except ProcessLookupError:
                return False  # gone between scan and now
            except OSError:
                self._pidfd = False  # e.g. seccomp or an old kernel: poll from now on
        if not _same_process(pid, created):  # the pid was reused since the scan
            if watched.fd is not None:
                os.close(watched.fd)
            return False
        self._watched[pid] = watched
        if watched.fd is not None:
            self._loop.add_reader(watched.fd, self._exited, pid)
        else:
            watched.poller = self._loop.create_task(self._poll(pid, created))
        return True

    async def _poll(self, pid: int, created: float) -> None:
        while True:  # only where pidfds are missing
            if not _same_process(pid, created):
                break
            await asyncio.sleep(_POLL)
        self._exited(pid)

    def _exited(self, pid: int) -> None:
        watched = self._watched.get(pid)
        if watched is None:
            return
        code = _exit_code(watched.fd) if watched.fd is not None else None
        self._forget(pid)
        self._emit("process.exited", watched.name, pid, code)

    def _forget(self, pid: int) -> None:
        watched = self._watched.pop(pid, None)
        if watched is None:
            return
        if watched.fd is not None:
            if self._loop is not None:
                self._loop.remove_reader(watched.fd)
            os.close(watched.fd)
        if watched.poller is not None and watched.poller is not asyncio.current_task():
            watched.poller.cancel()

    def _emit(self, kind: str, name: str, pid: int | None, code: int | None) -> None:
        raw: dict[str, object] = {"event": kind, "host": self._node, "name": name, "pid": pid}
        labels = {"host": self._node, "name": name}
        if pid is not None:
            labels["pid"] = str(pid)
        if kind == "process.exited":
            raw["exit_code"] = code
            if code is not None:
                labels["exit_code"] = str(code)
        self._bus.offer(Event(kind, self._clock(), labels, raw, "host"))
        log.info("%s: %s pid %s exit_code %s", kind, name, pid, code)


def _same_process(pid: int, created: float) -> bool:
    """Whether ``pid`` is still the live (not zombie) process created at ``created``."""
    try:
        proc = psutil.Process(pid)
        return proc.create_time() == created and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _exit_code(fd: int) -> int | None:
    """The exit status of our own child, peeked without reaping; None for others."""
    with contextlib.suppress(ChildProcessError, OSError, AttributeError):
        result = os.waitid(os.P_PIDFD, fd, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        if result is None:
            return None
        if result.si_code == os.CLD_EXITED:
            return result.si_status
        return -result.si_status
    return None
