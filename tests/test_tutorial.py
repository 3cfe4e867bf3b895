"""docs/tutorial.md runs as written: every ``sh`` block, in order, as one bash script.

The reader's home is the test's temporary folder (the tutorial works in
``~/batond-tutorial``); the tutorial's own stand-ins (a recording ``systemctl``
and a pager webhook) and a real ``batond run`` do the rest. What the story
promises is then checked in the files the stand-ins wrote and in the output.
The shipped systemd drop-in is the one the tutorial shows.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TUTORIAL = ROOT / "docs" / "tutorial.md"


def blocks(kind: str) -> list[str]:
    return re.findall(rf"```{kind}\n(.*?)```", TUTORIAL.read_text(), re.S)


@pytest.mark.slow
def test_the_tutorial_runs_as_written(tmp_path: Path) -> None:
    script = "set -euo pipefail\n" + "\n".join(blocks("sh"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATOND_")}
    env["HOME"] = str(tmp_path)
    proc = subprocess.Popen(
        ["bash", "-c", script],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: batond and the pager, ended below
    )
    try:
        out, _ = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        raise AssertionError(f"the tutorial did not finish in 300 s:\n{out}") from None
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    home = tmp_path / "batond-tutorial"
    log = (home / "batond.log").read_text() if (home / "batond.log").exists() else ""
    assert proc.returncode == 0, out + "\n--- batond.log:\n" + log
    # shadow: the decision was recorded, nothing ran; enforce: one reload per firing
    assert 'result="shadow"' in out
    assert (home / "systemctl.log").read_text().splitlines() == [
        "systemctl reload nginx.service",
        "systemctl reload nginx.service",
    ]
    pages = (home / "pages.log").read_text().splitlines()
    assert pages == ['{"text":"nginx 5xx on web-1:443 did not resolve after a reload"}']
    assert re.search(r"reload-nginx.*\bresolved\b", out), out
    assert re.search(r"reload-nginx.*\bunresolved\b", out), out
    assert re.search(r"page-oncall", out), out


def test_the_shipped_drop_in_is_the_one_the_tutorial_shows() -> None:
    (ini,) = blocks("ini")
    shown = [line for line in ini.splitlines() if line and not line.startswith("#")]
    shipped = (ROOT / "systemd" / "remediation.conf").read_text().splitlines()
    assert shown == [line for line in shipped if line and not line.startswith("#")]
    for key in ("ReadWritePaths=", "CapabilityBoundingSet="):
        assert any(line.startswith(key) for line in shown), key
