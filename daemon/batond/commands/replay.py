"""``batond replay EVENTS.jsonl``: recorded inputs through the rules, nothing executed.

The inputs go through the daemon's own pipeline (:mod:`batond.runtime.pipeline`)
with a ledger that prints and a runner that executes nothing. Each input's own
``ts`` is the clock (the latest seen; inputs without ``ts``
take it). Every decision, suppressed ones included, goes to stdout; the
governor applies as in the daemon with the incident key as the target.
Since no run ever starts, a decision that would start one counts as a run
that starts and ends at once with no outcome: it takes its place in the
cooldown, per-target and rate windows, and an incident that only its run can
resolve resolves at the decision. The last stderr line is
``events=N decisions=M elapsed_s=X events_per_s=Y``, timed from the first
input read.

Fast path: without anomaly models, an input that the match index rules out
(the usual case) is never turned into a Sample or Event, so it is only
checked for being a JSON object with a numeric ``ts``; ``events`` counts the
inputs read, ``rejected`` the lines skipped.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import orjson

from batond.engine.engine import Engine
from batond.engine.governor import Governor
from batond.engine.types import Decision, Resolved
from batond.errors import ConfigError, InputError
from batond.events import item_from_json
from batond.runtime.pipeline import NoRuns, Pipeline, run_now

__all__ = ["main", "replay"]

_MAX_WARNINGS = 10  # bad lines reported one by one; the rest only counted


def _decision_text(d: Decision) -> bytes:
    when = datetime.fromtimestamp(d.ts, UTC).isoformat(timespec="milliseconds")
    what = f"run={d.playbook}" if d.suppressed is None else f"suppressed={d.suppressed}"
    return f"{when.replace('+00:00', 'Z')} {d.rule} {d.key} {what}\n".encode()


def _decision_json(d: Decision) -> bytes:
    obj: dict[str, Any] = {"ts": d.ts, "rule": d.rule, "key": d.key}
    if d.suppressed is None:
        obj["playbook"] = d.playbook
    else:
        obj["suppressed"] = d.suppressed
    obj["severity"] = d.severity
    obj["candidates"] = list(d.candidates)
    return orjson.dumps(obj) + b"\n"


class _Printer:
    """Replay's ledger: every decision, suppressed ones included, goes to ``out``."""

    def __init__(self, out: IO[bytes], as_json: bool) -> None:
        self._write = out.write
        self._fmt: Callable[[Decision], bytes] = _decision_json if as_json else _decision_text
        self.decisions = 0

    async def record_decision(self, decision: Decision) -> tuple[None, None]:
        self.decisions += 1
        self._write(self._fmt(decision))
        return None, None

    async def resolve_incident(self, resolved: Resolved) -> None:
        return None


class _Replay:
    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.events = 0
        self.rejected = 0

    def reject(self, lineno: int, reason: str) -> None:
        self.rejected += 1
        if self.rejected <= _MAX_WARNINGS:
            print(f"line {lineno}: skipped: {reason}", file=sys.stderr)

    async def run(self, lines: Iterable[bytes]) -> None:
        """The hot loop: kept flat on purpose (it runs once per input)."""
        pipeline = self.pipeline
        prefilter = pipeline.prefilter  # notes the host; False: no rule could match
        evaluate = pipeline.evaluate
        next_deadline = pipeline.next_deadline
        inf = float("inf")
        loads = orjson.loads
        now = float("-inf")
        deadline = float("-inf")  # the first input ticks
        events = 0
        for lineno, line in enumerate(lines, 1):
            try:
                obj = loads(line)
            except orjson.JSONDecodeError as exc:
                if line.strip():
                    self.reject(lineno, f"bad_json: {exc}")
                continue
            if type(obj) is not dict:
                self.reject(lineno, "not_object: each line must be a JSON object")
                continue
            ts = obj.get("ts")
            if type(ts) is float or type(ts) is int:
                if ts > now:
                    now = ts
            elif ts is not None:
                self.reject(lineno, f"bad_ts: {ts!r}")
                continue
            events += 1
            wanted = prefilter(obj, now)
            if now >= deadline:
                deadline = await pipeline.tick(now)
            if not wanted:
                continue
            try:
                item = item_from_json(obj, now, "replay")
            except InputError as exc:
                events -= 1
                self.reject(lineno, str(exc))
                continue
            outputs = evaluate(item, now)
            if outputs:
                await pipeline.act(outputs, now, None)
            due = next_deadline()
            deadline = inf if due is None else due
        self.events = events


def _load(args: argparse.Namespace) -> tuple[Engine, Any]:
    from batond.load.config import load_config
    from batond.load.rulefiles import load_rules

    config = load_config(args.config)
    if args.rules:
        rules = load_rules(args.rules)
    else:
        rules = load_rules(list(config.rules), missing_ok=config.path is None)
    governor = Governor(config.governor, shadow=config.mode == "shadow")
    return Engine(rules, governor), _models(config.models)


def _models(paths: Iterable[Path]) -> Any:
    """A ModelSet when the config defines models; None keeps numpy out of the process."""
    existing = [p for p in paths if p.exists()]
    if not existing:
        return None
    from batond.anomaly import ModelSet
    from batond.load.modelfile import load_models

    specs = load_models(existing)
    return ModelSet(specs) if specs else None


def replay(
    events: Path, engine: Engine, out: IO[bytes], as_json: bool, models: Any = None
) -> tuple[int, int, int]:
    """Run the file through the pipeline on ``engine``; (events, decisions, rejected)."""
    printer = _Printer(out, as_json)
    r = _Replay(Pipeline(engine, printer, NoRuns(), models=models))
    with events.open("rb") as f:
        run_now(r.run(f))
    return r.events, printer.decisions, r.rejected


def main(args: argparse.Namespace) -> int:
    try:
        engine, models = _load(args)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    path = Path(args.events)
    if not path.is_file():
        print(f"batond replay: {path}: no such file", file=sys.stderr)
        return 1
    out = sys.stdout.buffer
    started = time.perf_counter()
    events, decisions, rejected = replay(path, engine, out, args.json, models)
    out.flush()
    elapsed = time.perf_counter() - started
    if rejected:
        print(f"rejected={rejected} (lines skipped)", file=sys.stderr)
    rate = events / elapsed if elapsed > 0 else 0.0
    print(
        f"events={events} decisions={decisions} elapsed_s={elapsed:.3f} events_per_s={rate:.0f}",
        file=sys.stderr,
    )
    return 0
