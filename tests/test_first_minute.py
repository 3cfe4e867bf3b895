"""A new user's first minute: the examples' READMEs as written, and ``batond demo``.

Each README's ``sh`` blocks run as one bash script from the repository root, as
a reader would paste them (``set -e``: any failing command fails the test). The
processes a block leaves in the background are in the script's own process
group, which the test ends by its id afterwards. Static rules: no ``pkill -f``,
and ``batond`` only as ``.venv/bin/batond`` (nobody has the venv on PATH).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from batond.commands.demo import find
from daemon_proc import http
from support import poll

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "rules" / "examples").glob("*/README.md"))
BLOCK = re.compile(r"```sh\n(.*?)```", re.S)
DEMO = [str(Path(sys.executable).with_name("batond")), "demo"]


def blocks(readme: Path) -> list[str]:
    return BLOCK.findall(readme.read_text())


def commands(readme: Path) -> list[str]:
    lines = [line.split("#")[0].strip() for b in blocks(readme) for line in b.splitlines()]
    return [line for line in lines if line]


@pytest.mark.parametrize("readme", EXAMPLES, ids=lambda p: p.parent.name)
def test_readme_commands_are_safe_and_say_where_batond_is(readme: Path) -> None:
    text = readme.read_text()
    assert blocks(readme), "no sh block to try"
    assert "pkill -f" not in text and "killall" not in text
    for line in commands(readme):
        words = re.split(r"[\s;&|()']+", line)
        assert "batond" not in words, f"bare batond (the venv is not on PATH): {line}"


def run_readme(readme: Path, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    script = "set -euo pipefail\n" + "\n".join(blocks(readme))
    # output to a file, not a pipe: a background process left running must not hold it open
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(
            ["bash", "-c", script],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # its own process group: what it leaves behind is ours
        )
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            log.seek(0)
            raise AssertionError(f"{readme} did not finish in {timeout} s:\n{log.read()}") from None
        finally:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass  # the script stopped everything it started
        log.seek(0)
        out = log.read()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, "")


@pytest.mark.slow
def test_restart_watched_process_readme_runs_as_written() -> None:
    done = run_readme(ROOT / "rules/examples/restart-watched-process/README.md")
    assert done.returncode == 0, done.stdout
    assert "killed batond-example-worker" in done.stdout
    assert re.search(r"restart-example-worker.*resolved", done.stdout), done.stdout
    assert re.search(r"^\d+ batond-example-worker 86400$", done.stdout, re.M), done.stdout


@pytest.mark.slow
def test_disaster_recovery_readme_runs_as_written() -> None:
    done = run_readme(ROOT / "rules/examples/disaster-recovery/README.md")
    assert done.returncode == 0, done.stdout
    assert "/tmp/batond-example-dr/standby" in done.stdout
    assert re.search(r"failover-to-standby.*resolved", done.stdout), done.stdout
    assert "restored" in done.stdout or "standby" in done.stdout


@pytest.mark.slow
def test_clean_full_disk_readme_runs_as_written() -> None:
    done = run_readme(ROOT / "rules/examples/clean-full-disk/README.md")
    assert done.returncode == 0, done.stdout
    # make-disk.sh stops at ~90%: above the rule's 80%, short of a full disk
    filled = re.search(r"(\d+)% /tmp/batond-example-disk", done.stdout)
    assert filled is not None and 85 <= int(filled.group(1)) <= 95, done.stdout
    assert re.search(r"clean-example-disk.*resolved", done.stdout), done.stdout


def test_demo_start_and_kill_by_name(tmp_path: Path) -> None:
    name = f"batond-test-worker-{os.getpid()}"
    started = subprocess.run([*DEMO, "start", name], capture_output=True, text=True, timeout=60)
    assert started.returncode == 0 and started.stdout.startswith(f"started {name} (pid ")
    pid = int(re.findall(r"pid (\d+)", started.stdout)[0])
    assert Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0] == name.encode()
    again = subprocess.run([*DEMO, "start", name], capture_output=True, text=True, timeout=60)
    assert f"already running (pid {pid})" in again.stdout
    killed = subprocess.run([*DEMO, "kill", name], capture_output=True, text=True, timeout=60)
    assert killed.returncode == 0 and f"killed {name} (pid {pid})" in killed.stdout

    def gone() -> bool:
        try:  # PID 1 may reap late: a zombie is dead
            return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] == "Z"
        except FileNotFoundError:
            return True

    assert poll(gone, 30)
    none = subprocess.run([*DEMO, "kill", name], capture_output=True, text=True, timeout=60)
    assert none.returncode == 1 and f"no process named {name} is running" in none.stdout


@pytest.mark.slow
def test_run_local_says_where_the_page_is_and_how_to_make_something_happen() -> None:
    began = time.time() - 1
    busy = http_ok("http://127.0.0.1:9180/healthz")
    assert not busy, "something already listens on 127.0.0.1:9180 (a ./scripts/run-local?)"
    proc = subprocess.Popen(
        [str(ROOT / "scripts" / "run-local")],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if line.startswith("Stop it with Ctrl-C"):
                break
        assert poll(lambda: http_ok("http://127.0.0.1:9180/readyz"), 60), "\n".join(lines)
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C, as the banner says
        proc.wait(60)
        for worker in find("batond-demo-worker"):  # the one this daemon's rule started
            if worker.create_time() >= began:
                worker.terminate()
    head = "\n".join(lines)
    assert "the page:  http://127.0.0.1:9180/" in head
    assert ".venv/bin/batond demo kill" in head
    for word in ("error", "warning", "traceback", "failed"):
        assert word not in head.lower(), head


def http_ok(url: str) -> bool:
    try:
        return http("GET", url, timeout=2).status == 200
    except OSError:
        return False
