"""``mqtt``: publish one message through the daemon's MQTT connection."""

from __future__ import annotations

import orjson

from batond.errors import ActionError
from batond.remedy.actions.core import ActionKeys, ActionKind, ActionResult, Key, StepCall

__all__ = ["KIND", "run"]


async def run(call: StepCall) -> ActionResult:
    publish = call.ctx.mqtt_publish
    if publish is None:
        raise ActionError("mqtt: no MQTT connection is configured (mqtt: in batond.yaml)")
    topic = call.args.get("topic")
    if not isinstance(topic, str) or not topic or "#" in topic or "+" in topic:
        raise ActionError(f"mqtt: bad topic {topic!r}")
    payload = call.args.get("payload", "")
    data = payload.encode() if isinstance(payload, str) else orjson.dumps(payload)
    qos = int(call.args.get("qos") or 0)
    await publish(topic, data, qos, bool(call.args.get("retain") or False))
    return ActionResult(ok=True)


KIND = ActionKind(
    "mqtt",
    run,
    ActionKeys(
        {
            "topic": Key("text"),
            "payload": Key("data", description="a string, or data sent as JSON"),
            "qos": Key("qos", templated=False),
            "retain": Key("bool", templated=False),
        },
        required=("topic",),
    ),
)
