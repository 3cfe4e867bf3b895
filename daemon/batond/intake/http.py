"""HTTP input: ``POST /api/v1/events`` and ``POST /api/v1/alertmanager``.

The API application mounts these with :func:`add_input_routes`; it also owns
the bearer-token check and the body size limit (413), so the handlers here only
parse, count and queue.

Answers: 202 ``{"accepted": N, "rejected": M, "reasons": [...]}`` when at least
one item is valid; 400 with the reasons when the body is not JSON or no item
is valid; 413 when the body is over ``http.max_body`` (by its Content-Length,
before it is read) or holds more valid items than the queue can ever take;
503 when the bus cannot take all valid items now (nothing is queued then, so a
retry does not duplicate).

With ``http.ack: decided`` the 202 waits until every queued item is evaluated
and what that decided is journaled (``Bus.when_decided``): a client that gets
no 2xx (the daemon was killed meanwhile) knows to send again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from batond.errors import InputError
from batond.events import Event, Input, label_text, parse_json_payload
from batond.intake import Rejections, Tally
from batond.intake.bus import Bus
from batond.intake.httpguard import BodyRefused, expect_handler, read_body
from batond.load.config import Ack
from batond.metrics import Metrics

__all__ = ["add_input_routes", "parse_alertmanager"]

Handler = Callable[[web.Request], Awaitable[web.Response]]


def add_input_routes(
    app: web.Application,
    bus: Bus,
    metrics: Metrics,
    *,
    clock: Callable[[], float] = time.time,
    ack: Ack = Ack.ACCEPTED,
) -> None:
    """Mount the two input endpoints on ``app``; ``ack``: when they answer 202."""
    parsing = asyncio.Semaphore(PARSERS)  # shared by both: they share the CPU
    for path, source, parse in (
        ("/api/v1/events", "http", parse_json_payload),
        ("/api/v1/alertmanager", "alertmanager", parse_alertmanager),
    ):
        intake = _Intake(bus, Rejections(metrics, source), parse, clock, source, parsing, ack)
        app.router.add_post(path, _handler(intake), expect_handler=expect_handler)


#: Bodies larger than this are parsed in a worker thread, so the loop keeps serving.
THREAD_PARSE_BYTES = 64 << 10
#: Large bodies parsed at once; more wait their turn (each holds its body in memory).
PARSERS = 2


@dataclass(frozen=True, slots=True)
class _Intake:
    """What one input endpoint needs."""

    bus: Bus
    rejections: Rejections
    parse: Callable[[bytes, float, str], tuple[list[Input], list[InputError]]]
    clock: Callable[[], float]
    source: str
    parsing: asyncio.Semaphore
    ack: Ack


def _handler(intake: _Intake) -> Handler:
    bus, rejections = intake.bus, intake.rejections

    async def handle(request: web.Request) -> web.Response:
        try:
            body = await read_body(request)  # 413 by Content-Length, before reading
        except BodyRefused as exc:
            resp = _json({"error": str(exc), "accepted": 0}, exc.status)
            if exc.status != 400:
                resp.force_close()
            return resp
        items, tally = await _parse(intake, body)
        rejections.reject_tally(tally, f"from {request.remote}")
        if not items:
            if not tally.counts:
                tally = Tally.of([InputError("empty", "the body holds no items")])
                rejections.reject_tally(tally)
            return _answer(400, "no valid item", tally)
        if 0 < bus.capacity < len(items):  # could never fit: a retry would fail the same way
            return _answer(
                413, f"{len(items)} valid items; at most {bus.capacity} per request", tally
            )
        if not bus.offer_all(items):
            resp = _answer(503, "queue full, retry later", tally)
            resp.headers["Retry-After"] = "1"
            return resp
        if intake.ack is Ack.DECIDED:
            await _decided(bus)
        answer = {"accepted": len(items), "rejected": tally.total, "reasons": tally.reasons()}
        return _json(answer, 202)

    return handle


async def _decided(bus: Bus) -> None:
    """Until what was queued so far is decided and journaled (a stop ends the wait with
    the connection: the client sees no answer and sends again)."""
    done = asyncio.get_running_loop().create_future()

    def settled() -> None:
        if not done.done():
            done.set_result(None)

    bus.when_decided(settled)
    await done


async def _parse(intake: _Intake, body: bytes) -> tuple[list[Input], Tally]:
    """Small bodies in the loop (cheaper than a thread hop); large ones in a worker thread.

    The errors are tallied where they were made, so 10^5 of them are counted
    and freed in the thread and the loop handles one entry per reason.
    """
    now = intake.clock()

    def work() -> tuple[list[Input], Tally]:
        items, errors = intake.parse(body, now, intake.source)
        return items, Tally.of(errors)

    if len(body) <= THREAD_PARSE_BYTES:
        return work()
    async with intake.parsing:
        return await asyncio.to_thread(work)


def _answer(status: int, error: str, tally: Tally) -> web.Response:
    body = {"error": error, "accepted": 0, "rejected": tally.total, "reasons": tally.reasons()}
    return _json(body, status)


def _json(data: dict[str, Any], status: int) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def parse_alertmanager(
    payload: bytes, now: float, source: str = "alertmanager"
) -> tuple[list[Input], list[InputError]]:
    """An Alertmanager webhook (payload version 4): one ``alert`` event per alert.

    The event's labels are the alert's labels plus ``status``, ``fingerprint``,
    ``startsAt`` and ``endsAt`` (these four win over alert labels of the same
    name); ``event.annotations`` keeps the annotations. ``ts`` is the arrival time.
    """
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        return [], [InputError("bad_json", str(exc))]
    if not isinstance(doc, dict):
        return [], [InputError("not_object", "the webhook body must be a JSON object")]
    version = doc.get("version", "4")
    if version != "4":
        return [], [
            InputError("bad_version", f"webhook payload version 4 expected, got {version!r}")
        ]
    alerts = doc.get("alerts")
    if not isinstance(alerts, list):
        return [], [InputError("no_alerts", "the webhook body needs an 'alerts' list")]
    items: list[Input] = []
    errors: list[InputError] = []
    for alert in alerts:
        try:
            items.append(_alert(alert, now, source))
        except InputError as exc:
            # no traceback: it would tie this frame (and all errors) into a cycle for the GC
            errors.append(exc.with_traceback(None))
    return items, errors


def _alert(alert: object, now: float, source: str) -> Event:
    if not isinstance(alert, dict):
        raise InputError("bad_alert", "each alert must be a JSON object")
    alert_labels = alert.get("labels")
    if not isinstance(alert_labels, dict) or not isinstance(alert_labels.get("alertname"), str):
        raise InputError("bad_alert", "an alert needs a 'labels' object with an 'alertname'")
    status = alert.get("status")
    if status not in ("firing", "resolved"):
        raise InputError("bad_alert", f"alert status must be firing or resolved, got {status!r}")
    raw: dict[str, Any] = {k: v for k, v in alert_labels.items() if k not in ("event", "ts")}
    for key in ("status", "fingerprint", "startsAt", "endsAt"):
        raw[key] = alert.get(key, "")
    labels: dict[str, str] = {}
    for key, value in raw.items():
        text = label_text(value)
        if text is not None:
            labels[key] = text
    annotations = alert.get("annotations")
    raw["annotations"] = annotations if isinstance(annotations, dict) else {}
    if isinstance(alert.get("generatorURL"), str):
        raw["generatorURL"] = alert["generatorURL"]
    raw["event"] = "alert"
    return Event("alert", now, labels, raw, source)
