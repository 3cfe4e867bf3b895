"""The real Alertmanager (Debian's prometheus-alertmanager) notifying batond's webhook route.

Alerts are raised and resolved with ``amtool``; the firing and the resolved
notification must both arrive as ``alert`` events.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator, Iterator
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
from daemon_proc import DaemonProcess, write_config
from support import free_port, until

# prometheus-alertmanager and amtool come from scripts/bootstrap test: missing, the tests fail
pytestmark = pytest.mark.slow

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


# -- the whole path: Alertmanager -> batond run -> an alert rule with for: ------------------
AM_TOKEN = "am-webhook-token"
ALERT_RULES = """
rules:
  - name: nginx-5xx
    description: Nginx answers 5xx for 30 s (counted from the alert's startsAt)
    match: {event: alert, alertname: Nginx5xx}
    for: 30s
    run: reload-nginx
  - name: disk-slow
    match: {event: alert, alertname: DiskSlow}
    for: 4s
    group_by: [alertname, device]
    run: note-disk
playbooks:
  - name: reload-nginx
    steps:
      - name: reload
        action: exec
        with: {argv: [echo, "reload {{ labels.instance }}"]}
        timeout: 10s
    verify: {within: 2m}
  - name: note-disk  # no verify: the run ends at once, batond stops without waiting for it
    steps:
      - {name: note, action: exec, with: {argv: ["true"]}, timeout: 10s}
"""
#: the receiver snippet of docs/alertmanager.md, with the test's URL and token file
RECEIVER = """\
route:
  receiver: batond
  group_by: [alertname, instance]
  group_wait: 100ms
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: batond
    webhook_configs:
      - url: {url}/api/v1/alertmanager
        send_resolved: true
        http_config:
          authorization:
            type: Bearer
            credentials_file: {token_file}
"""


def incident_of(daemon: DaemonProcess, key: str) -> dict[str, object] | None:
    for incident in daemon.get("/api/v1/incidents").json()["incidents"]:
        if incident["key"] == key:
            return dict(incident)
    return None


@pytest.fixture
def batond_and_am(tmp_path: Path) -> Iterator[tuple[DaemonProcess, str]]:
    port = free_port()
    daemon = DaemonProcess(write_config(tmp_path, port, rules=ALERT_RULES, token=AM_TOKEN), port)
    am_port = free_port()
    config = tmp_path / "alertmanager.yml"
    config.write_text(
        RECEIVER.replace("{url}", daemon.url).replace("{token_file}", str(tmp_path / "token"))
    )
    am = start_alertmanager(
        [
            "prometheus-alertmanager",
            f"--config.file={config}",
            f"--storage.path={tmp_path / 'am-data'}",
            f"--web.listen-address=127.0.0.1:{am_port}",
            "--cluster.listen-address=",
            "--log.level=warn",
        ],
        tmp_path / "am.log",
    )
    try:
        daemon.wait_ready()
        yield daemon, f"http://127.0.0.1:{am_port}"
    finally:
        am.terminate()
        am.wait(30)
        daemon.stop()


async def test_for_from_starts_at_and_resolved_by_the_resolved_notification(
    batond_and_am: tuple[DaemonProcess, str],
) -> None:
    daemon, am_url = batond_and_am
    await until(lambda: _ready(am_url), 60, "alertmanager to be ready", every=0.1)
    # firing for a minute already (startsAt): for: 30s is over, the rule fires at once
    start = datetime.now(UTC) - timedelta(minutes=1)
    labels = ["Nginx5xx", "instance=web-1:9113", "severity=page"]
    await amtool(am_url, *labels, f"--start={rfc3339(start)}")
    key = "alertname=Nginx5xx,instance=web-1:9113"
    opened = await asyncio.to_thread(
        daemon.wait_for, lambda: incident_of(daemon, key), 60, "the Nginx5xx incident"
    )
    assert opened["state"] == "open"
    # a fresh alert: for: 4s counts from its startsAt, so no incident at first
    fresh = datetime.now(UTC)
    await amtool(am_url, "DiskSlow", "instance=db-1", "device=sda", f"--start={rfc3339(fresh)}")
    disk_key = "alertname=DiskSlow,device=sda"
    disk = await asyncio.to_thread(
        daemon.wait_for, lambda: incident_of(daemon, disk_key), 60, "the DiskSlow incident"
    )
    assert disk["opened_at"] >= fresh.timestamp() + 4 - 1  # not before for: ran out (1 s: rounding)

    # Alertmanager's resolved notification (same fingerprint) resolves: no resolve: needed
    end = datetime.now(UTC) - timedelta(seconds=1)
    await amtool(am_url, *labels, f"--start={rfc3339(start)}", f"--end={rfc3339(end)}")

    def resolved() -> dict[str, object] | None:
        found = incident_of(daemon, key)
        return found if found and found["state"] == "resolved" else None

    await asyncio.to_thread(daemon.wait_for, resolved, 90, "the resolved notification")
    runs = [r for r in daemon.get("/api/v1/runs").json()["runs"] if r["key"] == key]
    assert [r["outcome"] for r in runs] == ["resolved"]  # verify: saw the alert resolve
    assert runs[0]["steps"][0]["stdout"].strip() == "reload web-1:9113"
    assert incident_of(daemon, disk_key)["state"] == "open"  # type: ignore[index]


async def _ready(am_url: str) -> bool:
    async with aiohttp.ClientSession() as http_session:
        try:
            async with http_session.get(am_url + "/-/ready") as resp:
                return resp.status == 200
        except aiohttp.ClientError:
            return False
