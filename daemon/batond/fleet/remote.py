"""A central instance's remote requests: what the ``remote`` step sends and waits for.

:meth:`RemoteRequests.ask` signs a request with the host's key
(``fleet.keys_dir/<host>.key``, read each time: a key rotated on disk is used
at once), a fresh id and nonce and the instance's clock, publishes it at QoS 1
to ``<prefix>/requests/<host>`` over the instance's MQTT connection, and waits
for the outcome report with that id on ``<prefix>/outcomes/<host>``. The step's
timeout bounds the wait (the executor cancels it).

Outcome reports come off the MQTT route (:meth:`RemoteRequests.take`); a report
is taken only when it answers a request this instance is waiting for, comes on
that host's topic, names that host and is signed with that host's key. Anything
else is refused (``malformed``, ``unmatched``, ``wrong_host``,
``bad_signature``), logged (30 lines a minute at most) and counted in
``batond_fleet_outcomes_refused_total{reason}``; the step waiting for a forged
report's id keeps waiting for the real one (a forger cannot end it).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from batond.errors import ActionError, BatondError
from batond.fleet.requests import MAX_REQUEST_BYTES, LogBudget, plain_value
from batond.fleet.signing import Request, key_path, new_nonce, open_message, read_key, seal
from batond.metrics import Metrics

__all__ = ["OutcomeRefusal", "RemoteRequests"]

log = logging.getLogger("batond.fleet")

Publish = Callable[[str, bytes, int, bool], Awaitable[None]]


class OutcomeRefusal(StrEnum):
    """Why central refused an outcome report (the ``reason`` label)."""

    MALFORMED = "malformed"  # not a signed JSON object with an id, or too large
    UNMATCHED = "unmatched"  # no request of this instance waits for that id
    WRONG_HOST = "wrong_host"  # not on, or not naming, the host the request went to
    BAD_SIGNATURE = "bad_signature"  # not signed with that host's key


@dataclass(frozen=True, slots=True)
class _Waiting:
    host: str
    key: bytes
    answer: asyncio.Future[Mapping[str, Any]]


class RemoteRequests:
    """Signed requests out, verified outcome reports back, matched by request id."""

    def __init__(
        self,
        *,
        prefix: str,
        instance: str,
        keys_dir: Path | None,
        publish: Publish,
        metrics: Metrics,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.prefix = prefix
        self.outcomes = f"{prefix}/outcomes/+"  # the route to subscribe
        self._instance = instance
        self._keys_dir = keys_dir
        self._publish = publish
        self._metrics = metrics
        self._clock = clock
        self._waiting: dict[str, _Waiting] = {}
        self._log = LogBudget()
        for reason in OutcomeRefusal:
            metrics.fleet_outcomes_refused.labels(reason)

    def _key(self, host: str) -> bytes:
        if self._keys_dir is None:
            raise ActionError("remote: fleet.keys_dir is not configured (one <host>.key each)")
        try:
            return read_key(key_path(self._keys_dir, host))
        except ValueError as exc:
            raise ActionError(f"remote: {exc}") from None
        except BatondError as exc:
            raise ActionError(f"remote: no key for host {host}: {exc}") from None

    async def ask(self, host: str, playbook: str, params: Mapping[str, Any]) -> Mapping[str, Any]:
        """The agent's verified outcome report of one request; ActionError when it cannot
        be sent. Cancelled (the step's timeout), the request is no longer waited for."""
        key = self._key(host)
        if not plain_value(dict(params)):
            raise ActionError("remote: params must be plain values (strings, numbers, lists, maps)")
        req = Request(
            id=f"req-{secrets.token_hex(8)}", host=host, playbook=playbook, params=dict(params),
            ts=self._clock(), nonce=new_nonce(), instance=self._instance,
        )  # fmt: skip
        answer: asyncio.Future[Mapping[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[req.id] = _Waiting(host, key, answer)
        try:
            await self._publish(f"{self.prefix}/requests/{host}", seal(key, req.fields()), 1, False)
            log.info("remote request %s to %s: playbook %s", req.id, host, playbook)
            report = await answer
        except asyncio.CancelledError:
            self._metrics.fleet_remote_steps.labels("unanswered").inc()
            log.warning("remote request %s to %s: no outcome report (step timed out or cancelled)",
                        req.id, host)  # fmt: skip
            raise
        finally:
            self._waiting.pop(req.id, None)
        self._metrics.fleet_remote_steps.labels(str(report.get("outcome"))).inc()
        return report

    def take(self, topic: str, payload: bytes) -> None:
        """One outcome report off the MQTT route (the socket callback: no awaiting)."""
        host = topic.rsplit("/", 1)[-1]
        if len(payload) > MAX_REQUEST_BYTES:
            self._refuse(None, host, OutcomeRefusal.MALFORMED, f"{len(payload)} bytes")
            return
        opened = open_message(payload, None)
        rid = opened.fields.get("id") if opened is not None else None
        if opened is None or not isinstance(rid, str):
            self._refuse(None, host, OutcomeRefusal.MALFORMED, "not a signed JSON object")
            return
        waiting = self._waiting.get(rid)
        if waiting is None or waiting.answer.done():
            self._refuse(rid, host, OutcomeRefusal.UNMATCHED, "no request waits for it")
            return
        if host != waiting.host or opened.fields.get("host") != waiting.host:
            detail = f"the request went to {waiting.host}"
            self._refuse(rid, host, OutcomeRefusal.WRONG_HOST, detail)
            return
        signed = open_message(payload, waiting.key)
        if signed is None or not signed.authentic:
            self._refuse(rid, host, OutcomeRefusal.BAD_SIGNATURE, "the HMAC does not match")
            return
        waiting.answer.set_result({k: v for k, v in signed.fields.items() if k != "sig"})

    def _refuse(self, rid: str | None, host: str, reason: OutcomeRefusal, detail: str) -> None:
        self._metrics.fleet_outcomes_refused.labels(reason).inc()
        more = self._log.take()
        if more is not None:
            log.warning("outcome report %s on host %s refused: %s: %s%s",
                        rid or "(no id)", host, reason, detail, more)  # fmt: skip
