"""``http``: one request; ok when the status is the expected one (any 2xx by default)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import aiohttp
import orjson

from batond.actions.core import TAIL_BYTES, ActionResult, StepCall
from batond.errors import ActionError

__all__ = ["request", "run"]


async def run(call: StepCall) -> ActionResult:
    url = call.args.get("url")
    if not isinstance(url, str) or not url:
        raise ActionError("http: url must be a non-empty string")
    method = str(call.args.get("method") or ("POST" if "json" in call.args else "GET")).upper()
    raw_headers = call.args.get("headers")
    headers = dict(raw_headers) if isinstance(raw_headers, Mapping) else {}
    return await request(
        call.ctx.session(),
        method,
        url,
        headers={str(k): str(v) for k, v in headers.items()},
        body=call.args.get("json"),
        has_body="json" in call.args,
        expect=call.args.get("expect_status"),
    )


async def request(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    headers: Mapping[str, str],
    body: Any = None,
    has_body: bool = False,
    expect: Any = None,
) -> ActionResult:
    data = orjson.dumps(body) if has_body else None
    hdrs = dict(headers)
    if data is not None:
        hdrs.setdefault("Content-Type", "application/json")
    try:
        async with session.request(method, url, data=data, headers=hdrs) as resp:
            raw = await resp.read()
            status = resp.status
            ctype = resp.content_type
    except (aiohttp.ClientError, ValueError) as exc:
        return ActionResult(ok=False, detail=f"{method} {url}: {type(exc).__name__}: {exc}")
    parsed = None
    if ctype == "application/json" or ctype.endswith("+json"):
        try:
            parsed = orjson.loads(raw)
        except orjson.JSONDecodeError:
            parsed = None
    ok = _expected(status, expect)
    text = raw[-TAIL_BYTES:].decode("utf-8", errors="replace")
    detail = "" if ok else f"{method} {url}: status {status}, expected {_describe(expect)}"
    return ActionResult(ok, status=status, json=parsed, stdout=text, detail=detail)


def _expected(status: int, expect: Any) -> bool:
    if expect is None:
        return 200 <= status < 300
    if isinstance(expect, list | tuple):
        return status in {int(e) for e in expect}
    return status == int(expect)


def _describe(expect: Any) -> str:
    if expect is None:
        return "2xx"
    return str(expect)
