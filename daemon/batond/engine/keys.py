"""Incident keys: a rule's ``group_by`` labels as ``label=value`` joined by ``,``.

Values (and names) are escaped in the key text — ``\\`` -> ``\\\\``, ``,`` ->
``\\,``, ``=`` -> ``\\=`` — so that two different groups never share one key
(``host="a,svc=b", svc=""`` against ``host="a", svc="b,svc="``). Keys of
ordinary label values (no ``\\``, ``,`` or ``=``) read exactly as docs/rules.md
writes them: ``host=web-017,svc=nginx``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

__all__ = ["escape", "incident_key", "split_key"]


def escape(text: str) -> str:
    """``text`` made safe to stand as a key's name or value."""
    if "\\" in text or "," in text or "=" in text:
        return text.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=")
    return text


def incident_key(group_by: Sequence[str], labels: Mapping[str, str]) -> str:
    """The key of the group ``labels`` belong to (a missing label is ``""``)."""
    return ",".join(f"{escape(k)}={escape(labels.get(k, ''))}" for k in group_by)


def split_key(key: str) -> dict[str, str]:
    """The labels of a key (the inverse of :func:`incident_key`)."""
    out: dict[str, str] = {}
    if not key:
        return out
    name: str | None = None
    part: list[str] = []
    chars = iter(key)
    for ch in chars:
        if ch == "\\":
            part.append(next(chars, "\\"))
        elif ch == "=" and name is None:
            name, part = "".join(part), []
        elif ch == ",":
            _put(out, name, part)
            name, part = None, []
        else:
            part.append(ch)
    _put(out, name, part)
    return out


def _put(out: dict[str, str], name: str | None, part: list[str]) -> None:
    text = "".join(part)
    if name is None:  # a part without "=": a name with an empty value
        out[text] = ""
    else:
        out[name] = text
