"""A step's ``with:`` values for one attempt: its templates rendered, each as its key's type."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from batond.engine.expr import EvalError
from batond.engine.templates import render_value
from batond.load.playbooks import ACTION_KEYS, Step
from batond.load.rendering import render_cwd, render_url

__all__ = ["RENDER_ERRORS", "render_args"]

#: What rendering a step's ``with:`` may raise on data it cannot take (the step fails).
RENDER_ERRORS = (EvalError, TypeError, ValueError, AttributeError)

#: (action, key) -> the renderer that keeps templated values inside their component.
_CONFINED: Mapping[tuple[str, str], Callable[[Any, Mapping[str, Any]], Any]] = {
    ("http", "url"): render_url,
    ("notify", "url"): render_url,
    ("exec", "cwd"): render_cwd,
}


def render_args(step: Step, ctx: Mapping[str, Any]) -> dict[str, Any]:
    """The step's ``with:`` values for this attempt; raises EvalError.

    Each templated value stays ONE value of its key's type: a text key gets
    one string (an argv element never splits), a data key keeps JSON types;
    event data in a URL or a working directory stays in the part it fills.
    """
    keys = ACTION_KEYS[step.action]
    out: dict[str, Any] = {}
    for name, compiled in step.args.items():
        confined = _CONFINED.get((step.action, name))
        if confined is not None:
            out[name] = confined(compiled, ctx)
        else:
            value = render_value(compiled, ctx)
            field = keys.get(name)  # None: a set step's NAME (data)
            out[name] = value if field is None else field.kind.rendered(value)
    return out
