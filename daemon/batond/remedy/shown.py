"""A step attempt's rendered ``with:`` values as the journal keeps them and the run view
shows them: secrets redacted, the size bounded.

The journal is read by the API and published over MQTT, so what often holds a
credential never reaches it: a value under a secret-looking key (``password``,
``token``, ``Authorization``, ``DB_PASSWORD`` in ``env``...), the value after a
secret-looking ``--flag`` in an argv or ``name=value`` in a text, a ``Bearer``
token, and the user info and query of every URL (the whole path of a ``notify``
webhook, as the http action's own messages do). Best effort by design: a secret
under an innocent name in free text is not recognisable, and it stays an
operator's duty to keep secrets out of templates' reach (``env`` from a file).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import orjson

from batond.engine.expr import Expression
from batond.remedy.actions.http import redact, redact_text

__all__ = ["ARGS_MAX", "REDACTED", "TRUNCATED", "shown_args"]

#: What stands in for a redacted value.
REDACTED = "<redacted>"
#: Most bytes of a step's arguments kept (their JSON); past it, a marker and a head.
ARGS_MAX = 8192
#: The key of the marker that replaces arguments too large to keep whole.
TRUNCATED = "<truncated>"

# a key whose value is a secret: password, passwd, passphrase, token, secret,
# authorization, auth, cookie, credential(s), api_key, access_key, private_key
_SECRET = (
    r"pass(?:w(?:or)?d|phrase)|token|secret|auth(?:orization)?|cookie|credentials?"
    r"|(?:api|access|private|signing)[_-]?key"
)
# as a word of the key (DB_PASSWORD, X-Auth-Token, apiKey), not inside one (author)
_SECRET_KEY = re.compile(rf"(?<![a-z])(?:{_SECRET})s?(?![a-z])", re.IGNORECASE)
# --password VALUE (the value is the next argv element)
_SECRET_FLAG = re.compile(rf"^-{{1,2}}[\w-]*(?:{_SECRET})[\w-]*$", re.IGNORECASE)
# password=VALUE, --token=VALUE, "X-Api-Key: VALUE" inside a text
_SECRET_PAIR = re.compile(rf"((?:{_SECRET})[\w-]*\s*[=:]\s*)([^\s\"',;&]+)", re.IGNORECASE)
_BEARER = re.compile(r"\b(Bearer|Basic|Token)\s+[A-Za-z0-9._~+/=-]+", re.IGNORECASE)


def shown_args(action: str, args: Mapping[str, Any]) -> dict[str, Any]:
    """``args`` (a step's rendered ``with:``) with secrets redacted, at most ``ARGS_MAX``
    bytes of JSON; larger ones become ``{TRUNCATED: why, "head": the first bytes}``."""
    shown = {
        str(k): REDACTED if _is_secret(str(k)) else _value(action, str(k), v)
        for k, v in args.items()
    }
    text = orjson.dumps(shown, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
    if len(text) <= ARGS_MAX:
        return shown
    head = text.encode()[:ARGS_MAX].decode(errors="ignore")
    return {TRUNCATED: f"{len(text)} bytes of arguments, the first {ARGS_MAX} kept", "head": head}


def _is_secret(key: str) -> bool:
    return bool(_SECRET_KEY.search(key))


def _value(action: str, key: str, value: Any) -> Any:
    if key == "url" and isinstance(value, str):
        return _url(value, keep_path=action != "notify")  # a webhook's path is the credential
    return _walk(value)


def _walk(value: Any) -> Any:
    if isinstance(value, str):
        return _text(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, dict | Mapping):  # (dict first: the ABC check is slow)
        return {str(k): REDACTED if _is_secret(str(k)) else _walk(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return _items(list(value))
    if isinstance(value, Expression):
        return value.text
    return str(value)


def _items(values: list[Any]) -> list[Any]:
    """A list (an argv): the element after a secret-looking ``--flag`` is redacted."""
    out: list[Any] = []
    hide = False
    for v in values:
        out.append(REDACTED if hide else _walk(v))
        hide = isinstance(v, str) and v[:1] == "-" and bool(_SECRET_FLAG.match(v))
    return out


def _text(text: str) -> str:
    # each pattern only where it can match: on the loop, before the first action
    if "://" in text:
        text = redact_text(text)
    if " " in text or "\t" in text:
        text = _BEARER.sub(lambda m: f"{m.group(1)} {REDACTED}", text)
    if "=" in text or ":" in text:
        text = _SECRET_PAIR.sub(lambda m: m.group(1) + REDACTED, text)
    return text


def _url(url: str, keep_path: bool) -> str:
    try:
        return redact(url, keep_path=keep_path)
    except ValueError:  # unparsable (a bad port): show none of it
        return "<url>"
