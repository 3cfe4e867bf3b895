"""NAB standard-profile score of the anomaly model, and its cost per point.

Runs ``batond backtest`` over the NAB data, scores the result with the
project's NAB scorer twice (threshold tuned on the labels, then the model's
own default threshold, the one the daemon alerts at), and times the
streaming path (``ModelSet.observe``) alone.

    .venv/bin/python bench/bench_nab.py [--data /work/shared/nab-data] \
        [--scorer /work/shared/nab/nab_score.py] [--model NAME -c CONFIG]
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from batond.anomaly import DEFAULT_SPEC, ModelSet
from batond.events import Sample
from headline import emit


def run(cmd: list[str]) -> str:
    print("$ " + " ".join(cmd), flush=True)
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done.stdout


def last_value(text: str, key: str) -> str:
    found = re.findall(rf"{key}=(\S+)", text)
    if not found:
        sys.exit(f"no {key}= in output:\n{text}")
    return str(found[-1])


def streaming_cost(data_dir: Path) -> tuple[float, int]:
    """Microseconds per ModelSet.observe over every series, CSV parsing excluded.

    The series advance together, one timestamp at a time, as a daemon sees them;
    between timestamps the due training jobs run (untimed: the daemon runs them in
    a worker thread), so each series is scored by its fitted model after its
    warm-up, not left in the cheaper warm-up path."""
    series = []
    for path in sorted(data_dir.rglob("*.csv")):
        with open(path, newline="") as fh:
            series.append([float(row["value"]) for row in csv.DictReader(fh)])
    models = ModelSet([replace(DEFAULT_SPEC, match_metrics=("m",))])
    longest = max(len(values) for values in series)
    elapsed = 0.0
    points = 0
    for i in range(longest):
        ts = float(i * 300)
        samples = [
            Sample("m", v[i], ts, {"host": str(k)}) for k, v in enumerate(series) if i < len(v)
        ]
        started = time.perf_counter()
        for sample in samples:
            models.observe(sample)
        elapsed += time.perf_counter() - started
        points += len(samples)
        for job in models.training_jobs(ts, limit=len(series)):
            job()()
    return elapsed / points * 1e6, points


def leave_one_category_out(scorer: Path, results: str, labels: str) -> float:
    """Normalised score when each category is scored at the threshold tuned on the others."""
    spec = importlib.util.spec_from_file_location("nab_score", scorer)
    assert spec is not None and spec.loader is not None
    nab = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(nab)
    files, _ = nab.load_corpus(results, labels)
    weights = nab.PROFILES["standard"]
    raw = null = perfect = 0.0
    for category in sorted({layout.relpath.split("/")[0] for layout, _ in files}):
        test = [(lay, sc) for lay, sc in files if lay.relpath.split("/")[0] == category]
        train = [(lay, sc) for lay, sc in files if lay.relpath.split("/")[0] != category]
        thresholds, raws, _ = nab.sweep_thresholds(train, weights)
        threshold = float(thresholds[int(raws.argmax())])
        raw += sum(nab.score_file(lay, sc, threshold, weights)["raw"] for lay, sc in test)
        null -= sum(int(lay.counted.sum()) for lay, _ in test)
        perfect += sum(lay.n_windows for lay, _ in test)
    return 100.0 * (raw - null) / (perfect - null)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "nab-data"
    )
    ap.add_argument(
        "--scorer",
        type=Path,
        default=Path(__file__).resolve().parents[2] / "shared" / "nab" / "nab_score.py",
    )
    ap.add_argument("--model", help="a model of the config's models: (default: built-in)")
    ap.add_argument("-c", "--config")
    args = ap.parse_args()

    labels = str(args.data / "labels" / "combined_windows.json")
    data = str(args.data / "data")
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "batond", "backtest", data, "--out", out]
        if args.model:
            cmd += ["--model", args.model] + (["-c", args.config] if args.config else [])
        summary = run(cmd).strip().splitlines()[-1]
        print(summary)
        rows = int(last_value(summary, "rows"))
        elapsed = float(last_value(summary, "elapsed_s"))
        threshold = last_value(summary, "threshold")
        score = [sys.executable, str(args.scorer), "--results", out, "--labels", labels]
        score += ["--data-dir", data, "--profiles", "standard"]
        tuned_out = run(score)
        tuned = last_value(tuned_out, "nab_standard")
        tuned_threshold = re.findall(r"^threshold=(\S+)", tuned_out, re.M)[-1]
        fixed = last_value(run([*score, "--threshold", threshold]), "nab_standard")
        loco = leave_one_category_out(args.scorer, out, labels)
    observe_us, points = streaming_cost(args.data / "data")
    print()
    print(f"NAB standard, threshold tuned by the scorer ({tuned_threshold}): {tuned}")
    print(f"NAB standard, model's default threshold ({threshold}):        {fixed}")
    print(f"NAB standard, threshold tuned leave-one-category-out: {loco:.2f}")
    print(
        f"backtest cost: {elapsed / rows * 1e6:.1f} us/point ({rows} rows, {elapsed:.2f} s,"
        " CSV read/write and retraining included)"
    )
    print(f"streaming cost: {observe_us:.1f} us/point (ModelSet.observe, {points} samples)")
    emit(
        "nab",
        {
            "NAB standard, tuned threshold": float(tuned),
            "NAB standard, default threshold": float(fixed),
            "NAB standard, leave-one-category-out": round(loco, 1),
            "backtest us/point": round(elapsed / rows * 1e6, 1),
            "ModelSet.observe us/point": round(observe_us, 1),
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
