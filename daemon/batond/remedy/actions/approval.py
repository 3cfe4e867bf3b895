"""``approval``: the run waits in ``waiting_approval`` until approved, denied or timed out."""

from __future__ import annotations

from batond.remedy.actions.core import ActionResult, Denied, StepCall

__all__ = ["run"]


async def run(call: StepCall) -> ActionResult:
    await call.awaiting_approval(True)
    try:
        approved = await call.ctx.approvals.wait(call.run_id)
    finally:
        await call.awaiting_approval(False)
    if not approved:
        raise Denied(f"run {call.run_id} denied at step {call.path}")
    return ActionResult(ok=True, detail="approved")
