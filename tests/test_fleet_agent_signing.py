"""The checks of a remediation request (batond.fleet.signing, batond.fleet.requests.judge)."""

from __future__ import annotations

from pathlib import Path

import pytest

from batond.errors import BatondError
from batond.fleet.requests import judge, plain_value
from batond.fleet.signing import Refusal, Request, key_path, open_message, read_key, seal

KEY = b"k" * 32
NOW = 1_800_000_000.0


def request(**changes: object) -> dict[str, object]:
    fields = Request("r1", "web-01", "restart-web", {"unit": "web"}, NOW, "n1", "c1").fields()
    fields.update(changes)
    return fields


def test_a_correctly_signed_request_passes() -> None:
    judged = judge(open_message(seal(KEY, request()), KEY), "web-01", NOW + 5)
    assert judged.refusal is None and judged.request is not None
    assert judged.request.playbook == "restart-web"


@pytest.mark.parametrize(
    ("payload", "host", "now", "reason"),
    [
        (seal(b"x" * 32, request()), "web-01", NOW, Refusal.BAD_SIGNATURE),
        (seal(KEY, request()), "web-02", NOW, Refusal.UNKNOWN_HOST),
        (seal(KEY, request()), "web-01", NOW + 61, Refusal.STALE),
        (seal(KEY, request()), "web-01", NOW - 61, Refusal.STALE),
        (b"not json", "web-01", NOW, Refusal.MALFORMED),
        (seal(KEY, request(ts="soon")), "web-01", NOW, Refusal.MALFORMED),
    ],
)
def test_refusals_say_why(payload: bytes, host: str, now: float, reason: Refusal) -> None:
    assert judge(open_message(payload, KEY), host, now).refusal == reason


def test_a_changed_field_breaks_the_signature() -> None:
    sealed = seal(KEY, request()).replace(b"restart-web", b"rm-rf-web")
    assert judge(open_message(sealed, KEY), "web-01", NOW).refusal == Refusal.BAD_SIGNATURE


def test_params_must_be_plain_values() -> None:
    assert plain_value({"a": [1, 2.5, "x", True, None, {"b": "c"}]})
    assert not plain_value({"a": object()})
    assert not plain_value({1: "x"})


def test_keys_and_their_paths(tmp_path: Path) -> None:
    (tmp_path / "short.key").write_bytes(b"abc\n")
    with pytest.raises(BatondError, match="at least 16 bytes"):
        read_key(tmp_path / "short.key")
    with pytest.raises(ValueError):
        key_path(tmp_path, "../etc/passwd")
    assert key_path(tmp_path, "web-01.example") == tmp_path / "web-01.example.key"
