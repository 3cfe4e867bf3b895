"""``playbook`` and ``parallel``: control flow, not actions.

The step executor (:mod:`batond.remedy.steps`) runs them itself: a nested
playbook's steps inside the same run, and parallel branches of steps. They
are declared here so that playbook validation and ``batond schema`` know
their ``with:`` keys like every other kind's.
"""

from __future__ import annotations

from batond.remedy.actions.core import ActionKeys, ActionKind, Key

__all__ = ["PARALLEL", "PLAYBOOK"]

PLAYBOOK = ActionKind(
    "playbook",
    None,
    ActionKeys(
        {"name": Key("ref", templated=False), "params": Key("data_map")},
        required=("name",),
    ),
)
PARALLEL = ActionKind(
    "parallel",
    None,
    ActionKeys({"branches": Key("branches", templated=False)}, required=("branches",)),
)
