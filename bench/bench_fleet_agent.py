"""What a fleet agent's batches cost: the tap per input, closing a full batch, its size.

The tap (``Batcher.take``) runs on the engine loop for every input the pipeline
evaluated; closing a batch (``encode_batch``) runs once per ``batch_interval``. Inputs
are host metrics as ``batond.intake.host`` makes them (labels ``host``, and ``mount``
for ``disk_used_percent``), with the node name relabelled to the fleet's host name for
a share of them (``--relabel``). Publishing is not measured here: one QoS 1 message per
interval (``bench/bench_mqtt.py`` measures the broker path).

Run: .venv/bin/python bench/bench_fleet_agent.py [--inputs 2000] [--rounds 50]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Mapping
from typing import Any

from prometheus_client import CollectorRegistry

from batond.events import Sample
from batond.fleet.agent import MAX_BATCH_ITEMS, Batcher
from batond.metrics import Metrics
from headline import emit

METRICS = ("cpu_percent", "memory_percent", "load_1m", "disk_used_percent",
           "net_recv_bytes_per_s", "disk_write_bytes_per_s")  # fmt: skip


class _Nowhere:
    async def save_state(self, name: str, state: Mapping[str, Any]) -> None:
        pass


async def _publish(topic: str, payload: bytes, qos: int, retain: bool) -> None:
    _sizes.append(len(payload))


_sizes: list[int] = []


def _inputs(n: int, relabel: float) -> list[Sample]:
    out = []
    now = time.time()
    for i in range(n):
        metric = METRICS[i % len(METRICS)]
        host = "node-a" if i < n * relabel else "web-0001.example.net"
        labels = {"host": host, **({"mount": "/var/lib"} if metric == "disk_used_percent" else {})}
        raw = {"metric": metric, "value": 1234.5678 + i, "ts": now, **labels}
        out.append(Sample(metric, 1234.5678 + i, now, labels, raw, "host"))
    return out


async def _round(batcher: Batcher, inputs: list[Sample]) -> tuple[float, float]:
    start = time.perf_counter()
    for item in inputs:
        batcher.take(item)
    took = time.perf_counter() - start
    start = time.perf_counter()
    await batcher.close_batch()
    closed = time.perf_counter() - start
    await batcher.send_pending()
    return took / len(inputs), closed


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=MAX_BATCH_ITEMS)
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--relabel", type=float, default=0.5, help="share with the node name")
    args = parser.parse_args()
    batcher = Batcher(
        host="web-0001.example.net", node="node-a", topic="batond/fleet/7/web-0001.example.net",
        interval=10.0, publish=_publish, seqs=_Nowhere(), metrics=Metrics(CollectorRegistry()),
    )  # fmt: skip
    inputs = _inputs(args.inputs, args.relabel)
    results = [await _round(batcher, inputs) for _ in range(args.rounds)]
    per_input = sorted(r[0] for r in results)
    closing = sorted(r[1] for r in results)
    print(f"inputs per batch: {args.inputs} ({args.relabel:.0%} relabelled), rounds: {args.rounds}")
    print(f"tap (Batcher.take): median {statistics.median(per_input) * 1e6:.2f} µs/input")
    print(f"closing a batch (encode): median {statistics.median(closing) * 1e3:.2f} ms, "
          f"max {closing[-1] * 1e3:.2f} ms")  # fmt: skip
    size = statistics.median(_sizes)
    print(f"batch payload: {size / 1024:.1f} KiB ({size / args.inputs:.0f} bytes/input)")
    emit("fleet agent", {
        "tap us/input": round(statistics.median(per_input) * 1e6, 2),
        "close ms/batch": round(statistics.median(closing) * 1e3, 2),
        "KiB/batch": round(size / 1024, 1),
    })  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main())
