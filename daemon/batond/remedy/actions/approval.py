"""``approval``: the run waits in ``waiting_approval`` until approved, denied or timed out."""

from __future__ import annotations

from batond.remedy.actions.core import ActionKeys, ActionKind, ActionResult, Denied, Key, StepCall

__all__ = ["KIND", "run"]


async def run(call: StepCall) -> ActionResult:
    await call.awaiting_approval(True)
    try:
        approved = await call.ctx.approvals.wait(call.run_id)
    finally:
        await call.awaiting_approval(False)
    if not approved:
        raise Denied(f"run {call.run_id} denied at step {call.path}")
    return ActionResult(ok=True, detail="approved")


KIND = ActionKind(
    "approval", run, ActionKeys({"text": Key("text", description="what the approver is asked")})
)
