"""``remote``: a central instance asks an agent to run one of the agent's playbooks.

The request goes signed to ``<prefix>/requests/<host>`` and the step waits, within
its timeout, for the agent's signed outcome report (:mod:`batond.fleet.remote` does
the signing, sending and matching; this module is the step's side of it). The step
is ok when the agent's run succeeded; ``steps.NAME`` carries what the agent said.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from batond.errors import ActionError
from batond.remedy.actions.core import ActionKeys, ActionKind, ActionResult, Key, StepCall

__all__ = ["KIND", "NOT_CENTRAL", "run"]

NOT_CENTRAL = "remote: only a central instance sends remote requests (fleet: {role: central})"
#: The fields of the agent's outcome report that ``steps.NAME`` shows.
_SHOWN = ("host", "run", "outcome", "run_outcome", "reason", "detail")


async def run(call: StepCall) -> ActionResult:
    ask = call.ctx.remote
    if ask is None:
        raise ActionError(NOT_CENTRAL)
    host, playbook = call.args.get("host"), call.args.get("playbook")
    if not isinstance(host, str) or not host:
        raise ActionError(f"remote: bad host {host!r}")
    if not isinstance(playbook, str) or not playbook:
        raise ActionError(f"remote: bad playbook {playbook!r}")
    params = call.args.get("params") or {}
    if not isinstance(params, Mapping):
        raise ActionError(f"remote: params must be a mapping, not {type(params).__name__}")
    report = await ask(host, playbook, params)
    return _result(report)


def _result(report: Mapping[str, Any]) -> ActionResult:
    extra: dict[str, Any] = {k: report.get(k) for k in _SHOWN}
    extra["request"] = report.get("id")
    ok = report.get("outcome") == "succeeded"
    why = f"{report.get('outcome')}"
    if report.get("reason"):
        why += f": {report.get('reason')}"
    if report.get("detail"):
        why += f": {report.get('detail')}"
    detail = "" if ok else f"the agent {report.get('host')} reported {why}"
    return ActionResult(ok=ok, detail=detail, extra=extra)


KIND = ActionKind(
    "remote",
    run,
    ActionKeys(
        {
            "host": Key("text", description="the agent's fleet host name"),
            "playbook": Key("text", description="a playbook of the agent's own files"),
            "params": Key("data_map", description="plain values the agent's playbook takes"),
        },
        required=("host", "playbook"),
    ),
)
