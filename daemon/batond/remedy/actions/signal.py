"""``signal``: send a signal to a pid, or to every process of a name."""

from __future__ import annotations

import os
import signal as _signal

from batond.errors import ActionError
from batond.remedy.actions.core import ActionKeys, ActionKind, ActionResult, Key, StepCall

__all__ = ["KIND", "parse_signal", "run"]


def parse_signal(value: object) -> int:
    """``TERM``, ``SIGTERM``, ``15`` -> 15."""
    if isinstance(value, int) and not isinstance(value, bool):
        return int(_signal.Signals(value))
    text = str(value).strip().upper()
    if text.isdigit():
        return int(_signal.Signals(int(text)))
    name = text if text.startswith("SIG") else "SIG" + text
    try:
        return int(_signal.Signals[name])
    except KeyError:
        raise ActionError(f"signal: unknown signal {value!r}") from None


async def run(call: StepCall) -> ActionResult:
    sig = parse_signal(call.args.get("signal", "TERM"))
    pid = call.args.get("pid")
    if pid not in (None, ""):
        try:
            pids = [int(str(pid))]
        except ValueError:
            raise ActionError(f"signal: pid must be an integer, got {pid!r}") from None
    else:
        name = call.args.get("name")
        if not isinstance(name, str) or not name:
            raise ActionError("signal: needs name or pid")
        import psutil

        pids = [p.pid for p in psutil.process_iter(["name"]) if p.info["name"] == name]
        if not pids:
            return ActionResult(ok=False, detail=f"no process named {name!r}")
    sent = []
    for target in pids:
        if target <= 0:
            raise ActionError(f"signal: refusing pid {target}")
        try:
            os.kill(target, sig)
            sent.append(target)
        except ProcessLookupError:
            continue
        except PermissionError as exc:
            return ActionResult(ok=False, detail=f"pid {target}: {exc.strerror}")
    if not sent:
        return ActionResult(ok=False, detail=f"no such process: {pids}")
    return ActionResult(ok=True, stdout=" ".join(map(str, sent)), detail=f"sent {sig} to {sent}")


KIND = ActionKind(
    "signal",
    run,
    ActionKeys(
        {
            "name": Key("text", description="every process of this name"),
            "pid": Key("int"),
            "signal": Key("text", description="TERM, HUP, KILL, ... (default TERM)"),
        },
        one_of=("name", "pid"),
    ),
)
