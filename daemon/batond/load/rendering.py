"""Rendering templated URLs and directories so event data stays in the part it stands in.

A plain template joins text; for a URL or a working directory that is not
enough: ``http://{{ labels.host }}:8080/health`` with the host
``127.0.0.1:9100/api/v1/pause?`` would reach another port and path, and a
``cwd`` of ``/srv/{{ labels.app }}`` with ``../../etc`` would leave ``/srv``.

* URL: each ``{{ }}`` is encoded as the component it stands in, judged by the
  text before it. In the host it must be a host name or an IP address (port:
  a number), nothing else; in a path segment, a query or a fragment it is
  percent-encoded whole (``/``, ``?``, ``&``, ``#`` and ``%`` included). A
  template that starts the URL (``{{ params.webhook }}``) gives the whole URL.
  Every rendered URL must be ``http`` or ``https`` with a valid host and no
  ``.``/``..`` path segment (clients resolve those, moving to another path).
* Directory: the text before the first ``{{ }}`` must name an absolute
  directory (its root); the rendered path, normalised, must stay inside it.
"""

from __future__ import annotations

import ipaddress
import posixpath
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlsplit

from batond.engine.templates import EvalError, Template, text_of

__all__ = ["render_cwd", "render_url"]

# RFC 1123 labels (letters, digits, inner hyphens; underscores too, as container names have)
_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)")
_PORT = re.compile(r"[0-9]{1,5}")


def render_url(compiled: Any, ctx: Mapping[str, Any]) -> str:
    """The URL of an ``http``/``notify`` step; EvalError when it is not a safe http(s) URL."""
    if not isinstance(compiled, Template) or compiled.single:
        url = text_of(compiled.render(ctx) if isinstance(compiled, Template) else compiled)
    else:
        out: list[str] = []
        for part in compiled.parts:
            if isinstance(part, str):
                out.append(part)
            else:
                prefix = "".join(out)
                out.append(_encode_as(_component(prefix), text_of(part.evaluate(ctx)), prefix))
        url = "".join(out)
    _check_url(url)
    return url


def _component(prefix: str) -> str:
    """Which part of a URL starts after ``prefix``: whole, host, port, path, query, fragment."""
    if "#" in prefix:
        return "fragment"
    if "?" in prefix:
        return "query"
    scheme_end = prefix.find("://")
    if scheme_end < 0:
        return "whole" if not prefix else "scheme"
    authority = prefix[scheme_end + 3 :]
    if "/" in authority:
        return "path"
    host = authority.rsplit("@", 1)[-1]
    if host.startswith("["):
        return "port" if "]:" in host else "host"
    return "port" if ":" in host else "host"


def _encode_as(component: str, value: str, prefix: str) -> str:
    if component == "whole":
        return value
    if component == "host":
        return _host_text(value, bracketed=prefix.endswith("["))
    if component == "port":
        if not _PORT.fullmatch(value) or not 0 < int(value) < 65536:
            raise EvalError(f"url: port must be a number from 1 to 65535, got {value!r}")
        return value
    if component == "scheme":
        raise EvalError("url: the scheme must be written in the playbook, not templated")
    # path segment, query value or fragment: every delimiter is data here
    return quote(value, safe="")


def _host_text(value: str, bracketed: bool) -> str:
    """``value`` when it is a host name or an IP address; IPv6 gets its brackets."""
    if "%" in value:  # an IPv6 zone ("fe80::1%eth0") would need encoding and names an interface
        raise EvalError(f"url: host must be a host name or an IP address, got {value!r}")
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        address = None
    if address is not None:
        return f"[{value}]" if address.version == 6 and not bracketed else value
    if _is_host_name(value):
        return value
    raise EvalError(f"url: host must be a host name or an IP address, got {value!r}")


def _is_host_name(value: str) -> bool:
    name = value[:-1] if value.endswith(".") else value
    if not name or len(name) > 253:
        return False
    return all(_HOST_LABEL.fullmatch(label) for label in name.split("."))


def _check_url(url: str) -> None:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise EvalError(f"url: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise EvalError(f"url: scheme must be http or https, got {parts.scheme!r}")
    host = parts.hostname or ""
    if not host:
        raise EvalError("url: no host")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not _is_host_name(host):
            raise EvalError(f"url: bad host {host!r}") from None
    if port == 0:
        raise EvalError("url: port 0")
    if any(seg in (".", "..") for seg in parts.path.split("/")):
        raise EvalError("url: '.' and '..' path segments are refused (they change the path)")


def render_cwd(compiled: Any, ctx: Mapping[str, Any]) -> str:
    """The ``cwd`` of an ``exec`` step; a templated one must stay under its literal root."""
    if not isinstance(compiled, Template):
        return text_of(compiled)
    first = compiled.parts[0]
    lead = first if isinstance(first, str) else ""
    root = lead[: lead.rfind("/") + 1] if "/" in lead else ""
    if not root.startswith("/"):
        raise EvalError("cwd: a templated cwd must start with a fixed absolute directory")
    path = text_of(compiled.render(ctx))
    resolved = posixpath.normpath(path)
    root_dir = posixpath.normpath(root)
    if resolved != root_dir and not resolved.startswith(root_dir.rstrip("/") + "/"):
        raise EvalError(f"cwd: {path!r} leaves {root_dir!r}")
    return resolved
