"""``wait``: pause the run (give a restarted service time to come up)."""

from __future__ import annotations

import asyncio

from batond.remedy.actions.core import ActionResult, StepCall

__all__ = ["run"]


async def run(call: StepCall) -> ActionResult:
    await asyncio.sleep(float(call.args.get("duration") or 0.0))
    return ActionResult(ok=True)
