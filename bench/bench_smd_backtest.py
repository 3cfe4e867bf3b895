"""The product's host model on SMD: `batond backtest --detector host`, then the shared scorer.

Runs ``batond backtest --detector host SMD_DIR --out DIR`` (the daemon's own
scoring path: samples fed metric by metric through ``ModelSet``, the train half
learned, the test half scored causally, hourly retraining included), then
``smd_score.py`` on DIR twice: at the best threshold per machine and at the
model's own threshold (the last stdout line of the backtest).  Prints point-wise
F1 (mean per machine), event recall, point-adjusted F1 (random scores reach
about 0.83 pooled on this split: it proves nothing), and how often the
``top_metric`` at a segment's highest-scoring row is one the SMD authors name in
``interpretation_label.txt`` (and how often one of ``top_metrics`` is).

``--cv KEY=V1,V2,...`` cross-validates one ``params`` key of the host model
leave-one-machine-out: the backtest runs once per value (a model file with
that value, the other parameters the defaults), and each machine is scored
with the value that has the best mean point-wise F1 (best threshold) on the
other machines; the figures printed are those held-out scores.

    .venv/bin/python bench/bench_smd_backtest.py [--data DIR] [--results DIR]
    .venv/bin/python bench/bench_smd_backtest.py --cv learn_below=1.25,1.5,2 [--seeds 3]
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from headline import emit

SHARED = Path(__file__).resolve().parents[2] / "shared"


def backtest(data: Path, out: Path, extra: list[str]) -> float:
    cmd = [sys.executable, "-m", "batond", "backtest", "--detector", "host", str(data)]
    done = subprocess.run([*cmd, "--out", str(out), *extra], capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd)}: exit {done.returncode}: {done.stderr.strip()}")
    last = done.stdout.strip().splitlines()[-1]
    print(last)
    return float(last.rsplit("threshold=", 1)[1])


def scorer(scorer_path: Path, results: Path, data: Path, threshold: float | None) -> Any:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "res.json"
        cmd = [sys.executable, str(scorer_path), "--results", str(results), "--labels", str(data)]
        cmd += ["--json", str(out)] + ([] if threshold is None else ["--threshold", str(threshold)])
        subprocess.run(cmd, check=True, capture_output=True, text=True)
        return json.loads(out.read_text())


def top_accuracy(
    results: Path, data: Path, machines: list[str] | None = None
) -> tuple[float, float, int]:
    """(share with top_metric named, share with any of top_metrics named, segments)."""
    first = listed = total = 0
    for folder in sorted(p for p in data.iterdir() if (p / "interpretation_label.txt").exists()):
        if machines is not None and folder.name not in machines:
            continue
        with open(results / folder.name / "scores.csv") as fh:
            scores = [float(r["score"]) for r in csv.DictReader(fh)]
        with open(results / folder.name / "top_metrics.csv") as fh:
            tops = list(csv.DictReader(fh))
        for line in (folder / "interpretation_label.txt").read_text().split():
            span, _, dims = line.partition(":")
            start, end = (int(x) for x in span.split("-"))
            named = {f"m{int(d) - 1}" for d in dims.split(",") if d}
            peak = max(range(start, min(end, len(scores))), key=scores.__getitem__)
            total += 1
            first += tops[peak]["top_metric"] in named
            listed += bool(named & set(tops[peak]["top_metrics"].split(",")))
    return first / total, listed / total, total


def cross_validate(args: argparse.Namespace, tmp: Path) -> dict[str, float]:
    """Leave-one-machine-out over the values of one host ``params`` key.

    Each value runs ``--seeds`` times under another model name (``cv``, ``cv1``,
    ...: the reservoir's draws hash the name), and a machine's figure for a
    value is the mean over those runs, so one lucky draw does not pick it.
    """
    key, _, values = args.cv.partition("=")
    names = ["cv"] + [f"cv{i}" for i in range(1, args.seeds)]
    runs: dict[str, list[tuple[Path, Any, Any]]] = {}
    for value in values.split(","):
        models = tmp / f"models-{value}"
        models.mkdir(exist_ok=True)
        (models / "host.yaml").write_text(
            "models:\n"
            + "".join(
                f"  - {{name: {name}, match: {{metric: [a, b]}}, detector: host,"
                f" params: {{{key}: {value}}}}}\n"
                for name in names
            )
        )
        config = tmp / f"batond-{value}.yaml"
        config.write_text(f"models: [{models}]\n")
        runs[value] = [_run(args, tmp, config, value, name) for name in names]
        mean = _seed_mean(runs[value], "pw_f1", None)
        print(f"{key}={value}: PW-F1 mean {sum(mean.values()) / len(mean):.3f}")
    machines = sorted(runs[next(iter(runs))][0][1])
    best = {v: _seed_mean(r, "pw_f1", None) for v, r in runs.items()}
    held: dict[str, list[float]] = {"pw": [], "own": [], "ev": [], "pa": []}
    first = listed = total = 0.0
    for m in machines:
        others = [o for o in machines if o != m]
        pick = max(runs, key=lambda v: sum(best[v][o] for o in others))
        print(f"{m}: picked {key}={pick}: PW-F1 {best[pick][m]:.3f}")
        for name, field, fixed in (("pw", "pw_f1", False), ("own", "pw_f1", True),
                                   ("ev", "ev_recall", True), ("pa", "pa_f1", False)):  # fmt: skip
            held[name].append(_seed_mean(runs[pick], field, fixed)[m])
        for results, _, _ in runs[pick]:
            top, any_top, segments = top_accuracy(results, args.data, [m])
            first, listed = first + top * segments, listed + any_top * segments
            total += segments
    mean = {k: round(sum(v) / len(v), 3) for k, v in held.items()}
    return {
        f"LOMO over {key} ({args.seeds} seeds): PW-F1 mean, best threshold": mean["pw"],
        "LOMO: PW-F1 mean, own threshold": mean["own"],
        "LOMO: event recall mean, own threshold": mean["ev"],
        "LOMO: PA-F1 mean, best threshold (random ~0.83 pooled)": mean["pa"],
        "LOMO: top_metric named by the SMD authors (167 segments)": round(first / total, 3),
        "LOMO: one of top_metrics named": round(listed / total, 3),
    }


def _run(
    args: argparse.Namespace, tmp: Path, config: Path, value: str, name: str
) -> tuple[Path, Any, Any]:
    """(results, scorer per machine at the best threshold, at the own one) of one run."""
    results = tmp / f"out-{value}" if name == "cv" else tmp / f"out-{value}-{name}"
    done = results / "threshold"  # a --work DIR keeps finished runs for the next call
    if done.exists():
        own = float(done.read_text())
    else:
        own = backtest(args.data, results, ["-c", str(config), "--model", name])
        done.write_text(str(own))
    best = scorer(args.scorer, results, args.data, None)["machines"]
    return results, best, scorer(args.scorer, results, args.data, own)["machines"]


def _seed_mean(runs: list[tuple[Path, Any, Any]], field: str, fixed: bool | None) -> Any:
    """machine -> the mean of ``field`` over the runs (own threshold if ``fixed``)."""
    tables = [run[2] if fixed else run[1] for run in runs]
    return {m: sum(t[m][field] for t in tables) / len(tables) for m in tables[0]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=SHARED / "smd-data")
    ap.add_argument("--scorer", type=Path, default=SHARED / "smd" / "smd_score.py")
    ap.add_argument("--results", type=Path, help="score an earlier backtest's DIR instead")
    ap.add_argument("--threshold", type=float, default=0.99, help="with --results")
    ap.add_argument("--cv", metavar="KEY=V1,V2", help="leave-one-machine-out over a host param")
    ap.add_argument("--work", type=Path, help="with --cv: keep (and reuse) each value's run here")
    ap.add_argument("--seeds", type=int, default=3, help="with --cv: runs per value (model names)")
    ap.add_argument("backtest_args", nargs="*", help="more backtest options (-c, --model)")
    args = ap.parse_args()
    if args.cv:
        with tempfile.TemporaryDirectory() as tmp:
            work = args.work or Path(tmp)
            work.mkdir(parents=True, exist_ok=True)
            cv = cross_validate(args, work)
        for name, value in cv.items():
            print(f"{name:<60} {value}")
        emit("smd backtest host cv", cv)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        results = args.results or Path(tmp) / "out"
        own = args.threshold if args.results else backtest(args.data, results, args.backtest_args)
        best = scorer(args.scorer, results, args.data, None)["mean"]
        fixed = scorer(args.scorer, results, args.data, own)["mean"]
        top, any_top, segments = top_accuracy(results, args.data)
    figures = {
        "PW-F1 mean, best threshold": round(best["pw_f1"], 3),
        f"PW-F1 mean, own threshold {own}": round(fixed["pw_f1"], 3),
        "event recall mean, own threshold": round(fixed["ev_recall"], 3),
        "PA-F1 mean, best threshold (random ~0.83 pooled)": round(best["pa_f1"], 3),
        f"top_metric named by the SMD authors ({segments} segments)": round(top, 3),
        "one of top_metrics named": round(any_top, 3),
    }
    for name, value in figures.items():
        print(f"{name:<60} {value}")
    emit("smd backtest host", figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
