"""``batond backtest --detector host SMD_DIR --out DIR``: the host model on SMD-format machines.

Each machine is a folder holding ``train.csv.gz`` and ``test.csv.gz`` (or
``.csv``): a header ``timestamp,<metric>,...`` and one row per time step.
Every row is fed metric by metric through the same
:class:`~batond.anomaly.ModelSet` the daemon uses (a host model whose metrics
are the file's columns, the machine as its host), with the training jobs run
inline at each row's own time: the train half is learned (its first fit and
retraining included), then the test half is scored strictly causally, each
vector before it is learned.  Writes ``DIR/<machine>/scores.csv``
(``timestamp,score``: what ``smd_score.py`` reads) and
``DIR/<machine>/top_metrics.csv`` (``timestamp,top_metric,top_metrics``).
"""

from __future__ import annotations

import csv
import gzip
import io
import sys
import time
from dataclasses import replace
from pathlib import Path

from batond.anomaly.modelset import ModelSet
from batond.anomaly.spec import DEFAULT_SPEC, ModelSpec
from batond.errors import InputError
from batond.events import Sample

__all__ = ["DEFAULT_HOST_SPEC", "run_host", "score_machine"]

# the built-in host model: the default parameters with detector host
DEFAULT_HOST_SPEC = replace(DEFAULT_SPEC, name="host", detector="host")

Table = tuple[list[str], list[float], list[list[float]]]  # metrics, timestamps, rows


def run_host(root: Path, out: Path, spec: ModelSpec, step: float) -> int:
    if spec.detector != "host":
        raise InputError("bad_model", f"model {spec.name!r} is not a detector: host model")
    if not root.is_dir():
        raise InputError("missing", f"{root}: no such directory")
    machines = sorted(p for p in root.iterdir() if _half(p, "train") is not None)
    if not machines:
        raise InputError("missing", f"{root}: no machine folder with a train.csv(.gz)")
    started = time.perf_counter()
    rows = 0
    for i, folder in enumerate(machines, 1):
        if sys.stderr.isatty():
            print(f"\r[{i}/{len(machines)}] {folder.name}\x1b[K", end="", file=sys.stderr)
        train, test = (_read(folder, half) for half in ("train", "test"))
        if train[0] != test[0]:
            raise InputError("bad_csv", f"{folder}: train and test name different metrics")
        scored = score_machine(spec, folder.name, train, test, step)
        _write(out / folder.name, test[1], scored)
        rows += len(test[1])
    elapsed = time.perf_counter() - started
    print(
        f"machines={len(machines)} rows={rows} elapsed_s={elapsed:.3f} threshold={spec.threshold}"
    )
    return 0


def score_machine(
    spec: ModelSpec, host: str, train: Table, test: Table, step: float
) -> list[Sample]:
    """The ``host_anomaly`` sample of every test row, as the daemon computes them."""
    metrics = train[0]
    model = replace(spec, match_metrics=tuple(metrics), match_labels={}, series_by=("host",))
    models = ModelSet([model])
    labels = {"host": host}
    out: list[Sample] = []
    for half, keep in ((train, False), (test, True)):
        for ts_row, row in zip(half[1], half[2], strict=True):
            ts = ts_row * step
            for metric, value in zip(metrics, row, strict=True):
                models.observe(Sample(metric, value, ts, labels))
            made = models.take_synthetic()
            if len(made) != 1:  # every row completes exactly one vector
                raise InputError("bad_csv", f"{host}: row at {ts_row} made {len(made)} vectors")
            if keep:
                out.append(made[0])
            for job in models.training_jobs(ts):
                job()()
    return out


def _half(folder: Path, half: str) -> Path | None:
    for name in (f"{half}.csv.gz", f"{half}.csv"):
        if (folder / name).is_file():
            return folder / name
    return None


def _read(folder: Path, half: str) -> Table:
    path = _half(folder, half)
    if path is None:
        raise InputError("missing", f"{folder}: no {half}.csv(.gz)")
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        lines = raw.decode("utf-8").splitlines()
    except (OSError, UnicodeDecodeError, EOFError, gzip.BadGzipFile) as exc:
        raise InputError("unreadable", f"{path}: {exc}") from exc
    header = [h.strip() for h in lines[0].split(",")] if lines else []
    if len(header) < 3 or header[0] != "timestamp":
        raise InputError("bad_csv", f"{path}:1: expected a header timestamp,<metric>,<metric>,...")
    times: list[float] = []
    rows: list[list[float]] = []
    for number, line in enumerate(lines[1:], 2):
        if not line.strip():
            continue
        cells = line.split(",")
        if len(cells) != len(header):
            raise InputError("bad_csv", f"{path}:{number}: expected {len(header)} columns")
        try:
            values = [float(c) for c in cells]
        except ValueError:
            raise InputError("bad_csv", f"{path}:{number}: a value is not a number") from None
        times.append(values[0])
        rows.append(values[1:])
    return header[1:], times, rows


def _write(folder: Path, times: list[float], scored: list[Sample]) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / "scores.csv", "w", encoding="utf-8") as fh:
            fh.write("timestamp,score\n")
            fh.writelines(f"{_num(t)},{s.value!r}\n" for t, s in zip(times, scored, strict=True))
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(["timestamp", "top_metric", "top_metrics"])
        for t, s in zip(times, scored, strict=True):
            writer.writerow([_num(t), s.labels["top_metric"], s.labels["top_metrics"]])
        (folder / "top_metrics.csv").write_text(text.getvalue(), encoding="utf-8")
    except OSError as exc:
        raise InputError("unwritable", f"{folder}: {exc}") from exc


def _num(t: float) -> str:
    return str(int(t)) if t.is_integer() else repr(t)
