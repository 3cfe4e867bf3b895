"""The one machine-readable line each benchmark ends with, for ``bench/run_all.py``.

``BENCH-HEADLINE {"bench": NAME, "figures": {FIGURE: VALUE, ...}}``: the
benchmark's headline figures (those the README quotes), values as numbers or
short strings. Everything else a benchmark prints is for people.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["PREFIX", "emit", "parse"]

PREFIX = "BENCH-HEADLINE "


def emit(bench: str, figures: dict[str, Any]) -> None:
    print(PREFIX + json.dumps({"bench": bench, "figures": figures}), flush=True)


def parse(output: str) -> list[dict[str, Any]]:
    """Every headline in a benchmark's output, in order."""
    return [
        json.loads(line[len(PREFIX) :]) for line in output.splitlines() if line.startswith(PREFIX)
    ]
