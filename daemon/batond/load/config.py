"""``batond.yaml``: loaded with positions, validated into frozen objects.

Every problem is reported as ``FILE:LINE:COL: message``; unknown keys, wrong
types and bad durations are errors. Secrets are read from files (so systemd's
``LoadCredential=`` works) and never written in the config itself.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from batond.errors import ConfigError, Problem
from batond.load.yamlfile import Node, Reader, compose_file

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "Config",
    "GovernorConfig",
    "HostConfig",
    "HttpConfig",
    "JournalConfig",
    "LogConfig",
    "MqttConfig",
    "NotifyConfig",
    "RateLimit",
    "RecordConfig",
    "Subscription",
    "default_client_id",
    "load_config",
    "read_secret",
]

DEFAULT_CONFIG_PATH = "/etc/batond/batond.yaml"
LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True, slots=True)
class RateLimit:
    count: int
    per: float  # seconds


@dataclass(frozen=True, slots=True)
class HttpConfig:
    host: str = "127.0.0.1"
    port: int = 9180
    token_file: Path | None = None
    max_body: int = 1 << 20

    @property
    def listen(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Subscription:
    topic: str
    format: str = "json"  # json | influx
    qos: int = 0


def default_client_id(node: str) -> str:
    """The MQTT client id when ``mqtt.client_id`` is not set: ``batond-NODE``."""
    return f"batond-{node}"


@dataclass(frozen=True, slots=True)
class MqttConfig:
    url: str = "mqtt://127.0.0.1:1883"
    # the reader derives it from the configured node name; this default from the host name
    client_id: str = field(default_factory=lambda: default_client_id(socket.gethostname()))
    username: str | None = None
    password_file: Path | None = None
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    subscribe: tuple[Subscription, ...] = ()
    publish_prefix: str | None = None
    max_payload: int = 256 << 10  # larger messages are rejected (too_large) unparsed

    @property
    def tls(self) -> bool:
        return urlsplit(self.url).scheme == "mqtts"

    @property
    def hostname(self) -> str:
        return urlsplit(self.url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or (8883 if self.tls else 1883)


@dataclass(frozen=True, slots=True)
class HostConfig:
    interval: float = 5.0
    processes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class GovernorConfig:
    max_concurrent_runs: int = 4
    max_runs: RateLimit = RateLimit(30, 3600.0)
    per_target: RateLimit = RateLimit(3, 3600.0)
    max_targets_fraction: float = 0.2
    min_fleet: int = 10
    kill_switch_file: Path | None = None


@dataclass(frozen=True, slots=True)
class RecordConfig:
    max_age: float = 7 * 86400.0
    max_size: int = 1 << 30


@dataclass(frozen=True, slots=True)
class JournalConfig:
    retention: float = 30 * 86400.0
    record: RecordConfig | None = None


@dataclass(frozen=True, slots=True)
class NotifyConfig:
    """Where batond tells a human what needs one (circuits, incidents left without a run)."""

    url: str


@dataclass(frozen=True, slots=True)
class LogConfig:
    level: str = "info"  # debug | info | warning | error
    format: str | None = None  # text | json; None: json under journald, else text


@dataclass(frozen=True, slots=True)
class Config:
    path: Path | None = None  # None: built-in defaults (no file)
    node: str = field(default_factory=socket.gethostname)
    state_dir: Path = Path("/var/lib/batond")
    rules: tuple[Path, ...] = (Path("/etc/batond/rules"),)
    models: tuple[Path, ...] = (Path("/etc/batond/models"),)
    mode: str = "enforce"  # enforce | shadow
    http: HttpConfig = HttpConfig()
    mqtt: MqttConfig | None = None
    host: HostConfig = HostConfig()
    governor: GovernorConfig = GovernorConfig()
    journal: JournalConfig = JournalConfig()
    notify: NotifyConfig | None = None
    log: LogConfig = LogConfig()


def read_secret(path: Path) -> str:
    """A secret from its file; surrounding whitespace (the final newline) is not part of it."""
    return path.read_text(encoding="utf-8").strip()


def load_config(path: str | Path | None, *, must_exist: bool = False) -> Config:
    """The configuration at ``path``; built-in defaults when it does not exist.

    Relative paths inside the file are taken relative to the file's folder.
    Raises ConfigError with every problem found.
    """
    if path is None:
        path = DEFAULT_CONFIG_PATH
    else:
        must_exist = True  # a file named on the command line is never silently replaced
    path = Path(path)
    if not path.exists() and not must_exist:
        return Config()
    node, reader = compose_file(path)
    if node is None:
        if reader.problems:
            reader.raise_if_problems()
        return Config(path=path)  # an empty file: all defaults
    config = _ConfigReader(reader, path.parent).config(node, path)
    reader.raise_if_problems()
    assert config is not None
    return config


class _ConfigReader:
    def __init__(self, reader: Reader, base: Path) -> None:
        self.r = reader
        self.base = base

    def path(self, node: Node) -> Path | None:
        text = self.r.string(node, "path")
        return None if text is None else self.base / text

    def paths(self, node: Node) -> tuple[Path, ...]:
        items = self.r.seq(node, "list of paths") or []
        return tuple(p for p in (self.path(n) for n in items) if p is not None)

    def secret_file(self, node: Node) -> Path | None:
        p = self.path(node)
        if p is None:
            return None
        try:
            empty = not read_secret(p)
        except (OSError, UnicodeDecodeError) as exc:
            self.r.error(node, f"secret file {str(p)!r} cannot be read: {exc.__class__.__name__}")
            return p
        if empty:
            # an empty token would otherwise mean "no authentication" to a careless reader
            self.r.error(node, f"secret file {str(p)!r} is empty")
        return p

    def config(self, node: Node, path: Path) -> Config | None:
        f = self.r.mapping(
            node,
            (
                "node",
                "state_dir",
                "rules",
                "models",
                "mode",
                "http",
                "mqtt",
                "host",
                "governor",
                "journal",
                "notify",
                "log",
            ),
            what="configuration mapping",
        )
        if f is None:
            return None
        d = Config()
        node_name = (self.r.name(f["node"], "node name") or d.node) if "node" in f else d.node
        mqtt = self.mqtt(f["mqtt"], node_name) if "mqtt" in f else None
        return Config(
            path=path,
            node=node_name,
            state_dir=self.path(f["state_dir"]) or d.state_dir if "state_dir" in f else d.state_dir,
            rules=self.paths(f["rules"]) if "rules" in f else d.rules,
            models=self.paths(f["models"]) if "models" in f else d.models,
            mode=self.r.one_of(f["mode"], ("enforce", "shadow"), "mode") or d.mode
            if "mode" in f
            else d.mode,
            http=self.http(f["http"]) if "http" in f else d.http,
            mqtt=mqtt,
            host=self.host(f["host"]) if "host" in f else d.host,
            governor=self.governor(f["governor"]) if "governor" in f else d.governor,
            journal=self.journal(f["journal"]) if "journal" in f else d.journal,
            notify=self.notify(f["notify"]) if "notify" in f else None,
            log=self.log(f["log"]) if "log" in f else d.log,
        )

    def notify(self, node: Node) -> NotifyConfig | None:
        f = self.r.mapping(node, ("url",), ("url",), "notify mapping {url}")
        if f is None or "url" not in f:
            return None
        url = self.r.string(f["url"], "URL")
        if url is None:
            return None
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            self.r.error(
                f["url"], f"notify url must be http://HOST/... or https://..., got {url!r}"
            )
            return None
        return NotifyConfig(url)

    def log(self, node: Node) -> LogConfig:
        d = LogConfig()
        f = self.r.mapping(node, ("level", "format"), what="log mapping")
        if f is None:
            return d
        level = self.r.one_of(f["level"], LOG_LEVELS, "log level") if "level" in f else None
        fmt = self.r.one_of(f["format"], ("text", "json"), "log format") if "format" in f else None
        return LogConfig(level or d.level, fmt)

    def http(self, node: Node) -> HttpConfig:
        d = HttpConfig()
        f = self.r.mapping(node, ("listen", "token_file", "max_body"), what="http mapping")
        if f is None:
            return d
        host, port = d.host, d.port
        if "listen" in f:
            text = self.r.string(f["listen"], "listen address (HOST:PORT)")
            if text is not None:
                parsed = _host_port(text)
                if parsed is None:
                    self.r.error(f["listen"], f"listen must be HOST:PORT, got {text!r}")
                else:
                    host, port = parsed
        return HttpConfig(
            host=host,
            port=port,
            token_file=self.secret_file(f["token_file"]) if "token_file" in f else None,
            max_body=self.r.size(f["max_body"]) or d.max_body if "max_body" in f else d.max_body,
        )

    def mqtt(self, node: Node, node_name: str) -> MqttConfig | None:
        keys = (
            "url",
            "client_id",
            "username",
            "password_file",
            "ca_file",
            "cert_file",
            "key_file",
            "subscribe",
            "publish_prefix",
            "max_payload",
        )
        f = self.r.mapping(node, keys, what="mqtt mapping")
        if f is None:
            return None
        default = MqttConfig()  # (class attributes are slot descriptors)
        url = default.url
        if "url" in f:
            url = self.r.string(f["url"], "MQTT URL") or url
            parts = urlsplit(url)
            if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
                self.r.error(
                    f["url"], f"MQTT url must be mqtt://HOST[:PORT] or mqtts://..., got {url!r}"
                )
        cert = self.secret_file(f["cert_file"]) if "cert_file" in f else None
        key = self.secret_file(f["key_file"]) if "key_file" in f else None
        if (cert is None) != (key is None):
            lone = f["cert_file"] if "cert_file" in f else f["key_file"]
            self.r.error(lone, "cert_file and key_file go together")
        username = self.r.string(f["username"], "user name") if "username" in f else None
        password = self.secret_file(f["password_file"]) if "password_file" in f else None
        if password is not None and username is None:
            self.r.error(f["password_file"], "password_file needs a username")
        subs: list[Subscription] = []
        for item in (
            self.r.seq(f["subscribe"], "list of subscriptions") or [] if "subscribe" in f else []
        ):
            sub = self.subscription(item)
            if sub is not None:
                subs.append(sub)
        return MqttConfig(
            url=url,
            client_id=(self.r.name(f["client_id"], "client id") if "client_id" in f else None)
            or default_client_id(node_name),
            username=username,
            password_file=password,
            ca_file=self.secret_file(f["ca_file"]) if "ca_file" in f else None,
            cert_file=cert,
            key_file=key,
            subscribe=tuple(subs),
            publish_prefix=self.r.string(f["publish_prefix"], "topic prefix")
            if "publish_prefix" in f
            else None,
            max_payload=(self.r.size(f["max_payload"]) or default.max_payload)
            if "max_payload" in f
            else default.max_payload,
        )

    def subscription(self, node: Node) -> Subscription | None:
        f = self.r.mapping(node, ("topic", "format", "qos"), ("topic",), "subscription mapping")
        if f is None or "topic" not in f:
            return None
        topic = self.r.string(f["topic"], "topic filter")
        fmt = self.r.one_of(f["format"], ("json", "influx"), "format") if "format" in f else "json"
        qos = self.r.integer(f["qos"], 0) if "qos" in f else 0
        if qos is not None and qos > 1:
            self.r.error(f["qos"], "qos must be 0 or 1")
        if topic is None or fmt is None or qos is None:
            return None
        return Subscription(topic, fmt, qos)

    def host(self, node: Node) -> HostConfig:
        d = HostConfig()
        f = self.r.mapping(node, ("interval", "processes"), what="host mapping")
        if f is None:
            return d
        interval = self.r.duration(f["interval"], 0.1) if "interval" in f else d.interval
        procs = self.r.str_list(f["processes"]) if "processes" in f else []
        return HostConfig(interval or d.interval, tuple(procs or ()))

    def rate(self, node: Node, default: RateLimit) -> RateLimit:
        f = self.r.mapping(node, ("count", "per"), ("count", "per"), "mapping {count, per}")
        if f is None or "count" not in f or "per" not in f:
            return default
        count = self.r.integer(f["count"], 1)
        per = self.r.duration(f["per"], 0.001)
        return RateLimit(count, per) if count is not None and per is not None else default

    def governor(self, node: Node) -> GovernorConfig:
        d = GovernorConfig()
        keys = (
            "max_concurrent_runs",
            "max_runs",
            "per_target",
            "max_targets_fraction",
            "min_fleet",
            "kill_switch_file",
        )
        f = self.r.mapping(node, keys, what="governor mapping")
        if f is None:
            return d
        return GovernorConfig(
            max_concurrent_runs=self.r.integer(f["max_concurrent_runs"], 1) or d.max_concurrent_runs
            if "max_concurrent_runs" in f
            else d.max_concurrent_runs,
            max_runs=self.rate(f["max_runs"], d.max_runs) if "max_runs" in f else d.max_runs,
            per_target=self.rate(f["per_target"], d.per_target)
            if "per_target" in f
            else d.per_target,
            max_targets_fraction=_or(
                self.r.number(f["max_targets_fraction"], 0.0, 1.0), d.max_targets_fraction
            )
            if "max_targets_fraction" in f
            else d.max_targets_fraction,
            min_fleet=self.r.integer(f["min_fleet"], 1) or d.min_fleet
            if "min_fleet" in f
            else d.min_fleet,
            kill_switch_file=self.path(f["kill_switch_file"]) if "kill_switch_file" in f else None,
        )

    def journal(self, node: Node) -> JournalConfig:
        d = JournalConfig()
        f = self.r.mapping(node, ("retention", "record"), what="journal mapping")
        if f is None:
            return d
        record = None
        if "record" in f:
            rf = self.r.mapping(f["record"], ("max_age", "max_size"), what="record mapping")
            if rf is not None:
                rd = RecordConfig()
                record = RecordConfig(
                    self.r.duration(rf["max_age"], 1.0) or rd.max_age
                    if "max_age" in rf
                    else rd.max_age,
                    self.r.size(rf["max_size"]) or rd.max_size if "max_size" in rf else rd.max_size,
                )
        retention = self.r.duration(f["retention"], 1.0) if "retention" in f else d.retention
        return JournalConfig(retention or d.retention, record)


def _or(value: float | None, default: float) -> float:
    """``value`` unless it was invalid (None); unlike ``or``, keeps a valid 0."""
    return default if value is None else value


def _host_port(text: str) -> tuple[str, int] | None:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        return None
    host = host.strip("[]")
    return (host or "127.0.0.1", int(port))


def config_problem(path: Path, message: str) -> ConfigError:
    """A problem that concerns a whole file (1:1)."""
    return ConfigError([Problem(str(path), 1, 1, message)])
