"""``exec``: run a command from an argv list (never a shell), in its own process group.

The child gets a new session, so a timeout or cancel kills everything it
started (SIGTERM to the group, SIGKILL after a grace). Its exit is awaited on a
pidfd in the event loop: no thread, no polling.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from batond.errors import ActionError
from batond.remedy.actions.core import ActionKeys, ActionKind, ActionResult, Key, StepCall, Tail

if TYPE_CHECKING:
    import asyncio
    import subprocess

__all__ = ["KIND", "kill_group", "run", "run_argv", "wait_exit"]


async def run(call: StepCall) -> ActionResult:
    argv = call.args.get("argv")
    if not isinstance(argv, list | tuple) or not argv or not all(isinstance(a, str) for a in argv):
        raise ActionError("exec: argv must be a non-empty list of strings")
    env = call.args.get("env")
    cwd = call.args.get("cwd")
    return await run_argv(
        argv, env=env if isinstance(env, Mapping) else None, cwd=cwd, grace=call.ctx.kill_grace
    )


KIND = ActionKind(
    "exec",
    run,
    ActionKeys(
        {
            "argv": Key("text_list", description="program and arguments; never a shell"),
            "env": Key("text_map", description="environment added to batond's"),
            "cwd": Key("text", description="working directory"),
        },
        required=("argv",),
    ),
)


async def run_argv(
    argv: Sequence[str],
    *,
    env: Mapping[str, Any] | None = None,
    cwd: str | None = None,
    grace: float = 2.0,
) -> ActionResult:
    """Run ``argv``; the caller's timeout or cancel kills its whole process group."""
    import asyncio
    import subprocess

    extra = {str(k): str(v) for k, v in (env or {}).items()}
    refused = _nul_in(argv, cwd, extra)
    if refused:
        return ActionResult(ok=False, detail=f"cannot run {argv[0]!r}: {refused}")
    full_env = {**os.environ, **extra} if extra else None
    r_out, w_out = os.pipe()
    r_err, w_err = os.pipe()
    try:
        # the fork+exec is what asyncio.create_subprocess_exec does in the loop too
        proc = subprocess.Popen(  # noqa: ASYNC220
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=w_out,
            stderr=w_err,
            env=full_env,
            cwd=cwd or None,
            start_new_session=True,
        )
    except (OSError, ValueError) as exc:
        # ValueError: what the kernel cannot take (an "=" in an env name); pipes close either way
        os.close(r_out)
        os.close(r_err)
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return ActionResult(ok=False, detail=f"cannot run {argv[0]!r}: {reason}")
    finally:
        os.close(w_out)
        os.close(w_err)
    out, err = Tail(r_out), Tail(r_err)
    try:
        code = await wait_exit(proc)
    except BaseException:
        # shielded: a second cancel must not leave the group running
        await asyncio.shield(kill_group(proc, grace))
        out.finish()
        err.finish()
        raise
    ok = code == 0
    detail = "" if ok else (f"killed by signal {-code}" if code < 0 else f"exit code {code}")
    return ActionResult(ok, exit_code=code, stdout=out.finish(), stderr=err.finish(), detail=detail)


def _nul_in(argv: Sequence[str], cwd: str | None, env: Mapping[str, str]) -> str:
    """Why the kernel would refuse these strings (a NUL byte ends a C string), or ""."""
    for i, arg in enumerate(argv):
        if "\0" in arg:
            return f"argv[{i}] holds a NUL byte"
    if cwd and "\0" in cwd:
        return "cwd holds a NUL byte"
    for name, value in env.items():
        if "\0" in name or "\0" in value:
            return f"env {name!r} holds a NUL byte"
    return ""


async def wait_exit(proc: subprocess.Popen[bytes]) -> int:
    """The exit code once ``proc`` exits (negative: killed by that signal)."""
    import asyncio

    code = proc.poll()
    if code is not None:
        return code
    fd = os.pidfd_open(proc.pid)
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    loop.add_reader(fd, _settle, done)
    try:
        await done
    finally:
        loop.remove_reader(fd)
        os.close(fd)
    return proc.wait()


def _settle(done: asyncio.Future[None]) -> None:
    if not done.done():
        done.set_result(None)


async def kill_group(proc: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM the process group, SIGKILL it after ``grace`` seconds, reap the leader."""
    import asyncio

    _signal_group(proc.pid, signal.SIGTERM)
    try:
        async with asyncio.timeout(grace):
            await wait_exit(proc)
    except TimeoutError:
        pass
    # members that outlived their leader (or ignore SIGTERM) go too
    _signal_group(proc.pid, signal.SIGKILL)
    await wait_exit(proc)


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass
