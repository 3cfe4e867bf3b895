"""An agent's desk for remediation requests from central instances.

A request arrives on ``<prefix>/requests/<host>`` and is taken only when every
check passes, in this order: it is a request at all (``malformed``), its HMAC
is right with this host's key (``bad_signature``), it is for this host
(``unknown_host``), its timestamp is within :data:`WINDOW_S` of the agent's
clock (``stale``), its nonce was never taken before (``replayed``: nonces are
committed to the journal before the request acts, so a restart does not forget
them), it names a playbook of the agent's own files (``unknown_playbook``), and
its params are plain values that playbook takes (``bad_params``). A refusal is
logged with its reason, counted in ``batond_fleet_requests_refused_total`` and
answered with a signed refusal report.

A request that passes is decided like ``batond run-playbook``: a decision of
rule ``remote-request`` through the governor (pause, silences, rate limits and
circuits apply), with the labels ``origin: remote``, ``instance`` (who asked)
and ``request``. How it ends (the run's outcome, or the suppression that kept
it from running) goes back, signed, on ``<prefix>/outcomes/<host>``:
:class:`RemoteReporter` sees the decisions and run ends the pipeline reports.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from batond.engine.engine import REMOTE_RULE, Engine
from batond.engine.governor import CircuitEvent
from batond.engine.types import NOT_RESOLVED, Decision, Outcome, Output, Resolved
from batond.errors import BatondError
from batond.fleet.signing import (
    Refusal,
    RemoteOutcome,
    Request,
    Signed,
    new_nonce,
    open_message,
    seal,
)
from batond.metrics import Metrics
from batond.remedy.runner import RunEnded

__all__ = [
    "MAX_REQUEST_BYTES",
    "WINDOW_S",
    "Judged",
    "LogBudget",
    "OutcomeReports",
    "RemoteReporter",
    "RequestDesk",
    "judge",
    "plain_value",
    "remote_outcome",
]

log = logging.getLogger("batond.fleet")

#: How far a request's timestamp may be from the agent's clock, either way.
WINDOW_S = 60.0
#: How deep params may nest (lists and maps of plain values).
_MAX_DEPTH = 8
#: Refusals logged per minute at most; the rest are counted and summed up in the next line.
_LOG_PER_MINUTE = 30
#: The largest request looked at: a request is a few hundred bytes, and a flood of
#: megabyte forgeries must not cost a JSON parse and an HMAC each on the loop.
MAX_REQUEST_BYTES = 64 << 10

Publish = Callable[[str, bytes, int, bool], Awaitable[None]]
Act = Callable[[list[Output], float, float | None], Awaitable[object]]  # (its answer unused)
Spawn = Callable[[Coroutine[Any, Any, None]], None]


@dataclass(frozen=True, slots=True)
class Judged:
    """A request that passed the checks of :func:`judge`, or why it did not."""

    request: Request | None
    refusal: Refusal | None = None
    detail: str = ""
    request_id: str | None = None  # the id to answer, when the message had one


def judge(signed: Signed | None, host: str, now: float, window: float = WINDOW_S) -> Judged:
    """The checks that need neither the journal nor the playbooks."""
    if signed is None:
        return Judged(None, Refusal.MALFORMED, "not a signed JSON object")
    rid = signed.fields.get("id")
    rid = rid if isinstance(rid, str) and rid else None
    if not signed.authentic:
        return Judged(None, Refusal.BAD_SIGNATURE, "the HMAC does not match", rid)
    req = Request.from_fields(signed.fields)
    if req is None:
        return Judged(None, Refusal.MALFORMED, "a field is missing or of the wrong type", rid)
    if req.host != host:
        return Judged(None, Refusal.UNKNOWN_HOST, f"it is for {req.host!r}, this is {host!r}", rid)
    skew = now - req.ts
    if abs(skew) > window:
        return Judged(None, Refusal.STALE, f"its timestamp is {skew:+.0f} s off", rid)
    return Judged(req, request_id=rid)


def plain_value(value: Any, depth: int = 0) -> bool:
    """Strings, numbers, booleans and null, and lists and maps of them: data a template
    inserts as it is, never code."""
    if value is None or isinstance(value, str | bool | int | float):
        return True
    if depth >= _MAX_DEPTH:
        return False
    if isinstance(value, list):
        return all(plain_value(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and plain_value(v, depth + 1) for k, v in value.items())
    return False


def check_playbook(req: Request, playbooks: Mapping[str, Any]) -> tuple[Refusal, str] | None:
    """Only a playbook of the agent's own files, with plain params it takes."""
    pb = playbooks.get(req.playbook)
    if pb is None:
        return Refusal.UNKNOWN_PLAYBOOK, f"no playbook {req.playbook!r} in this host's files"
    if not plain_value(req.params):
        return Refusal.BAD_PARAMS, "params must be plain values (strings, numbers, lists, maps)"
    declared = getattr(pb, "params", {}) or {}
    unknown = sorted(set(req.params) - set(declared)) if declared else []
    if unknown:
        return Refusal.BAD_PARAMS, f"playbook {req.playbook!r} takes no param {unknown[0]!r}"
    return None


def remote_outcome(outcome: Outcome) -> RemoteOutcome:
    """What the agent's run outcome tells the requester."""
    if outcome == Outcome.TIMED_OUT:
        return RemoteOutcome.TIMED_OUT
    if outcome in NOT_RESOLVED or outcome in (Outcome.CANCELLED, Outcome.DENIED):
        return RemoteOutcome.FAILED
    if outcome == Outcome.INTERRUPTED:
        return RemoteOutcome.FAILED
    return RemoteOutcome.SUCCEEDED


class LogBudget:
    """At most :data:`_LOG_PER_MINUTE` refusal lines a minute: a flood of forgeries must
    not flood the log (every refusal is counted all the same)."""

    def __init__(self, per_minute: int = _LOG_PER_MINUTE) -> None:
        self._per_minute = per_minute
        self._logged: list[float] = []  # when the lines of the last minute were written
        self._unlogged = 0

    def take(self) -> str | None:
        """None: over budget, do not log; else what to append to the line (how many
        were not logged since the last one)."""
        now = time.monotonic()
        self._logged = [t for t in self._logged if now - t < 60.0]
        if len(self._logged) >= self._per_minute:
            self._unlogged += 1
            return None
        self._logged.append(now)
        more = f" ({self._unlogged} more refusals not logged)" if self._unlogged else ""
        self._unlogged = 0
        return more


class NonceStore(Protocol):
    async def remember_nonce(self, nonce: str, ts: float, forget_before: float) -> bool: ...


class OutcomeReports:
    """The agent's signed answers on ``<prefix>/outcomes/<host>``: how a request ended."""

    def __init__(
        self,
        *,
        host: str,
        prefix: str,
        key: bytes,
        publish: Publish,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.host = host
        self.topic = f"{prefix}/outcomes/{host}"
        self._key = key
        self._publish = publish
        self._clock = clock

    async def report(
        self,
        request_id: str,
        outcome: RemoteOutcome,
        *,
        run_id: int | None = None,
        reason: str = "",
        detail: str = "",
        run_outcome: str = "",
    ) -> None:
        """The signed outcome report of a request."""
        fields = {
            "v": 1, "id": request_id, "host": self.host, "run": run_id,
            "outcome": str(outcome), "reason": str(reason), "detail": detail,
            "run_outcome": run_outcome, "ts": self._clock(), "nonce": new_nonce(),
        }  # fmt: skip
        try:
            await self._publish(self.topic, seal(self._key, fields), 1, False)
        except BatondError as exc:
            log.warning("outcome report of remote request %s not sent: %s", request_id, exc)


class RequestDesk:
    """Takes requests off the MQTT connection, checks them, decides, answers."""

    def __init__(
        self,
        *,
        prefix: str,
        key: bytes,
        engine: Engine,
        act: Act,
        nonces: NonceStore,
        reports: OutcomeReports,
        spawn: Spawn,
        metrics: Metrics,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.host = reports.host
        self.topic = f"{prefix}/requests/{reports.host}"
        self._key = key
        self._engine = engine
        self._act = act
        self._nonces = nonces
        self._reports = reports
        self._spawn = spawn
        self._metrics = metrics
        self._clock = clock
        self._log = LogBudget()
        for reason in Refusal:
            metrics.fleet_requests_refused.labels(reason)

    def take(self, topic: str, payload: bytes) -> None:
        """From the MQTT socket callback: handled on a task of its own."""
        if len(payload) > MAX_REQUEST_BYTES:
            detail = f"{len(payload)} bytes; a request is at most {MAX_REQUEST_BYTES}"
            self._spawn(self.refuse(None, Refusal.MALFORMED, detail))
            return
        self._spawn(self._handle(payload))

    async def _handle(self, payload: bytes) -> None:
        now = self._clock()
        judged = judge(open_message(payload, self._key), self.host, now)
        req = judged.request
        if req is None:
            assert judged.refusal is not None
            await self.refuse(judged.request_id, judged.refusal, judged.detail)
            return
        if not await self._nonces.remember_nonce(req.nonce, req.ts, now - WINDOW_S):
            await self.refuse(req.id, Refusal.REPLAYED, f"nonce {req.nonce} was taken before")
            return
        wrong = check_playbook(req, self._engine.rules.playbooks)
        if wrong is not None:
            await self.refuse(req.id, *wrong)
            return
        self._metrics.fleet_requests_accepted.inc()
        labels = {"origin": "remote", "instance": req.instance, "request": req.id}
        decision = self._engine.run_by_hand(
            req.playbook, req.params, now, rule=REMOTE_RULE, labels=labels
        )
        log.info("remote request %s from %s: playbook %s", req.id, req.instance, req.playbook)
        await self._act([decision], now, None)

    async def refuse(self, request_id: str | None, reason: Refusal, detail: str) -> None:
        self._metrics.fleet_requests_refused.labels(reason).inc()
        self._log_refusal(request_id, reason, detail)
        if request_id is not None:
            await self._reports.report(
                request_id, RemoteOutcome.REFUSED, reason=reason, detail=detail
            )

    def _log_refusal(self, request_id: str | None, reason: Refusal, detail: str) -> None:
        """Every refusal is logged, up to :data:`_LOG_PER_MINUTE` (a flood of forgeries
        must not flood the log); the next line says how many were not."""
        more = self._log.take()
        if more is None:
            return
        log.warning(
            "remote request %s refused: %s: %s%s", request_id or "(no id)", reason, detail, more
        )


class Reporter(Protocol):
    """The pipeline's reporter (runtime.pipeline.Reporter), seen from here."""

    def decided(self, decision: Decision, incident_id: int | None, started: bool) -> None: ...
    def resolved(self, resolved: Resolved, incident_id: int | None) -> None: ...
    def run_ended(self, ended: RunEnded) -> None: ...
    def circuits(self, events: list[CircuitEvent]) -> None: ...


class RemoteReporter:
    """The daemon's reporter, and the outcome reports of remote requests besides."""

    def __init__(self, inner: Reporter, reports: OutcomeReports, spawn: Spawn) -> None:
        self._inner = inner
        self._reports = reports
        self._spawn = spawn

    def decided(self, decision: Decision, incident_id: int | None, started: bool) -> None:
        self._inner.decided(decision, incident_id, started)
        rid = decision.labels.get("request") if decision.rule == REMOTE_RULE else None
        if rid is None or started:
            return
        why = str(decision.suppressed or "not_started")
        detail = decision.reason or "the playbook's mode refused it, or batond is stopping"
        self._spawn(self._reports.report(rid, RemoteOutcome.REFUSED, reason=why, detail=detail))

    def resolved(self, resolved: Resolved, incident_id: int | None) -> None:
        self._inner.resolved(resolved, incident_id)

    def run_ended(self, ended: RunEnded) -> None:
        self._inner.run_ended(ended)
        rid = ended.labels.get("request") if ended.rule == REMOTE_RULE else None
        if rid is None or ended.escalation:
            return
        report = self._reports.report(
            rid, remote_outcome(ended.outcome), run_id=ended.run_id,
            run_outcome=str(ended.outcome),
        )  # fmt: skip
        self._spawn(report)

    def circuits(self, events: list[CircuitEvent]) -> None:
        self._inner.circuits(events)
