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

    .venv/bin/python bench/bench_smd_backtest.py [--data DIR] [--results DIR]
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
    done = subprocess.run(
        [*cmd, "--out", str(out), *extra], capture_output=True, text=True, check=True
    )
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


def top_accuracy(results: Path, data: Path) -> tuple[float, float, int]:
    """(share with top_metric named, share with any of top_metrics named, segments)."""
    first = listed = total = 0
    for folder in sorted(p for p in data.iterdir() if (p / "interpretation_label.txt").exists()):
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=SHARED / "smd-data")
    ap.add_argument("--scorer", type=Path, default=SHARED / "smd" / "smd_score.py")
    ap.add_argument("--results", type=Path, help="score an earlier backtest's DIR instead")
    ap.add_argument("--threshold", type=float, default=0.99, help="with --results")
    ap.add_argument("backtest_args", nargs="*", help="more backtest options (-c, --model)")
    args = ap.parse_args()
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
