"""Remediation actions: one module per kind, each an ``async def run(StepCall) -> ActionResult``.

``playbook`` (nested) and ``parallel`` are control flow and live in the runner.
"""

from __future__ import annotations

from collections.abc import Mapping

from batond.remedy.actions import (
    ansible,
    approval,
    execute,
    http,
    mqtt,
    notify,
    signal,
    systemd,
    wait,
)
from batond.remedy.actions.core import (
    Action,
    ActionContext,
    ActionResult,
    Approvals,
    Denied,
    StepCall,
)

__all__ = [
    "ACTIONS",
    "Action",
    "ActionContext",
    "ActionResult",
    "Approvals",
    "Denied",
    "StepCall",
]

#: Action kind -> implementation (the runner handles ``playbook`` and ``parallel``).
ACTIONS: Mapping[str, Action] = {
    "exec": execute.run,
    "http": http.run,
    "systemd": systemd.run,
    "signal": signal.run,
    "mqtt": mqtt.run,
    "notify": notify.run,
    "wait": wait.run,
    "approval": approval.run,
    "ansible": ansible.run,
}
