"""systemd/batond.service: it verifies, and batond runs under it as a real Type=notify unit.

The real run uses a systemd user manager in a private mount namespace
(tests/tools/systemd-user-manager.sh, for machines whose PID 1 is not
systemd); tests/systemd_scenario.py drives it from inside and records what it
sees. The unit is the shipped one plus a drop-in that points it at this
checkout's batond and a test config.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support import free_port

REPO = Path(__file__).resolve().parent.parent
UNIT = REPO / "systemd" / "batond.service"
MANAGER = Path(__file__).parent / "tools" / "systemd-user-manager.sh"
SCENARIO = Path(__file__).parent / "systemd_scenario.py"
#: Outside /tmp and /var/tmp (PrivateTmp=yes hides them from the unit) and outside
#: /home and /root (ProtectHome=): a place the unit can see, read-only.
CACHE = Path("/var/cache/batond-systemd-test")
#: Folders the shipped unit hides from the service.
HIDDEN = (Path("/tmp"), Path("/var/tmp"))


def visible_to_unit(path: Path) -> bool:
    real = path.resolve()
    return not any(real.is_relative_to(h) for h in HIDDEN)


def _source_hash() -> str:
    h = hashlib.sha256()
    for path in sorted([REPO / "pyproject.toml", *(REPO / "daemon" / "batond").rglob("*")]):
        if path.is_file() and "__pycache__" not in path.parts:
            h.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]


def batond_for_unit() -> Path:
    """A ``batond`` executable the sandboxed unit can run.

    The running venv when it and the package it imports are visible to the unit
    (the usual case: the checkout's .venv); else a venv built once per source
    version under /var/cache from Debian's python (pip's cache keeps it quick).
    """
    import batond

    here = Path(sys.executable).with_name("batond")
    if (
        here.exists()
        and visible_to_unit(Path(sys.prefix))
        and visible_to_unit(Path(sys.executable))
        and visible_to_unit(Path(batond.__file__))
    ):
        return here
    venv = CACHE / f"venv-{_source_hash()}"
    if not (venv / "bin" / "batond").exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        for old in CACHE.glob("venv-*"):
            shutil.rmtree(old, ignore_errors=True)
        subprocess.run(["/usr/bin/python3", "-m", "venv", str(venv)], check=True, timeout=300)
        subprocess.run(
            [str(venv / "bin" / "pip"), "install", "-q", str(REPO)], check=True, timeout=1200
        )
    return venv / "bin" / "batond"


def unit_text(batond: Path, config: str) -> str:
    """The shipped unit with only ExecStart's binary and config swapped.

    (/usr/bin/batond, the packaged path, does not exist on a test machine and
    `systemd-analyze verify` rightly fails on a missing ExecStart binary.)
    """
    text = UNIT.read_text()
    old = "ExecStart=/usr/bin/batond run -c /etc/batond/batond.yaml"
    assert old in text
    return text.replace(old, f"ExecStart={batond} run -c {config}")


def test_unit_declares_what_spec_section_11_asks() -> None:
    text = UNIT.read_text()
    for line in (
        "Type=notify",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "ProtectSystem=strict",
        "StateDirectory=batond",
        "NoNewPrivileges=yes",
    ):
        assert f"\n{line}\n" in text, line
    assert "\nWatchdogSec=" in text


def test_systemd_analyze_verify_passes(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is missing (Debian package systemd)")
    unit = tmp_path / "batond.service"
    unit.write_text(unit_text(Path(sys.executable).with_name("batond"), "/etc/batond/batond.yaml"))
    done = subprocess.run(
        ["systemd-analyze", "verify", "--recursive-errors=no", str(unit)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == "", done.stderr  # not even a warning


def test_systemd_analyze_verify_would_catch_a_mistake(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is missing (Debian package systemd)")
    unit = tmp_path / "batond.service"
    text = unit_text(Path(sys.executable).with_name("batond"), "/x.yaml")
    unit.write_text(text.replace("WatchdogSec=30s", "WatchdogSec=thirty"))
    done = subprocess.run(
        ["systemd-analyze", "verify", "--recursive-errors=no", str(unit)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0 or "WatchdogSec" in done.stderr


def real_manager_missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root (a private mount namespace for the user manager)"
    for tool in ("unshare", "systemctl", "/lib/systemd/systemd"):
        if shutil.which(tool) is None and not Path(tool).exists():
            return f"{tool} is missing (Debian packages systemd, util-linux)"
    return None


@pytest.fixture
def run_dir() -> Iterator[Path]:
    CACHE.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="run-", dir=CACHE))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def write_unit_files(run_dir: Path, batond: Path, port: int) -> tuple[Path, Path]:
    (run_dir / "rules").mkdir()
    (run_dir / "state").mkdir()
    (run_dir / "rules" / "rules.yaml").write_text(
        "rules:\n  - {name: ping, match: {event: ping}, run: noop}\n"
        "playbooks:\n  - name: noop\n    steps:\n"
        '      - {name: nothing, action: exec, with: {argv: ["true"]}}\n'
    )
    config = run_dir / "batond.yaml"
    config.write_text(
        f"state_dir: {run_dir / 'state'}\nrules: [{run_dir / 'rules'}]\n"
        f"models: []\nhttp:\n  listen: 127.0.0.1:{port}\nhost:\n  interval: 1s\n"
    )
    unit = run_dir / "batond.service"
    unit.write_text(unit_text(batond, str(config)))
    log = run_dir / "daemon.log"
    dropin = run_dir / "test.conf"
    dropin.write_text(
        "[Service]\n"
        # a user manager would put these below $HOME; the test keeps its state in run_dir
        "StateDirectory=\n"
        "ConfigurationDirectory=\n"
        f"ReadWritePaths={run_dir / 'state'}\n"
        # no journald in this setup
        f"StandardOutput=append:{log}\n"
        f"StandardError=append:{log}\n"
        # short, so several periods pass quickly and a stuck loop is caught fast
        "WatchdogSec=2s\n"
        "TimeoutAbortSec=5s\n"
        "RestartSec=1s\n"
        # the SIGSTOP test ends in SIGABRT: no core file in a read-only working directory
        "LimitCORE=0\n"
    )
    return unit, dropin


@pytest.mark.slow
def test_batond_as_a_real_notify_unit(run_dir: Path) -> None:
    reason = real_manager_missing()
    if reason:
        pytest.skip(reason)
    batond = batond_for_unit()
    port = free_port()
    unit, dropin = write_unit_files(run_dir, batond, port)
    out = run_dir / "observations.json"
    done = subprocess.run(
        [str(MANAGER), sys.executable, str(SCENARIO), str(unit), str(dropin), str(port), str(out)],
        capture_output=True,
        text=True,
        timeout=400,
        env={**os.environ, "SD_TIMEOUT": "300"},
    )
    log = (run_dir / "daemon.log").read_text(errors="replace")[-4000:]
    context = f"{done.stdout}\n{done.stderr}\ndaemon log:\n{log}"
    assert out.exists(), context
    obs: dict[str, Any] = json.loads(out.read_text())
    context += "\nmanager log:\n" + obs.pop("manager_log", "")
    context += "\nobservations:\n" + json.dumps(obs, indent=1)

    # start returns only after READY=1: the unit is active and /readyz already says 200,
    # and while it was starting, "active" was never seen before the daemon was ready
    start = obs["start"]
    assert start["rc"] == 0, context
    assert start["show"]["ActiveState"] == "active", context
    assert start["readyz"] == 200, context
    assert all(ready == 200 for state, ready in start["seen"] if state == "active"), context
    assert any(state == "activating" for state, _ in start["seen"]), context

    # several watchdog periods later: same process, no restart, pings arriving
    later = obs["after_watchdog_periods"]
    assert later["show"]["ActiveState"] == "active", context
    assert later["show"]["MainPID"] == later["pid_before"], context
    assert later["show"]["NRestarts"] == "0", context
    assert int(later["show"]["WatchdogTimestampMonotonic"]) > int(later["watchdog_before"]), context

    # reload: SIGHUP -> RELOADING=1 ... READY=1, rules reloaded, same process
    reload = obs["reload"]
    assert reload["rc"] == 0, context
    assert reload["counted"] and reload["active_again"], context
    assert reload["show"]["MainPID"] == reload["pid_before"], context

    # stop: clean exit 0
    stop = obs["stop"]
    assert stop["rc"] == 0, context
    assert stop["show"]["ActiveState"] == "inactive", context
    assert stop["show"]["Result"] == "success", context
    assert stop["show"]["ExecMainStatus"] == "0", context
    assert "Stopping timed out" not in obs.get("manager_log", ""), context

    # a stuck event loop stops the pings: systemd kills and restarts the daemon
    wd = obs["watchdog_kill"]
    assert wd["replaced"], context
    assert wd["show"]["NRestarts"] == "1", context
    assert wd["readyz"] == 200, context
    assert "watchdog" in wd["results"], context
