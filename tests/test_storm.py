"""A storm of work items on a real ``batond run`` (issue 11): 10,000 ``each: true`` events
over 10 s against a rule with its own limits. Every event ends as a run or as a
recorded suppression with its reason (counted: nothing missing), and ``/healthz`` answers
within 50 ms at the 99th percentile all the while."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

from daemon_proc import DaemonProcess, write_config
from incident_support import decisions, done_runs
from support import free_port

TOKEN = "storm-t0ken"
EVENTS = 10_000
BATCHES = 100  # one POST every 0.1 s
RUNS_PER_MINUTE = 100

RULES = f"""
rules:
  - name: job
    match: {{event: job}}
    each: true
    limits: {{max_runs: {{count: {RUNS_PER_MINUTE}, per: 1m}}, max_concurrent_runs: 8}}
    run: work
playbooks:
  - name: work
    steps: [{{name: s, action: wait, with: {{duration: 0s}}}}]
"""


def _storm(url: str) -> None:
    size = EVENTS // BATCHES
    start = time.monotonic()
    for b in range(BATCHES):
        body = json.dumps([{"event": "job", "n": b * size + i} for i in range(size)]).encode()
        request = urllib.request.Request(
            url + "/api/v1/events", data=body, method="POST",
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        )  # fmt: skip
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.status == 202
        pause = start + (b + 1) * 10.0 / BATCHES - time.monotonic()
        if pause > 0:
            time.sleep(pause)


#: The probe: a process of its own, so that the storm's sender (this process) never holds
#: the interpreter lock it would wait for; it prints each latency until stdin closes.
PROBE = """
import sys, threading, time, urllib.request
stop = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
while not stop.is_set():
    t0 = time.perf_counter()
    with urllib.request.urlopen(sys.argv[1] + "/healthz", timeout=10) as response:
        response.read()
    print(time.perf_counter() - t0, flush=True)
    stop.wait(0.01)
"""


def _probe(url: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", PROBE, url], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip


def test_every_work_item_of_a_storm_is_a_run_or_a_recorded_reason(tmp_path: Path) -> None:
    port = free_port()
    d = DaemonProcess(write_config(tmp_path, port, rules=RULES, token=TOKEN), port)
    try:
        d.wait_ready()
        probe = _probe(d.url)
        try:
            _storm(d.url)
            d.wait_for(  # the storm is over when the engine has taken every event in
                lambda: (
                    d.metric("batond_decisions_total", {"rule": "job", "result": "run"}) is not None
                    and d.metric("batond_queue_depth") == 0
                ),
                what="the queue to drain",
            )
        finally:
            out, _ = probe.communicate("", timeout=60)  # stdin closed: the probe stops
        took = sorted(float(line) for line in out.split())
        counted = d.wait_for(
            lambda: len(found := decisions(d, rule="job")) == EVENTS and found,
            timeout=120, what="a decision for every event",
        )  # fmt: skip
        results = Counter(x["result"] for x in counted)
        assert results == {"run": RUNS_PER_MINUTE, "rate_limited": EVENTS - RUNS_PER_MINUTE}
        assert len({x["key"] for x in counted}) == EVENTS  # one work item each
        assert all(x["reason"] for x in counted if x["result"] != "run")
        d.wait_for(lambda: done_runs(d, "job", RUNS_PER_MINUTE), timeout=120, what="the runs")
        assert d.metric("batond_events_received_total", {"source": "http"}) == EVENTS
        p99 = took[int(len(took) * 0.99)]
        print(f"healthz during the storm: {len(took)} probes, p99 {p99 * 1000:.1f} ms")
        assert len(took) > 100 and p99 < 0.05, f"p99 {p99 * 1000:.1f} ms"
    finally:
        assert d.stop() == 0, d.log()
