"""``wait``: pause the run (give a restarted service time to come up)."""

from __future__ import annotations

from batond.remedy.actions.core import ActionKeys, ActionKind, ActionResult, Key, StepCall

__all__ = ["KIND", "run"]


async def run(call: StepCall) -> ActionResult:
    import asyncio

    await asyncio.sleep(float(call.args.get("duration") or 0.0))
    return ActionResult(ok=True)


KIND = ActionKind(
    "wait", run, ActionKeys({"duration": Key("duration", templated=False)}, required=("duration",))
)
