"""``batond backtest``: score NAB-format CSV series with the anomaly model.

Each file is one series, fed point by point through the same
:class:`~batond.anomaly.ModelSet` the daemon uses (strictly causal), with
retraining run inline at the point's own timestamp, so the scores written
are exactly what the daemon would have scored.  The last stdout line is
``series=N rows=M elapsed_s=X threshold=T``.  ``--detector host`` scores
SMD-format machines with the host model instead (:mod:`.backtest_host`).
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from batond.anomaly.modelset import ModelSet
from batond.anomaly.spec import DEFAULT_SPEC, ModelSpec
from batond.errors import BatondError, InputError
from batond.events import Sample

__all__ = ["main", "score_rows"]

_METRIC = "backtest"


def main(args: argparse.Namespace) -> int:
    try:
        if getattr(args, "detector", "context") == "host":
            from batond.commands.backtest_host import DEFAULT_HOST_SPEC, run_host

            if len(args.paths) != 1:
                raise InputError("usage", "--detector host takes one SMD_DIR")
            spec = _spec(args.config, args.model, DEFAULT_HOST_SPEC)
            return run_host(Path(args.paths[0]), Path(args.out), spec, args.step)
        spec = _spec(args.config, args.model, DEFAULT_SPEC)
        return _run([Path(p) for p in args.paths], Path(args.out), spec)
    except BatondError as exc:
        text = exc.detail if isinstance(exc, InputError) and exc.detail else exc
        print(f"batond backtest: {text}", file=sys.stderr)
        return 1


def _spec(config: str | None, name: str | None, default: ModelSpec) -> ModelSpec:
    if name is None:
        spec = default
    else:
        from batond.load.config import load_config
        from batond.load.modelfile import load_models

        specs = load_models(list(load_config(config).models))
        found = [s for s in specs if s.name == name]
        if not found:
            known = ", ".join(s.name for s in specs) or "none"
            raise InputError("unknown_model", f"no model {name!r} in the config (models: {known})")
        spec = found[0]
    return spec


def _inputs(paths: list[Path]) -> Iterator[tuple[Path, Path]]:
    """(file, path relative to the PATH it was found under)."""
    for root in paths:
        if root.is_dir():
            for path in sorted(root.rglob("*.csv")):
                yield path, path.relative_to(root)
        elif root.is_file():
            yield root, Path(root.name)
        else:
            raise InputError("missing", f"{root}: no such file or directory")


def _run(paths: list[Path], out: Path, spec: ModelSpec) -> int:
    inputs = list(_inputs(paths))
    progress = sys.stderr.isatty()
    started = time.perf_counter()
    rows = 0
    for i, (path, rel) in enumerate(inputs, 1):
        if progress:
            print(f"\r[{i}/{len(inputs)}] {rel}\x1b[K", end="", file=sys.stderr, flush=True)
        table = _read_csv(path)
        scores = score_rows(spec, [(ts, value) for _, _, ts, value in table])
        _write_csv(out / rel, table, scores)
        rows += len(table)
    if progress:
        print(file=sys.stderr)
    elapsed = time.perf_counter() - started
    print(f"series={len(inputs)} rows={rows} elapsed_s={elapsed:.3f} threshold={spec.threshold}")
    return 0


def score_rows(spec: ModelSpec, points: list[tuple[float, float]]) -> list[float]:
    """Scores of one series of (epoch seconds, value), as the daemon computes them."""
    models = ModelSet([replace(spec, match_metrics=(_METRIC,), match_labels={}, series_by=())])
    labels: dict[str, str] = {}
    scores = []
    for ts, value in points:
        scores.append(models.observe(Sample(_METRIC, value, ts, labels)))
        for job in models.training_jobs(ts):
            job()()
    return scores


def _read_csv(path: Path) -> list[tuple[str, str, float, float]]:
    """Rows as (timestamp text, value text, epoch seconds, value)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError("unreadable", f"{path}: {exc}") from exc
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None or [h.strip() for h in header[:2]] != ["timestamp", "value"]:
        raise InputError("bad_csv", f"{path}:1: expected a header 'timestamp,value'")
    rows = []
    for line, row in enumerate(reader, 2):
        if not row:
            continue
        if len(row) < 2:
            raise InputError("bad_csv", f"{path}:{line}: expected timestamp,value")
        ts_text, value_text = row[0], row[1]
        try:
            value = float(value_text)
        except ValueError:
            raise InputError(
                "bad_csv", f"{path}:{line}: value {value_text!r} is not a number"
            ) from None
        rows.append((ts_text, value_text, _epoch(ts_text, path, line), value))
    return rows


def _epoch(text: str, path: Path, line: int) -> float:
    """ISO 8601 (naive means UTC), or epoch seconds."""
    try:
        if "-" in text[1:]:  # a date; a leading "-" alone is a negative number
            moment = datetime.fromisoformat(text.strip())
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
            return moment.timestamp()
        return float(text)
    except ValueError:
        raise InputError(
            "bad_csv", f"{path}:{line}: timestamp {text!r} is neither ISO 8601 nor epoch seconds"
        ) from None


def _write_csv(path: Path, table: list[tuple[str, str, float, float]], scores: list[float]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", encoding="utf-8", newline="") as fh:
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow(["timestamp", "value", "anomaly_score"])
            for (ts_text, value_text, _, _), score in zip(table, scores, strict=True):
                writer.writerow([ts_text, value_text, repr(score)])
    except OSError as exc:
        raise InputError("unwritable", f"{path}: {exc}") from exc
