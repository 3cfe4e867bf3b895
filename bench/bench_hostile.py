#!/usr/bin/env python3
"""Hostile load against a real ``batond run``: how long the event loop is held.

    .venv/bin/python bench/bench_hostile.py [--bodies 40] [--items 100000]

The repro of issue 14: ``--bodies`` concurrent POSTs to /api/v1/events, each
a ~200 KB array of ``--items`` items that are all rejected. While they are
processed a prober asks /healthz every 20 ms; the worst answer time is how
long the loop was held (the watchdog gap follows it). Then
``batond_loop_lag_seconds`` as the daemon measured it, and matches() on a
200 KB value.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from daemon_proc import DaemonProcess, http, write_config
from support import free_port


def probe(daemon: DaemonProcess, stop: threading.Event, worst: list[float]) -> None:
    while not stop.is_set():
        t0 = time.perf_counter()
        daemon.get("/healthz", timeout=120)
        worst.append(time.perf_counter() - t0)
        stop.wait(0.02)


def flood(daemon: DaemonProcess, bodies: int, items: int) -> tuple[float, list[int], float]:
    body = ("[" + ",".join(["1"] * items) + "]").encode()
    latencies: list[float] = []
    stop = threading.Event()
    prober = threading.Thread(target=probe, args=(daemon, stop, latencies))
    prober.start()
    time.sleep(0.3)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(bodies) as pool:
        futures = [
            pool.submit(http, "POST", daemon.url + "/api/v1/events", body=body, timeout=300)
            for _ in range(bodies)
        ]
        statuses = [f.result().status for f in futures]
    took = time.perf_counter() - t0
    time.sleep(0.3)
    stop.set()
    prober.join()
    print(f"body: {len(body)} bytes, {items} rejected items; {bodies} at once")
    return took, statuses, max(latencies)


def regex_time() -> float:
    from batond.engine.expr import compile_expression
    from batond.errors import Mark

    expr = compile_expression("matches(event.msg, '.*x')", Mark("b", 1, 1))
    value = {"event": {"msg": "a" * 200_000}}
    t0 = time.perf_counter()
    expr.evaluate(value)
    return time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bodies", type=int, default=40)
    parser.add_argument("--items", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        config = write_config(Path(tmp), port, http_extra="max_body: 1MiB")
        daemon = DaemonProcess(config, port)
        try:
            daemon.wait_ready()
            took, statuses, worst = flood(daemon, args.bodies, args.items)
            lag = daemon.metric("batond_loop_lag_seconds")
        finally:
            daemon.stop(timeout=300)
    print(f"all answered in {took:.1f} s; statuses {sorted(set(statuses))}")
    print(f"worst /healthz answer during the flood: {worst:.3f} s")
    print(f"batond_loop_lag_seconds after: {lag}")
    print(f"matches(event.msg, '.*x') on 200 KB: {regex_time() * 1000:.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
