"""``ansible``: ``ansible-playbook [--inventory=INV] [--extra-vars=JSON] -- PLAYBOOK``.

Options come first and ``--`` ends them, so a templated playbook such as
``--version`` stays a file name and never becomes an option.
"""

from __future__ import annotations

from collections.abc import Mapping

import orjson

from batond.errors import ActionError
from batond.remedy.actions.core import ActionKeys, ActionKind, ActionResult, Key, StepCall
from batond.remedy.actions.execute import run_argv

__all__ = ["KIND", "run"]


async def run(call: StepCall) -> ActionResult:
    playbook = call.args.get("playbook")
    if not isinstance(playbook, str) or not playbook:
        raise ActionError("ansible: playbook must be a non-empty string")
    argv = [call.ctx.ansible_playbook]
    inventory = call.args.get("inventory")
    if inventory:
        argv.append(f"--inventory={inventory}")  # one word: "-x" cannot become an option
    extra = call.args.get("extra_vars")
    if isinstance(extra, Mapping) and extra:
        # JSON, so values arrive as data: no key=value splitting, no quoting rules
        argv.append("--extra-vars=" + orjson.dumps(dict(extra)).decode())
    argv += ["--", playbook]
    return await run_argv(argv, env={"ANSIBLE_NOCOLOR": "1"}, grace=call.ctx.kill_grace)


KIND = ActionKind(
    "ansible",
    run,
    ActionKeys(
        {"playbook": Key("text"), "inventory": Key("text"), "extra_vars": Key("data_map")},
        required=("playbook",),
    ),
)
