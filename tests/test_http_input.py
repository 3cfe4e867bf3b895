"""POST /api/v1/events and /api/v1/alertmanager on a real aiohttp server (127.0.0.1)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry

from batond.events import Event, Input, Sample
from batond.intake.bus import Bus
from batond.intake.http import add_input_routes
from batond.metrics import Metrics


@dataclass
class Api:
    url: str
    http: aiohttp.ClientSession
    bus: Bus
    metrics: Metrics

    def drain(self) -> list[Input]:
        items = []
        while (got := self.bus.get_nowait()) is not None:
            items.append(got[0])
        return items

    def value(self, name: str, labels: dict[str, str]) -> float:
        return self.metrics.registry.get_sample_value(name, labels) or 0.0


async def serve(maxsize: int = 1000, max_body: int = 1 << 20) -> AsyncIterator[Api]:
    metrics = Metrics(CollectorRegistry())
    bus = Bus(metrics, maxsize)
    app = web.Application(client_max_size=max_body)
    add_input_routes(app, bus, metrics, clock=lambda: 1000.0)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    async with aiohttp.ClientSession() as http:
        yield Api(str(server.make_url("")), http, bus, metrics)
    await server.close()


@pytest.fixture
async def api() -> AsyncIterator[Api]:
    async for a in serve():
        yield a


async def post(api: Api, path: str, body: bytes) -> tuple[int, dict[str, object]]:
    async with api.http.post(api.url + path, data=body) as resp:
        return resp.status, await resp.json()


async def test_events_accepts_object_array_and_ndjson(api: Api) -> None:
    status, body = await post(
        api, "/api/v1/events", b'{"metric": "cpu_percent", "value": 93.2, "host": "w"}'
    )
    assert (status, body["accepted"], body["rejected"]) == (202, 1, 0)
    status, body = await post(
        api,
        "/api/v1/events",
        b'[{"event": "deploy", "ts": 5, "version": "1.2"}, {"metric": "m", "value": 1, "seq": 17}]',
    )
    assert (status, body["accepted"]) == (202, 2)
    status, body = await post(
        api, "/api/v1/events", b'{"metric": "a", "value": 1}\n\n{"metric": "b", "value": 2}\n'
    )
    assert (status, body["accepted"]) == (202, 2)
    items = api.drain()
    assert [type(i).__name__ for i in items] == ["Sample", "Event", "Sample", "Sample", "Sample"]
    first, deploy, seq = items[0], items[1], items[2]
    assert isinstance(first, Sample) and (first.ts, first.source, first.labels) == (
        1000.0,
        "http",
        {"host": "w"},
    )
    assert isinstance(deploy, Event) and (deploy.ts, deploy.labels) == (5.0, {"version": "1.2"})
    assert isinstance(seq, Sample) and seq.labels == {"seq": "17"}
    assert api.value("batond_events_received_total", {"source": "http"}) == 5


async def test_mixed_valid_and_invalid_items_give_202_with_reasons(api: Api) -> None:
    status, body = await post(
        api,
        "/api/v1/events",
        b'[{"metric": "ok", "value": 1}, {"metric": "bad", "value": "x"}, {"nothing": 1}]',
    )
    assert status == 202
    assert (body["accepted"], body["rejected"]) == (1, 2)
    reasons = body["reasons"]
    assert isinstance(reasons, list)
    assert any(r.startswith("bad_value") for r in reasons) and any(
        r.startswith("no_kind") for r in reasons
    )
    assert api.value("batond_events_rejected_total", {"source": "http", "reason": "bad_value"}) == 1
    assert api.value("batond_events_rejected_total", {"source": "http", "reason": "no_kind"}) == 1
    assert len(api.drain()) == 1


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"this is not json", "bad_json"),
        (b'{"metric": "m", "value": 1e999}', "bad_json"),  # orjson refuses infinities
        (b'{"metric": "m", "value": "12"}', "bad_value"),
        (b'{"metric": "m", "value": null}', "bad_value"),
        (b'{"metric": "m", "value": true}', "bad_value"),
        (b"[]", "empty"),
        (b"", "bad_json"),
        (b'{"metric": "m", "value": 1, "tags": {"a": 1}}', "bad_label"),
    ],
)
async def test_nothing_valid_is_400_with_the_reason(api: Api, body: bytes, reason: str) -> None:
    status, answer = await post(api, "/api/v1/events", body)
    assert status == 400
    reasons = answer["reasons"]
    assert isinstance(reasons, list) and reasons[0].startswith(reason)
    assert api.value("batond_events_rejected_total", {"source": "http", "reason": reason}) == 1
    assert api.drain() == []


async def test_full_bus_is_503_and_queues_nothing() -> None:
    async for api in serve(maxsize=2):
        status, _ = await post(api, "/api/v1/events", b'[{"metric": "m", "value": 1}]')
        assert status == 202
        async with api.http.post(
            api.url + "/api/v1/events",
            data=orjson.dumps([{"metric": "m", "value": i} for i in range(2)]),
        ) as resp:
            assert resp.status == 503
            assert resp.headers["Retry-After"] == "1"
        assert len(api.drain()) == 1  # all or nothing: the retry will not duplicate
        assert api.value("batond_events_dropped_total", {"source": "http"}) == 2


async def test_body_over_the_limit_is_413() -> None:
    async for api in serve(max_body=1024):
        big = orjson.dumps([{"metric": "m", "value": i, "pad": "x" * 50} for i in range(100)])
        async with api.http.post(api.url + "/api/v1/events", data=big) as resp:
            assert resp.status == 413
        assert api.drain() == []


def alert(status: str, name: str = "HighCPU", **labels: str) -> dict[str, object]:
    return {
        "status": status,
        "labels": {"alertname": name, "instance": "web-1:9100", "severity": "page", **labels},
        "annotations": {"summary": "CPU is high", "runbook": "https://x"},
        "startsAt": "2026-01-01T00:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z" if status == "firing" else "2026-01-01T00:05:00Z",
        "generatorURL": "http://prometheus/graph",
        "fingerprint": "c2b8d3a1e0f4a5b6",
    }


def webhook(*alerts: dict[str, object]) -> bytes:
    return orjson.dumps(
        {
            "version": "4",
            "groupKey": "{}:{}",
            "truncatedAlerts": 0,
            "status": "firing",
            "receiver": "batond",
            "groupLabels": {},
            "commonLabels": {},
            "commonAnnotations": {},
            "externalURL": "http://am",
            "alerts": list(alerts),
        }
    )


async def test_alertmanager_webhook_gives_one_alert_event_per_alert(api: Api) -> None:
    status, body = await post(
        api, "/api/v1/alertmanager", webhook(alert("firing"), alert("resolved", "DiskFull"))
    )
    assert (status, body["accepted"], body["rejected"]) == (202, 2, 0)
    firing, resolved = api.drain()
    assert isinstance(firing, Event) and isinstance(resolved, Event)
    assert (firing.name, firing.source, firing.ts) == ("alert", "alertmanager", 1000.0)
    assert firing.labels == {
        "alertname": "HighCPU",
        "instance": "web-1:9100",
        "severity": "page",
        "status": "firing",
        "fingerprint": "c2b8d3a1e0f4a5b6",
        "startsAt": "2026-01-01T00:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z",
    }
    assert firing.raw["annotations"] == {"summary": "CPU is high", "runbook": "https://x"}
    assert firing.raw["event"] == "alert"
    assert (resolved.labels["alertname"], resolved.labels["status"]) == ("DiskFull", "resolved")
    assert api.value("batond_events_received_total", {"source": "alertmanager"}) == 2


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{", "bad_json"),
        (b"[]", "not_object"),
        (orjson.dumps({"version": "3", "alerts": []}), "bad_version"),
        (orjson.dumps({"version": "4"}), "no_alerts"),
        (
            orjson.dumps({"version": "4", "alerts": [{"status": "firing", "labels": {}}]}),
            "bad_alert",
        ),
        (
            orjson.dumps(
                {"version": "4", "alerts": [{"status": "odd", "labels": {"alertname": "A"}}]}
            ),
            "bad_alert",
        ),
        (orjson.dumps({"version": "4", "alerts": []}), "empty"),
    ],
)
async def test_bad_alertmanager_payloads_are_400(api: Api, body: bytes, reason: str) -> None:
    status, answer = await post(api, "/api/v1/alertmanager", body)
    assert status == 400
    reasons = answer["reasons"]
    assert isinstance(reasons, list) and reasons[0].startswith(reason)
    assert (
        api.value("batond_events_rejected_total", {"source": "alertmanager", "reason": reason}) == 1
    )
