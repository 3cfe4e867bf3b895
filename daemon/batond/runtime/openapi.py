"""The API's own description: ``GET /api/v1/openapi.json`` (OpenAPI 3.1).

Every route the app serves is described here with its request and response
shapes; :func:`spec_for` emits only the routes the running app has, so a
route described ahead of its code (or removed) never shows up as if it were
served. The enums (run states, step statuses, outcomes, suppression reasons)
come from the code, so the description cannot drift from them. The web page
reads this document to learn which levers exist and whether a token is needed;
``tests/test_openapi.py`` holds every route of the app to it and validates
real responses against it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from batond.engine.types import Outcome, Suppression
from batond.remedy.run import RunState, StepStatus

__all__ = ["OPERATIONS", "SCHEMAS", "Operation", "spec_for"]

Schema = dict[str, Any]


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _obj(required: Iterable[str] = (), **props: Schema) -> Schema:
    return {"type": "object", "required": sorted(required), "properties": props}


def _nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


def _list_of(key: str, item: Schema) -> Schema:
    return _obj([key], **{key: {"type": "array", "items": item}})


def _enum(values: Iterable[str]) -> Schema:
    return {"type": "string", "enum": sorted(values)}


STR: Schema = {"type": "string"}
INT: Schema = {"type": "integer"}
NUM: Schema = {"type": "number"}
BOOL: Schema = {"type": "boolean"}
TIME: Schema = {"type": "number", "description": "seconds since the epoch"}
LABELS: Schema = {"type": "object", "additionalProperties": {"type": "string"}}
ANY_OBJECT: Schema = {"type": "object"}

_STEP = _obj(
    ["name", "path", "action", "attempt", "status", "started_at", "ended_at", "duration_s"],
    name=STR,
    path={"type": "string", "description": "the step inside the run: restart, on_failure/tell"},
    action=STR,
    attempt=INT,
    status=_enum(StepStatus),
    started_at=TIME,
    ended_at=_nullable(TIME),
    duration_s=_nullable(NUM),
    exit_code=_nullable(INT),
    stdout=STR,
    stderr=STR,
    detail=_nullable(ANY_OBJECT),
    args=_nullable(
        {
            "type": "object",
            "description": "the attempt's rendered with: values, secrets shown as <redacted>;"
            ' over 8 KiB: {"<truncated>": why, "head": the first 8 KiB of their JSON};'
            " null: not rendered (a template failed, a skipped or set/assert step)",
        }
    ),
)
_RUN_FIELDS: dict[str, Schema] = {
    "id": INT,
    "rule": STR,
    "playbook": STR,
    "key": {"type": "string", "description": "the incident key the run is about (host=web-1)"},
    "state": _enum(RunState),
    "outcome": _nullable(_enum(Outcome)),
    "created_at": TIME,
    "started_at": _nullable(TIME),
    "ended_at": _nullable(TIME),
    "decision_id": _nullable(INT),
    "incident_id": _nullable(INT),
    "resumes": _nullable(INT),
    "params": ANY_OBJECT,
    "labels": LABELS,
    "escalation": {"type": "boolean", "description": "an escalate: playbook's run"},
    "escalates": _nullable({"type": "integer", "description": "the run this escalation escalates"}),
    "escalated_to": _nullable({"type": "integer", "description": "the escalation run it led to"}),
    "instance": _nullable(
        {"type": "string", "description": "the fleet's central instance that ran it (else null)"}
    ),
    "steps": {"type": "array", "items": _ref("Step")},
    "not_reached": {
        "type": "array",
        "items": STR,
        "description": "paths of its playbook's steps an ended run never reached"
        " (by the playbook loaded now; empty while the run goes on)",
    },
}
_RUN_REQUIRED = ("id", "rule", "playbook", "key", "state", "outcome", "created_at", "steps")
_INCIDENT_FIELDS: dict[str, Schema] = {
    "id": INT,
    "rule": STR,
    "key": STR,
    "state": _enum(("open", "resolved")),
    "severity": _nullable(STR),
    "opened_at": TIME,
    "resolved_at": _nullable(TIME),
    "labels": LABELS,
    "metric": _nullable(STR),
    "feedback": _nullable(STR),
    "resolved_by": _nullable(STR),
}
_INCIDENT_REQUIRED = ("id", "rule", "key", "state", "opened_at", "resolved_at", "labels")
_DECISION = _obj(
    ["id", "ts", "playbook", "suppressed", "result", "reason", "cause"],
    id=INT,
    ts=TIME,
    rule=STR,
    key=STR,
    playbook=_nullable(STR),
    result=_enum(("run", *Suppression)),
    suppressed=_nullable(_enum(Suppression)),
    reason={"type": "string", "description": "the suppression in words"},
    cause={"type": "string", "description": "why it was decided again"},
    incident_id=_nullable(INT),
    labels=LABELS,
    candidates={"type": "array", "items": STR},
)
_CIRCUIT = _obj(
    ["rule", "key", "target", "closes_at"],
    rule=STR,
    key=STR,
    target=STR,
    why=_enum(("budget", "streak")),
    opened_at=TIME,
    closes_at=TIME,
)
_MATCHER = _obj(["name", "op", "value"], name=STR, op=_enum(("=", "!=", "=~", "!~")), value=STR)
_MATCHERS: Schema = {
    "description": "NAME=VALUE, NAME!=VALUE, NAME=~REGEX, NAME!~REGEX over rule, severity,"
    " playbook and labels (docs/governor.md)",
    "anyOf": [
        LABELS,
        {"type": "array", "minItems": 1, "items": {"anyOf": [STR, _MATCHER]}},
    ],
}
_INCIDENT_RUN = _obj(
    ["id", "playbook", "state", "outcome", "escalation"],
    id=INT,
    playbook=STR,
    state=_enum(RunState),
    outcome=_nullable(_enum(Outcome)),
    escalation=BOOL,
    escalates=_nullable({"type": "integer", "description": "the run this escalation escalates"}),
    decision_id=_nullable(INT),
    created_at=TIME,
    started_at=_nullable(TIME),
    ended_at=_nullable(TIME),
)
_TIMELINE = _obj(
    ["ts", "what"],
    ts=TIME,
    what=_enum(("opened", "decision", "run_started", "run_ended", "resolved")),
    text=STR,
    decision=INT,
    run=INT,
)
_STATUS = _obj(
    ["node", "mode", "paused", "ready", "sources", "rules_loaded", "open_incidents"],
    node=STR,
    mode=_enum(("shadow", "enforce")),
    paused=BOOL,
    ready=BOOL,
    sources={"type": "object", "additionalProperties": STR},
    rules_loaded=INT,
    playbooks_loaded=INT,
    open_incidents=INT,
    open_circuits={"type": "array", "items": _ref("Circuit")},
    runs_active=INT,
)
_RULE = _obj(
    ["name", "kind", "run"],
    name=STR,
    kind={"type": "string", "description": "level, edge, count, absent, all, or schedule"},
    description=STR,
    severity=STR,
    run={"type": "array", "items": STR},
    metric=_nullable(STR),
    when=_nullable(STR),
    fires=INT,
    last_fire=_nullable(TIME),
    open_incidents={"type": "array", "items": STR},
    cron=STR,
    next=_nullable(TIME),
    resolve_rates={"type": "object", "additionalProperties": ANY_OBJECT},
)
_RULES = _obj(
    ["rules", "playbooks"],
    rules={"type": "array", "items": _ref("Rule")},
    playbooks={
        "type": "array",
        "items": _obj(
            ["name", "params"],
            name=STR,
            description=STR,
            params={**ANY_OBJECT, "description": "declared params with their defaults"},
        ),
    },
)
_BY_HAND = _obj(
    ["decision", "rule", "key", "playbook", "started", "suppressed", "params"],
    decision={**_nullable(INT), "description": "its id; the run it starts has it as decision_id"},
    rule=STR,
    key=STR,
    playbook=STR,
    started={"type": "boolean"},
    suppressed=_nullable(_enum(Suppression)),
    params=ANY_OBJECT,
)
_SERIES = _obj(
    ["metric", "labels", "threshold", "points"],
    metric=STR,
    labels=LABELS,
    model=STR,
    threshold=NUM,
    sensitivity=NUM,
    model_sensitivity=NUM,
    fitted={"type": "boolean", "description": "its first fit is made (scores were 0 before)"},
    points={
        "type": "array",
        "description": "[time, value, anomaly score]",
        "items": {"type": "array", "prefixItems": [TIME, NUM, NUM], "minItems": 2},
    },
)
_SILENCE = _obj(
    ["id", "matchers", "starts_at", "ends_at", "reason"],
    id=INT,
    matchers=_MATCHERS,
    starts_at=TIME,
    ends_at=TIME,
    reason=_nullable(STR),
    created_by=_nullable(STR),
    created_at=_nullable(TIME),
)
_INPUT_ANSWER = _obj(
    ["accepted"],
    accepted=INT,
    rejected=INT,
    reasons={"type": "array", "items": STR},
    error=STR,
)

_MEMBER = _obj(
    ["instance", "host", "live", "last_seen", "held"],
    instance=STR,
    host=STR,
    live={"type": "boolean", "description": "seen within fleet.lease, session connected"},
    last_seen=TIME,
    held={"type": "array", "items": INT, "description": "the partitions it says it holds"},
)
_AGENT = _obj(
    ["host", "partition", "last_seen", "seq", "labels", "anomalous"],
    host=STR,
    partition=INT,
    last_seen={**TIME, "description": "when its last batch was taken (written at most once"
               " per fleet.batch_interval)"},
    seq=INT,
    labels={"type": "object", "additionalProperties": STR,
            "description": "the labels all samples of its batches carry"},
    anomalous={"type": "object", "additionalProperties": NUM,
               "description": "metric -> when a series of it on the host last scored at or"
               " above its model's threshold (the sample's ts)"},
)  # fmt: skip
_FLEET = _obj(
    ["instance", "state", "partitions", "held", "owners", "unowned", "members", "as_of",
     "agents", "agent_count"],
    instance=STR,
    state=_enum(("connecting", "connected", "disconnected")),
    partitions=INT,
    held={"type": "array", "items": _obj(["partition", "epoch"], partition=INT, epoch=INT)},
    owners={"type": "object", "additionalProperties": STR, "description": "partition -> owner"},
    unowned={"type": "array", "items": INT},
    members={"type": "array", "items": _MEMBER},
    as_of=TIME,
    agents={"type": "array", "items": _AGENT, "description": "most recently seen first,"
            " at most 1000"},
    agent_count={"type": "integer", "description": "every agent the fleet has seen"},
)  # fmt: skip

SCHEMAS: dict[str, Schema] = {
    "Error": _obj(["error"], error=STR),
    "Step": _STEP,
    "Run": _obj(_RUN_REQUIRED, **_RUN_FIELDS),
    "RunDetail": _obj(
        _RUN_REQUIRED,
        **_RUN_FIELDS,
        approvals={"type": "array", "items": _obj(["verdict"], verdict=STR, by=STR, at=TIME)},
    ),
    "Incident": _obj(
        _INCIDENT_REQUIRED,
        **_INCIDENT_FIELDS,
        runs={"type": "integer", "description": "how many runs it had"},
        last_result=_nullable(_enum(("run", *Suppression))),
        last_reason=_nullable(STR),
    ),
    "IncidentDetail": _obj(
        _INCIDENT_REQUIRED,
        **_INCIDENT_FIELDS,
        decisions={"type": "array", "items": _ref("Decision")},
        runs={"type": "array", "items": _INCIDENT_RUN},
        timeline={"type": "array", "items": _TIMELINE},
    ),
    "Decision": _DECISION,
    "Circuit": _CIRCUIT,
    "Status": _STATUS,
    "Rule": _RULE,
    "Series": _SERIES,
    "Silence": _SILENCE,
    "InputAnswer": _INPUT_ANSWER,
    "Fleet": _FLEET,
}


@dataclass(frozen=True, slots=True)
class Operation:
    """One route: what it does, what it takes, what it answers (status -> schema)."""

    summary: str
    responses: Mapping[int, Schema | None]  # None: not JSON (text, HTML)
    body: Schema | None = None
    query: Mapping[str, Schema] = field(default_factory=dict)
    content_type: str = "application/json"


_ERR = _ref("Error")
_LIMIT = {"limit": {"type": "integer", "minimum": 1, "maximum": 10000, "default": 100}}
_NOT_FOUND = {404: _ERR, 400: _ERR}
_EVENT_BODY: Schema = {
    "description": "one JSON object, a JSON array of them, or JSON lines (docs/inputs.md)",
    "anyOf": [ANY_OBJECT, {"type": "array", "items": ANY_OBJECT}],
}
_AM_BODY = _obj(
    ["alerts"],
    version=STR,
    status=STR,
    alerts={"type": "array", "items": ANY_OBJECT},
)
_SILENCE_BODY = _obj(
    ["matchers", "duration", "reason"],
    matchers=_MATCHERS,
    duration={"type": "string", "examples": ["30m", "2h"]},
    reason=STR,
)
_SILENCE_ADDED = _obj(["id", "ends_at"], id=INT, matchers=_MATCHERS, starts_at=TIME, ends_at=TIME)
_PAUSED = _obj(["paused"], paused=BOOL)
_GATE = {200: ANY_OBJECT, 404: _ERR, 409: _ERR, 400: _ERR}


def _gate(verb: str) -> Operation:
    return Operation(f"{verb} a run waiting for approval (cancel: any unfinished run)", _GATE)


#: Every route batond may serve, by (method, aiohttp's canonical path).
OPERATIONS: dict[tuple[str, str], Operation] = {
    ("GET", "/"): Operation("the operator's web page", {200: None}, content_type="text/html"),
    ("GET", "/web/{name}"): Operation(
        "the page's script and style sheet", {200: None, 404: None}, content_type="text/plain"
    ),
    ("GET", "/healthz"): Operation("liveness", {200: _obj(["status"], status=STR)}),
    ("GET", "/readyz"): Operation("readiness", {200: _obj(["ready"], ready=BOOL), 503: ANY_OBJECT}),
    ("GET", "/metrics"): Operation(
        "Prometheus exposition", {200: None}, content_type="text/plain; version=0.0.4"
    ),
    ("GET", "/api/v1/openapi.json"): Operation("this description", {200: ANY_OBJECT}),
    ("GET", "/api/v1/status"): Operation("the daemon at a glance", {200: _ref("Status")}),
    ("GET", "/api/v1/fleet"): Operation(
        "a central instance's fleet: who owns which partition, the members and when each"
        " was last seen, the agents last seen (404 when this is not a central instance)",
        {200: _ref("Fleet"), 404: _ERR},
    ),
    ("GET", "/api/v1/incidents"): Operation(
        "incidents, newest first", {200: _list_of("incidents", _ref("Incident"))}, query=_LIMIT
    ),
    ("GET", "/api/v1/incidents/{id}"): Operation(
        "one incident with its decisions (and their suppression reasons) and runs",
        {200: _ref("IncidentDetail"), **_NOT_FOUND},
    ),
    ("POST", "/api/v1/incidents/{id}/feedback"): Operation(
        "mark an incident a false positive (the anomaly model becomes less sensitive)",
        {200: ANY_OBJECT, **_NOT_FOUND},
        body=_obj(["feedback"], feedback={"const": "false_positive"}),
    ),
    ("POST", "/api/v1/incidents/{id}/resolve"): Operation(
        "close an open incident by hand", {200: ANY_OBJECT, 409: _ERR, **_NOT_FOUND}
    ),
    ("GET", "/api/v1/decisions"): Operation(
        "decisions, newest first, with suppression reasons",
        {200: _list_of("decisions", _ref("Decision")), 400: _ERR},
        query={
            **_LIMIT,
            "rule": STR,
            "key": STR,
            "result": _enum(("run", *Suppression)),
            "since": {"type": "string", "description": "epoch seconds, or a duration ago (30m)"},
        },
    ),
    ("GET", "/api/v1/runs"): Operation(
        "runs with their steps, newest first", {200: _list_of("runs", _ref("Run"))}, query=_LIMIT
    ),
    ("GET", "/api/v1/runs/{id}"): Operation(
        "one run: steps, outputs, approvals", {200: _ref("RunDetail"), **_NOT_FOUND}
    ),
    ("POST", "/api/v1/runs/{id}/approve"): _gate("approve"),
    ("POST", "/api/v1/runs/{id}/deny"): _gate("deny"),
    ("POST", "/api/v1/runs/{id}/cancel"): _gate("cancel"),
    ("POST", "/api/v1/playbooks/{name}/run"): Operation(
        "run a playbook by hand (through the governor, recorded like any run)",
        {202: _BY_HAND, 400: _ERR, 404: _ERR},
        body=_obj(params=ANY_OBJECT),
    ),
    ("POST", "/api/v1/schedules/{name}/trigger"): Operation(
        "run a schedule now", {202: _BY_HAND, 404: _ERR}
    ),
    ("GET", "/api/v1/rules"): Operation(
        "loaded rules and schedules with their statistics, and the playbooks' params",
        {200: _RULES},
    ),
    ("GET", "/api/v1/series"): Operation(
        "recent points and anomaly scores",
        {200: _list_of("series", _ref("Series"))},
        query={"metric": STR, "host": STR},
    ),
    ("GET", "/api/v1/silences"): Operation(
        "silences in force", {200: _list_of("silences", _ref("Silence"))}
    ),
    ("POST", "/api/v1/silences"): Operation(
        "add a silence",
        {201: _SILENCE_ADDED, 400: _ERR},
        body=_SILENCE_BODY,
    ),
    ("DELETE", "/api/v1/silences/{id}"): Operation(
        "expire a silence now", {200: _obj(["expired"], expired=BOOL), **_NOT_FOUND}
    ),
    ("POST", "/api/v1/pause"): Operation("stop starting runs", {200: _PAUSED}),
    ("POST", "/api/v1/resume"): Operation("start runs again", {200: _PAUSED}),
    ("POST", "/api/v1/reload"): Operation(
        "re-read config, rules, playbooks and models; all or nothing",
        {200: _obj(["ok"], ok=BOOL), 400: _obj(["ok"], ok=BOOL, errors=ANY_OBJECT)},
    ),
    ("POST", "/api/v1/circuits/{target}/reset"): Operation(
        "close the circuits of an incident key (percent-encoded), every rule's or ?rule='s;"
        " the incidents they held back are decided again",
        {
            200: _obj(
                ["target", "reset"],
                target=STR,
                reset=BOOL,
                circuits={"type": "array", "items": _obj(["rule", "key"], rule=STR, key=STR)},
            ),
            404: _ERR,
        },
        query={"rule": STR},
    ),
    ("POST", "/api/v1/events"): Operation(
        "metric samples and events as JSON (202 once queued; with http.ack: decided,"
        " once decided and journaled)",
        {202: _ref("InputAnswer"), 400: _ref("InputAnswer"), 503: _ref("InputAnswer")},
        body=_EVENT_BODY,
    ),
    ("POST", "/api/v1/alertmanager"): Operation(
        "an Alertmanager webhook notification (docs/alertmanager.md)",
        {202: _ref("InputAnswer"), 400: _ref("InputAnswer"), 503: _ref("InputAnswer")},
        body=_AM_BODY,
    ),
}


def _operation(method: str, path: str, op: Operation, token_required: bool) -> Schema:
    out: Schema = {"summary": op.summary, "operationId": f"{method.lower()} {path}"}
    params = [
        {"name": name, "in": "path", "required": True, "schema": STR} for name in _path_names(path)
    ]
    params += [{"name": n, "in": "query", "schema": s} for n, s in op.query.items()]
    if params:
        out["parameters"] = params
    if op.body is not None:
        out["requestBody"] = {"content": {"application/json": {"schema": op.body}}}
    out["responses"] = {
        str(status): _response(status, schema, op.content_type)
        for status, schema in op.responses.items()
    }
    if token_required and method == "GET":
        out["security"] = []  # reading needs no token
    elif token_required:
        out["security"] = [{"bearer": []}]
        out["responses"]["401"] = _response(401, _ERR, "application/json")
    return out


def _response(status: int, schema: Schema | None, content_type: str) -> Schema:
    description = "ok" if status < 300 else "refused"
    if schema is None:
        return {"description": description, "content": {content_type: {}}}
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _path_names(path: str) -> list[str]:
    return [part[1:-1] for part in path.split("/") if part.startswith("{")]


def spec_for(routes: Iterable[tuple[str, str]], *, token_required: bool) -> Schema:
    """The OpenAPI document of the routes an app serves; unknown routes are listed bare."""
    paths: dict[str, dict[str, Schema]] = {}
    for method, path in sorted(set(routes)):
        op = OPERATIONS.get((method, path))
        entry = (
            _operation(method, path, op, token_required)
            if op is not None
            else {"summary": "(not described)", "responses": {"default": {"description": "?"}}}
        )
        paths.setdefault(path, {})[method.lower()] = entry
    spec: Schema = {
        "openapi": "3.1.0",
        "info": {"title": "batond", "version": "1"},
        "paths": paths,
        "components": {"schemas": SCHEMAS},
    }
    if token_required:
        spec["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        spec["security"] = [{"bearer": []}]  # the page reads this: changes need the token
    return spec
