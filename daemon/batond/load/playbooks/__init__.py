"""Playbooks: ordered steps, each one action with templated ``with:`` values, a
timeout, retries and an optional ``when:`` over earlier steps' results; then
``verify:``, ``on_failure:`` and ``escalate:`` (docs/playbooks.md).

- :mod:`~batond.load.playbooks.model`: the frozen types (Playbook, Step, Retry)
- :mod:`~batond.load.playbooks.actions`: each action's declared ``with:`` keys as fields
- :mod:`~batond.load.playbooks.sections`: the playbook and step sections, the
  whole action key table (:data:`ACTION_KEYS`) and :data:`PLAYBOOK_SCHEMA`
- :mod:`~batond.load.playbooks.reader`: reading, with the checks across keys
- :mod:`~batond.load.playbooks.references`: the checks across playbooks
"""

from batond.load.playbooks.model import (
    DEFAULT_MAX,
    DEFAULT_RUN_TIMEOUT,
    DEFAULT_STEP_TIMEOUT,
    MODES,
    ON_INTERRUPT,
    Playbook,
    Retry,
    Step,
)
from batond.load.playbooks.reader import build_playbooks, read_playbooks
from batond.load.playbooks.references import check_references, nested_target
from batond.load.playbooks.sections import ACTION_KEYS, PLAYBOOK_SCHEMA

__all__ = [
    "ACTION_KEYS",
    "DEFAULT_MAX",
    "DEFAULT_RUN_TIMEOUT",
    "DEFAULT_STEP_TIMEOUT",
    "MODES",
    "ON_INTERRUPT",
    "PLAYBOOK_SCHEMA",
    "Playbook",
    "Retry",
    "Step",
    "build_playbooks",
    "check_references",
    "nested_target",
    "read_playbooks",
]
