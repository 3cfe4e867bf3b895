"""``http``: one request; ok when the status is the expected one (any 2xx by default)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import orjson

from batond.errors import ActionError
from batond.remedy.actions.core import (
    TAIL_BYTES,
    ActionKeys,
    ActionKind,
    ActionResult,
    Key,
    StepCall,
)

if TYPE_CHECKING:
    # imported when a request is made: reading playbooks (batond check) needs the
    # key table below, not an HTTP client
    import aiohttp

__all__ = ["KIND", "MAX_BODY_BYTES", "METHODS", "redact", "redact_text", "request", "run"]

#: Most of a response body that is read (for ``steps.NAME.json`` and the output tail).
MAX_BODY_BYTES = 1 << 20
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


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


KIND = ActionKind(
    "http",
    run,
    ActionKeys(
        {
            "method": Key("choice", choices=METHODS),
            "url": Key("text"),
            "headers": Key("text_map"),
            "json": Key("data", description="request body, sent as JSON"),
            "expect_status": Key("status", templated=False, description="default: any 2xx"),
        },
        required=("url",),
    ),
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
    secret_path: bool = False,
) -> ActionResult:
    import aiohttp

    data = orjson.dumps(body) if has_body else None
    hdrs = dict(headers)
    if data is not None:
        hdrs.setdefault("Content-Type", "application/json")
    shown = redact(url, keep_path=not secret_path)
    where = f"{method} {shown}"
    try:
        async with session.request(method, url, data=data, headers=hdrs) as resp:
            # a huge response must not blow up the daemon: keep what is useful, drop the rest
            raw = await resp.content.read(MAX_BODY_BYTES)
            status = resp.status
            ctype = resp.content_type
    except (aiohttp.ClientError, ValueError) as exc:
        error = redact_text(str(exc), keep_path=not secret_path)
        return ActionResult(ok=False, detail=f"{where}: {type(exc).__name__}: {error}")
    parsed = None
    if ctype == "application/json" or ctype.endswith("+json"):
        try:
            parsed = orjson.loads(raw)
        except orjson.JSONDecodeError:
            parsed = None
    ok = _expected(status, expect)
    text = raw[-TAIL_BYTES:].decode("utf-8", errors="replace")
    detail = "" if ok else f"{where}: status {status}, expected {_describe(expect)}"
    return ActionResult(ok, status=status, json=parsed, stdout=text, detail=detail)


def redact(url: str, keep_path: bool = True) -> str:
    """The URL without what often holds a secret: user info, query, and (webhooks) the path.

    Step details are shown by the API and published over MQTT, and a
    Slack-style webhook URL is a credential.
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    path = parts.path if keep_path or parts.path in ("", "/") else "/…"
    return urlunsplit((parts.scheme, host, path, "", ""))


# a URL inside an error message: a scheme, "://", then anything up to a quote, space or ">"
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>()]+")


def redact_text(text: str, keep_path: bool = True) -> str:
    """``text`` with every URL in it parsed and :func:`redact`-ed.

    aiohttp's messages show its own normalised form of the URL (or a redirect
    target), which no string replacement of the URL we sent would find.
    """
    return _URL_IN_TEXT.sub(lambda m: _redact_or_drop(m.group(0), keep_path), text)


def _redact_or_drop(url: str, keep_path: bool) -> str:
    try:
        return redact(url, keep_path)
    except ValueError:  # unparsable (a bad port): show none of it
        return "<url>"


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
