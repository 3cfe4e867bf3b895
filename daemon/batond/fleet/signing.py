"""Signed remediation requests and outcome reports between central instances and agents.

A message is a JSON object; its ``sig`` is HMAC-SHA256, in hex, over the
canonical encoding of every other field (orjson, keys sorted, no spaces), with
the key of the host it is about: the agent reads its own (``fleet.key_file``),
a central instance reads ``fleet.keys_dir/<host>.key``. The broker's ACLs are
the first line of defence (only central instances may publish requests); the
signature is what an agent trusts, and the timestamp and nonce (checked by
:mod:`batond.fleet.requests`) are what make a captured request useless later.

Pure functions over bytes, plus :func:`read_key`; no clock: callers pass ``now``.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import orjson

from batond.errors import BatondError
from batond.load.config import FLEET_HOST_PATTERN, MIN_FLEET_KEY_BYTES

__all__ = [
    "MIN_KEY_BYTES",
    "Refusal",
    "RemoteOutcome",
    "Request",
    "Signed",
    "canonical",
    "key_path",
    "new_nonce",
    "open_message",
    "read_key",
    "seal",
    "valid_host",
]

#: A key shorter than this is refused: HMAC is only as strong as its key.
MIN_KEY_BYTES = MIN_FLEET_KEY_BYTES
#: Host names as RFC 1123 labels joined by dots; nothing a topic or a path could abuse.
_HOST = re.compile(rf"(?=.{{1,253}}\Z){FLEET_HOST_PATTERN}\Z")


class Refusal(StrEnum):
    """Why an agent refused a request: the ``reason`` label and the refusal report."""

    MALFORMED = "malformed"  # not a JSON object with the fields of a request
    BAD_SIGNATURE = "bad_signature"
    STALE = "stale"  # its timestamp is outside the window
    REPLAYED = "replayed"  # its nonce was seen before
    UNKNOWN_HOST = "unknown_host"  # addressed to another host
    UNKNOWN_PLAYBOOK = "unknown_playbook"  # not a playbook of the agent's own files
    BAD_PARAMS = "bad_params"  # not plain values, or params the playbook does not take


class RemoteOutcome(StrEnum):
    """What a central instance learns of a request (the ``remote`` step's ``outcome``)."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REFUSED = "refused"
    TIMED_OUT = "timed_out"


def valid_host(name: object) -> bool:
    return isinstance(name, str) and _HOST.match(name) is not None


def key_path(keys_dir: Path, host: str) -> Path:
    """Where a central instance keeps ``host``'s key; ValueError for a bad host name
    (a templated host must never reach a path as ``../x``)."""
    if not valid_host(host):
        raise ValueError(f"not a host name: {host!r}")
    return keys_dir / f"{host}.key"


def read_key(path: Path) -> bytes:
    """The key in ``path`` (surrounding whitespace is not part of it); BatondError when
    it cannot be read or is too short."""
    try:
        key = path.read_bytes().strip()
    except OSError as exc:
        raise BatondError(f"{path}: cannot read the fleet key: {exc.strerror or exc}") from None
    if len(key) < MIN_KEY_BYTES:
        raise BatondError(f"{path}: a fleet key must be at least {MIN_KEY_BYTES} bytes")
    return key


def new_nonce() -> str:
    return secrets.token_hex(16)


def canonical(fields: Mapping[str, Any]) -> bytes:
    """The bytes that are signed: every field but ``sig``, keys sorted, no spaces."""
    body = {k: v for k, v in fields.items() if k != "sig"}
    return orjson.dumps(body, option=orjson.OPT_SORT_KEYS)


def _mac(key: bytes, fields: Mapping[str, Any]) -> str:
    return hmac.new(key, canonical(fields), hashlib.sha256).hexdigest()


def seal(key: bytes, fields: Mapping[str, Any]) -> bytes:
    """The message: ``fields`` with their signature."""
    return orjson.dumps({**fields, "sig": _mac(key, fields)})


@dataclass(frozen=True, slots=True)
class Signed:
    """A decoded message and whether its signature is right (with the key given)."""

    fields: Mapping[str, Any]
    authentic: bool


def open_message(payload: bytes, key: bytes | None) -> Signed | None:
    """The message's fields, checked against ``key`` (None: no key, never authentic);
    None when it is not a JSON object with a ``sig``."""
    try:
        fields = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(fields, dict) or not isinstance(fields.get("sig"), str):
        return None
    if key is None:
        return Signed(fields, False)
    authentic = hmac.compare_digest(_mac(key, fields), fields["sig"])
    return Signed(fields, authentic)


@dataclass(frozen=True, slots=True)
class Request:
    """A remediation request, as signed (``ts`` in seconds since the epoch)."""

    id: str
    host: str
    playbook: str
    params: Mapping[str, Any]
    ts: float
    nonce: str
    instance: str

    def fields(self) -> dict[str, Any]:
        return {
            "v": 1, "id": self.id, "host": self.host, "playbook": self.playbook,
            "params": dict(self.params), "ts": self.ts, "nonce": self.nonce,
            "instance": self.instance,
        }  # fmt: skip

    @classmethod
    def from_fields(cls, f: Mapping[str, Any]) -> Request | None:
        """None when a field is missing or of the wrong type."""
        texts = ("id", "host", "playbook", "nonce", "instance")
        if any(not isinstance(f.get(k), str) or not f.get(k) for k in texts):
            return None
        ts = f.get("ts")
        if isinstance(ts, bool) or not isinstance(ts, int | float):
            return None
        params = f.get("params", {})
        if not isinstance(params, dict):
            return None
        return cls(f["id"], f["host"], f["playbook"], params, float(ts), f["nonce"], f["instance"])
