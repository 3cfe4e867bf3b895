"""Drive batond as a real Type=notify unit of a systemd user manager; record what happens.

Run by tests/test_systemd.py *inside* tests/tools/systemd-user-manager.sh (so
``systemctl --user`` reaches the private manager), as::

    python systemd_scenario.py UNIT_FILE DROPIN_FILE PORT OUT.json

It installs the unit as ``batond-test.service`` with the drop-in, walks it
through start, several watchdog periods, reload, stop, and a stuck event loop
(SIGSTOP) that the watchdog must catch, and writes its observations as JSON
for the test to judge. It asserts nothing itself, so a failing test shows
every observation.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from support import poll

UNIT = "batond-test.service"
PROPS = (
    "ActiveState", "SubState", "Result", "MainPID", "NRestarts", "ExecMainStatus",
    "ExecMainCode", "WatchdogTimestampMonotonic", "StatusText", "ReloadResult",
)  # fmt: skip


def systemctl(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["systemctl", "--user", *args], capture_output=True, text=True, timeout=timeout
    )


def show() -> dict[str, str]:
    out = systemctl("show", UNIT, "-p", ",".join(PROPS)).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""
    except OSError:
        return 0, ""  # not listening


def metric(port: int, name: str) -> float | None:
    _, text = get(port, "/metrics")
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def wait_until(check: Any, timeout: float) -> bool:
    """Whether ``check()`` holds within ``timeout`` (observed, not asserted: see the docstring)."""
    return bool(poll(check, timeout, every=0.1))


class StartWatcher(threading.Thread):
    """While `systemctl start` blocks: (ActiveState, /readyz status) pairs as seen."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.seen: list[tuple[str, int]] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            # state first: a unit already active must answer ready when asked next
            state = show().get("ActiveState", "")
            ready = get(self.port, "/readyz")[0]
            self.seen.append((state, ready))


class Observations:
    """What the scenario saw, step by step, written as JSON at the end."""

    def __init__(self) -> None:
        self.obs: dict[str, Any] = {"steps": []}

    def note(self, step: str, **data: Any) -> None:
        self.obs["steps"].append(step)
        self.obs[step] = {**data, "show": show(), "t": time.monotonic()}


def start_returns_after_ready(port: int, seen: Observations) -> bool:
    """1. start: returns only after READY=1."""
    watcher = StartWatcher(port)
    watcher.start()
    began = time.monotonic()
    started = systemctl("start", UNIT)
    start_s = time.monotonic() - began
    readyz_after_start = get(port, "/readyz")[0]
    watcher.done.set()
    watcher.join()
    seen.note(
        "start",
        rc=started.returncode,
        stderr=started.stderr,
        seconds=start_s,
        readyz=readyz_after_start,
        seen=sorted(set(watcher.seen)),
    )
    return started.returncode == 0


def watchdog_periods_and_reload(port: int, seen: Observations) -> None:
    """2. several watchdog periods (WatchdogSec=2s in the drop-in); 3. reload."""
    pid = show()["MainPID"]
    wd_before = show()["WatchdogTimestampMonotonic"]
    time.sleep(7)
    seen.note("after_watchdog_periods", pid_before=pid, watchdog_before=wd_before)

    # ExecReload -> SIGHUP -> RELOADING=1 ... READY=1
    ok_before = metric(port, 'batond_reloads_total{result="ok"}')
    reloaded = systemctl("reload", UNIT)
    counted = wait_until(
        lambda: metric(port, 'batond_reloads_total{result="ok"}') == (ok_before or 0) + 1, 30
    )
    back = wait_until(lambda: show()["ActiveState"] == "active", 30)
    seen.note(
        "reload",
        rc=reloaded.returncode,
        stderr=reloaded.stderr,
        ok_before=ok_before,
        ok_after=metric(port, 'batond_reloads_total{result="ok"}'),
        counted=counted,
        active_again=back,
        pid_before=pid,
    )


def stuck_loop_is_restarted(port: int, seen: Observations) -> None:
    """5. a stuck event loop: SIGSTOP; the watchdog must notice and restart the unit."""
    systemctl("reset-failed", UNIT)
    restarted = systemctl("start", UNIT)
    pid = show()["MainPID"]
    if restarted.returncode != 0 or pid in ("", "0"):
        seen.note("watchdog_kill", stuck_pid=pid, replaced=False, start_rc=restarted.returncode)
        return
    os.kill(int(pid), signal.SIGSTOP)
    results: set[str] = set()

    def replaced_by_a_new_process() -> bool:
        now = show()
        results.add(now.get("Result", ""))  # "watchdog" between the kill and the restart
        return now["MainPID"] not in (pid, "0") and now["ActiveState"] == "active"

    replaced = wait_until(replaced_by_a_new_process, 60)
    seen.note(
        "watchdog_kill",
        stuck_pid=pid,
        replaced=replaced,
        results=sorted(results),
        readyz=get(port, "/readyz")[0],
    )
    systemctl("stop", UNIT)


def main() -> None:
    unit_file, dropin_file, port_text, out_path = sys.argv[1:5]
    port = int(port_text)
    unit_dir = Path(os.environ["XDG_RUNTIME_DIR"]) / "systemd" / "user"
    (unit_dir / f"{UNIT}.d").mkdir(parents=True, exist_ok=True)
    shutil.copy(unit_file, unit_dir / UNIT)
    shutil.copy(dropin_file, unit_dir / f"{UNIT}.d" / "test.conf")
    seen = Observations()
    systemctl("daemon-reload")
    seen.obs["verify_load"] = systemctl("show", UNIT, "-p", "LoadState,LoadError").stdout
    if start_returns_after_ready(port, seen):
        watchdog_periods_and_reload(port, seen)
        stopped = systemctl("stop", UNIT)  # 4. stop: clean, exit 0
        seen.note("stop", rc=stopped.returncode, stderr=stopped.stderr)
        stuck_loop_is_restarted(port, seen)
    finish(seen.obs, out_path)


def finish(obs: dict[str, Any], out_path: str) -> None:
    log = Path(os.environ["XDG_RUNTIME_DIR"]) / "manager.log"
    obs["manager_log"] = log.read_text(errors="replace")[-6000:] if log.exists() else ""
    Path(out_path).write_text(json.dumps(obs, indent=1))


if __name__ == "__main__":
    main()
