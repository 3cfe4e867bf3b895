"""The commands that talk to a running daemon over its HTTP API.

Stdlib only (``urllib.request``): these commands start fast and need no
event loop. The daemon is found with ``--url`` (or ``$BATOND_URL``) and the
token with ``--token-file`` (or ``$BATOND_TOKEN_FILE``), else from the
config's ``http.listen`` and ``http.token_file``.

Exit codes: 0 done, 1 the daemon answered with an error (its message is
printed), 2 the daemon could not be reached or asked (usage, config, token).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from batond.errors import BatondError
from batond.units import parse_duration

__all__ = [
    "ClientError",
    "approve",
    "cancel",
    "circuit",
    "decisions",
    "deny",
    "feedback",
    "incidents",
    "pause",
    "reload",
    "resume",
    "runs",
    "silence",
    "status",
]

TIMEOUT_S = 10.0


class ClientError(Exception):
    """A command that cannot complete; ``code`` is the exit code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


# -- transport ------------------------------------------------------------------
class Api:
    def __init__(self, url: str, token: str | None) -> None:
        self.url = url.rstrip("/")
        self.token = token

    def call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
                payload = response.read()
        except urllib.error.HTTPError as exc:
            raise ClientError(f"{method} {path}: {exc.code} {_error_text(exc)}", 1) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ClientError(f"cannot reach the daemon at {self.url}: {reason}", 2) from None
        if not payload:
            return {}
        try:
            return json.loads(payload)
        except ValueError:
            raise ClientError(f"{method} {path}: the daemon's answer is not JSON", 1) from None


def _error_text(exc: urllib.error.HTTPError) -> str:
    try:
        body = exc.read()
        doc = json.loads(body)
    except (OSError, ValueError):
        return exc.reason if isinstance(exc.reason, str) else ""
    if isinstance(doc, dict):
        for key in ("error", "message", "reason"):
            if isinstance(doc.get(key), str):
                return str(doc[key])
        if isinstance(doc.get("errors"), list):
            return "; ".join(str(e) for e in doc["errors"])
    return str(doc)


def connect(args: argparse.Namespace) -> Api:
    """The API client the options (then the environment, then the config) point at."""
    url: str | None = getattr(args, "url", None)
    token_file: str | None = getattr(args, "token_file", None)
    if url is None or token_file is None:
        from batond.load.config import load_config

        try:
            config = load_config(getattr(args, "config", None))
        except BatondError as exc:
            raise ClientError(str(exc), 2) from None
        if url is None:
            host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(config.http.host, config.http.host)
            host = f"[{host}]" if ":" in host else host
            url = f"http://{host}:{config.http.port}"
        if token_file is None and config.http.token_file is not None:
            token_file = str(config.http.token_file)
    token = None
    if token_file:
        try:
            token = Path(token_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ClientError(f"{token_file}: cannot read the token: {exc.strerror}", 2) from None
    return Api(url, token)


def _command(args: argparse.Namespace, body: Any) -> int:
    """Run one command body with the shared error handling."""
    try:
        body(connect(args))
    except ClientError as exc:
        print(f"batond: {exc}", file=sys.stderr)
        return exc.code
    return 0


def _emit(args: argparse.Namespace, doc: Any, human: str) -> None:
    if getattr(args, "json", False):
        print(json.dumps(doc, indent=2, sort_keys=False))
    else:
        print(human)


# -- formatting -----------------------------------------------------------------
def when(ts: Any) -> str:
    """Epoch seconds as local time; ``-`` for none."""
    if not isinstance(ts, int | float):
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def span(start: Any, end: Any) -> str:
    if not isinstance(start, int | float) or not isinstance(end, int | float):
        return "-"
    seconds = max(0.0, end - start)
    if seconds < 10:
        return f"{seconds:.2f}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain aligned table; ``(none)`` for no rows."""
    if not rows:
        return "(none)"
    cells = [[("-" if c is None else str(c)) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines)


def _flatten(doc: Any, prefix: str = "") -> list[tuple[str, str]]:
    if isinstance(doc, dict) and doc:
        out: list[tuple[str, str]] = []
        for key, value in doc.items():
            out += _flatten(
                value, f"{prefix}{key}." if isinstance(value, dict) else f"{prefix}{key}"
            )
        return out
    if isinstance(doc, list):
        return [(prefix, ", ".join(str(v) for v in doc) or "-")]
    if isinstance(doc, dict):
        return [(prefix.rstrip("."), "-")]
    return [
        (prefix, "-" if doc is None else str(doc).lower() if isinstance(doc, bool) else str(doc))
    ]


# -- commands ---------------------------------------------------------------------
def status(args: argparse.Namespace) -> int:
    def body(api: Api) -> None:
        doc = api.call("GET", "/api/v1/status")
        pairs = _flatten(doc)
        width = max((len(k) for k, _ in pairs), default=0)
        _emit(args, doc, "\n".join(f"{k.ljust(width)}  {v}" for k, v in pairs))

    return _command(args, body)


def incidents(args: argparse.Namespace) -> int:
    """``batond incidents`` (list), ``batond incidents ID`` (one, explained),
    ``batond incidents resolve ID`` (an operator closes it)."""
    words = list(getattr(args, "what", None) or [])

    def body(api: Api) -> None:
        if len(words) == 2 and words[0] == "resolve" and words[1].isdigit():
            doc = api.call("POST", f"/api/v1/incidents/{words[1]}/resolve", {})
            _emit(args, doc, f"incident {words[1]} resolved")
        elif len(words) == 1 and words[0].isdigit():
            doc = api.call("GET", f"/api/v1/incidents/{words[0]}")
            _emit(args, doc, format_incident(doc))
        elif not words:
            _list_incidents(api, args)
        else:
            raise ClientError("usage: batond incidents [ID | resolve ID]", 2)

    return _command(args, body)


def _list_incidents(api: Api, args: argparse.Namespace) -> None:
    limit = getattr(args, "limit", None)
    doc = api.call("GET", "/api/v1/incidents" + (f"?limit={limit}" if limit else ""))
    rows = [
        (i.get("id"), i.get("rule"), i.get("key"), i.get("state"), i.get("severity"),
         when(i.get("opened_at")), when(i.get("resolved_at")), i.get("runs"),
         _last(i))
        for i in doc.get("incidents", [])
    ]  # fmt: skip
    headers = ("ID", "RULE", "KEY", "STATE", "SEVERITY", "OPENED", "RESOLVED", "RUNS", "LAST")
    _emit(args, doc, table(headers, rows))


def _last(incident: dict[str, Any]) -> str:
    """The latest decision's result; for an open incident without a run, why."""
    result = incident.get("last_result")
    if result in (None, "run"):
        return str(result or "-")
    return f"{result}: {incident.get('last_reason') or ''}".rstrip(": ")


def format_incident(doc: dict[str, Any]) -> str:
    """One incident: what it is, its decisions with their reasons, its runs, its timeline."""
    head = [
        f"incident {doc.get('id')}  {doc.get('rule')}  key {doc.get('key')}  {doc.get('state')}"
        + (f" (resolved by {doc['resolved_by']})" if doc.get("resolved_by") else ""),
        f"opened {when(doc.get('opened_at'))}  resolved {when(doc.get('resolved_at'))}"
        f"  severity {doc.get('severity')}",
    ]
    decisions = [
        (d.get("id"), when(d.get("ts")), d.get("result"), d.get("playbook"),
         d.get("reason") or "", d.get("cause") or "")
        for d in doc.get("decisions") or []
    ]  # fmt: skip
    runs = [
        (r.get("id"), r.get("playbook"), "escalation" if r.get("escalation") else "run",
         r.get("state"), r.get("outcome"), when(r.get("started_at") or r.get("created_at")),
         span(r.get("started_at"), r.get("ended_at")))
        for r in doc.get("runs") or []
    ]  # fmt: skip
    timeline = [f"  {when(t.get('ts'))}  {t.get('what')}  {t.get('text', '')}".rstrip()
                for t in doc.get("timeline") or []]  # fmt: skip
    return "\n".join([
        *head, "", "decisions:",
        table(("ID", "AT", "RESULT", "PLAYBOOK", "REASON", "CAUSE"), decisions), "", "runs:",
        table(("ID", "PLAYBOOK", "KIND", "STATE", "OUTCOME", "STARTED", "TOOK"), runs), "",
        "timeline:", *timeline,
    ])  # fmt: skip


def decisions(args: argparse.Namespace) -> int:
    """``batond decisions [--rule R] [--key K] [--result X] [--since WHEN] [--limit N]``."""

    def body(api: Api) -> None:
        query = {
            k: v
            for k, v in (
                ("rule", args.rule), ("key", args.key), ("result", args.result),
                ("since", args.since), ("limit", args.limit),
            )
            if v is not None
        }  # fmt: skip
        path = "/api/v1/decisions" + (f"?{urllib.parse.urlencode(query)}" if query else "")
        doc = api.call("GET", path)
        rows = [
            (d.get("id"), when(d.get("ts")), d.get("rule"), d.get("key"), d.get("result"),
             d.get("playbook"), d.get("incident_id"), d.get("reason") or d.get("cause") or "")
            for d in doc.get("decisions", [])
        ]  # fmt: skip
        headers = ("ID", "AT", "RULE", "KEY", "RESULT", "PLAYBOOK", "INCIDENT", "WHY")
        _emit(args, doc, table(headers, rows))

    return _command(args, body)


def runs(args: argparse.Namespace) -> int:
    def body(api: Api) -> None:
        if getattr(args, "id", None) is not None:
            run = api.call("GET", f"/api/v1/runs/{args.id}")
            _emit(args, run, format_run(run))
            return
        doc = api.call("GET", f"/api/v1/runs?limit={getattr(args, 'limit', 100)}")
        rows = [
            (r.get("id"), r.get("rule"), r.get("playbook"), r.get("key"), r.get("state"),
             r.get("outcome"), when(r.get("started_at") or r.get("created_at")),
             span(r.get("started_at"), r.get("ended_at")), len(r.get("steps") or ()))
            for r in doc.get("runs", [])
        ]  # fmt: skip
        headers = ("ID", "RULE", "PLAYBOOK", "KEY", "STATE", "OUTCOME", "STARTED", "TOOK", "STEPS")
        _emit(args, doc, table(headers, rows))

    return _command(args, body)


def format_run(run: dict[str, Any]) -> str:
    """One run: a header and its step timeline, with the tail of each step's output."""
    head = [
        f"run {run.get('id')}  {run.get('rule')} -> {run.get('playbook')}  key {run.get('key')}",
        f"state {run.get('state')}  outcome {run.get('outcome') or '-'}"
        f"{'  (escalation)' if run.get('escalation') else ''}  "
        f"started {when(run.get('started_at'))}  ended {when(run.get('ended_at'))}",
    ]
    if run.get("resumes"):
        head.append(f"resumes run {run['resumes']}")
    steps = run.get("steps") or []
    rows = [
        (s.get("path") or s.get("name"), s.get("action"), s.get("attempt"), s.get("status"),
         when(s.get("started_at")), span(s.get("started_at"), s.get("ended_at")),
         s.get("exit_code"))
        for s in steps
    ]  # fmt: skip
    out = [*head, "", table(("STEP", "ACTION", "TRY", "STATUS", "STARTED", "TOOK", "EXIT"), rows)]
    for s in steps:
        for stream in ("stdout", "stderr"):
            text = (s.get(stream) or "").rstrip()
            if text:  # the whole stored tail (the journal keeps the last 4 KiB)
                out.append(f"  {s.get('path') or s.get('name')} {stream}:")
                out.extend(f"    {line}" for line in text.splitlines())
    for a in run.get("approvals") or []:
        out.append(f"  {a.get('verdict')} by {a.get('by')} at {when(a.get('at'))}")
    return "\n".join(out)


def silence(args: argparse.Namespace) -> int:
    action = args.silence_command

    def body(api: Api) -> None:
        if action == "add":
            doc = api.call("POST", "/api/v1/silences", _silence_body(args))
            _emit(args, doc, f"silence {doc.get('id')} added, until {when(doc.get('ends_at'))}")
        elif action == "list":
            doc = api.call("GET", "/api/v1/silences")
            rows = [
                (s.get("id"), _matchers(s.get("matchers")), when(s.get("starts_at")),
                 when(s.get("ends_at")), s.get("reason"))
                for s in doc.get("silences", [])
            ]  # fmt: skip
            _emit(args, doc, table(("ID", "MATCH", "STARTS", "ENDS", "REASON"), rows))
        else:
            doc = api.call("DELETE", f"/api/v1/silences/{args.id}")
            _emit(args, doc, f"silence {args.id} expired")

    return _command(args, body)


def _silence_body(args: argparse.Namespace) -> dict[str, Any]:
    matchers: list[str] = []
    for text in args.match:
        if not re.match(r"^\s*[^=!~\s]+\s*(=~|!~|!=|=)", text):
            raise ClientError(f"--match {text!r}: expected K=V, K!=V, K=~REGEX or K!~REGEX", 2)
        matchers.append(text)
    try:
        parse_duration(args.duration)
    except ValueError as exc:
        raise ClientError(f"--for {args.duration!r}: {exc}", 2) from None
    return {"matchers": matchers, "duration": args.duration, "reason": args.reason}


def _matchers(value: Any) -> str:
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items())
    if isinstance(value, list):
        return ",".join(
            f"{m.get('name')}{m.get('op', '=')}{m.get('value')}" if isinstance(m, dict) else str(m)
            for m in value
        )
    return str(value)


def circuit(args: argparse.Namespace) -> int:
    action = args.circuit_command

    def body(api: Api) -> None:
        if action == "list":
            doc = {"open_circuits": api.call("GET", "/api/v1/status").get("open_circuits", [])}
            rows = [
                (c.get("rule"), c.get("key") or c.get("target"), c.get("why"),
                 when(c.get("opened_at")), when(c.get("closes_at")))
                for c in doc["open_circuits"]
            ]  # fmt: skip
            _emit(args, doc, table(("RULE", "KEY", "WHY", "OPENED", "CLOSES"), rows))
        else:
            target = urllib.parse.quote(args.target, safe="")
            rule = getattr(args, "rule", None)
            query = f"?{urllib.parse.urlencode({'rule': rule})}" if rule else ""
            doc = api.call("POST", f"/api/v1/circuits/{target}/reset{query}", {})
            names = ", ".join(c.get("rule", "?") for c in doc.get("circuits", []))
            _emit(args, doc, f"circuit of {args.target} reset ({names})")

    return _command(args, body)


def fleet(args: argparse.Namespace) -> int:
    """``batond fleet status``: the members, who owns which partition (a central instance)."""

    def body(api: Api) -> None:
        doc = api.call("GET", "/api/v1/fleet")
        _emit(args, doc, format_fleet(doc))

    return _command(args, body)


def format_fleet(doc: dict[str, Any]) -> str:
    held = doc.get("held") or []
    mine = ", ".join(f"{h.get('partition')}@{h.get('epoch')}" for h in held) or "-"
    unowned = doc.get("unowned") or []
    lines = [
        f"instance   {doc.get('instance')} ({doc.get('state')})",
        f"partitions {doc.get('partitions')}; unowned: {_ranges(unowned) or 'none'}",
        f"holds      {mine}  (partition@epoch)",
        f"as of      {when(doc.get('as_of'))}",
        "",
    ]
    rows = [
        (m.get("instance"), m.get("host"), "live" if m.get("live") else "gone",
         when(m.get("last_seen")), len(m.get("held") or []), _ranges(m.get("held") or []))
        for m in doc.get("members") or []
    ]  # fmt: skip
    lines.append(table(("MEMBER", "HOST", "STATE", "LAST SEEN", "HOLDS", "PARTITIONS"), rows))
    lines += ["", f"agents     {doc.get('agent_count', 0)}", _agents_table(doc)]
    return "\n".join(lines)


def _agents_table(doc: dict[str, Any]) -> str:
    rows = [
        (a.get("host"), a.get("partition"), when(a.get("last_seen")), a.get("seq"),
         ",".join(f"{k}={v}" for k, v in sorted((a.get("labels") or {}).items())) or "-")
        for a in doc.get("agents") or []
    ]  # fmt: skip
    return table(("AGENT", "PARTITION", "LAST SEEN", "SEQ", "LABELS"), rows)


def _ranges(numbers: Sequence[Any]) -> str:
    """``0-3,7,9-10``: partitions at a glance."""
    out: list[str] = []
    values = sorted(int(n) for n in numbers)
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and values[j + 1] == values[j] + 1:
            j += 1
        out.append(str(values[i]) if i == j else f"{values[i]}-{values[j]}")
        i = j + 1
    return ",".join(out)


def _gate(args: argparse.Namespace, verb: str, done: str) -> int:
    def body(api: Api) -> None:
        doc = api.call("POST", f"/api/v1/runs/{args.run_id}/{verb}", {})
        _emit(args, doc, f"run {args.run_id} {done}")

    return _command(args, body)


def approve(args: argparse.Namespace) -> int:
    return _gate(args, "approve", "approved")


def deny(args: argparse.Namespace) -> int:
    return _gate(args, "deny", "denied")


def cancel(args: argparse.Namespace) -> int:
    return _gate(args, "cancel", "cancelled")


def feedback(args: argparse.Namespace) -> int:
    def body(api: Api) -> None:
        path = f"/api/v1/incidents/{args.incident_id}/feedback"
        doc = api.call("POST", path, {"feedback": args.feedback})
        _emit(args, doc, f"incident {args.incident_id}: feedback {args.feedback} recorded")

    return _command(args, body)


def _control(args: argparse.Namespace, verb: str, done: str) -> int:
    def body(api: Api) -> None:
        doc = api.call("POST", f"/api/v1/{verb}", {})
        if verb == "reload" and isinstance(doc, dict) and doc.get("ok") is False:
            errors = "\n".join(str(e) for e in doc.get("errors", []))
            raise ClientError(f"reload rejected, old rules kept:\n{errors}", 1)
        _emit(args, doc, done)

    return _command(args, body)


def pause(args: argparse.Namespace) -> int:
    return _control(args, "pause", "paused: decisions are recorded, nothing is executed")


def resume(args: argparse.Namespace) -> int:
    return _control(args, "resume", "resumed")


def reload(args: argparse.Namespace) -> int:
    return _control(args, "reload", "reloaded")


def _by_hand(args: argparse.Namespace, path: str, payload: Any, what: str) -> int:
    def body(api: Api) -> None:
        doc = api.call("POST", path, payload)
        if doc.get("started"):
            human = f"{what}: run of {doc['playbook']} started (key {doc['key']})"
        else:
            human = f"{what}: no run, suppressed: {doc.get('suppressed')}"
        _emit(args, doc, human)

    return _command(args, body)


def trigger(args: argparse.Namespace) -> int:
    name = urllib.parse.quote(args.schedule, safe="")
    return _by_hand(args, f"/api/v1/schedules/{name}/trigger", {}, f"schedule {args.schedule}")


def params_of(pairs: Sequence[str]) -> dict[str, Any]:
    """``--param k=v`` pairs; a value that parses as JSON keeps its type (``n=3``)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--param {pair!r}: expected KEY=VALUE")
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


def run_playbook(args: argparse.Namespace) -> int:
    name = urllib.parse.quote(args.playbook, safe="")
    payload = {"params": params_of(args.param)}
    return _by_hand(args, f"/api/v1/playbooks/{name}/run", payload, f"playbook {args.playbook}")
