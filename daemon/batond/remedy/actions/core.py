"""What every action shares: the call it receives, the result it returns, shared
resources, and how a kind declares the ``with:`` keys it takes."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    import asyncio

    import aiohttp

__all__ = [
    "TAIL_BYTES",
    "Action",
    "ActionContext",
    "ActionKeys",
    "ActionKind",
    "ActionResult",
    "Approvals",
    "Denied",
    "Key",
    "Publish",
    "RemoteAsk",
    "StepCall",
    "Tail",
]

#: How much of stdout/stderr (and http bodies) a step keeps: the last 4 KiB.
TAIL_BYTES = 4096

Publish = Callable[[str, bytes, int, bool], Awaitable[None]]
#: A central instance's remote requests (batond.fleet.remote): (host, playbook, params) ->
#: the agent's signed outcome report, verified; ActionError when it cannot be sent.
RemoteAsk = Callable[[str, str, Mapping[str, Any]], Awaitable[Mapping[str, Any]]]


@dataclass(frozen=True, slots=True)
class ActionResult:
    """How one attempt ended; ``steps.NAME`` in later templates shows these fields."""

    ok: bool
    exit_code: int | None = None
    stdout: str = ""
    stderr: str = ""
    status: int | None = None  # http status
    json: Any = None  # http response body, when it was JSON
    detail: str = ""  # why it failed, in words
    # further fields of steps.NAME (a nested playbook's outputs, a foreach's items ...)
    extra: Mapping[str, Any] | None = None

    def view(self) -> dict[str, Any]:
        """The mapping templates and ``when:`` see as ``steps.NAME``."""
        view = {
            "ok": self.ok,
            "exit_code": self.exit_code,
            "stdout": self.stdout,
            "stderr": self.stderr,
            "status": self.status,
            "json": self.json,
        }
        if self.extra:
            view.update(self.extra)
        return view


class Denied(Exception):
    """An approval step was denied by an operator; the run ends ``denied``."""


class Approvals:
    """Runs waiting at an approval step, by run id; ``batond approve/deny`` settle them.

    A run with approval steps in parallel branches waits at each; one verdict
    settles all of them.
    """

    def __init__(self) -> None:
        self._waiting: dict[int, list[asyncio.Future[bool]]] = {}

    def waiting(self) -> list[int]:
        return sorted(self._waiting)

    async def wait(self, run_id: int) -> bool:
        """True when approved, False when denied; the step's timeout bounds it."""
        import asyncio

        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(run_id, []).append(fut)
        try:
            return await fut
        finally:
            futures = self._waiting.get(run_id, [])
            if fut in futures:
                futures.remove(fut)
                if not futures:
                    del self._waiting[run_id]

    def settle(self, run_id: int, approved: bool) -> bool:
        """False when the run is not waiting for approval."""
        futures = [f for f in self._waiting.pop(run_id, []) if not f.done()]
        for fut in futures:
            fut.set_result(approved)
        return bool(futures)


@dataclass
class ActionContext:
    """Resources shared by all runs; the daemon builds one and closes it at exit."""

    mqtt_publish: Publish | None = None  # the MQTT client's publish, when MQTT is configured
    remote: RemoteAsk | None = None  # a central instance's requests to agents (fleet)
    systemctl: tuple[str, ...] = ("systemctl",)  # ("systemctl", "--user") for user units
    ansible_playbook: str = "ansible-playbook"
    approvals: Approvals = field(default_factory=Approvals)
    kill_grace: float = 2.0  # SIGTERM -> SIGKILL of a process group that timed out
    _session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        """One HTTP client session for every http/notify step, made on first use."""
        if self._session is None or self._session.closed:
            import aiohttp

            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=None),  # the step timeout bounds requests
                trust_env=False,
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


@dataclass(frozen=True, slots=True)
class StepCall:
    """One attempt of one step, as an action sees it (``args`` already rendered)."""

    run_id: int
    path: str
    args: Mapping[str, Any]
    ctx: ActionContext
    # True: the run waits for an operator (waiting_approval); False: it runs again
    awaiting_approval: Callable[[bool], Awaitable[None]]


class Tail:
    """Reads a pipe without blocking the loop, keeping only the last bytes.

    The reader never waits for end-of-file: a command that leaves a background
    child holding the pipe (a restart that daemonises) must not hold the step.
    """

    def __init__(self, fd: int, limit: int = TAIL_BYTES) -> None:
        self.fd = fd
        self.limit = limit
        self.buf = bytearray()
        self.truncated = False
        import asyncio

        os.set_blocking(fd, False)
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(fd, self._read)
        self._open = True

    def _read(self) -> bool:
        """Read what is there; False at end-of-file or when nothing is left."""
        try:
            chunk = os.read(self.fd, 65536)
        except BlockingIOError:
            return False
        except OSError:
            chunk = b""
        if not chunk:
            self._loop.remove_reader(self.fd)
            return False
        self.buf += chunk
        if len(self.buf) > self.limit:
            del self.buf[: len(self.buf) - self.limit]
            self.truncated = True
        return True

    def finish(self) -> str:
        """Drain what the exited process wrote, close the pipe, return the tail as text."""
        if self._open:
            while self._read():
                pass
            self._loop.remove_reader(self.fd)
            os.close(self.fd)
            self._open = False
        return self.buf.decode("utf-8", errors="replace")


#: The one protocol of every action kind.
Action = Callable[[StepCall], Awaitable[ActionResult]]


# -- what a kind declares -------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Key:
    """One ``with:`` key: its kind, and whether ``{{ }}`` may produce it.

    kinds: text, text_list, text_map, data, data_map, int, status, qos, bool,
    duration, choice (one of ``choices``), ref (a playbook name), branches.
    Playbook validation (:mod:`batond.load.playbooks`) reads and checks each
    kind, and generates the JSON schema of ``batond schema`` from these.
    """

    kind: str
    templated: bool = True
    choices: tuple[str, ...] = ()
    description: str = ""


class ActionKeys(NamedTuple):
    """The ``with:`` keys of one action kind."""

    keys: Mapping[str, Key]
    required: tuple[str, ...] = ()  # keys that must be given
    one_of: tuple[str, ...] = ()  # keys of which exactly one must be given


@dataclass(frozen=True, slots=True)
class ActionKind:
    """An action kind as playbooks name it, the keys it takes and what runs it.

    ``run`` is None for control flow that the step executor runs itself
    (``playbook``, ``parallel``: :mod:`batond.remedy.actions.flow`).
    """

    name: str
    run: Action | None
    keys: ActionKeys
