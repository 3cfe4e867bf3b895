"""What agents last seen and fleet rules cost the fleet's PostgreSQL journal.

A private database on the machine's PostgreSQL; the journal as a central instance has
it. For 10,000 hosts: writing every host's row once (what the owners write per
``batch_interval``), in heartbeat-sized statements (2 s of a 10 s interval: 2,000 rows);
then one fleet rule's read (the agents seen within the window and the open incidents of
the counted rule, 500 of them) and its count.

    .venv/bin/python bench/bench_fleet_agents.py [--hosts 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from batond.engine.fleet import AgentSeen, FleetSpec, count
from batond.engine.types import Decision
from batond.journal.facade import Journal
from headline import emit
from support import pg_database


def incident_of(host: str, now: float) -> Decision:
    """A decision of the counted rule that opens the host's incident."""
    key = f"host={host}"
    return Decision(
        ts=now, rule="web-5xx", key=key, target=key, labels={"host": host},
        candidates=("fix",), playbook=None, suppressed=None,
    )  # fmt: skip


async def measure(url: str, hosts: int, folder: Path) -> dict[str, float]:
    journal = Journal.open(folder, url, instance="bench")
    try:
        now = time.time()
        rows = [
            AgentSeen(f"web-{i}", i % 64, now, 1, {"role": "web" if i % 2 else "db"})
            for i in range(hosts)
        ]
        chunk = max(1, hosts // 5)  # one heartbeat's share of an interval
        start = time.perf_counter()
        for i in range(0, hosts, chunk):
            await journal.note_agents(rows[i : i + chunk])
        write_s = time.perf_counter() - start
        for i in range(500):
            await journal.record_decision(incident_of(f"web-{2 * i + 1}", now))
        spec = FleetSpec(30.0, True, (("role", "web"),), "web-5xx", 30.0)
        start = time.perf_counter()
        agents, open_hosts = await journal.fleet_view("web-5xx", now - 30.0)
        counted = count(spec, agents, open_hosts, now - 30.0)
        read_s = time.perf_counter() - start
        assert counted.n == 500 and counted.matching == hosts // 2, counted.n
    finally:
        await journal.close()
    return {
        "hosts": hosts,
        "write_all_rows_ms": round(write_s * 1000, 1),
        "write_us_per_row": round(write_s / hosts * 1e6, 1),
        "fleet_rule_round_ms": round(read_s * 1000, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=10_000)
    args = parser.parse_args()
    with pg_database() as url, tempfile.TemporaryDirectory() as folder:
        figures = asyncio.run(measure(url, args.hosts, Path(folder)))
    print(figures)
    emit("fleet agents", figures)


if __name__ == "__main__":
    main()
