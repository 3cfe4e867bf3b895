"""One agent batch on the wire: the shape both roles share.

A batch is one JSON object per host and interval, published at QoS 1 to
``<prefix>/<partition>/<host>``::

    {"v": 1, "host": "web-01", "seq": 42, "sent": 1767000000.0,
     "samples": [{"metric": "cpu_percent", "value": 93.2, "ts": 1767000000.0, "mount": "/"}],
     "events":  [{"event": "process.exited", "ts": 1767000000.0, "name": "nginx"}]}

Each item has the shape of a single input on ``mqtt.subscribe`` (docs/inputs.md): the
labels are its other keys. Every item carries the batch's ``host`` label: an item that
names another host is refused (``host_mismatch``), so one agent's key to its topic is not
a key to another host's incidents. ``seq`` counts the agent's batches (a gap is a lost
batch); ``sent`` is the agent's clock when it closed the batch (a batch kept through a
broker outage goes out later).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import orjson

from batond.errors import InputError
from batond.events import Event, Input, Sample, item_from_json

__all__ = ["VERSION", "Batch", "decode_batch", "encode_batch", "event_json", "sample_json"]

VERSION = 1


@dataclass(slots=True)
class Batch:
    """A decoded batch: its valid items, and one error per item that was not."""

    host: str
    seq: int
    sent: float
    items: list[Input] = field(default_factory=list)
    errors: list[InputError] = field(default_factory=list)


def sample_json(sample: Sample) -> dict[str, Any]:
    return {**sample.labels, "metric": sample.metric, "value": sample.value, "ts": sample.ts}


def event_json(event: Event) -> dict[str, Any]:
    # raw keeps the JSON types (what expressions see as `event`); labels fill in the rest
    return {**event.labels, **event.raw, "event": event.name, "ts": event.ts}


def encode_batch(
    host: str, seq: int, sent: float, samples: list[Sample], events: list[Event]
) -> bytes:
    """The payload of one batch of ``host``'s inputs."""
    doc = {
        "v": VERSION,
        "host": host,
        "seq": seq,
        "sent": sent,
        "samples": [sample_json(s) for s in samples],
        "events": [event_json(e) for e in events],
    }
    return orjson.dumps(doc)


def decode_batch(payload: bytes, now: float, source: str = "fleet") -> Batch:
    """A batch from its payload; InputError when the whole batch is unusable.

    An invalid item costs only itself (in ``Batch.errors``).
    """
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise InputError("bad_json", str(exc)) from None
    batch = _header(doc)
    for key in ("samples", "events"):
        items = doc.get(key, [])
        if not isinstance(items, list):
            raise InputError("bad_batch", f"'{key}' must be a list")
        for obj in items:
            try:
                batch.items.append(_item(obj, key, batch.host, now, source))
            except InputError as exc:
                batch.errors.append(exc.with_traceback(None))
    return batch


def _header(doc: object) -> Batch:
    if not isinstance(doc, dict):
        raise InputError("bad_batch", "a batch must be a JSON object")
    if doc.get("v") != VERSION:
        raise InputError("bad_version", f"batch version {doc.get('v')!r} is not {VERSION}")
    host, seq, sent = doc.get("host"), doc.get("seq", 0), doc.get("sent", 0.0)
    if not isinstance(host, str) or not host:
        raise InputError("bad_batch", "'host' must be a non-empty string")
    if isinstance(seq, bool) or not isinstance(seq, int):
        raise InputError("bad_batch", f"'seq' must be an integer, got {seq!r}")
    if isinstance(sent, bool) or not isinstance(sent, int | float) or not math.isfinite(sent):
        raise InputError("bad_batch", f"'sent' must be epoch seconds, got {sent!r}")
    return Batch(host, seq, float(sent))


def _item(obj: object, key: str, host: str, now: float, source: str) -> Input:
    if isinstance(obj, dict):
        named = obj.setdefault("host", host)
        if named != host:
            raise InputError("host_mismatch", f"an item of {host!r}'s batch names host {named!r}")
    item = item_from_json(obj, now, source)
    if isinstance(item, Sample) != (key == "samples"):
        raise InputError("wrong_list", f"an item in '{key}' must be a {key[:-1]}")
    return item
