"""Kill -> new process: batond (exit seen at once, decision, playbook exec) next to monit.

Both supervise the same kind of worker: ``bw-worker``, a symlink to ``sleep``
(so its process name is ``bw-worker``), started detached with ``setsid -f``.
The bench kills the worker with SIGKILL and takes the time until a new
``bw-worker`` process exists, found by checking every 0.5 ms the few pids the
kernel allocated since the kill (``/proc/sys/kernel/ns_last_pid``): the same
observer for both, cheap enough not to steal the supervisor's CPU. Between
kills it waits until the supervisor has adopted the new process (batond: the
``process.started`` line of its log; monit: one cycle), so every kill is seen
by a supervisor that knows the worker. Neither gets a worker from the bench:
each starts the first one itself (batond: a watched name with no process gives
``process.exited`` at start). The bench is a child subreaper and reaps each
killed worker at once, as PID 1 does on a host (a lingering zombie would cost
monit a cycle).

batond: ``batond run`` with a temporary config (``host.processes: [bw-worker]``,
``host.interval: 1s``) and a rule + playbook that restart the worker (exec of
``setsid -f``). monit: Debian's monit 5.33 (installed with apt when missing),
``set daemon 1`` (its shortest cycle), ``check process ... matching``.

Run (root): .venv/bin/python bench/bench_restart.py [--kills 50] [--only batond|monit]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from headline import emit
from support import free_port, poll

NAME = "bw-worker"
SCAN_EVERY = 0.0005

RULES = """\
rules:
  - name: worker-down
    match: {event: process.exited, name: NAME}
    resolve: {match: {event: process.started, name: NAME}}
    cooldown: 0s
    run: restart-worker
playbooks:
  - name: restart-worker
    mode: single
    steps:
      - {name: start, action: exec, with: {argv: [setsid, -f, WORKER, "86400"]}, timeout: 10s}
"""

CONFIG = """\
state_dir: DIR/state
rules: [DIR/rules.yaml]
models: []
http: {listen: "127.0.0.1:PORT"}
host: {interval: 1s, processes: [NAME]}
governor:
  max_concurrent_runs: 4
  max_runs: {count: 1000000, per: 1s}
  per_target: {count: 1000000, per: 1s}
"""

MONITRC = """\
set daemon 1
set logfile DIR/monit.log
set pidfile DIR/monit.pid
set idfile DIR/monit.id
set statefile DIR/monit.state
check process NAME matching "^WORKER "
  start program = "/usr/bin/setsid -f WORKER 86400"
"""


def workers(pids: Iterable[int] | None = None) -> set[int]:
    """Pids of live (not zombie) processes named bw-worker (kernel name or argv[0])."""
    if pids is None:
        pids = (int(e.name) for e in os.scandir("/proc") if e.name.isdigit())
    return {pid for pid in pids if _is_worker(pid)}


def _is_worker(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        end = stat.rindex(b")")
        if stat[end + 2 : end + 3] in (b"Z", b"X"):
            return False
        if stat[stat.index(b"(") + 1 : end] == NAME.encode():
            return True
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv0 = f.read().split(b"\0", 1)[0]
        return os.path.basename(argv0) == NAME.encode()
    except (OSError, ValueError):
        return False


def _become_subreaper() -> None:
    """Orphaned workers become our children, so a killed one is reaped at once (as
    systemd as PID 1 would); a container's PID 1 may leave it a zombie for long,
    which monit counts as one more cycle."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(36, 1, 0, 0, 0) != 0:  # PR_SET_CHILD_SUBREAPER
        print("warning: cannot become a child subreaper", file=sys.stderr)


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def last_pid() -> int | None:
    """The last pid the kernel handed out: new processes are above it (no wrap here)."""
    try:
        with open("/proc/sys/kernel/ns_last_pid") as f:
            return int(f.read())
    except OSError:
        return None


def new_worker_since(mark: int | None) -> bool:
    """A worker among the pids allocated after ``mark`` (a few: cheap to check often)."""
    last = last_pid()
    if mark is None or last is None or last < mark:
        return bool(workers())
    return bool(workers(range(mark + 1, last + 1)))


def kill_all() -> None:
    for pid in workers():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        _reap(pid)


def measure(
    kills: int, adopted: Callable[[int], bool], label: str, kill_times: list[float] | None = None
) -> list[float]:
    """Kill the worker ``kills`` times; seconds from each kill to a new worker."""
    if not poll(lambda: len(workers()) == 1, 30, 0.05):
        raise SystemExit(f"{label}: no single {NAME} to kill: {workers()}")
    out = []
    for i in range(kills):
        (pid,) = workers()
        if not adopted(pid):
            raise SystemExit(f"{label}: the supervisor did not adopt pid {pid}")
        if kill_times is not None:
            kill_times.append(time.time())
        mark = last_pid()
        t0 = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        _reap(pid)
        if not poll(lambda m=mark: new_worker_since(m), 10, SCAN_EVERY):
            raise SystemExit(f"{label}: no new {NAME} within 10 s after kill {i + 1}")
        out.append(time.monotonic() - t0)
        poll(lambda: len(workers()) == 1, 5, 0.01)
    return out


class LogWatch:
    """Follows a daemon's stderr; remembers the pids it reported as started."""

    def __init__(self, stream: object) -> None:
        self.started: set[int] = set()
        self.lines: list[str] = []
        self._cond = threading.Condition()
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream: object) -> None:
        pattern = re.compile(rf"process\.started: {NAME} pid (\d+)")
        for line in stream:  # type: ignore[attr-defined]
            with self._cond:
                self.lines.append(line)
                m = pattern.search(line)
                if m:
                    self.started.add(int(m.group(1)))
                self._cond.notify_all()

    def wait_started(self, pid: int, within: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: pid in self.started, within)


def run_batond(tmp: Path, worker: Path, kills: int) -> list[float]:
    port = free_port()
    (tmp / "rules.yaml").write_text(RULES.replace("NAME", NAME).replace("WORKER", str(worker)))
    config = tmp / "batond.yaml"
    config.write_text(
        CONFIG.replace("DIR", str(tmp)).replace("PORT", str(port)).replace("NAME", NAME)
    )
    batond = Path(sys.executable).with_name("batond")
    proc = subprocess.Popen(
        [str(batond), "run", "-c", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    watch = LogWatch(proc.stderr)
    try:

        def adopted(pid: int) -> bool:
            ok = watch.wait_started(pid, 10)
            time.sleep(0.05)  # the engine resolves the incident right after the event
            return ok

        kill_times: list[float] = []
        result = measure(kills, adopted, "batond", kill_times)
        _breakdown(port, kill_times)
        return result
    finally:
        proc.terminate()
        proc.wait(10)
        kill_all()


def run_monit(tmp: Path, worker: Path, kills: int) -> list[float]:
    monit = shutil.which("monit") or _install_monit()
    rc = tmp / "monitrc"
    rc.write_text(
        MONITRC.replace("DIR", str(tmp)).replace("NAME", NAME).replace("WORKER", str(worker))
    )
    rc.chmod(0o600)
    proc = subprocess.Popen(
        [monit, "-I", "-c", str(rc)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:

        def adopted(pid: int) -> bool:
            # a cycle of `set daemon 1` sees the new process; then the failure comes
            # at a random moment of monit's cycle, as failures do
            time.sleep(1.2 + random.uniform(0.0, 1.0))
            return True

        return measure(kills, adopted, "monit")
    finally:
        proc.terminate()
        proc.wait(10)
        kill_all()


def _breakdown(port: int, kill_times: list[float]) -> None:
    """Where batond's time went, from its own records (wall clock, ms after the kill)."""
    import json
    import urllib.request

    url = f"http://127.0.0.1:{port}/api/v1/runs?limit={len(kill_times) + 5}"
    with urllib.request.urlopen(url, timeout=10) as resp:
        runs = sorted(json.load(resp)["runs"], key=lambda r: r["created_at"])
    created, acted, spawned = [], [], []
    for kill in kill_times:
        run = next((r for r in runs if r["created_at"] >= kill and r["steps"]), None)
        if run is None:
            continue
        step = run["steps"][0]
        created.append((run["created_at"] - kill) * 1000)
        acted.append((step["started_at"] - kill) * 1000)
        spawned.append((step["ended_at"] - kill) * 1000)
    if created:
        print(
            "batond  breakdown (median ms after the kill): "
            f"run intent written={statistics.median(created):.1f} "
            f"step start written={statistics.median(acted):.1f} "
            f"exec returned={statistics.median(spawned):.1f}"
        )


def _install_monit() -> str:
    print("installing Debian's monit with apt-get ...", file=sys.stderr)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    policy = Path("/usr/sbin/policy-rc.d")
    created = not policy.exists()
    if created:  # never start the packaged service
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
    try:
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "monit"],
            check=True, env=env, stdout=subprocess.DEVNULL,
        )  # fmt: skip
    finally:
        if created:
            policy.unlink()
    found = shutil.which("monit")
    if found is None:
        raise SystemExit("monit is not installed")
    return found


def summary(label: str, seconds: list[float]) -> tuple[float, float]:
    ms = sorted(v * 1000 for v in seconds)
    p50 = statistics.median(ms)
    p95 = ms[min(len(ms) - 1, int(0.95 * len(ms)))]
    print(
        f"{label:7s} kills={len(ms)} p50={p50:.1f}ms p95={p95:.1f}ms"
        f" min={ms[0]:.1f}ms max={ms[-1]:.1f}ms"
    )
    return p50, p95


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=50)
    parser.add_argument("--only", choices=["batond", "monit"])
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root (monit is installed with apt when missing)")
    _become_subreaper()
    kill_all()
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-restart-") as d:
        tmp = Path(d)
        worker = tmp / NAME
        worker.symlink_to(shutil.which("sleep") or "/bin/sleep")
        for label, fn in (("batond", run_batond), ("monit", run_monit)):
            if args.only in (None, label):
                sub = tmp / label
                sub.mkdir()
                results[label] = summary(label, fn(sub, worker, args.kills))
    figures: dict[str, object] = {"kills": args.kills}
    for label, (p50, p95) in results.items():
        figures |= {f"{label} p50 ms": round(p50, 1), f"{label} p95 ms": round(p95, 1)}
    if len(results) == 2:
        ratio = results["monit"][0] / results["batond"][0]
        print(f"monit/batond p50 ratio: {ratio:.1f}x")
        figures["monit/batond at p50"] = f"{ratio:.0f}x"
    emit("restart", figures)


if __name__ == "__main__":
    main()
