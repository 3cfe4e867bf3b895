"""`batond backtest` as a user runs it: a subprocess on generated NAB-format CSVs."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from anomaly_series import wave
from batond.anomaly import DEFAULT_SPEC
from batond.commands.backtest import score_rows

BATOND = [sys.executable, "-m", "batond"]


def write_series(path: Path, values: list[float]) -> list[tuple[float, float]]:
    path.parent.mkdir(parents=True, exist_ok=True)
    start = datetime(2024, 1, 1, tzinfo=UTC).timestamp()
    with open(path, "w", newline="") as fh:
        fh.write("timestamp,value\n")
        for i, value in enumerate(values):
            moment = datetime.fromtimestamp(start + 300 * i, UTC)
            fh.write(f"{moment:%Y-%m-%d %H:%M:%S},{value!r}\n")
    return [(start + 300 * i, v) for i, v in enumerate(values)]


def backtest(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*BATOND, "backtest", *map(str, args)], capture_output=True, text=True, timeout=120
    )


def read_out(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_backtest_writes_scores_next_to_the_input_layout(tmp_path: Path) -> None:
    data = tmp_path / "data"
    spiky = write_series(data / "cat" / "spiky.csv", wave(1200, spike_at=1000))
    write_series(data / "cat" / "sub" / "quiet.csv", wave(700, seed=2))
    out = tmp_path / "out"

    done = backtest(data, "--out", out)

    assert done.returncode == 0, done.stderr
    last = done.stdout.strip().splitlines()[-1]
    fields = dict(part.split("=") for part in last.split())
    assert list(fields) == ["series", "rows", "elapsed_s", "threshold"]
    assert (fields["series"], fields["rows"]) == ("2", "1900")
    assert float(fields["threshold"]) == DEFAULT_SPEC.threshold
    assert done.stderr == ""  # no progress when stderr is not a terminal

    rows = read_out(out / "cat" / "spiky.csv")
    assert list(rows[0]) == ["timestamp", "value", "anomaly_score"]
    source = (data / "cat" / "spiky.csv").read_text().splitlines()[1:]
    assert [f"{r['timestamp']},{r['value']}" for r in rows] == source  # as read
    scores = [float(r["anomaly_score"]) for r in rows]
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert scores == score_rows(DEFAULT_SPEC, spiky)  # the streaming path, exactly
    threshold = float(fields["threshold"])
    assert max(scores[1000:1010]) >= threshold
    assert sum(s >= threshold for s in scores[:1000]) <= 2
    assert (out / "cat" / "sub" / "quiet.csv").is_file()


def test_a_single_file_and_a_named_model_from_the_config(tmp_path: Path) -> None:
    series = tmp_path / "one.csv"
    write_series(series, wave(600, spike_at=500))
    models = tmp_path / "models"
    models.mkdir()
    (models / "m.yaml").write_text(
        "models:\n  - {name: strict, match: {metric: x}, warmup: 100, threshold: 0.9}\n"
    )
    config = tmp_path / "batond.yaml"
    config.write_text(f"models: [{models}]\n")

    done = backtest(series, "--out", tmp_path / "out", "-c", config, "--model", "strict")

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1].endswith(" threshold=0.9")
    scores = [float(r["anomaly_score"]) for r in read_out(tmp_path / "out" / "one.csv")]
    assert scores[:100] == [0.0] * 100 and any(s > 0 for s in scores[100:])

    missing = backtest(series, "--out", tmp_path / "o2", "-c", config, "--model", "nope")
    assert missing.returncode == 1
    assert "no model 'nope' in the config (models: strict)" in missing.stderr


@pytest.mark.parametrize(
    "rows,message",
    [
        ("2024-01-01 00:00:00,1\n2024-01-01 00:05:00,abc\n", ":3: value 'abc' is not a number"),
        ("2024-01-01 00:00:00,1\nyesterday,2\n", ":3: timestamp 'yesterday' is neither"),
        ("", ""),
    ],
)
def test_bad_input_is_reported_with_its_line(tmp_path: Path, rows: str, message: str) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text(("timestamp,value\n" if rows else "time,v\n") + rows)
    done = backtest(bad, "--out", tmp_path / "out")
    assert done.returncode == 1
    assert f"{bad}{message or ':1: expected a header'}" in done.stderr
    assert done.stdout == ""


def test_epoch_second_timestamps_are_accepted_and_written_as_read(tmp_path: Path) -> None:
    series = tmp_path / "epoch.csv"
    series.write_text(
        "timestamp,value\n" + "".join(f"{1700000000 + 60 * i},{i % 7}\n" for i in range(300))
    )
    done = backtest(series, "--out", tmp_path / "out")
    assert done.returncode == 0, done.stderr
    rows = read_out(tmp_path / "out" / "epoch.csv")
    assert rows[5]["timestamp"] == "1700000300" and rows[5]["value"] == "5"


def test_progress_is_shown_on_a_terminal(tmp_path: Path) -> None:
    write_series(tmp_path / "data" / "a.csv", wave(400))
    primary, secondary = os.openpty()
    try:
        done = subprocess.run(
            [*BATOND, "backtest", str(tmp_path / "data"), "--out", str(tmp_path / "out")],
            stdout=subprocess.PIPE,
            stderr=secondary,
            text=True,
            timeout=120,
        )
        os.close(secondary)
        shown = b""
        while True:
            try:
                chunk = os.read(primary, 4096)
            except OSError:  # EIO: the writer side is closed
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(primary)
    assert done.returncode == 0
    assert b"[1/1] a.csv" in shown
    assert done.stdout.strip().splitlines()[-1].startswith("series=1 rows=400 ")
