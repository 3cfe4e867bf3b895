"""The real Alertmanager (Debian's prometheus-alertmanager) notifying batond's webhook route.

Alerts are raised and resolved with ``amtool``; the firing and the resolved
notification must both arrive as ``alert`` events.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry

from batond.events import Event
from batond.intake.bus import Bus
from batond.intake.http import add_input_routes
from batond.metrics import Metrics
from support import free_port, until

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (shutil.which("prometheus-alertmanager") and shutil.which("amtool")),
        reason="prometheus-alertmanager/amtool missing: run scripts/bootstrap test",
    ),
]

CONFIG = """\
route:
  receiver: batond
  group_by: [alertname]
  group_wait: 100ms
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: batond
    webhook_configs:
      - url: {url}
        send_resolved: true
"""


async def wait_ready(url: str, proc: subprocess.Popen[bytes], within: float = 60.0) -> None:
    async with aiohttp.ClientSession() as http:

        async def ready() -> bool:
            assert proc.poll() is None, "alertmanager exited"
            try:
                async with http.get(url + "/-/ready") as resp:
                    return resp.status == 200
            except aiohttp.ClientError:
                return False

        await until(ready, within, "alertmanager to be ready", every=0.1)


async def amtool(am_url: str, *args: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        "amtool",
        f"--alertmanager.url={am_url}",
        "alert",
        "add",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, out.decode()


async def next_alert(bus: Bus, status: str, within: float = 90.0) -> Event:
    async def go() -> Event:
        while True:
            item, _ = await bus.get()
            if isinstance(item, Event) and item.labels.get("status") == status:
                return item

    return await asyncio.wait_for(go(), within)


def start_alertmanager(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as err:
        return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err)


def rfc3339(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture
async def batond_app() -> AsyncIterator[tuple[str, Bus, Metrics]]:
    metrics = Metrics(CollectorRegistry())
    bus = Bus(metrics)
    app = web.Application()
    add_input_routes(app, bus, metrics)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield str(server.make_url("/api/v1/alertmanager")), bus, metrics
    await server.close()


async def test_firing_and_resolved_alerts_arrive(
    tmp_path: Path, batond_app: tuple[str, Bus, Metrics]
) -> None:
    hook, bus, metrics = batond_app
    config = tmp_path / "alertmanager.yml"
    config.write_text(CONFIG.format(url=hook))
    port = free_port()
    am_url = f"http://127.0.0.1:{port}"
    proc = start_alertmanager(
        [
            "prometheus-alertmanager",
            f"--config.file={config}",
            f"--storage.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
            "--log.level=warn",
        ],
        tmp_path / "am.log",
    )
    try:
        await wait_ready(am_url, proc)
        start = datetime.now(UTC) - timedelta(minutes=1)
        await amtool(
            am_url,
            "HighCPU",
            "instance=web-1",
            "severity=page",
            "--annotation=summary=CPU is hot",
            f"--start={rfc3339(start)}",
        )
        firing = await next_alert(bus, "firing")
        assert firing.name == "alert" and firing.source == "alertmanager"
        assert firing.labels["alertname"] == "HighCPU"
        assert firing.labels["instance"] == "web-1"
        assert firing.labels["fingerprint"]
        assert firing.labels["startsAt"].startswith(rfc3339(start)[:16])
        assert firing.raw["annotations"] == {"summary": "CPU is hot"}

        end = datetime.now(UTC) - timedelta(seconds=1)
        await amtool(
            am_url,
            "HighCPU",
            "instance=web-1",
            "severity=page",
            "--annotation=summary=CPU is hot",
            f"--start={rfc3339(start)}",
            f"--end={rfc3339(end)}",
        )
        resolved = await next_alert(bus, "resolved")
        assert resolved.labels["alertname"] == "HighCPU"
        assert resolved.labels["fingerprint"] == firing.labels["fingerprint"]
        assert not resolved.labels["endsAt"].startswith("0001")
        received = metrics.registry.get_sample_value(
            "batond_events_received_total", {"source": "alertmanager"}
        )
        assert received is not None and received >= 2
    finally:
        proc.terminate()
        proc.wait(30)
