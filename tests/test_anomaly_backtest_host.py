"""`batond backtest --detector host` as a user runs it, on a generated SMD-format machine."""

from __future__ import annotations

import csv
import gzip
import random
import subprocess
import sys
from pathlib import Path

BATOND = [sys.executable, "-m", "batond"]
JOINT_ROW = 60  # test row with CPU low while load and I/O are high


def write_machine(folder: Path, seed: int) -> None:
    rng = random.Random(seed)
    folder.mkdir(parents=True)
    rows = []
    for _ in range(500):
        busy = rng.random()
        rows.append([busy + rng.gauss(0, 0.02) for _metric in range(3)])
    rows[400 + JOINT_ROW] = [0.1, 0.9, 0.9]  # each inside its usual range, unusual together
    for name, part, start in (("train", rows[:400], 0), ("test", rows[400:], 400)):
        text = "timestamp,m0,m1,m2\n" + "".join(
            f"{start + i}," + ",".join(f"{v:.6f}" for v in row) + "\n" for i, row in enumerate(part)
        )
        (folder / f"{name}.csv.gz").write_bytes(gzip.compress(text.encode()))


def backtest(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*BATOND, "backtest", *map(str, args)], capture_output=True, text=True, timeout=120
    )


def test_each_machine_is_trained_on_its_train_half_and_its_test_half_scored(tmp_path: Path) -> None:
    write_machine(tmp_path / "smd" / "machine-a", 1)
    write_machine(tmp_path / "smd" / "machine-b", 2)
    done = backtest("--detector", "host", tmp_path / "smd", "--out", tmp_path / "out")
    assert done.returncode == 0, done.stderr
    last = done.stdout.strip().splitlines()[-1]
    assert last.startswith("machines=2 rows=200 ") and last.endswith(" threshold=0.99")
    for machine in ("machine-a", "machine-b"):
        with open(tmp_path / "out" / machine / "scores.csv") as fh:
            rows = list(csv.DictReader(fh))
        assert [r["timestamp"] for r in rows] == [str(400 + i) for i in range(100)]
        scores = [float(r["score"]) for r in rows]
        assert max(scores) == scores[JOINT_ROW] and scores[JOINT_ROW] >= 0.99
        with open(tmp_path / "out" / machine / "top_metrics.csv") as fh:
            tops = list(csv.DictReader(fh))
        assert tops[JOINT_ROW]["top_metric"] == "m0"  # the metric out of line with the others
        assert tops[JOINT_ROW]["top_metrics"].split(",")[0] == "m0"


def test_a_missing_folder_or_a_per_series_model_is_refused(tmp_path: Path) -> None:
    done = backtest("--detector", "host", tmp_path / "nothing", "--out", tmp_path / "out")
    assert done.returncode == 1
    assert "no such directory" in done.stderr
    (tmp_path / "batond.yaml").write_text(f"models: [{tmp_path / 'models'}]\n")
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "m.yaml").write_text("models:\n  - {name: cpu, match: {metric: m0}}\n")
    write_machine(tmp_path / "smd" / "machine-a", 1)
    done = backtest(
        "--detector", "host", tmp_path / "smd", "--out", tmp_path / "out",
        "-c", tmp_path / "batond.yaml", "--model", "cpu",
    )  # fmt: skip
    assert done.returncode == 1
    assert "model 'cpu' is not a detector: host model" in done.stderr
