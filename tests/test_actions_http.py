"""http and notify against a real aiohttp server on 127.0.0.1."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from batond.remedy.actions import ActionContext, StepCall
from batond.remedy.actions import http as http_action
from batond.remedy.actions import notify as notify_action


class Server:
    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        self.url = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.seen.append(
            {
                "method": request.method,
                "path": request.path,
                "headers": dict(request.headers),
                "body": body,
            }
        )
        if request.path == "/health":
            return web.json_response({"healthy": True, "n": 3})
        if request.path.startswith("/loop"):  # redirects for ever, keeping the query
            raise web.HTTPFound(f"/loop{len(self.seen)}?{request.query_string}")
        if request.path == "/broken":
            return web.Response(status=503, text="down")
        if request.path == "/huge":  # 8 MiB, streamed
            resp = web.StreamResponse()
            await resp.prepare(request)
            for _ in range(8):
                await resp.write(b"x" * (1 << 20))
            await resp.write_eof()
            return resp
        return web.Response(status=204)


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    srv = Server()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", srv.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    srv.url = f"http://127.0.0.1:{port}"
    yield srv
    await runner.cleanup()


@pytest.fixture
async def ctx() -> AsyncIterator[ActionContext]:
    c = ActionContext()
    yield c
    await c.close()


async def _noop(state: str) -> None:
    return None


def call(ctx: ActionContext, **args: Any) -> StepCall:
    return StepCall(1, "s", args, ctx, _noop)


async def test_get_parses_json_and_checks_status(server: Server, ctx: ActionContext) -> None:
    result = await http_action.run(call(ctx, url=server.url + "/health", expect_status=200))
    assert result.ok and result.status == 200
    assert result.json == {"healthy": True, "n": 3}
    assert server.seen[0]["method"] == "GET"


async def test_unexpected_status_fails(server: Server, ctx: ActionContext) -> None:
    result = await http_action.run(call(ctx, url=server.url + "/broken"))
    assert not result.ok and result.status == 503 and result.stdout == "down"
    assert "expected 2xx" in result.detail
    result = await http_action.run(call(ctx, url=server.url + "/broken", expect_status=[503]))
    assert result.ok


async def test_post_json_with_headers(server: Server, ctx: ActionContext) -> None:
    result = await http_action.run(
        call(
            ctx,
            method="PUT",
            url=server.url + "/x",
            headers={"X-Batond": "1"},
            json={"a": [1, "two"]},
        )
    )
    assert result.ok and result.status == 204
    seen = server.seen[0]
    assert seen["method"] == "PUT" and seen["headers"]["X-Batond"] == "1"
    assert seen["body"] == b'{"a":[1,"two"]}'
    assert seen["headers"]["Content-Type"] == "application/json"


async def test_connection_refused_is_a_failed_step(ctx: ActionContext) -> None:
    result = await http_action.run(call(ctx, url="http://127.0.0.1:1/x"))
    assert not result.ok and result.status is None
    assert "GET http://127.0.0.1:1/x" in result.detail


async def test_notify_posts_a_slack_compatible_body(server: Server, ctx: ActionContext) -> None:
    result = await notify_action.run(call(ctx, url=server.url + "/hook", text="disk on h1 full"))
    assert result.ok
    assert server.seen[0]["method"] == "POST"
    assert server.seen[0]["body"] == b'{"text":"disk on h1 full"}'


def test_redacted_urls_keep_no_secrets() -> None:
    from batond.remedy.actions.http import redact

    url = "https://user:pw@hooks.example:8443/services/T0/B0/SECRET?token=x"
    assert redact(url) == "https://hooks.example:8443/services/T0/B0/SECRET"
    assert redact(url, keep_path=False) == "https://hooks.example:8443/…"


async def test_a_huge_response_is_read_only_up_to_the_cap(
    server: Server, ctx: ActionContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("batond.remedy.actions.http.MAX_BODY_BYTES", 1000)
    result = await http_action.run(call(ctx, url=server.url + "/huge"))
    assert result.ok and result.status == 200
    assert len(result.stdout) == 1000  # of 8 MiB sent; without the cap: the 4 KiB tail


async def test_a_failed_notify_does_not_show_the_webhook_path(ctx: ActionContext) -> None:
    result = await notify_action.run(call(ctx, url="http://127.0.0.1:1/services/T0/SECRET"))
    assert not result.ok
    assert "SECRET" not in result.detail and "http://127.0.0.1:1/…" in result.detail


@pytest.mark.parametrize("path", ["/loop?t=SECRET", "/l%6Fop?t=SECRET&x=%41"])
async def test_a_secret_in_the_query_never_reaches_the_error_detail(
    server: Server, ctx: ActionContext, path: str
) -> None:
    # aiohttp's error text holds its own normalised URL (and the redirect target's)
    result = await http_action.run(call(ctx, url=server.url + path))
    assert not result.ok and "TooManyRedirects" in result.detail
    assert "SECRET" not in result.detail and "t=" not in result.detail
    assert server.url in result.detail


async def test_user_info_never_reaches_the_error_detail(ctx: ActionContext) -> None:
    result = await http_action.run(call(ctx, url="http://admin:PASSWORD@127.0.0.1:1/x?k=KEY"))
    assert not result.ok
    assert "PASSWORD" not in result.detail and "KEY" not in result.detail
    assert "http://127.0.0.1:1/x" in result.detail
