"""Start-up time of ``batond run``: from exec to READY=1, and to ``/readyz`` 200.

Each run starts the console script with the shipped rules and models (this
checkout's ``rules/`` and ``models/``), a fresh state folder and a free
loopback port, listens on a real NOTIFY_SOCKET datagram socket as systemd
would, records when READY=1 arrives, polls /readyz, then stops the daemon
with SIGTERM. Goal: READY=1 within 0.5 s.

    .venv/bin/python bench/bench_startup.py [--runs 10] [--importtime] [--nice -20]

``--nice N`` starts the daemon at that niceness (negative needs root): on a
machine that other work keeps busy it approximates the figure of an idle one.

``--importtime`` also prints the slowest imports of one start
(``python -X importtime``), to see what should be imported lazily.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from headline import emit
from support import free_port

REPO = Path(__file__).resolve().parent.parent
BATOND = Path(sys.executable).with_name("batond")
GOAL_S = 0.5


def write_config(folder: Path, port: int) -> Path:
    path = folder / "batond.yaml"
    path.write_text(
        f"state_dir: {folder / 'state'}\n"
        f"rules: [{REPO / 'rules'}]\n"
        f"models: [{REPO / 'models'}]\n"
        f"http:\n  listen: 127.0.0.1:{port}\n"
    )
    return path


def readyz(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (less sensitive to a busy machine)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one_start(folder: Path, nice: int | None = None) -> tuple[float, float, float]:
    port = free_port()
    config = write_config(folder, port)
    sock_path = folder / "notify.sock"
    sock_path.unlink(missing_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(30)
    env = {**os.environ, "NOTIFY_SOCKET": str(sock_path)}
    env.pop("WATCHDOG_USEC", None)
    # An installed package has its bytecode compiled at install time; without this the
    # warm-up could not cache it and every start would compile batond's sources anew.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    began = time.perf_counter()
    prefix = ["nice", "-n", str(nice)] if nice is not None else []
    proc = subprocess.Popen(
        [*prefix, str(BATOND), "run", "-c", str(config)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while True:
            lines = sock.recv(4096).decode().split("\n")
            if "READY=1" in lines:
                to_ready = time.perf_counter() - began
                cpu = cpu_seconds(proc.pid)
                break
        while not readyz(port):
            if proc.poll() is not None:
                raise SystemExit(f"batond exited {proc.returncode}")
            time.sleep(0.002)
        to_readyz = time.perf_counter() - began
    finally:
        proc.terminate()
        proc.wait(60)
        sock.close()
    return to_ready, to_readyz, cpu


def import_profile(folder: Path, top: int = 15) -> None:
    """The imports done before READY=1 (the daemon is killed the moment it says READY)."""
    port = free_port()
    config = write_config(folder, port)
    sock_path = folder / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(60)
    code = "import sys; from batond.commands.cli import main; sys.exit(main())"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["NOTIFY_SOCKET"] = str(sock_path)
    proc = subprocess.Popen(
        [sys.executable, "-X", "importtime", "-c", code, "run", "-c", str(config)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    while "READY=1" not in sock.recv(4096).decode().split("\n"):
        pass
    proc.kill()
    _, err = proc.communicate(timeout=60)
    sock.close()
    rows = []
    for line in err.splitlines():
        if line.startswith("import time:") and "|" in line and "self [us]" not in line:
            _, cumulative, name = line[len("import time:") :].split("|")
            rows.append((int(cumulative), name.rstrip()))
    top_level = [r for r in rows if not r[1].startswith("   ")]  # outermost imports
    print(f"\nslowest top-level imports before READY=1 (cumulative, {len(rows)} modules):")
    for us, name in sorted(top_level, reverse=True)[:top]:
        print(f"  {us / 1000:8.1f} ms  {name.strip()}")
    heavy = sorted(
        {n.strip().split(".")[0] for _, n in rows}
        & {"numpy", "sklearn", "scipy", "pandas", "aiomqtt"}
    )
    print(f"heavy modules imported before READY=1: {', '.join(heavy) or 'none'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--importtime", action="store_true")
    parser.add_argument("--nice", type=int, default=None, help="run the daemon at this niceness")
    args = parser.parse_args()
    ready, readyz_times, cpu = [], [], []
    with tempfile.TemporaryDirectory(prefix="batond-bench-") as tmp:
        warm = Path(tmp) / "warmup"  # fills the page cache; not counted
        warm.mkdir()
        one_start(warm)
        for i in range(args.runs):
            folder = Path(tmp) / f"run{i}"
            folder.mkdir()
            a, b, c = one_start(folder, args.nice)
            ready.append(a)
            readyz_times.append(b)
            cpu.append(c)
        if args.importtime:
            folder = Path(tmp) / "profile"
            folder.mkdir()
            import_profile(folder)
    print(f"\nbatond run: exec -> READY=1 and -> /readyz 200, {args.runs} runs after 1 warm-up")
    print(f"command: {BATOND} run -c CFG  (shipped rules/ and models/, fresh state_dir,")
    print("         bytecode cached as in an installed package)")
    print(f"machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}", end="")
    print(f", daemon at nice {args.nice}" if args.nice is not None else "")
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")
    for name, xs in (("READY=1", ready), ("/readyz 200", readyz_times), ("CPU to READY", cpu)):
        print(
            f"  {name:12s} median {statistics.median(xs) * 1000:6.0f} ms   "
            f"min {min(xs) * 1000:6.0f} ms   max {max(xs) * 1000:6.0f} ms"
        )
    verdict = "meets" if statistics.median(ready) <= GOAL_S else "MISSES"
    print(f"goal: READY=1 within {GOAL_S:.1f} s: median {verdict} it (max {max(ready):.3f} s)")
    emit(
        "startup",
        {
            "runs": args.runs,
            "READY=1 median ms": round(statistics.median(ready) * 1000),
            "READY=1 max ms": round(max(ready) * 1000),
            "/readyz 200 median ms": round(statistics.median(readyz_times) * 1000),
            "CPU to READY median ms": round(statistics.median(cpu) * 1000),
        },
    )


if __name__ == "__main__":
    main()
