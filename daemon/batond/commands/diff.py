"""``batond replay --diff OLD_RULES NEW_RULES (EVENTS... | --recorded)``: what a rule
change would have decided differently over the same inputs.

Both rule sets run in one pass over the inputs (:class:`~batond.commands.replay.Feed`
with two lanes: each line decoded once, each input parsed once), each on the
daemon's own pipeline with its own engine, governor and cooldowns, so a decision
here is what that rule set would have decided. The anomaly model, when the config
has one, scores each sample once for both (both see the same samples in the same
order, so the scores would be the same).

Pairing (docs/tuning.md): the decisions of one (rule, key) are compared in time
order. Decisions at the same time pair first; between those, an old and a new
decision pair when they are at most ``--window`` apart (default 1h), earliest
first; what stays unpaired is ``gone`` (old only) or ``new`` (new only). A pair
at different times is ``earlier`` or ``later`` (the new decision's time against
the old one's); a pair at the same time whose result differs (``run=PLAYBOOK`` or
``suppressed=REASON``) is ``reason_changed``. Identical pairs are no difference.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import IO, Any

import orjson

from batond.commands.replay import (
    Feed,
    Lane,
    config_rules,
    decision_time,
    input_paths,
    prepared,
    setup,
    since_cutoff,
)
from batond.engine.types import Decision, Resolved
from batond.events import Sample
from batond.runtime.pipeline import NoRuns, Pipeline, Scorer
from batond.units import format_duration, parse_duration

__all__ = ["Change", "Difference", "Seen", "compare", "main"]

DEFAULT_WINDOW = 3600.0


class Change(StrEnum):
    NEW = "new"
    GONE = "gone"
    EARLIER = "earlier"
    LATER = "later"
    REASON_CHANGED = "reason_changed"


@dataclass(frozen=True, slots=True)
class Seen:
    """One decision as the diff compares it."""

    ts: float
    rule: str
    key: str
    result: str  # run=PLAYBOOK or suppressed=REASON


@dataclass(frozen=True, slots=True)
class Difference:
    change: Change
    rule: str
    key: str
    old: Seen | None
    new: Seen | None

    @property
    def ts(self) -> float:
        """When it happened first (for ordering examples)."""
        times = [s.ts for s in (self.old, self.new) if s is not None]
        return min(times)

    def as_json(self) -> dict[str, Any]:
        old, new = self.old, self.new
        shift = new.ts - old.ts if old is not None and new is not None else None
        return {
            "change": self.change.value,
            "rule": self.rule,
            "key": self.key,
            "old_ts": old.ts if old is not None else None,
            "new_ts": new.ts if new is not None else None,
            "shift_s": shift,
            "old": old.result if old is not None else None,
            "new": new.result if new is not None else None,
        }


def seen(d: Decision) -> Seen:
    return Seen(d.ts, d.rule, d.key, d.verdict)


class _Collector:
    """A lane's ledger: keeps every decision, prints nothing."""

    def __init__(self) -> None:
        self.decisions: list[Seen] = []

    async def record_decision(self, decision: Decision) -> tuple[None, None]:
        self.decisions.append(seen(decision))
        return None, None

    async def resolve_incident(self, resolved: Resolved) -> None:
        return None


class _ScoreOnce:
    """The model both lanes share: each sample is scored (and trains its series) once."""

    def __init__(self, models: Scorer) -> None:
        self._models = models
        self._last: Sample | None = None
        self._score = 0.0
        self.extras: list[Sample] = []  # what the host models made of the last sample

    def score(self, item: Sample) -> float:
        if item is not self._last:
            self._last = item
            self._score = self._models.observe(item)
            self.extras = self._models.take_synthetic() if self._models.synthetic else []
        return self._score


class _LaneScores:
    """One lane's view of the shared model (a :class:`~batond.runtime.pipeline.Scorer`)."""

    def __init__(self, shared: _ScoreOnce) -> None:
        self._shared = shared
        self.synthetic: list[Sample] = []

    def observe(self, sample: Sample) -> float:
        score = self._shared.score(sample)
        self.synthetic = self._shared.extras
        return score

    def take_synthetic(self) -> list[Sample]:
        out, self.synthetic = self.synthetic, []
        return list(out)


# -- pairing ---------------------------------------------------------------------------


def compare(old: Sequence[Seen], new: Sequence[Seen], window: float) -> list[Difference]:
    """Every difference, grouped by (rule, key) and in time order within each."""
    groups: dict[tuple[str, str], tuple[list[Seen], list[Seen]]] = {}
    for side, decisions in ((0, old), (1, new)):
        for s in decisions:
            groups.setdefault((s.rule, s.key), ([], []))[side].append(s)
    out: list[Difference] = []
    for (rule, key), (o, n) in sorted(groups.items()):
        o.sort(key=_ts)
        n.sort(key=_ts)
        for a, b in _pairs(o, n, window):
            change = _change(a, b)
            if change is not None:
                out.append(Difference(change, rule, key, a, b))
    return out


def _ts(s: Seen) -> float:
    return s.ts


def _change(a: Seen | None, b: Seen | None) -> Change | None:
    if a is None:
        return Change.NEW
    if b is None:
        return Change.GONE
    if b.ts < a.ts:
        return Change.EARLIER
    if b.ts > a.ts:
        return Change.LATER
    return Change.REASON_CHANGED if a.result != b.result else None


def _pairs(
    old: Sequence[Seen], new: Sequence[Seen], window: float
) -> Iterator[tuple[Seen | None, Seen | None]]:
    """Same-time pairs are anchors; between anchors, pairs within the window."""
    i = j = 0
    start_i = start_j = 0
    while i < len(old) and j < len(new):
        if old[i].ts == new[j].ts:
            yield from _window_pairs(old[start_i:i], new[start_j:j], window)
            yield old[i], new[j]
            i += 1
            j += 1
            start_i, start_j = i, j
        elif old[i].ts < new[j].ts:
            i += 1
        else:
            j += 1
    yield from _window_pairs(old[start_i:], new[start_j:], window)


def _window_pairs(
    old: Sequence[Seen], new: Sequence[Seen], window: float
) -> Iterator[tuple[Seen | None, Seen | None]]:
    i = j = 0
    while i < len(old) and j < len(new):
        a, b = old[i], new[j]
        if abs(a.ts - b.ts) <= window:
            yield a, b
            i += 1
            j += 1
        elif a.ts < b.ts:
            yield a, None
            i += 1
        else:
            yield None, b
            j += 1
    for a in old[i:]:
        yield a, None
    for b in new[j:]:
        yield None, b


# -- output ----------------------------------------------------------------------------


def _shift(seconds: float) -> str:
    sign = "+" if seconds >= 0 else "-"
    return sign + format_duration(abs(seconds))


def example_text(d: Difference) -> str:
    """One difference as a line of the report."""
    old, new = d.old, d.new
    if old is None:
        assert new is not None
        return f"{d.change:<14} {d.key} {decision_time(new.ts)} {new.result}"
    if new is None:
        return f"{d.change:<14} {d.key} {decision_time(old.ts)} {old.result}"
    if d.change == Change.REASON_CHANGED:
        return f"{d.change:<14} {d.key} {decision_time(old.ts)} {old.result} -> {new.result}"
    results = old.result if old.result == new.result else f"{old.result} -> {new.result}"
    return (
        f"{d.change:<14} {d.key} {decision_time(old.ts)} -> {decision_time(new.ts)} "
        f"({_shift(new.ts - old.ts)}) {results}"
    )


def report_text(diffs: Sequence[Difference], examples: int, out: IO[str]) -> None:
    """Grouped by rule: counts per change, then the first few by time."""
    if not diffs:
        out.write("no differences\n")
        return
    by_rule: dict[str, list[Difference]] = {}
    for d in diffs:
        by_rule.setdefault(d.rule, []).append(d)
    for rule in sorted(by_rule):
        found = by_rule[rule]
        counts = {c: sum(1 for d in found if d.change == c) for c in Change}
        summary = ", ".join(f"{c} {n}" for c, n in counts.items() if n)
        plural = "" if len(found) == 1 else "s"
        out.write(f"{rule}: {len(found)} difference{plural} ({summary})\n")
        ordered = sorted(found, key=lambda d: (d.ts, d.key))
        for d in ordered[:examples]:
            out.write(f"  {example_text(d)}\n")
        if len(ordered) > examples:
            out.write(f"  ... and {len(ordered) - examples} more\n")


def report_json(diffs: Sequence[Difference], out: IO[bytes]) -> None:
    for d in diffs:
        out.write(orjson.dumps(d.as_json()) + b"\n")


# -- the command -----------------------------------------------------------------------


def _lanes(args: argparse.Namespace) -> tuple[Feed, _Collector, _Collector, list[Any]]:
    """The feed of both lanes, their collectors, the input paths; ConfigError, ValueError."""
    conf = setup(args)
    old_rules = config_rules(conf.config, [args.diff[0]])
    new_rules = config_rules(conf.config, [args.diff[1]])
    paths = input_paths(args, conf.config)
    models = conf.models()
    shared = _ScoreOnce(models) if models is not None else None
    old, new = _Collector(), _Collector()

    def scores() -> _LaneScores | None:
        return _LaneScores(shared) if shared is not None else None

    feed = Feed(
        [
            Lane(Pipeline(conf.engine(old_rules), old, NoRuns(), models=scores())),
            Lane(Pipeline(conf.engine(new_rules), new, NoRuns(), models=scores())),
        ],
        since=since_cutoff(args),
    )
    return feed, old, new, paths


def main(args: argparse.Namespace) -> int:
    ready = prepared(lambda: _lanes(args))
    if ready is None:
        return 1
    feed, old, new, paths = ready
    window = parse_duration(args.window) if args.window is not None else DEFAULT_WINDOW
    started = time.perf_counter()
    feed.run_paths(paths, progress=sys.stderr.isatty())
    diffs = compare(old.decisions, new.decisions, window)
    if args.json:
        report_json(diffs, sys.stdout.buffer)
        sys.stdout.buffer.flush()
    else:
        report_text(diffs, max(0, args.examples), sys.stdout)
        sys.stdout.flush()
    elapsed = time.perf_counter() - started
    if feed.rejected:
        print(f"rejected={feed.rejected} (lines skipped)", file=sys.stderr)
    print(f"elapsed_s={elapsed:.3f}", file=sys.stderr)
    print(
        f"events={feed.events} old_decisions={len(old.decisions)} "
        f"new_decisions={len(new.decisions)} differences={len(diffs)}",
        file=sys.stderr,
    )
    return 0
