"""Event -> first action through a real daemon: ``batond run``, inputs posted over HTTP.

Starts ``batond run`` (real journal in a temp dir, HTTP on a free loopback
port) and posts one JSON input per request at ``--rate`` per second for
``--seconds``: samples that fire nothing, and every ``--run-every``-th input
an event that makes a rule run a playbook whose one step execs ``true``
(each event its own incident key; the governor's limits opened wide). The
figures come from the daemon's own ``batond_event_to_action_seconds``
histogram (from the input's arrival at the bus to the start of the first
action, after the journal's write-ahead records): the share of first actions
within each bucket bound, and the bucket that holds p50 and p99.

Run: .venv/bin/python bench/bench_daemon_path.py [--rate 1000] [--seconds 20] [--run-every 20]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from headline import emit
from support import free_port, poll

RULES = """\
rules:
  - name: bench-fail
    match: {event: bench.fail}
    group_by: [seq]
    run: bench

playbooks:
  - name: bench
    mode: single
    steps:
      - {name: act, action: exec, with: {argv: ["true", "{{ labels.seq }}"]}, timeout: 30s}
"""
CONFIG = """\
node: bench-node
state_dir: state
rules: [rules]
models: [models]
http:
  listen: 127.0.0.1:{port}
host:
  interval: 1s
governor:
  max_concurrent_runs: 256
  max_runs: {{count: 1000000000, per: 1s}}
  per_target: {{count: 1000000000, per: 1s}}
  max_targets_fraction: 1.0
  min_fleet: 1000000000
"""
METRIC = "batond_event_to_action_seconds"


def start_daemon(folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    for sub in ("rules", "models"):
        (folder / sub).mkdir()
    (folder / "rules" / "bench.yaml").write_text(RULES)
    port = free_port()
    (folder / "batond.yaml").write_text(CONFIG.format(port=port))
    batond = str(Path(sys.executable).with_name("batond"))
    with (folder / "daemon.err").open("wb") as err:
        proc = subprocess.Popen(
            [batond, "run", "-c", str(folder / "batond.yaml")],
            cwd=folder,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        if proc.poll() is not None:
            raise SystemExit(f"batond exited:\n{(folder / 'daemon.err').read_text()}")
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=2) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    if not poll(ready, 60):  # an external process: poll with a deadline
        proc.kill()
        raise SystemExit("batond not ready within 60 s")
    return proc, url


def histogram(text: str) -> tuple[list[tuple[float, float]], float]:
    """Cumulative (bound, count) pairs and the total count."""
    buckets: list[tuple[float, float]] = []
    total = 0.0
    for line in text.splitlines():
        if line.startswith(METRIC + "_bucket"):
            le = line.split('le="')[1].split('"')[0]
            buckets.append((float(le), float(line.rsplit(" ", 1)[1])))
        elif line.startswith(METRIC + "_count"):
            total = float(line.rsplit(" ", 1)[1])
    return buckets, total


def bucket_of(buckets: list[tuple[float, float]], total: float, q: float) -> str:
    for bound, count in buckets:
        if count >= q * total:
            return f"<= {bound * 1000:g} ms"
    return "?"


async def post_inputs(url: str, rate: float, seconds: float, run_every: int) -> tuple[int, int]:
    n = int(rate * seconds)
    failed = 0
    connector = aiohttp.TCPConnector(limit=16)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(i: int) -> None:
            nonlocal failed
            if i % run_every == 0:
                body: dict[str, object] = {"event": "bench.fail", "host": "b", "seq": i}
            else:
                body = {"metric": "bench_value", "value": 1.0, "host": "b"}
            async with session.post(url + "/api/v1/events", json=body) as resp:
                if resp.status != 202:
                    failed += 1

        loop = asyncio.get_running_loop()
        t0 = loop.time()
        tasks = []
        for i in range(n):
            delay = t0 + i / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i)))
        await asyncio.gather(*tasks)
    return n, failed


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=1000.0, help="inputs per second")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--run-every", type=int, default=20, help="one input in N starts a run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = start_daemon(Path(tmp))
        try:
            started = time.perf_counter()
            n, failed = await post_inputs(url, args.rate, args.seconds, args.run_every)
            elapsed = time.perf_counter() - started
            await asyncio.sleep(1.0)  # the last runs' first actions
            async with aiohttp.ClientSession() as session, session.get(url + "/metrics") as resp:
                buckets, total = histogram(await resp.text())
        finally:
            proc.terminate()
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                print("batond did not stop within 60 s of SIGTERM: killed", file=sys.stderr)
    shares = " ".join(f"<={b * 1000:g}ms:{c / total:.2%}" for b, c in buckets[:5] if total)
    print(
        f"daemon path: inputs={n} failed_posts={failed} rate={args.rate:.0f}/s "
        f"run_every={args.run_every} elapsed_s={elapsed:.2f} first_actions={total:.0f} "
        f"cpus={os.cpu_count()} load1={os.getloadavg()[0]:.2f}"
    )
    p50, p99 = bucket_of(buckets, total, 0.5), bucket_of(buckets, total, 0.99)
    print(f"event->first action: p50 {p50}, p99 {p99}; {shares}")
    emit(
        "daemon_path",
        {
            "inputs/s": round(args.rate),
            "first actions": round(total),
            "failed posts": failed,
            "p50": p50,
            "p99": p99,
        },
    )


if __name__ == "__main__":
    asyncio.run(main())
