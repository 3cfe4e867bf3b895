"""``batond replay EVENTS...``: recorded inputs through the rules, nothing executed.

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

Anomaly models train at event time (:class:`TrainedAtEventTime`), as in
``batond backtest``. The inputs are files named on the command line, or (``--recorded``) the
daemon's own recording in ``state_dir/record/``; ``--since`` keeps the inputs
of the last DURATION. ``--diff OLD NEW`` feeds the same inputs to two
pipelines in one pass (:mod:`batond.commands.diff`).

Fast path: without anomaly models, an input that the match index rules out
(the usual case) is never turned into a Sample or Event, so it is only
checked for being a JSON object with a numeric ``ts``; ``events`` counts the
inputs read, ``rejected`` the lines skipped.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, TypeVar

import orjson

from batond.engine.engine import Engine
from batond.engine.governor import Governor
from batond.engine.model import RuleSet
from batond.engine.types import Decision, Resolved
from batond.errors import ConfigError, InputError
from batond.events import Sample, item_from_json
from batond.runtime.pipeline import NoRuns, Pipeline, run_now

__all__ = [
    "Feed",
    "Lane",
    "Setup",
    "TrainedAtEventTime",
    "decision_time",
    "main",
    "prepared",
    "replay",
]

T = TypeVar("T")

_MAX_WARNINGS = 10  # bad lines reported one by one; the rest only counted
_PROGRESS_LINES = 0x1FFFF  # the clock is looked at once per this many lines (plus one)


def decision_time(ts: float) -> str:
    """A decision's time as the text output shows it (UTC, milliseconds)."""
    when = datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")
    return when.replace("+00:00", "Z")


def _decision_text(d: Decision) -> bytes:
    return f"{decision_time(d.ts)} {d.rule} {d.key} {d.verdict}\n".encode()


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


class Lane:
    """One pipeline fed by a :class:`Feed`, its hot-path functions looked up once."""

    __slots__ = ("deadline", "evaluate", "next_deadline", "pipeline", "prefilter")

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.prefilter = pipeline.prefilter  # notes the host; False: no rule could match
        self.evaluate = pipeline.evaluate
        self.next_deadline = pipeline.next_deadline
        self.deadline = float("-inf")  # the first input ticks


class _Progress:
    """``replay: 42% of 1.3 GB, events=N`` on stderr, rewritten in place (a terminal only)."""

    def __init__(self, total_bytes: int) -> None:
        self.total = max(1, total_bytes)
        self.done = 0  # bytes of the files already read
        self.started = time.monotonic()
        self.shown = 0.0

    def show(self, f: IO[bytes], events: int) -> None:
        t = time.monotonic()
        if t - self.shown < 0.5:
            return
        self.shown = t
        pos = self.done + f.tell()
        sys.stderr.write(
            f"\rreplay: {100 * pos / self.total:3.0f}% of {self.total / 1e6:,.0f} MB, "
            f"events={events:,} ({t - self.started:.0f} s)"
        )
        sys.stderr.flush()

    def clear(self) -> None:
        if self.shown:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()


class Feed:
    """Reads input files once and hands each input to every lane in turn.

    One pass for all lanes: each line is decoded once, and turned into a Sample or
    Event once, when the first lane whose rules could match it wants it. Each lane
    keeps its own clock state (timers), but they share ``now``: the inputs' ``ts``.
    """

    def __init__(self, lanes: Sequence[Lane], since: float = float("-inf")) -> None:
        self.lanes = tuple(lanes)
        self.since = since  # inputs with an earlier ts are left out
        self.events = 0
        self.rejected = 0
        self.now = float("-inf")
        self.progress: _Progress | None = None
        self._many = False

    def reject(self, name: str, lineno: int, reason: str) -> None:
        self.rejected += 1
        if self.rejected <= _MAX_WARNINGS:
            where = f"{name}:{lineno}" if self._many else f"line {lineno}"
            print(f"{where}: skipped: {reason}", file=sys.stderr)

    def run_paths(self, paths: Sequence[Path], progress: bool = False) -> None:
        """Every file in order (without an event loop: nothing a lane plugs in waits)."""
        self._many = len(paths) > 1
        if progress:
            self.progress = _Progress(sum(p.stat().st_size for p in paths))
        for path in paths:
            with path.open("rb") as f:
                run_now(self.run(f, str(path)))
            if self.progress is not None:
                self.progress.done += path.stat().st_size
        if self.progress is not None:
            self.progress.clear()

    async def run(self, lines: IO[bytes] | Iterable[bytes], name: str = "") -> None:
        """The hot loop: kept flat on purpose (it runs once per input)."""
        lanes = self.lanes
        loads = orjson.loads
        inf = float("inf")
        now = self.now
        since = self.since
        events = self.events
        progress = self.progress
        for lineno, line in enumerate(lines, 1):
            if progress is not None and not lineno & _PROGRESS_LINES:
                progress.show(lines, events)  # type: ignore[arg-type]
            try:
                obj = loads(line)
            except orjson.JSONDecodeError as exc:
                if line.strip():
                    self.reject(name, lineno, f"bad_json: {exc}")
                continue
            if type(obj) is not dict:
                self.reject(name, lineno, "not_object: each line must be a JSON object")
                continue
            ts = obj.get("ts")
            if type(ts) is float or type(ts) is int:
                if ts < since:
                    continue
                if ts > now:
                    now = ts
            elif ts is not None:
                self.reject(name, lineno, f"bad_ts: {ts!r}")
                continue
            events += 1
            item = None
            for lane in lanes:
                wanted = lane.prefilter(obj, now)
                if now >= lane.deadline:
                    lane.deadline = await lane.pipeline.tick(now)
                if not wanted:
                    continue
                if item is None:
                    try:
                        item = item_from_json(obj, now, "replay")
                    except InputError as exc:
                        events -= 1
                        self.reject(name, lineno, str(exc))
                        break
                outputs = lane.evaluate(item, now)
                if outputs:
                    await lane.pipeline.act(outputs, now, None)
                due = lane.next_deadline()
                lane.deadline = inf if due is None else due
        self.now = now
        self.events = events


class TrainedAtEventTime:
    """The anomaly model as replay drives it: each training job runs at once, at the
    sample's time, as ``batond backtest`` runs them (the daemon runs the same jobs in a
    worker thread within a second), so the scores are the daemon's."""

    def __init__(self, models: Any) -> None:
        self._observe = models.observe
        self._jobs = models.training_jobs
        self.synthetic: Collection[Sample] = models.synthetic  # the model's own list
        self.take_synthetic: Callable[[], list[Sample]] = models.take_synthetic

    def observe(self, sample: Sample) -> float:
        score: float = self._observe(sample)
        for job in self._jobs(sample.ts):
            job()()
        return score


@dataclass(frozen=True, slots=True)
class Setup:
    """What replay builds pipelines from: the config's governor, mode and models."""

    config: Any  # batond.load.config.Config (imported lazily)
    model_paths: tuple[Path, ...]

    def engine(self, rules: RuleSet) -> Engine:
        """A fresh engine and governor over ``rules``, as the daemon would start them."""
        governor = Governor(self.config.governor, shadow=self.config.mode == "shadow")
        return Engine(rules, governor)

    def models(self) -> TrainedAtEventTime | None:
        """Fresh models when the config defines some; None keeps numpy out."""
        if not self.model_paths:
            return None
        from batond.anomaly import ModelSet
        from batond.load.modelfile import load_models

        specs = load_models(list(self.model_paths))
        return TrainedAtEventTime(ModelSet(specs)) if specs else None


def setup(args: argparse.Namespace) -> Setup:
    """The config named by ``-c`` (defaults when absent); ConfigError on a problem."""
    from batond.load.config import load_config

    config = load_config(args.config)
    return Setup(config, tuple(p for p in config.models if p.exists()))


def config_rules(config: Any, paths: Sequence[str] | None) -> RuleSet:
    from batond.load.rulefiles import load_rules

    if paths:
        return load_rules(list(paths))
    return load_rules(list(config.rules), missing_ok=config.path is None)


def input_paths(args: argparse.Namespace, config: Any) -> list[Path]:
    """The files to read in order: EVENTS as named, or the daemon's recording.

    Raises ValueError with the message for the user.
    """
    if args.recorded:
        from batond.intake.recorder import record_dir, recorded_files

        directory = record_dir(config.state_dir)
        files = recorded_files(directory)
        if not files:
            raise ValueError(f"{directory}: no recorded inputs (journal.record not set?)")
        return files
    paths = [Path(p) for p in args.events]
    for path in paths:
        if not path.is_file():
            raise ValueError(f"{path}: no such file")
    return paths


def since_cutoff(args: argparse.Namespace) -> float:
    """The earliest ``ts`` kept (``--since``: that long before now), else -inf."""
    if args.since is None:
        return float("-inf")
    from batond.units import parse_duration

    return time.time() - parse_duration(args.since)


def replay(
    events: Path, engine: Engine, out: IO[bytes], as_json: bool, models: Any = None
) -> tuple[int, int, int]:
    """Run the file through the pipeline on ``engine``; (events, decisions, rejected)."""
    printer = _Printer(out, as_json)
    feed = Feed([Lane(Pipeline(engine, printer, NoRuns(), models=models))])
    feed.run_paths([events])
    return feed.events, printer.decisions, feed.rejected


def prepared(build: Callable[[], T]) -> T | None:
    """What ``build`` sets up for a replay, or None after saying on stderr why not (a
    ConfigError of the config or rule files; a ValueError of an input path or --since)."""
    try:
        return build()
    except ConfigError as exc:
        print(exc, file=sys.stderr)
    except ValueError as exc:
        print(f"batond replay: {exc}", file=sys.stderr)
    return None


def _lane(args: argparse.Namespace, printer: _Printer) -> tuple[Lane, list[Path]]:
    conf = setup(args)
    rules = config_rules(conf.config, args.rules)
    paths = input_paths(args, conf.config)
    return Lane(Pipeline(conf.engine(rules), printer, NoRuns(), models=conf.models())), paths


def usage_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with the combination of arguments, if anything (exit 2)."""
    if bool(args.events) == bool(args.recorded):
        return "name EVENTS files or --recorded (one of them)"
    if args.diff and args.rules:
        return "--rules and --diff exclude each other (--diff names both rule sets)"
    if args.since is not None:
        from batond.units import parse_duration

        try:
            parse_duration(args.since)
        except ValueError as exc:
            return f"--since: {exc}"
    if args.window is not None:
        if not args.diff:
            return "--window is an option of --diff"
        from batond.units import parse_duration

        try:
            parse_duration(args.window)
        except ValueError as exc:
            return f"--window: {exc}"
    return None


def main(args: argparse.Namespace) -> int:
    problem = usage_problem(args)
    if problem is not None:
        print(f"batond replay: {problem}", file=sys.stderr)
        return 2
    if args.diff:
        from batond.commands.diff import main as diff_main

        return diff_main(args)
    out = sys.stdout.buffer
    printer = _Printer(out, args.json)
    ready = prepared(lambda: _lane(args, printer))
    if ready is None:
        return 1
    lane, paths = ready
    feed = Feed([lane])
    feed.since = since_cutoff(args)
    started = time.perf_counter()
    feed.run_paths(paths, progress=sys.stderr.isatty())
    out.flush()
    elapsed = time.perf_counter() - started
    if feed.rejected:
        print(f"rejected={feed.rejected} (lines skipped)", file=sys.stderr)
    rate = feed.events / elapsed if elapsed > 0 else 0.0
    print(
        f"events={feed.events} decisions={printer.decisions} "
        f"elapsed_s={elapsed:.3f} events_per_s={rate:.0f}",
        file=sys.stderr,
    )
    return 0
