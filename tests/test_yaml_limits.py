"""YAML bombs, loops and huge files are refused with FILE:LINE:COL, in bounded time and memory.

The issue's repro: a 731-byte "billion laughs" rule file took the daemon's
RSS from 45 MB to 3.7 GB on reload; ``batond check`` died the same way.
"""

from __future__ import annotations

import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest

from batond.commands.check import check_paths
from batond.load.yamlfile import MAX_ALIAS_NODES, MAX_DEPTH, MAX_FILE_BYTES, compose_text
from engine_support import PLAYBOOKS


def laughs(levels: int, width: int = 9) -> str:
    """``a0`` is a string; each ``aN`` is a list of ``width`` aliases of ``aN-1``."""
    lines = ['x-a0: &a0 "lol"']
    for i in range(1, levels + 1):
        lines.append(f"x-a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]")
    return "\n".join(lines) + "\n"


def test_a_billion_laughs_rule_file_is_refused_at_its_anchor(tmp_path: Path) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text("rules: []\n" + laughs(9) + PLAYBOOKS)
    assert len(laughs(9)) < 1000
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.monotonic()
    problems, _ = check_paths([path])
    assert time.monotonic() - t0 < 5.0
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100_000  # KiB
    (problem,) = problems
    # the largest anchored node is the list of level 8, on line 10 (after "rules: []")
    assert str(problem).startswith(f"{path}:10:7: aliases expand this file by ")
    assert f"(limit {MAX_ALIAS_NODES})" in str(problem)


def test_batond_check_refuses_a_bomb_a_few_levels_smaller(tmp_path: Path) -> None:
    # 10^7 strings: small enough to build, too large to be a sane rule file
    path = tmp_path / "bomb.yaml"
    path.write_text("rules: []\n" + laughs(7, width=10) + PLAYBOOKS)
    done = subprocess.run(
        [sys.executable, "-m", "batond", "check", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stdout.startswith(f"{path}:8:7: aliases expand this file by ")
    assert "Traceback" not in done.stderr


def test_a_few_aliases_are_still_fine() -> None:
    text = "base: &b {metric: cpu, labels: {env: prod}}\nrules:\n  - {match: *b}\n  - {match: *b}\n"
    node, reader = compose_text(text, "f.yaml")
    assert node is not None and reader.problems == []
    assert reader.plain(node)["rules"][1] == {"match": {"metric": "cpu", "labels": {"env": "prod"}}}


def test_an_alias_loop_is_refused() -> None:
    node, reader = compose_text("a: &x [1, *x]\n", "f.yaml")
    assert node is None
    assert [str(p) for p in reader.problems] == [
        "f.yaml:1:4: an alias refers to a node that contains it"
    ]


def test_deep_nesting_is_refused() -> None:
    depth = MAX_DEPTH + 5
    node, reader = compose_text("a: " + "[" * depth + "]" * depth + "\n", "f.yaml")
    assert node is None
    (problem,) = reader.problems
    assert str(problem) == f"f.yaml:1:{MAX_DEPTH + 3}: nested deeper than {MAX_DEPTH} levels"


def test_a_file_over_the_size_limit_is_refused_before_it_is_read(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    with path.open("wb") as f:  # sparse: the size is what counts
        f.truncate(MAX_FILE_BYTES + 1)
    problems, _ = check_paths([path])
    assert [str(p) for p in problems] == [
        f"{path}:1:1: file too large: {MAX_FILE_BYTES + 1} bytes; the limit is "
        f"{MAX_FILE_BYTES >> 20} MiB"
    ]


@pytest.mark.parametrize("levels", [3, 4])
def test_the_bound_is_on_what_aliases_add(levels: int) -> None:
    # 9^3 = 729 added nodes pass; 9^4 + ... = 7380 pass; both under the limit
    node, reader = compose_text(laughs(levels), "f.yaml")
    assert node is not None and reader.problems == []


@pytest.mark.parametrize("text", ["!1\n", "rules: !custom [1]\n", "a: !!python/name:os.system x\n"])
def test_unknown_tags_are_a_problem_not_a_crash(text: str) -> None:
    node, reader = compose_text(text, "f.yaml")
    assert node is None
    (problem,) = reader.problems
    assert "unsupported YAML tag" in problem.message and problem.line == 1


def test_a_bomb_on_reload_keeps_the_daemon_and_its_old_rules(tmp_path: Path) -> None:
    """The issue's repro: the reload took RSS from 45 MB to 3.67 GB and the loop died."""
    import psutil

    from daemon_proc import DaemonProcess, write_config
    from support import free_port

    port = free_port()
    rules = "rules:\n  - {name: a, match: {event: e}, run: fix}\n" + PLAYBOOKS
    config = write_config(tmp_path, port, rules=rules, token="t")
    daemon = DaemonProcess(config, port)
    try:
        daemon.wait_ready()
        rss = psutil.Process(daemon.pid).memory_info().rss
        bomb = tmp_path / "rules" / "bomb.yaml"
        bomb.write_text(laughs(9))
        got = daemon.post("/api/v1/reload", token="t")
        assert got.status == 400 and not got.json()["ok"]
        (error,) = got.json()["errors"]
        assert error.startswith(f"{bomb}:9:7: aliases expand this file by ")
        assert daemon.get("/api/v1/rules").json()["rules"][0]["name"] == "a"  # old rules kept
        assert psutil.Process(daemon.pid).memory_info().rss < rss + 50_000_000
        assert daemon.get("/healthz").status == 200
    finally:
        assert daemon.stop() == 0, daemon.log()
