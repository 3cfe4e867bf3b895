"""``notify``: a webhook with a Slack-compatible JSON body ``{"text": ...}``."""

from __future__ import annotations

from batond.errors import ActionError
from batond.remedy.actions.core import ActionKeys, ActionKind, ActionResult, Key, StepCall
from batond.remedy.actions.http import request

__all__ = ["KIND", "run"]


async def run(call: StepCall) -> ActionResult:
    url = call.args.get("url")
    if not isinstance(url, str) or not url:
        raise ActionError("notify: url must be a non-empty string")
    text = str(call.args.get("text") or "")
    return await request(
        call.ctx.session(),
        "POST",
        url,
        headers={},
        body={"text": text},
        has_body=True,
        secret_path=True,  # the webhook path is the credential
    )


KIND = ActionKind(
    "notify", run, ActionKeys({"url": Key("text"), "text": Key("text")}, required=("url", "text"))
)
