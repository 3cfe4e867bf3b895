"""batond.yaml (docs/configuration.md): every problem is FILE:LINE:COL: message, at its spot."""

from __future__ import annotations

import dataclasses
import socket
from pathlib import Path

import pytest

from batond.errors import ConfigError
from batond.load.config import (
    Config,
    GovernorConfig,
    HttpConfig,
    MqttConfig,
    RateLimit,
    load_config,
    read_secret,
)
from support import config_problems as problems
from support import write_yaml as write


def only_problem(path: Path) -> str:
    found = problems(path)
    assert len(found) == 1, found
    return found[0]


# -- one problem kind per case: (yaml, line, col, message fragment) -------------
CASES = {
    "unknown top-level key": ("node: a\nstat_dir: /x\n", 2, 1, "unknown key 'stat_dir'"),
    "unknown nested key": ("http:\n  listen: 127.0.0.1:1\n  tokenfile: t\n", 3, 3, "unknown key"),
    "wrong type (string for int)": (
        "governor:\n  max_concurrent_runs: four\n",
        2,
        24,
        "expected an integer",
    ),
    "wrong type (list for mapping)": ("http: [1, 2]\n", 1, 7, "expected a http mapping"),
    "wrong type (mapping for list)": ("rules: {a: b}\n", 1, 8, "expected a list of paths"),
    "bare number duration": ("host:\n  interval: 5\n", 2, 13, "invalid duration '5'"),
    "unknown duration unit": ("journal:\n  retention: 5x\n", 2, 14, "invalid duration '5x'"),
    "duration with trailing junk": (
        "governor:\n  max_runs: {count: 3, per: 1h30}\n",
        2,
        29,
        "invalid duration '1h30'",
    ),
    "bad size unit": (
        "http:\n  max_body: 10MB\n",
        2,
        13,
        "invalid size '10MB'",
    ),
    "bare number size": ("journal:\n  record: {max_size: 1024}\n", 2, 22, "invalid size '1024'"),
    "listen without port": ("http:\n  listen: localhost\n", 2, 11, "listen must be HOST:PORT"),
    "listen with bad port": ("http:\n  listen: 127.0.0.1:99999\n", 2, 11, "HOST:PORT"),
    "missing secret file": (
        "http:\n  token_file: no-such-token\n",
        2,
        15,
        "secret file",
    ),
    "qos 2": (
        "mqtt:\n  subscribe:\n    - {topic: a/#, qos: 2}\n",
        3,
        25,
        "qos must be 0 or 1",
    ),
    "bad subscription format": (
        "mqtt:\n  subscribe:\n    - {topic: a/#, format: xml}\n",
        3,
        28,
        "format must be one of influx, json",
    ),
    "subscription without topic": ("mqtt:\n  subscribe:\n    - {qos: 1}\n", 3, 7, "'topic'"),
    "bad mqtt url": ("mqtt:\n  url: http://broker\n", 2, 8, "MQTT url must be"),
    "mode not enforce|shadow": ("mode: audit\n", 1, 7, "mode must be one of enforce, shadow"),
    "fraction above 1": (
        "governor:\n  max_targets_fraction: 1.5\n",
        2,
        25,
        "must be between 0.0 and 1.0",
    ),
    "count below 1": ("governor:\n  max_runs: {count: 0, per: 1h}\n", 2, 21, "at least 1"),
    "rate without per": (
        "governor:\n  per_target: {count: 3}\n",
        2,
        15,
        "missing required key 'per'",
    ),
    "duplicate key": ("mode: shadow\nmode: enforce\n", 2, 1, "duplicate key 'mode'"),
    "YAML syntax": ("http:\n  listen: [1,\n", 3, 1, "YAML syntax"),
    "not a mapping": ("- a\n- b\n", 1, 1, "expected a configuration mapping"),
}


@pytest.mark.parametrize("case", CASES.keys())
def test_each_problem_kind_is_reported_at_its_place(tmp_path: Path, case: str) -> None:
    text, line, col, fragment = CASES[case]
    path = write(tmp_path, text)
    problem = only_problem(path)
    prefix = f"{path}:{line}:{col}: "
    assert problem.startswith(prefix), (problem, prefix)
    assert fragment in problem


def test_cert_without_key_is_reported_at_the_cert(tmp_path: Path) -> None:
    (tmp_path / "client.pem").write_text("cert")
    path = write(tmp_path, "mqtt:\n  url: mqtts://broker\n  cert_file: client.pem\n")
    assert only_problem(path) == f"{path}:3:14: cert_file and key_file go together"


def test_password_file_needs_a_username(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("secret\n")
    path = write(tmp_path, "mqtt:\n  password_file: pw\n")
    assert only_problem(path) == f"{path}:2:18: password_file needs a username"


def test_every_problem_of_a_file_is_reported_in_order(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        mode: audit
        http:
          listen: nowhere
        host:
          interval: 5
        bogus: 1
        """,
    )
    found = problems(path)
    assert [p.split(": ", 1)[0] for p in found] == [
        f"{path}:1:7",
        f"{path}:3:11",
        f"{path}:5:13",
        f"{path}:6:1",
    ]


def test_absent_default_file_gives_the_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("batond.load.config.DEFAULT_CONFIG_PATH", str(tmp_path / "missing.yaml"))
    config = load_config(None)
    assert config == Config(node=config.node)
    assert config.path is None
    assert config.state_dir == Path("/var/lib/batond")
    assert config.http.listen == "127.0.0.1:9180"
    assert config.http.max_body == 1 << 20
    assert config.mqtt is None
    assert config.mode == "enforce"
    assert config.host.interval == 5.0
    assert config.governor.max_runs == RateLimit(30, 3600.0)
    assert config.journal.retention == 30 * 86400.0
    assert config.journal.record is None


def test_a_named_file_that_is_absent_is_an_error(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(missing)
    assert str(info.value).startswith(f"{missing}:1:1: cannot read")


def test_an_empty_secret_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("\n")
    path = write(tmp_path, "http:\n  token_file: token\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}:2:15: secret file '{tmp_path / 'token'}' is empty"


def test_empty_file_gives_the_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, "")
    config = load_config(path)
    assert config.path == path
    assert config.http == HttpConfig()


def test_full_example_of_the_spec_is_read(tmp_path: Path) -> None:
    for name in ("token", "mqtt.pass", "ca.pem", "client.pem", "client.key"):
        (tmp_path / name).write_text("x\n")
    path = write(
        tmp_path,
        """
        node: web-01
        state_dir: state
        rules: [rules, /etc/batond/more-rules]
        models: [models]
        mode: shadow
        http:
          listen: 0.0.0.0:9999
          token_file: token
          max_body: 64KiB
        mqtt:
          url: mqtts://broker.example:8884
          username: batond
          password_file: mqtt.pass
          ca_file: ca.pem
          cert_file: client.pem
          key_file: client.key
          subscribe:
            - {topic: "metrics/#", format: json, qos: 1}
            - {topic: "telegraf/#", format: influx, qos: 0}
          publish_prefix: batond/web-01
        host:
          interval: 1s500ms
          processes: [nginx, postgres]
        governor:
          max_concurrent_runs: 2
          max_runs: {count: 10, per: 1h30m}
          per_target: {count: 3, per: 1h}
          max_targets_fraction: 0
          min_fleet: 5
          kill_switch_file: paused
        journal:
          retention: 7d
          record: {max_age: 12h, max_size: 1GiB}
        """,
    )
    c = load_config(path)
    base = tmp_path
    assert c.node == "web-01"
    assert c.mode == "shadow"
    # relative paths are resolved against the config file's folder, absolute ones kept
    assert c.state_dir == base / "state"
    assert c.rules == (base / "rules", Path("/etc/batond/more-rules"))
    assert c.models == (base / "models",)
    assert c.http == HttpConfig("0.0.0.0", 9999, base / "token", 64 * 1024)
    assert c.mqtt is not None
    assert c.mqtt.tls and c.mqtt.hostname == "broker.example" and c.mqtt.port == 8884
    assert c.mqtt.client_id == "batond-web-01"  # default derived from node
    assert c.mqtt.password_file == base / "mqtt.pass"
    assert c.mqtt.cert_file == base / "client.pem" and c.mqtt.key_file == base / "client.key"
    assert [(s.topic, s.format, s.qos) for s in c.mqtt.subscribe] == [
        ("metrics/#", "json", 1),
        ("telegraf/#", "influx", 0),
    ]
    assert c.host.interval == 1.5
    assert c.host.processes == ("nginx", "postgres")
    assert c.governor == GovernorConfig(
        max_concurrent_runs=2,
        max_runs=RateLimit(10, 5400.0),
        per_target=RateLimit(3, 3600.0),
        max_targets_fraction=0.0,  # a valid 0 is not replaced by the default
        min_fleet=5,
        kill_switch_file=base / "paused",
    )
    assert c.journal.retention == 7 * 86400.0
    assert c.journal.record is not None
    assert (c.journal.record.max_age, c.journal.record.max_size) == (43200.0, 1 << 30)


def test_relative_paths_follow_the_config_not_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf_dir = tmp_path / "etc"
    conf_dir.mkdir()
    path = write(conf_dir, "state_dir: ./var\nrules: [../rules]\n")
    monkeypatch.chdir(tmp_path)
    c = load_config(Path("etc/batond.yaml").absolute())
    assert c.state_dir == conf_dir / "var"
    assert c.rules == (conf_dir / "../rules",)
    assert load_config(path).state_dir.is_absolute()


def test_ipv6_listen(tmp_path: Path) -> None:
    c = load_config(write(tmp_path, 'http:\n  listen: "[::1]:9181"\n'))
    assert (c.http.host, c.http.port, c.http.listen) == ("::1", 9181, "[::1]:9181")


def test_mqtt_defaults(tmp_path: Path) -> None:
    c = load_config(write(tmp_path, "node: n1\nmqtt: {}\n"))
    assert c.mqtt == MqttConfig(client_id="batond-n1")
    assert (c.mqtt.hostname, c.mqtt.port, c.mqtt.tls) == ("127.0.0.1", 1883, False)


def test_one_client_id_default_for_files_and_code(tmp_path: Path) -> None:
    # the file's default follows the node name, which defaults to the host name; an
    # MqttConfig built in code (tests, tools) gets the same id, never an empty one
    c = load_config(write(tmp_path, "mqtt: {}\n"))
    assert c.mqtt is not None
    assert c.mqtt.client_id == MqttConfig().client_id == f"batond-{socket.gethostname()}"


def test_secret_is_read_without_surrounding_whitespace(tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text("  s3cr3t value\n\n", encoding="utf-8")
    assert read_secret(secret) == "s3cr3t value"


def test_secret_never_comes_from_the_config_itself(tmp_path: Path) -> None:
    path = write(tmp_path, "http:\n  token: abc\n")
    assert "unknown key 'token'" in only_problem(path)


def test_parsed_config_is_frozen(tmp_path: Path) -> None:
    c = load_config(write(tmp_path, "mqtt: {subscribe: [{topic: a}]}\n"))
    assert c.mqtt is not None
    for obj, attr in (
        (c, "mode"),
        (c.http, "port"),
        (c.mqtt, "url"),
        (c.mqtt.subscribe[0], "qos"),
        (c.governor, "min_fleet"),
        (c.governor.max_runs, "count"),
        (c.host, "interval"),
        (c.journal, "retention"),
    ):
        assert dataclasses.is_dataclass(obj)
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(obj, attr, None)
    # sequences are tuples, so nothing inside can be changed either
    assert isinstance(c.rules, tuple) and isinstance(c.mqtt.subscribe, tuple)
