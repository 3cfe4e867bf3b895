"""``systemd``: ``systemctl VERB UNIT`` (argv, no shell)."""

from __future__ import annotations

from batond.errors import ActionError
from batond.remedy.actions.core import ActionKeys, ActionKind, ActionResult, Key, StepCall
from batond.remedy.actions.execute import run_argv

__all__ = ["KIND", "VERBS", "run"]

VERBS = ("start", "stop", "restart", "reload")


async def run(call: StepCall) -> ActionResult:
    unit = call.args.get("unit")
    verb = call.args.get("verb", "restart")
    if not isinstance(unit, str) or not unit or unit.startswith("-"):
        raise ActionError(f"systemd: bad unit name {unit!r}")
    if verb not in VERBS:
        raise ActionError(f"systemd: verb must be one of {', '.join(VERBS)}; got {verb!r}")
    argv = [*call.ctx.systemctl, verb, "--", unit]
    return await run_argv(argv, grace=call.ctx.kill_grace)


KIND = ActionKind(
    "systemd",
    run,
    ActionKeys(
        {"unit": Key("text"), "verb": Key("choice", choices=VERBS)},
        required=("unit", "verb"),
    ),
)
