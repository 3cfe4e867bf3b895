"""The journal's read-side SQL and row shapes: plain functions of a connection.

Each function runs on a journal thread (``journal.writer``); the shapes are the
API's (docs/api.md): newest first, integer ids, epoch-second times.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from batond.engine.fleet import AgentSeen
from batond.engine.keys import split_key
from batond.engine.types import Outcome
from batond.journal.backend import Conn
from batond.remedy.records import InterruptedRun
from batond.remedy.run import RunState, StepStatus

__all__ = [
    "PRUNE_BATCH",
    "PRUNE_RULES",
    "DecisionFilter",
    "decisions",
    "incident",
    "incidents",
    "next_ids",
    "open_incidents",
    "prune_batch",
    "recover",
    "run",
    "runs",
    "silences",
    "state_blob",
    "summary",
]

#: Rows deleted per pruning transaction: keeps each writer job short.
PRUNE_BATCH = 500


def incidents(conn: Conn, limit: int) -> dict[str, Any]:
    """The latest incidents, each with how many runs it had and its latest decision's
    result (``run`` or why not), so that an open incident without a run says why."""
    rows = conn.execute(f"{_INCIDENT_SELECT} ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
    found = [_incident(r) for r in rows]
    by_id = {i["id"]: i for i in found}
    for i in found:
        i["runs"] = 0
        i["last_result"] = i["last_reason"] = None
    if by_id:
        marks = ",".join("?" * len(by_id))
        for incident_id, n in conn.execute(
            f"SELECT incident_id, count(*) FROM runs WHERE incident_id IN ({marks})"
            " GROUP BY incident_id",
            tuple(by_id),
        ):
            by_id[incident_id]["runs"] = n
        for incident_id, suppressed, reason in conn.execute(
            "SELECT incident_id, suppressed, reason FROM decisions WHERE id IN (SELECT max(id)"
            f" FROM decisions WHERE incident_id IN ({marks}) GROUP BY incident_id)",
            tuple(by_id),
        ):
            by_id[incident_id]["last_result"] = suppressed or "run"
            by_id[incident_id]["last_reason"] = reason or None
    return {"incidents": found}


def incident(conn: Conn, incident_id: int) -> dict[str, Any] | None:
    """One incident with its decisions (and why each did not run), its runs and a
    timeline of all of it in order."""
    row = conn.execute(f"{_INCIDENT_SELECT} WHERE id = ?", (incident_id,)).fetchone()
    if row is None:
        return None
    found = _incident(row)
    found["decisions"] = [
        _decision(r)
        for r in conn.execute(
            f"{_DECISION_SELECT} WHERE incident_id = ? ORDER BY id", (incident_id,)
        )
    ]
    found["runs"] = [
        {
            "id": r[0], "playbook": r[1], "state": r[2], "outcome": r[3], "escalation": bool(r[4]),
            "decision_id": r[5], "created_at": r[6], "started_at": r[7], "ended_at": r[8],
            "escalates": r[9],
        }
        for r in conn.execute(
            "SELECT id, playbook, state, outcome, escalation, decision_id, created_at,"
            " started_at, ended_at, escalates FROM runs WHERE incident_id = ? ORDER BY id",
            (incident_id,),
        )
    ]  # fmt: skip
    found["timeline"] = _timeline(found)
    return found


def _timeline(found: dict[str, Any]) -> list[dict[str, Any]]:
    """Opened, each decision, each run's start and end, resolved: ordered by time."""
    events: list[tuple[float, int, dict[str, Any]]] = [
        (found["opened_at"], 0, {"ts": found["opened_at"], "what": "opened"})
    ]
    for d in found["decisions"]:
        text = f"run {d['playbook']}" if d["result"] == "run" else f"{d['result']}: {d['reason']}"
        if d["cause"]:
            text += f" ({d['cause']})"
        events.append(
            (d["ts"], 1, {"ts": d["ts"], "what": "decision", "decision": d["id"], "text": text})
        )
    for r in found["runs"]:
        kind = "escalation " if r["escalation"] else ""
        start = r["started_at"] or r["created_at"]
        events.append(
            (
                start,
                2,
                {
                    "ts": start,
                    "what": "run_started",
                    "run": r["id"],
                    "text": f"{kind}run {r['id']} {r['playbook']}",
                },
            )
        )
        if r["ended_at"] is not None:
            events.append(
                (
                    r["ended_at"],
                    3,
                    {
                        "ts": r["ended_at"],
                        "what": "run_ended",
                        "run": r["id"],
                        "text": f"{kind}run {r['id']} {r['outcome']}",
                    },
                )
            )
    if found["resolved_at"] is not None:
        at = found["resolved_at"]
        events.append(
            (at, 4, {"ts": at, "what": "resolved", "text": f"resolved by {found['resolved_by']}"})
        )
    return [e for _, _, e in sorted(events, key=lambda e: (e[0], e[1]))]


@dataclass(frozen=True, slots=True)
class DecisionFilter:
    """What ``GET /api/v1/decisions`` may ask for (None: any)."""

    rule: str | None = None
    key: str | None = None
    result: str | None = None  # "run" or a suppression reason
    since: float | None = None


def decisions(conn: Conn, limit: int, filters: DecisionFilter | None = None) -> dict[str, Any]:
    """Decisions newest first, with each one's result and reason."""
    f = filters or DecisionFilter()
    where: list[str] = []
    args: list[Any] = []
    for column, value in (("rule", f.rule), ("key", f.key)):
        if value is not None:
            where.append(f"{column} = ?")
            args.append(value)
    if f.result == "run":
        where.append("suppressed IS NULL")
    elif f.result is not None:
        where.append("suppressed = ?")
        args.append(f.result)
    if f.since is not None:
        where.append("ts >= ?")
        args.append(f.since)
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    rows = conn.execute(f"{_DECISION_SELECT}{clause} ORDER BY id DESC LIMIT ?", (*args, limit))
    return {"decisions": [_decision(r) for r in rows]}


_DECISION_SELECT = (
    "SELECT id, ts, rule, key, playbook, suppressed, reason, cause, incident_id, labels,"
    " candidates FROM decisions"
)


def _decision(r: tuple[Any, ...]) -> dict[str, Any]:
    return {
        "id": r[0],
        "ts": r[1],
        "rule": r[2],
        "key": r[3],
        "playbook": r[4],
        "result": r[5] or "run",
        "suppressed": r[5],
        "reason": r[6],
        "cause": r[7],
        "incident_id": r[8],
        "labels": orjson.loads(r[9]),
        "candidates": orjson.loads(r[10]),
    }


def runs(conn: Conn, limit: int) -> dict[str, Any]:
    found = [_run(r) for r in conn.execute(f"{_RUN_SELECT} ORDER BY id DESC LIMIT ?", (limit,))]
    _attach_steps(conn, found)
    _attach_escalations(conn, found)
    return {"runs": found}


def run(conn: Conn, run_id: int) -> dict[str, Any] | None:
    """One run with its step timeline and approvals."""
    row = conn.execute(f"{_RUN_SELECT} WHERE id = ?", (run_id,)).fetchone()
    if row is None:
        return None
    found = _run(row)
    _attach_steps(conn, [found])
    _attach_escalations(conn, [found])
    found["approvals"] = [
        {"verdict": r[0], "by": r[1], "at": r[2]}
        for r in conn.execute(
            "SELECT verdict, by, at FROM approvals WHERE run_id = ? ORDER BY id", (run_id,)
        )
    ]
    return found


def silences(conn: Conn, now: float, include_expired: bool) -> list[dict[str, Any]]:
    """Silences in force at ``now`` (or all kept ones), newest first."""
    where = "" if include_expired else "WHERE starts_at <= ? AND ends_at > ?"
    args = () if include_expired else (now, now)
    rows = conn.execute(
        "SELECT id, matchers, starts_at, ends_at, reason, created_by, created_at"
        f" FROM silences {where} ORDER BY id DESC",
        args,
    )
    names = ("id", "matchers", "starts_at", "ends_at", "reason", "created_by", "created_at")
    out = [dict(zip(names, r, strict=True)) for r in rows]
    for silence in out:
        silence["matchers"] = orjson.loads(silence["matchers"])
    return out


def state_blob(conn: Conn, name: str) -> bytes | None:
    row = conn.execute("SELECT value FROM kv WHERE name = ?", (name,)).fetchone()
    return None if row is None else bytes(row[0])


def summary(conn: Conn) -> dict[str, int]:
    """Counts for status pages."""
    (open_count,) = conn.execute("SELECT count(*) FROM incidents WHERE state = 'open'").fetchone()
    (unfinished,) = conn.execute("SELECT count(*) FROM runs WHERE state != 'done'").fetchone()
    return {"open_incidents": open_count, "unfinished_runs": unfinished}


# -- row shapes ----------------------------------------------------------------
_INCIDENT_SELECT = (
    "SELECT id, rule, key, state, severity, opened_at, resolved_at, labels, metric, feedback,"
    " resolved_by FROM incidents"
)
_RUN_SELECT = (
    "SELECT id, rule, playbook, key, state, outcome, created_at, started_at, ended_at,"
    " decision_id, incident_id, resumes, params, labels, escalation, escalates, instance"
    " FROM runs"
)


def _incident(r: tuple[Any, ...]) -> dict[str, Any]:
    return {
        "id": r[0],
        "rule": r[1],
        "key": r[2],
        "state": r[3],
        "severity": r[4],
        "opened_at": r[5],
        "resolved_at": r[6],
        "labels": orjson.loads(r[7]),
        "metric": r[8],
        "feedback": r[9],
        "resolved_by": r[10],
    }


def _run(r: tuple[Any, ...]) -> dict[str, Any]:
    return {
        "id": r[0],
        "rule": r[1],
        "playbook": r[2],
        "key": r[3],
        "state": r[4],
        "outcome": r[5],
        "created_at": r[6],
        "started_at": r[7],
        "ended_at": r[8],
        "decision_id": r[9],
        "incident_id": r[10],
        "resumes": r[11],
        "params": orjson.loads(r[12]),
        "labels": orjson.loads(r[13]),
        "escalation": bool(r[14]),
        "escalates": r[15],
        "escalated_to": None,
        "instance": r[16],
        "steps": [],
    }


def _attach_steps(conn: Conn, runs: list[dict[str, Any]]) -> None:
    by_id = {run["id"]: run for run in runs}
    if not by_id:
        return
    marks = ",".join("?" * len(by_id))
    rows = conn.execute(
        "SELECT run_id, path, action, attempt, status, started_at, ended_at, exit_code,"
        f" stdout, stderr, detail, args FROM steps WHERE run_id IN ({marks}) ORDER BY id",
        tuple(by_id),
    )
    for r in rows:
        started, ended = r[5], r[6]
        args = None if r[11] is None else orjson.loads(r[11])
        by_id[r[0]]["steps"].append(
            {
                "name": r[1].rsplit("/", 1)[-1],
                "path": r[1],
                "action": r[2],
                "attempt": r[3],
                "status": r[4],
                "started_at": started,
                "ended_at": ended,
                "duration_s": None if ended is None else max(0.0, ended - started),
                "exit_code": r[7],
                "stdout": r[8],
                "stderr": r[9],
                "detail": None if r[10] is None else orjson.loads(r[10]),
                "args": args,
            }
        )


def _attach_escalations(conn: Conn, runs: list[dict[str, Any]]) -> None:
    """Each run's ``escalated_to``: the escalation run that escalates it (the first)."""
    by_id = {run["id"]: run for run in runs}
    if not by_id:
        return
    marks = ",".join("?" * len(by_id))
    for escalates, run_id in conn.execute(
        f"SELECT escalates, min(id) FROM runs WHERE escalates IN ({marks}) GROUP BY escalates",
        tuple(by_id),
    ):
        by_id[escalates]["escalated_to"] = run_id


def recover(
    conn: Conn, now: float, of: Callable[[str | None, float, str], bool] | None = None
) -> list[InterruptedRun]:
    """Mark every unfinished run (``of(instance, created_at, key)`` says which, when given)
    and its running steps ``interrupted``; what they were. A run another process marked
    meanwhile (a shared journal) is not returned twice."""
    found: list[InterruptedRun] = []
    # 'done' and 'running' stay literal in the WHERE clauses: the partial indexes
    # runs_unfinished and steps_running (journal.db) serve only queries that name them
    rows = conn.execute(f"{_RUN_SELECT} WHERE state != 'done' ORDER BY id").fetchall()
    for row in rows:
        run = _run(row)
        if of is not None and not of(run["instance"], run["created_at"], run["key"]):
            continue
        cur = conn.execute(
            "UPDATE runs SET state = ?, outcome = ?, ended_at = ? WHERE id = ? AND state != 'done'",
            (RunState.DONE, Outcome.INTERRUPTED, now, run["id"]),
        )
        if cur.rowcount == 0:
            continue  # (ended, or marked by another instance, since it was read)
        chain = _resumed_chain(conn, run["id"])
        steps = [s for rid in chain for s in _step_rows(conn, rid)]
        conn.execute(
            "UPDATE steps SET status = ?, ended_at = ? WHERE run_id = ? AND status = 'running'",
            (StepStatus.INTERRUPTED, now, run["id"]),
        )
        found.append(
            InterruptedRun(
                run_id=run["id"],
                rule=run["rule"],
                playbook=run["playbook"],
                key=run["key"],
                params=run["params"],
                labels=run["labels"],
                created_at=run["created_at"],
                state=RunState(run["state"]),
                decision_id=run["decision_id"],
                incident_id=run["incident_id"],
                resumes=run["resumes"],
                in_flight=tuple(s[0] for s in steps if s[1] == StepStatus.RUNNING),
                completed=_started_and_ended(steps),
                results=_results(steps),
            )
        )
    return found


_MAX_CHAIN = 64  # resumptions of resumptions followed back (a bound, not a limit in practice)


def _resumed_chain(conn: Conn, run_id: int) -> list[int]:
    """The runs ``run_id`` resumes, oldest first, then itself."""
    chain = [run_id]
    while len(chain) < _MAX_CHAIN:
        row = conn.execute("SELECT resumes FROM runs WHERE id = ?", (chain[-1],)).fetchone()
        if row is None or row[0] is None or row[0] in chain:
            break
        chain.append(row[0])
    return chain[::-1]


def _started_and_ended(steps: list[tuple[Any, ...]]) -> tuple[str, ...]:
    """Step paths that started and ended, whatever their status, here and in the runs
    resumed (``steps`` holds theirs first).

    A step that failed (``continue_on_error``), timed out or was skipped has
    acted (or been decided) for this run: a resumption must not run it again.
    The runs this one resumes count too, since a resumption journals only
    the steps it ran itself.
    """
    return tuple(dict.fromkeys(s[0] for s in steps if s[1] != StepStatus.RUNNING))


def _step_rows(conn: Conn, run_id: int) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT path, status, exit_code, stdout, stderr, detail FROM steps"
        " WHERE run_id = ? ORDER BY id",
        (run_id,),
    ).fetchall()


def _results(steps: list[tuple[Any, ...]]) -> dict[str, dict[str, Any]]:
    """``steps.NAME`` of each ended step whose result the runner kept (its last attempt)."""
    out: dict[str, dict[str, Any]] = {}
    for path, _status, exit_code, stdout, stderr, detail in steps:
        kept = orjson.loads(detail).get("result") if detail else None
        if isinstance(kept, dict):
            name = path.rsplit("/", 1)[-1]
            out[name] = {**kept, "exit_code": exit_code, "stdout": stdout, "stderr": stderr}
    return out


# table -> which rows retention may delete (finished ones only)
#: What pruning deletes: table, which rows (before the cutoff), the table's key.
PRUNE_RULES = (
    ("runs", "state = 'done' AND coalesce(ended_at, created_at) < ?", "id"),
    ("decisions", "ts < ?", "id"),
    ("incidents", "state = 'resolved' AND resolved_at < ?", "id"),
    ("silences", "ends_at < ?", "id"),
    ("fleet_agents", "last_seen < ?", "host"),  # hosts gone (their own, shorter cutoff)
)


def prune_batch(table: str, where: str, cutoff: float, key: str = "id") -> Callable[[Conn], int]:
    def job(conn: Conn) -> int:
        cur = conn.execute(
            f"DELETE FROM {table} WHERE {key} IN (SELECT {key} FROM {table} WHERE {where} LIMIT ?)",
            (cutoff, PRUNE_BATCH),
        )
        return cur.rowcount

    return job


def next_ids(conn: Conn) -> tuple[int, int]:
    """The next incident and decision ids: past every id ever given (AUTOINCREMENT)."""

    def next_id(table: str) -> int:
        (top,) = conn.execute(f"SELECT coalesce(max(id), 0) FROM {table}").fetchone()
        row = None
        if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_sequence'").fetchone():
            row = conn.execute(
                "SELECT seq FROM sqlite_sequence WHERE name = ?", (table,)
            ).fetchone()
        return max(int(top), int(row[0]) if row else 0) + 1

    return next_id("incidents"), next_id("decisions")


def open_incidents(conn: Conn) -> dict[tuple[str, str], int]:
    rows = conn.execute("SELECT rule, key, id FROM incidents WHERE state = 'open' ORDER BY id")
    return {(rule, key): int(incident_id) for rule, key, incident_id in rows}


# -- fleet: agents last seen ------------------------------------------------------
def _agent(row: Any) -> AgentSeen:
    host, partition, last_seen, seq, labels, anomalous = row
    return AgentSeen(
        host, int(partition), float(last_seen), int(seq), _labels(labels), _times(anomalous)
    )


def _labels(text: str) -> dict[str, str]:
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return {}
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


def _times(text: str) -> dict[str, float]:
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return {}
    if not isinstance(value, dict):
        return {}
    return {str(k): float(v) for k, v in value.items() if isinstance(v, (int, float))}


def agents(conn: Conn, limit: int) -> dict[str, Any]:
    rows = conn.execute(
        "SELECT host, partition, last_seen, seq, labels, anomalous FROM fleet_agents"
        " ORDER BY last_seen DESC, host LIMIT ?",
        (limit,),
    ).fetchall()
    (count,) = conn.execute("SELECT count(*) FROM fleet_agents").fetchone()
    return {
        "agents": [
            {"host": a.host, "partition": a.partition, "last_seen": a.last_seen,
             "seq": a.seq, "labels": dict(a.labels), "anomalous": dict(a.anomalous)}
            for a in map(_agent, rows)
        ],
        "agent_count": int(count),
    }  # fmt: skip


def fleet_view(conn: Conn, rule: str, since: float) -> tuple[list[AgentSeen], set[str]]:
    rows = conn.execute(
        "SELECT host, partition, last_seen, seq, labels, anomalous FROM fleet_agents"
        " WHERE last_seen >= ?",
        (since,),
    ).fetchall()
    hosts: set[str] = set()
    incidents = (
        conn.execute("SELECT key, labels FROM incidents WHERE rule = ? AND state = 'open'", (rule,))
        if rule
        else ()
    )
    for key, labels in incidents:
        host = split_key(key).get("host") or _labels(labels).get("host")
        if host:
            hosts.add(host)
    return [_agent(r) for r in rows], hosts
