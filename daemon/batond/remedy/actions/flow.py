"""``playbook`` and ``parallel``: control flow, not actions.

The step executor (:mod:`batond.remedy.steps`) runs them itself: a nested
playbook's steps inside the same run, and parallel branches of steps. They
are declared here so that playbook validation and ``batond schema`` know
their ``with:`` keys like every other kind's.
"""

from __future__ import annotations

from batond.remedy.actions.core import ActionKeys, ActionKind, Key

__all__ = ["ASSERT", "FOREACH", "PARALLEL", "PLAYBOOK", "SET", "WAIT_UNTIL"]

PLAYBOOK = ActionKind(
    "playbook",
    None,
    ActionKeys(
        {
            "name": Key("ref", templated=False, description="a playbook name, or a template"),
            "params": Key("data_map"),
        },
        required=("name",),
    ),
)
ASSERT = ActionKind(
    "assert",
    None,
    ActionKeys(
        {
            "that": Key("expression", templated=False, description="must be true"),
            "message": Key("text", description="why the step failed, when it did"),
        },
        required=("that",),
    ),
)
#: ``with:`` of ``set`` is NAME: value pairs (any names): see load.playbooks
SET = ActionKind("set", None, ActionKeys({}))
FOREACH = ActionKind(
    "foreach",
    None,
    ActionKeys(
        {
            "items": Key("data", description="a list (a mapping gives {key, value} items)"),
            "concurrency": Key("int", templated=False, description="items at once (default 1)"),
            "steps": Key("steps", templated=False, description="the block run per item"),
        },
        required=("items", "steps"),
    ),
)
WAIT_UNTIL = ActionKind(
    "wait_until",
    None,
    ActionKeys(
        {
            "that": Key("expression", templated=False, description="the condition waited for"),
            "every": Key("duration", templated=False, description="between polls (default 5s)"),
            "steps": Key("steps", templated=False, description="check steps run before each poll"),
        },
        required=("that",),
    ),
)
PARALLEL = ActionKind(
    "parallel",
    None,
    ActionKeys({"branches": Key("branches", templated=False)}, required=("branches",)),
)
