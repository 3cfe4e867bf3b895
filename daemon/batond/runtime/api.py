"""The HTTP API (aiohttp): health, metrics, history, control, the web page.

Mutating endpoints (every POST and DELETE, input included) need
``Authorization: Bearer <token>`` when ``http.token_file`` is set; the check
is one middleware so no route can forget it. Request bodies above
``http.max_body`` get 413 from aiohttp itself.
"""

from __future__ import annotations

import functools
import hmac
import time
from collections.abc import Awaitable, Callable, Mapping
from importlib import resources
from typing import Any, Protocol

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from batond.engine.types import Suppression
from batond.errors import BatondError, ConflictError
from batond.intake.httpguard import BodyRefused, expect_handler, handler_args, read_body
from batond.journal.queries import DecisionFilter
from batond.metrics import Metrics
from batond.runtime.openapi import spec_for
from batond.units import parse_duration

__all__ = ["Control", "build_app"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Control(Protocol):
    """What the API asks of the running daemon (runtime.operator.Operator implements it)."""

    def is_ready(self) -> bool: ...
    def not_ready_reason(self) -> str: ...
    def status(self) -> dict[str, Any]: ...
    async def fleet(self) -> dict[str, Any] | None: ...
    async def incidents(self, limit: int) -> dict[str, Any]: ...
    async def runs(self, limit: int) -> dict[str, Any]: ...
    async def run(self, run_id: int) -> dict[str, Any] | None: ...
    async def incident(self, incident_id: int) -> dict[str, Any] | None: ...
    async def decisions(self, limit: int, filters: DecisionFilter) -> dict[str, Any]: ...
    async def resolve_incident(self, incident_id: int) -> dict[str, Any] | None: ...
    async def feedback(self, incident_id: int, kind: str) -> dict[str, Any]: ...
    def rules(self) -> dict[str, Any]: ...
    def series(self, metric: str | None, host: str | None) -> dict[str, Any]: ...
    async def silences(self) -> dict[str, Any]: ...
    async def add_silence(self, body: dict[str, Any]) -> dict[str, Any]: ...
    async def expire_silence(self, silence_id: int) -> bool: ...
    async def gate(self, run_id: int, verb: str) -> bool: ...
    async def set_paused(self, paused: bool) -> dict[str, Any]: ...
    async def reset_circuit(self, key: str, rule: str | None = None) -> list[dict[str, str]]: ...
    async def reload(self) -> dict[str, Any]: ...
    async def trigger_schedule(self, name: str) -> dict[str, Any] | None: ...
    async def run_playbook(self, name: str, params: Mapping[str, Any]) -> dict[str, Any] | None: ...


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def _error(status: int, message: str) -> web.Response:
    return json_response({"error": message}, status)


def _auth_middleware(token: str | None) -> Any:
    if token is not None and not token:
        raise ValueError("an empty API token would disable authentication")
    expected = f"Bearer {token}".encode() if token is not None else None

    @web.middleware
    async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        if expected is not None and request.method in ("POST", "PUT", "PATCH", "DELETE"):
            given = request.headers.get("Authorization", "").encode()
            if not hmac.compare_digest(given, expected):
                resp = _error(401, "missing or wrong bearer token")
                resp.headers["WWW-Authenticate"] = 'Bearer realm="batond"'
                return resp
        try:
            return await handler(request)
        except ConflictError as exc:
            return _error(409, str(exc))
        except (BatondError, _Invalid) as exc:
            return _error(400, str(exc))
        except BodyRefused as exc:
            resp = _error(exc.status, str(exc))
            if exc.status != 400:  # the rest of the body may still be on its way
                resp.force_close()
            return resp

    return auth


class _Invalid(Exception):
    """A request the API refuses with 400 and a JSON reason."""


#: Ids are SQLite integers: 1 .. 2**63 - 1.
_MAX_ID = (1 << 63) - 1


def _digits(text: str, name: str) -> int:
    """ASCII digits only: ``int()`` takes "٣" (3) and " 3 ", which no client sends."""
    if not (text.isascii() and text.isdigit()) or len(text) > 19:
        raise _Invalid(f"{name} must be a positive integer, got {text[:40]!r}")
    return int(text)


#: What ``result=`` of GET /api/v1/decisions may be.
RESULTS = ("run", *(str(s) for s in Suppression))


def _decision_filter(request: web.Request) -> DecisionFilter:
    q = request.query
    result = q.get("result") or None
    if result is not None and result not in RESULTS:
        raise _Invalid(f"result must be one of {', '.join(RESULTS)}")
    return DecisionFilter(
        rule=q.get("rule") or None, key=q.get("key") or None, result=result,
        since=_since(q.get("since") or None),
    )  # fmt: skip


def _since(text: str | None) -> float | None:
    """Epoch seconds, or a duration meaning that long ago (``1h``)."""
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return time.time() - parse_duration(text)
    except ValueError:
        raise _Invalid("since must be epoch seconds or a duration such as 30m") from None


def _int(request: web.Request, name: str) -> int:
    value = _digits(request.match_info[name], name)
    if not 0 < value <= _MAX_ID:
        raise _Invalid(f"{name} must be between 1 and {_MAX_ID}, got {value}")
    return value


def _limit(request: web.Request) -> int:
    return max(1, min(10_000, _digits(request.query.get("limit", "100"), "limit")))


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = orjson.loads(await read_body(request) or b"{}")
    except orjson.JSONDecodeError as exc:
        raise _Invalid(f"body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise _Invalid("body must be a JSON object")
    return body


def build_app(
    control: Control,
    metrics: Metrics,
    *,
    token: str | None,
    max_body: int,
    add_input_routes: Callable[[web.Application], None] | None = None,
) -> web.Application:
    app = web.Application(
        client_max_size=max_body,
        middlewares=[_auth_middleware(token)],
        handler_args=handler_args(),  # header timeout, one-line reports of malformed requests
    )
    _Routes(control, metrics, token_required=token is not None).add_to(app.router)
    if add_input_routes is not None:
        add_input_routes(app)
    return app


#: The page's static files (daemon/batond/web/) and their content types.
_ASSETS = {"app.js": "text/javascript", "app.css": "text/css"}


class _Routes:
    """One small handler per endpoint (docs/api.md; described in runtime/openapi.py)."""

    def __init__(self, control: Control, metrics: Metrics, *, token_required: bool) -> None:
        self.control = control
        self.metrics = metrics
        self.token_required = token_required

    def add_to(self, r: web.UrlDispatcher) -> None:
        # a body route answers "Expect: 100-continue" by the body's size (413 when over)
        post = functools.partial(r.add_post, expect_handler=expect_handler)
        delete = functools.partial(r.add_delete, expect_handler=expect_handler)
        r.add_get("/", self.index)
        r.add_get("/web/{name}", self.asset)
        r.add_get("/api/v1/openapi.json", self.openapi)
        r.add_get("/healthz", self.healthz)
        r.add_get("/readyz", self.readyz)
        r.add_get("/metrics", self.metrics_page)
        r.add_get("/api/v1/status", self.status)
        r.add_get("/api/v1/fleet", self.fleet)
        r.add_get("/api/v1/incidents", self.incidents)
        r.add_get("/api/v1/incidents/{id}", self.incident)
        post("/api/v1/incidents/{id}/resolve", self.resolve_incident)
        post("/api/v1/incidents/{id}/feedback", self.feedback)
        r.add_get("/api/v1/decisions", self.decisions)
        r.add_get("/api/v1/runs", self.runs)
        r.add_get("/api/v1/runs/{id}", self.run)
        for verb in ("approve", "deny", "cancel"):
            post(f"/api/v1/runs/{{id}}/{verb}", self.gate(verb))
        r.add_get("/api/v1/rules", self.rules)
        r.add_get("/api/v1/series", self.series)
        r.add_get("/api/v1/silences", self.silences)
        post("/api/v1/silences", self.add_silence)
        delete("/api/v1/silences/{id}", self.expire_silence)
        post("/api/v1/pause", self.pause(True))
        post("/api/v1/resume", self.pause(False))
        post("/api/v1/reload", self.reload)
        post("/api/v1/schedules/{name}/trigger", self.trigger_schedule)
        post("/api/v1/playbooks/{name}/run", self.run_playbook)
        # a target is an incident key ("host=web-1,svc=a"): any text, percent-encoded
        post("/api/v1/circuits/{target:.+}/reset", self.reset_circuit)

    async def healthz(self, _: web.Request) -> web.Response:
        return json_response({"status": "ok"})

    async def readyz(self, _: web.Request) -> web.Response:
        if self.control.is_ready():
            return json_response({"ready": True})
        return json_response({"ready": False, "reason": self.control.not_ready_reason()}, 503)

    async def metrics_page(self, _: web.Request) -> web.Response:
        # the exposition's own content type, version included: scrapers pick the parser by it
        body = generate_latest(self.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def index(self, _: web.Request) -> web.Response:
        page = resources.files("batond").joinpath("web/index.html").read_bytes()
        return web.Response(body=page, content_type="text/html", charset="utf-8")

    async def asset(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        kind = _ASSETS.get(name)
        if kind is None:  # a fixed list: no path from the request reaches the file system
            return _error(404, f"no page asset {name!r}")
        body = resources.files("batond").joinpath(f"web/{name}").read_bytes()
        return web.Response(body=body, content_type=kind, charset="utf-8")

    async def openapi(self, request: web.Request) -> web.Response:
        routes = [
            (route.method, route.resource.canonical)
            for route in request.app.router.routes()
            if route.method != "HEAD" and route.resource is not None
        ]
        return json_response(spec_for(routes, token_required=self.token_required))

    async def status(self, _: web.Request) -> web.Response:
        return json_response(self.control.status())

    async def fleet(self, _: web.Request) -> web.Response:
        found = await self.control.fleet()
        if found is None:
            return _error(404, "not a central instance of a fleet (docs/fleet.md)")
        return json_response(found)

    async def incidents(self, request: web.Request) -> web.Response:
        return json_response(await self.control.incidents(_limit(request)))

    async def incident(self, request: web.Request) -> web.Response:
        found = await self.control.incident(_int(request, "id"))
        return json_response(found) if found is not None else _error(404, "no such incident")

    async def resolve_incident(self, request: web.Request) -> web.Response:
        incident_id = _int(request, "id")
        done = await self.control.resolve_incident(incident_id)
        if done is None:
            return _error(404, f"no incident {incident_id}")
        return json_response(done)

    async def decisions(self, request: web.Request) -> web.Response:
        filters = _decision_filter(request)
        return json_response(await self.control.decisions(_limit(request), filters))

    async def runs(self, request: web.Request) -> web.Response:
        return json_response(await self.control.runs(_limit(request)))

    async def run(self, request: web.Request) -> web.Response:
        found = await self.control.run(_int(request, "id"))
        return json_response(found) if found is not None else _error(404, "no such run")

    async def feedback(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        if body.get("feedback") != "false_positive":
            return _error(400, 'feedback must be "false_positive"')
        incident_id = _int(request, "id")
        if await self.control.incident(incident_id) is None:
            return _error(404, f"no incident {incident_id}")
        return json_response(await self.control.feedback(incident_id, "false_positive"))

    async def rules(self, _: web.Request) -> web.Response:
        return json_response(self.control.rules())

    async def series(self, request: web.Request) -> web.Response:
        q = request.query
        return json_response(self.control.series(q.get("metric") or None, q.get("host") or None))

    async def silences(self, _: web.Request) -> web.Response:
        return json_response(await self.control.silences())

    async def add_silence(self, request: web.Request) -> web.Response:
        return json_response(await self.control.add_silence(await _json_body(request)), 201)

    async def expire_silence(self, request: web.Request) -> web.Response:
        if await self.control.expire_silence(_int(request, "id")):
            return json_response({"expired": True})
        return _error(404, "no such active silence")

    def gate(self, verb: str) -> Handler:
        async def handler(request: web.Request) -> web.Response:
            run_id = _int(request, "id")
            if await self.control.run(run_id) is None:
                return _error(404, f"no run {run_id}")
            if await self.control.gate(run_id, verb):
                return json_response({"run": run_id, verb: True})
            return _error(409, f"run {run_id}: {verb} is not possible now (done, or not waiting)")

        return handler

    def pause(self, paused: bool) -> Handler:
        async def handler(_: web.Request) -> web.Response:
            return json_response(await self.control.set_paused(paused))

        return handler

    async def reset_circuit(self, request: web.Request) -> web.Response:
        target = request.match_info["target"]
        rule = request.query.get("rule") or None
        reset = await self.control.reset_circuit(target, rule)
        if reset:
            return json_response({"target": target, "reset": True, "circuits": reset})
        whose = f" of rule {rule!r}" if rule else ""
        return _error(404, f"no open circuit for {target!r}{whose}")

    async def reload(self, _: web.Request) -> web.Response:
        result = await self.control.reload()
        return json_response(result, 200 if result.get("ok") else 400)

    async def trigger_schedule(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        found = await self.control.trigger_schedule(name)
        return (
            json_response(found, 202) if found is not None else _error(404, f"no schedule {name!r}")
        )

    async def run_playbook(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        params = (await _json_body(request)).get("params", {})
        if not isinstance(params, dict) or not all(isinstance(k, str) for k in params):
            raise _Invalid('"params" must be an object')
        found = await self.control.run_playbook(name, params)
        return (
            json_response(found, 202) if found is not None else _error(404, f"no playbook {name!r}")
        )
