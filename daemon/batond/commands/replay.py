"""``batond replay EVENTS.jsonl``: recorded inputs through the rules, nothing executed.

Each input's own ``ts`` is the clock (the latest seen; inputs without ``ts``
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

from batond.engine.engine import NO_RUN, Engine
from batond.engine.governor import HOST_RESOLUTION_S, Governor
from batond.engine.types import Decision, Output
from batond.errors import ConfigError, InputError
from batond.events import Sample, item_from_json

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


class _Replay:
    def __init__(self, engine: Engine, out: IO[bytes], as_json: bool, models: Any) -> None:
        self.engine = engine
        self.out = out
        self.fmt: Callable[[Decision], bytes] = _decision_json if as_json else _decision_text
        self.models = models
        self.events = 0
        self.decisions = 0
        self.rejected = 0

    def emit(self, outputs: Iterable[Output]) -> None:
        for o in outputs:
            if type(o) is Decision:
                self.decisions += 1
                self.out.write(self.fmt(o))
                if o.playbook is not None:  # the run starts and ends at once, no outcome
                    self.emit(self.engine.record_outcome(o.rule, o.playbook, o.key, NO_RUN, o.ts))

    def reject(self, lineno: int, reason: str) -> None:
        self.rejected += 1
        if self.rejected <= _MAX_WARNINGS:
            print(f"line {lineno}: skipped: {reason}", file=sys.stderr)

    def run(self, lines: Iterable[bytes]) -> None:
        """The hot loop: kept flat on purpose (it runs once per input)."""
        engine = self.engine
        loads = orjson.loads
        could_match = engine.index.could_match
        seen = engine.governor.hosts_seen
        note_host = engine.governor.note_host  # bounded: prunes and caps what it keeps
        resolution = HOST_RESOLUTION_S
        models = self.models
        now = float("-inf")
        deadline: float | None = None
        started = False
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
            self.events += 1
            host = obj.get("host")
            if type(host) is str:
                last = seen.get(host)
                if last is None or now - last >= resolution:
                    note_host(host, now)
            if not started or (deadline is not None and now >= deadline):
                started = True
                self.emit(engine.tick(now))
                deadline = engine.next_deadline()
            if models is None and not could_match(obj):
                continue
            try:
                item = item_from_json(obj, now, "replay")
            except InputError as exc:
                self.events -= 1
                self.reject(lineno, str(exc))
                continue
            score = models.observe(item) if models is not None and type(item) is Sample else 0.0
            outputs = engine.evaluate(item, now, score)
            if outputs:
                self.emit(outputs)
            deadline = engine.next_deadline()


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
) -> _Replay:
    """Run the file through ``engine``; returns the counters."""
    r = _Replay(engine, out, as_json, models)
    with events.open("rb") as f:
        r.run(f)
    return r


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
    r = replay(path, engine, out, args.json, models)
    out.flush()
    elapsed = time.perf_counter() - started
    if r.rejected:
        print(f"rejected={r.rejected} (lines skipped)", file=sys.stderr)
    rate = r.events / elapsed if elapsed > 0 else 0.0
    print(
        f"events={r.events} decisions={r.decisions} elapsed_s={elapsed:.3f} "
        f"events_per_s={rate:.0f}",
        file=sys.stderr,
    )
    return 0
