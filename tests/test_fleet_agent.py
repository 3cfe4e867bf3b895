"""A fleet agent end to end: a real ``batond run`` with ``fleet: {role: agent}`` and a
real Mosquitto; the test plays central with a plain MQTT client (docs/fleet.md#agent)."""

from __future__ import annotations

import re
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from paho.mqtt import client as paho

from batond.events import Event, Sample
from batond.fleet.signing import Request, new_nonce, open_message, seal
from batond.fleet.wire import Batch, decode_batch
from daemon_proc import DaemonProcess, http, write_config
from mqtt_broker import Mosquitto, Subscriber
from support import free_port, wait_until

HOST = "web-01"
KEY = b"0123456789abcdef-agent-web-01-key"
PARTITIONS = 8
PARTITION = zlib.crc32(HOST.encode()) % PARTITIONS  # computed here, not by batond
BATCHES = f"batond/fleet/{PARTITION}/{HOST}"
REQUESTS = f"batond/fleet/requests/{HOST}"
OUTCOMES = f"batond/fleet/outcomes/{HOST}"

PLAYBOOKS = """
playbooks:
  - name: fix
    params: {what: nothing}
    steps:
      - name: note
        action: exec
        with: {argv: [sh, -c, 'echo "$1" >> "$2"', sh, "{{ params.what }}", OUT]}
"""


@pytest.fixture
def central(broker: Mosquitto) -> Iterator[Subscriber]:
    """What a central instance sees of this agent (batches and outcome reports)."""
    sub = Subscriber(broker, (f"batond/fleet/+/{HOST}", OUTCOMES), "test-central")
    yield sub
    sub.close()


def write_agent(folder: Path, broker: Mosquitto, password: str | None = None) -> tuple[Path, int]:
    """An agent's config in ``folder``: host web-01, batches every 300 ms."""
    folder.mkdir()
    (folder / "agent.key").write_bytes(KEY + b"\n")
    user = ""
    if password is not None:  # the broker's user for this agent is named after its host
        (folder / "mqtt.pass").write_text(password + "\n")
        user = f"\n  username: {HOST}\n  password_file: mqtt.pass"
    port = free_port()
    config = write_config(
        folder,
        port,
        rules=PLAYBOOKS.replace("OUT", str(folder / "out.txt")),
        extra=f"""
mqtt:
  url: {broker.url}{user}
  subscribe:
    - {{topic: "local/#", qos: 1}}
fleet:
  role: agent
  host: {HOST}
  partitions: {PARTITIONS}
  batch_interval: 300ms
  key_file: agent.key
""",
    )  # (node: test-node; in the fleet this host is web-01)
    return config, port


@pytest.fixture
def agent_config(tmp_path: Path, broker: Mosquitto) -> tuple[Path, int]:
    return write_agent(tmp_path / "agent", broker)


def start(config: Path, port: int) -> DaemonProcess:
    daemon = DaemonProcess(config, port)
    try:
        daemon.wait_ready()
        daemon.wait_for(lambda: daemon.metric("batond_mqtt_connected") == 1, what="MQTT")
    except BaseException:
        daemon.stop()
        raise
    return daemon


@pytest.fixture
def agent(agent_config: tuple[Path, int], central: Subscriber) -> Iterator[DaemonProcess]:
    daemon = start(*agent_config)
    yield daemon
    daemon.stop()


def batches(central: Subscriber) -> list[Batch]:
    return [decode_batch(p, time.time()) for p in central.on(BATCHES)]


def test_batches_carry_the_hosts_inputs_at_its_partition(
    agent: DaemonProcess, broker: Mosquitto, central: Subscriber
) -> None:
    pub = Subscriber(broker, (), "test-local-input")
    pub.publish("local/app", b'{"metric": "queue_depth", "value": 7}')
    pub.close()
    event = {"event": "deploy.finished", "version": "1.2"}
    posted = http("POST", agent.url + "/api/v1/events", body=orjson.dumps(event))
    assert posted.status in (200, 202), posted.text

    def seen() -> list[Batch]:
        got = batches(central)
        items = [i for b in got for i in b.items]
        local = any(isinstance(i, Sample) and i.metric == "queue_depth" for i in items)
        host = any(isinstance(i, Sample) and i.metric == "cpu_percent" for i in items)
        posted = any(isinstance(i, Event) and i.name == "deploy.finished" for i in items)
        return got if local and host and posted else []

    got = agent.wait_for(seen, 60, "batches with host, MQTT and HTTP inputs")
    assert {t for t, _ in central.messages if t.startswith("batond/fleet/")} <= {
        BATCHES,
        OUTCOMES,
    }  # one topic: <prefix>/<partition>/<host>, never another partition
    seqs = [b.seq for b in got]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), seqs  # rising, no gap
    assert all(b.host == HOST and not b.errors for b in got)
    items = [i for b in got for i in b.items]
    # host metrics carry the node name; in the fleet they say the fleet's host name
    assert {i.labels["host"] for i in items} == {HOST}
    depth = next(i for i in items if isinstance(i, Sample) and i.metric == "queue_depth")
    assert depth.value == 7.0
    deploy = next(i for i in items if isinstance(i, Event) and i.name == "deploy.finished")
    assert deploy.raw["version"] == "1.2"
    assert (agent.metric("batond_fleet_batches_published_total") or 0) >= len(got)
    for reason in ("other_host", "batch_full", "outbox_full", "stopping"):
        assert agent.metric("batond_fleet_batch_dropped_total", {"reason": reason}) == 0


def request(playbook: str = "fix", **params: str) -> Request:
    return Request(
        id=f"req-{new_nonce()[:8]}",
        host=HOST,
        playbook=playbook,
        params=params,
        ts=time.time(),
        nonce=new_nonce(),
        instance="central-1",
    )


def outcome_of(central: Subscriber, request_id: str, n: int = 1) -> list[dict[str, object]]:
    """The ``n``-th signed outcome report of ``request_id`` (all of them, in order)."""

    def reports() -> list[dict[str, object]]:
        found = []
        for payload in central.on(OUTCOMES):
            signed = open_message(payload, KEY)
            assert signed is not None and signed.authentic, payload  # signed by the agent
            if signed.fields["id"] == request_id:
                found.append(dict(signed.fields))
        return found if len(found) >= n else []

    return wait_until(reports, 60, f"outcome report {n} of {request_id}")


def test_a_signed_request_runs_a_local_playbook_and_its_outcome_comes_back_signed(
    agent: DaemonProcess, central: Subscriber, tmp_path: Path
) -> None:
    req = request(what="disk-cleanup")
    central.publish(REQUESTS, seal(KEY, req.fields()))
    (report,) = outcome_of(central, req.id)
    assert (report["outcome"], report["run_outcome"], report["host"]) == (
        "succeeded",
        "succeeded",
        HOST,
    )
    assert (tmp_path / "agent" / "out.txt").read_text() == "disk-cleanup\n"
    run = agent.get(f"/api/v1/runs/{report['run']}").json()
    assert (run["rule"], run["playbook"], run["outcome"]) == ("remote-request", "fix", "succeeded")
    assert agent.metric("batond_fleet_requests_accepted_total") == 1


def test_forged_and_replayed_requests_are_refused_with_their_reason(
    agent: DaemonProcess, central: Subscriber, tmp_path: Path
) -> None:
    forged = request(what="forged")
    central.publish(REQUESTS, seal(b"not-the-key-of-web-01-at-all", forged.fields()))
    (refused,) = outcome_of(central, forged.id)
    assert (refused["outcome"], refused["reason"]) == ("refused", "bad_signature")
    agent.wait_for(
        lambda: f"remote request {forged.id} refused: bad_signature" in agent.log(),
        what="the refusal's log line",
    )

    genuine = request(what="once")
    payload = seal(KEY, genuine.fields())
    central.publish(REQUESTS, payload)
    (first,) = outcome_of(central, genuine.id)
    assert first["outcome"] == "succeeded"
    central.publish(REQUESTS, payload)  # captured and sent again
    _, again = outcome_of(central, genuine.id, 2)
    assert (again["outcome"], again["reason"]) == ("refused", "replayed")
    agent.wait_for(
        lambda: f"remote request {genuine.id} refused: replayed" in agent.log(),
        what="the replay's log line",
    )
    assert (tmp_path / "agent" / "out.txt").read_text() == "once\n"  # ran once, forged never
    refusals = "batond_fleet_requests_refused_total"
    assert agent.metric(refusals, {"reason": "bad_signature"}) == 1
    assert agent.metric(refusals, {"reason": "replayed"}) == 1
    assert agent.metric("batond_fleet_requests_accepted_total") == 1


def test_batches_made_while_the_broker_is_down_arrive_after_it_is_back(
    agent: DaemonProcess, broker: Mosquitto, central: Subscriber
) -> None:
    agent.wait_for(lambda: len(batches(central)) >= 2, 60, "the first batches")
    before = max(b.seq for b in batches(central))
    stopped_at = time.time()
    broker.stop()
    agent.wait_for(lambda: "not published, kept for later" in agent.log(), what="an outage")
    # host metrics (about a dozen samples a second) wait in the batches made meanwhile
    agent.wait_for(
        lambda: (agent.metric("batond_fleet_batch_buffered") or 0) >= 40, 60, "batches kept"
    )
    restarted_at = time.time()
    broker.start()

    def caught_up() -> list[Batch]:
        got = batches(central)
        late = [b for b in got if b.sent > restarted_at]
        return got if late else []

    got = agent.wait_for(caught_up, 60, "batches after the restart")
    seqs = sorted({b.seq for b in got})  # (QoS 1: a batch may come twice, never not at all)
    assert seqs == list(range(seqs[0], seqs[-1] + 1)), seqs
    during = [b for b in got if stopped_at < b.sent < restarted_at and b.seq > before]
    assert len(during) >= 2, [(b.seq, b.sent) for b in got]
    # (at most one host reading of the 40 was still in the batch being filled)
    assert sum(len(b.items) for b in during) >= 20
    assert agent.metric("batond_fleet_batch_dropped_total", {"reason": "outbox_full"}) == 0


def test_the_last_batch_goes_out_at_stop_and_seq_goes_on_after_a_restart(
    agent_config: tuple[Path, int], central: Subscriber
) -> None:
    first = start(*agent_config)
    try:
        first.wait_for(lambda: len(batches(central)) >= 2, 60, "the first batches")
    finally:
        assert first.stop() == 0
    found = re.search(r"last batch (\d+) published at stop", first.log())
    assert found is not None, first.log()
    last = int(found.group(1))
    # the broker took it before batond exited; once it is here, nothing of the first
    # life is still on its way (the broker delivers one client's QoS 1 messages in order)
    wait_until(lambda: last in {b.seq for b in batches(central)}, 30, f"batch {last}")
    seen = len(central.on(BATCHES))
    second = start(*agent_config)
    try:
        later = second.wait_for(
            lambda: [decode_batch(p, time.time()).seq for p in central.on(BATCHES)[seen:]],
            60,
            "a batch of the new life",
        )
    finally:
        second.stop()
    assert later[0] == last + 1  # kept in the journal: a restart never reuses a seq


def fleet_acl() -> str:
    """The Mosquitto ACL that docs/fleet.md gives, as it stands there."""
    doc = (Path(__file__).parents[1] / "docs" / "fleet.md").read_text()
    section = doc[doc.index("### The broker's ACLs") :]
    return section.split("```")[1]


def publish_v5(broker: Mosquitto, user: str, password: str, topic: str) -> paho.ReasonCode:
    """Publish at QoS 1 with MQTT 5, whose PUBACK says whether the broker's ACL let it in."""
    codes: dict[int, paho.ReasonCode] = {}
    done = threading.Event()

    def on_publish(_c: object, _u: object, mid: int, code: paho.ReasonCode, _p: object) -> None:
        codes[mid] = code
        done.set()

    client = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    client.username_pw_set(user, password)
    client.on_publish = on_publish
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    try:
        info = client.publish(topic, b'{"v": 1}', qos=1)
        assert done.wait(30), f"no PUBACK for {topic}"
        return codes[info.mid]
    finally:
        client.loop_stop()
        client.disconnect()


def test_the_documented_broker_acl_lets_each_party_do_its_part_and_no_more(
    tmp_path: Path,
) -> None:
    users = {HOST: "pw-web-01", "web-02": "pw-web-02", "central-1": "pw-central-1"}
    with Mosquitto(tmp_path / "broker", users=users, acl=fleet_acl()) as broker:
        central = Subscriber(
            broker,
            (f"batond/fleet/+/{HOST}", OUTCOMES),
            "acl-central",
            ("central-1", users["central-1"]),
        )
        daemon = start(*write_agent(tmp_path / "agent", broker, users[HOST]))
        try:
            daemon.wait_for(lambda: len(batches(central)) >= 2, 60, "batches through the ACL")
            req = request(what="through-the-acl")
            central.publish(REQUESTS, seal(KEY, req.fields()))
            (report,) = outcome_of(central, req.id)
            assert report["outcome"] == "succeeded"
            # another agent can neither feed web-01's partition nor ask web-01 for runs
            for topic in (BATCHES, REQUESTS, OUTCOMES):
                code = publish_v5(broker, "web-02", users["web-02"], topic)
                assert code == "Not authorized", (topic, code)
            assert publish_v5(broker, HOST, users[HOST], BATCHES) == "Success"  # (the same topic)
        finally:
            daemon.stop()
            central.close()


def test_requests_the_agent_will_not_run_are_answered_with_their_reason(
    agent: DaemonProcess, central: Subscriber, tmp_path: Path
) -> None:
    unknown = request("rm-rf-everything")
    wrong_param = request(what="x", shell="$(reboot)")
    late = request(what="late")
    stale = Request(late.id, HOST, "fix", late.params, time.time() - 3600, late.nonce, "c-1")
    for req in (unknown, wrong_param, stale):
        central.publish(REQUESTS, seal(KEY, req.fields()))
    answers = {req.id: outcome_of(central, req.id)[0] for req in (unknown, wrong_param, stale)}
    assert {rid: (a["outcome"], a["reason"]) for rid, a in answers.items()} == {
        unknown.id: ("refused", "unknown_playbook"),
        wrong_param.id: ("refused", "bad_params"),
        stale.id: ("refused", "stale"),
    }
    assert "takes no param 'shell'" in str(answers[wrong_param.id]["detail"])
    huge = {**request(what="x" * 70_000).fields(), "sig": "0" * 64}
    central.publish(REQUESTS, orjson.dumps(huge))  # not even looked at: no id to answer
    agent.wait_for(
        lambda: "refused: malformed: 70" in agent.log(), what="the oversized request's log line"
    )
    assert agent.metric("batond_fleet_requests_refused_total", {"reason": "malformed"}) == 1
    # a request that passes every check still goes through the agent's own governor
    assert agent.post("/api/v1/pause").status == 200
    paused = request(what="while-paused")
    central.publish(REQUESTS, seal(KEY, paused.fields()))
    (answer,) = outcome_of(central, paused.id)
    assert (answer["outcome"], answer["reason"]) == ("refused", "paused")
    assert not (tmp_path / "agent" / "out.txt").exists()  # nothing of it ran
