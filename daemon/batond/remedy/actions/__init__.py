"""Remediation actions: one module per kind.

Each module holds an ``async def run(StepCall) -> ActionResult`` and, beside
it, ``KIND``: the name playbooks use and the ``with:`` keys it takes (an
:class:`ActionKind`). This package collects them; playbook validation
(:mod:`batond.load.playbooks`), ``batond schema`` and the step executor read
the kinds from here, so adding an action is one module and its line in
``_KINDS``. ``playbook`` (nested) and ``parallel`` are control flow that the
step executor runs itself (:mod:`batond.remedy.actions.flow`).

Reading playbooks (``batond check``, ``batond replay``) imports this package
for the key tables only, so an action module imports what it needs to act
(asyncio, subprocess, psutil, aiohttp) inside the functions that act; a test
(tests/test_layers.py) keeps the import of :mod:`batond.load.playbooks` free of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from batond.remedy.actions import (
    ansible,
    approval,
    execute,
    flow,
    http,
    mqtt,
    notify,
    remote,
    signal,
    systemd,
    wait,
)
from batond.remedy.actions.core import (
    Action,
    ActionContext,
    ActionKeys,
    ActionKind,
    ActionResult,
    Approvals,
    Denied,
    Key,
    StepCall,
)

__all__ = [
    "ACTIONS",
    "Action",
    "ActionContext",
    "ActionKeys",
    "ActionKind",
    "ActionResult",
    "Approvals",
    "Denied",
    "Key",
    "StepCall",
    "action_keys",
    "action_kinds",
]

#: Every kind a step may name, in the order documentation and the schema list them.
_KINDS: tuple[ActionKind, ...] = (
    execute.KIND,
    http.KIND,
    systemd.KIND,
    signal.KIND,
    mqtt.KIND,
    notify.KIND,
    wait.KIND,
    approval.KIND,
    ansible.KIND,
    remote.KIND,
    flow.PLAYBOOK,
    flow.PARALLEL,
    flow.ASSERT,
    flow.SET,
    flow.FOREACH,
    flow.WAIT_UNTIL,
)
_BY_NAME: Mapping[str, ActionKind] = MappingProxyType({k.name: k for k in _KINDS})

#: Action kind -> implementation (the step executor runs ``playbook`` and ``parallel``).
ACTIONS: Mapping[str, Action] = MappingProxyType(
    {k.name: k.run for k in _KINDS if k.run is not None}
)


def action_kinds() -> tuple[str, ...]:
    """The name of every kind a step's ``action:`` may be, control flow included."""
    return tuple(_BY_NAME)


def action_keys(kind: str) -> ActionKeys:
    """The ``with:`` keys of ``kind``; KeyError for a name not in :func:`action_kinds`."""
    return _BY_NAME[kind].keys
