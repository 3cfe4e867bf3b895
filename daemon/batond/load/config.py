"""``batond.yaml``: loaded with positions, validated into frozen objects.

Every problem is reported as ``FILE:LINE:COL: message``; unknown keys, wrong
types and bad durations are errors. Secrets are read from files (so systemd's
``LoadCredential=`` works) and never written in the config itself.
"""

from __future__ import annotations

import enum
import os
import re
import socket
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from batond.errors import ConfigError, Problem
from batond.load.fields import INVALID, Field, Fields, Kind, SchemaBuilder, Section, read_section
from batond.load.kinds import (
    Choice,
    Duration,
    FilePath,
    Integer,
    ListOf,
    Name,
    Nested,
    Number,
    Size,
    Text,
)
from batond.load.yamlfile import Node, Reader, compose_file

__all__ = [
    "CONFIG_FIELDS",
    "DEFAULT_CONFIG_PATH",
    "Ack",
    "Config",
    "FleetConfig",
    "FleetRole",
    "GovernorConfig",
    "HostConfig",
    "HttpConfig",
    "JournalBackend",
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


class Ack(enum.StrEnum):
    """When input is acknowledged: HTTP ``accepted`` (queued) or MQTT ``received`` (read),
    or ``decided`` (evaluated and its decisions journaled: at-least-once across a crash)."""

    ACCEPTED = "accepted"
    RECEIVED = "received"
    DECIDED = "decided"


@dataclass(frozen=True, slots=True)
class HttpConfig:
    host: str = "127.0.0.1"
    port: int = 9180
    token_file: Path | None = None
    max_body: int = 1 << 20
    # accepted: 202 once queued; decided: answered once its inputs' decisions are journaled
    ack: Ack = Ack.ACCEPTED

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
    # decided: a QoS 1 message is acknowledged once its decisions are journaled;
    # received: as soon as it is read (paho's own acknowledgement)
    ack: Ack = Ack.DECIDED

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


class JournalBackend(enum.Enum):
    """Where the journal lives (docs/journal.md)."""

    SQLITE = "sqlite"  # state_dir/journal.db: the default for a single host
    POSTGRESQL = "postgresql"  # journal.database: a central instance's (the fleet's)


@dataclass(frozen=True, slots=True)
class JournalConfig:
    retention: float = 30 * 86400.0
    record: RecordConfig | None = None
    backend: JournalBackend | None = None  # None: not given (SQLite; central: PostgreSQL)
    database: str | None = None  # postgresql:// DSN, for backend postgresql only

    @property
    def database_url(self) -> str | None:
        """The PostgreSQL journal's DSN; None: SQLite in ``state_dir``."""
        return self.database if self.backend is JournalBackend.POSTGRESQL else None


@dataclass(frozen=True, slots=True)
class NotifyConfig:
    """Where batond tells a human what needs one (circuits, incidents left without a run)."""

    url: str


@dataclass(frozen=True, slots=True)
class LogConfig:
    level: str = "info"  # debug | info | warning | error
    format: str | None = None  # text | json; None: json under journald, else text


class FleetRole(enum.Enum):
    """What this daemon is in a fleet (docs/fleet.md)."""

    AGENT = "agent"
    CENTRAL = "central"


DEFAULT_FLEET_PREFIX = "batond/fleet"
#: A fleet key shorter than this is refused: HMAC is only as strong as its key.
MIN_FLEET_KEY_BYTES = 16
#: A host name in the fleet: RFC 1123 labels joined by dots. It is a topic level and a
#: key file's name: nothing an MQTT wildcard (``+``, ``#``), a ``/`` or ``..`` could abuse.
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
FLEET_HOST_PATTERN = rf"{_LABEL}(?:\.{_LABEL})*"
_FLEET_HOST_HINT = "a host name is letters, digits and '-', in labels joined by '.'"
#: Topics are published under it: MQTT allows no wildcard in a topic one publishes to.
_FLEET_PREFIX_PATTERN = r"[^+#/\s]+(?:/[^+#/\s]+)*"
_FLEET_PREFIX_HINT = "topic levels joined by '/', without '+', '#', spaces or empty levels"


def default_instance(host: str) -> str:
    """A central instance's id when ``fleet.instance`` is not set: ``HOST-PID``."""
    return f"{host}-{os.getpid()}"


@dataclass(frozen=True, slots=True)
class FleetConfig:
    """The ``fleet:`` section: absent, this daemon is on its own (no fleet)."""

    role: FleetRole
    host: str  # this host's name in the fleet (default: the node name)
    prefix: str = DEFAULT_FLEET_PREFIX
    partitions: int = 64
    batch_interval: float = 10.0  # agent: one batch per interval
    key_file: Path | None = None  # agent: the HMAC key of remediation requests
    database: str | None = None  # central: postgresql:// DSN (required there)
    keys_dir: Path | None = None  # central: one <host>.key per agent
    instance: str = ""  # central: this instance's id (default HOST-PID)
    heartbeat: float = 2.0
    lease: float = 6.0  # a member not heard within it is gone

    @property
    def is_central(self) -> bool:
        return self.role is FleetRole.CENTRAL


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
    fleet: FleetConfig | None = None


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
    fields = read_section(reader, node, CONFIG_FIELDS)
    config = _config(fields, path) if fields is not None else None
    reader.raise_if_problems()
    assert config is not None
    return config


def _config(f: Fields, path: Path) -> Config:
    config = Config(path=path, **f.values())
    if config.fleet is not None and not config.fleet.is_central and "mqtt" not in f:
        # batches go out and requests come in through the broker: there is no agent without
        f.reader.error(f.key_node("fleet"), "fleet role agent needs an mqtt: section")
    if config.fleet is not None and not config.fleet.host:  # not set (see _fleet)
        if not re.fullmatch(FLEET_HOST_PATTERN, config.node):
            f.reader.error(
                f.key_node("fleet"),
                f"node {config.node!r} cannot be this host's fleet name ({_FLEET_HOST_HINT});"
                " set fleet.host",
            )
        config = replace(config, fleet=replace(config.fleet, host=config.node))
    central = config.fleet is not None and config.fleet.is_central
    if central and config.fleet is not None and not config.fleet.instance:
        fleet = replace(config.fleet, instance=default_instance(config.fleet.host))
        config = replace(config, fleet=fleet)
    if config.mqtt is not None and not config.mqtt.client_id:  # not set (see _mqtt)
        # one client id per node (per central instance: several may share a node), fixed,
        # so the broker keeps the session across reconnects
        who = config.fleet.instance if central and config.fleet is not None else config.node
        config = replace(config, mqtt=replace(config.mqtt, client_id=default_client_id(who)))
    config = _central_journal(f, config)
    journal = config.journal
    if journal.backend is None:
        config = replace(config, journal=replace(journal, backend=JournalBackend.SQLITE))
    elif journal.backend is JournalBackend.POSTGRESQL and not journal.database and "journal" in f:
        # (a central instance without fleet.database: that one is reported already)
        f.reader.error(f.nodes["journal"], "journal backend postgresql needs a database")
    return config


def _central_journal(f: Fields, config: Config) -> Config:
    """A central instance's journal is the fleet's, in PostgreSQL: ``fleet.database``
    unless ``journal.database`` names another; SQLite would split the fleet's history."""
    fleet = config.fleet
    if fleet is None or not fleet.is_central:
        return config
    journal = config.journal
    if journal.backend is JournalBackend.SQLITE:
        f.reader.error(
            f.nodes["journal"], "a central instance's journal is in PostgreSQL (backend postgresql)"
        )
        return config
    if "mqtt" not in f:
        f.reader.error(
            f.key_node("fleet"), "fleet role central needs an mqtt: section (its broker)"
        )
    database = journal.database or fleet.database
    return replace(
        config, journal=replace(journal, backend=JournalBackend.POSTGRESQL, database=database)
    )


# -- the kinds only this file has -----------------------------------------------------
class _Listen(Kind):
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6) as ``(host, port)``."""

    def read(self, r: Reader, node: Node, key: str) -> Any:
        text = r.string(node, "listen address (HOST:PORT)")
        if text is None:
            return INVALID
        parsed = _host_port(text)
        if parsed is None:
            r.error(node, f"listen must be HOST:PORT, got {text!r}")
            return INVALID
        return parsed

    def schema(self, s: SchemaBuilder) -> dict[str, Any]:
        return {"type": "string", "pattern": r"^.*:[0-9]+$"}


@dataclass(frozen=True, slots=True)
class _Url(Kind):
    """A URL of one of ``schemes`` with a host; ``wrong`` says what it must be."""

    what: str
    schemes: tuple[str, ...]
    wrong: str

    def read(self, r: Reader, node: Node, key: str) -> Any:
        url = r.string(node, self.what)
        if url is None:
            return INVALID
        parts = urlsplit(url)
        if parts.scheme not in self.schemes or not parts.hostname:
            r.error(node, f"{self.wrong}, got {url!r}")
            return INVALID
        return url

    def schema(self, s: SchemaBuilder) -> dict[str, Any]:
        return {"type": "string", "pattern": f"^({'|'.join(self.schemes)})://"}


_MQTT_URL = _Url(
    "MQTT URL", ("mqtt", "mqtts"), "MQTT url must be mqtt://HOST[:PORT] or mqtts://..."
)
_PG_DSN = _Url(
    "PostgreSQL DSN",
    ("postgresql", "postgres"),
    "database must be postgresql://[USER@]HOST[:PORT]/DBNAME",
)
_NOTIFY_URL = _Url("URL", ("http", "https"), "notify url must be http://HOST/... or https://...")


class _SecretFile(Kind):
    """A path to a file holding a secret: it must be readable and not empty.

    A secret that cannot be read is reported but its path kept, so the
    checks that pair it with other keys still see it.
    """

    def read(self, r: Reader, node: Node, key: str) -> Any:
        path = FilePath().read(r, node, key)
        if path is INVALID:
            return INVALID
        try:
            empty = not read_secret(path)
        except (OSError, UnicodeDecodeError) as exc:
            r.error(node, f"secret file {str(path)!r} cannot be read: {exc.__class__.__name__}")
            return path
        if empty:
            # an empty token would otherwise mean "no authentication" to a careless reader
            r.error(node, f"secret file {str(path)!r} is empty")
        return path

    def schema(self, s: SchemaBuilder) -> dict[str, Any]:
        return {"type": "string"}


# -- building each section -----------------------------------------------------------
def _http(f: Fields) -> HttpConfig:
    values = f.values()
    if "listen" in values:
        values["host"], values["port"] = values.pop("listen")
    if "ack" in values:
        values["ack"] = Ack(values["ack"])
    return HttpConfig(**values)


def _mqtt(f: Fields) -> MqttConfig:
    cert, key = f.get("cert_file"), f.get("key_file")
    if (cert is None) != (key is None):
        lone = f.nodes["cert_file"] if "cert_file" in f else f.nodes["key_file"]
        f.reader.error(lone, "cert_file and key_file go together")
    if f.get("password_file") is not None and f.get("username") is None:
        f.reader.error(f.nodes["password_file"], "password_file needs a username")
    values = f.values()
    if "ack" in values:
        values["ack"] = Ack(values["ack"])
    # without client_id: "" until the configuration's node name is known (see _config)
    return MqttConfig(**{"client_id": "", **values})


#: Keys that only one role reads: given to the other, they would be silently ignored.
#: (``batch_interval`` is both's: central writes an agent's row once per interval, and
#: fleet rules count the agents seen within three.)
_ROLE_KEYS = {
    FleetRole.AGENT: ("key_file",),
    FleetRole.CENTRAL: ("database", "keys_dir", "instance"),
}


def _fleet(f: Fields) -> Any:
    if "role" not in f or not f.valid():
        return INVALID
    values = f.values()
    role = FleetRole(values.pop("role"))
    for other, keys in _ROLE_KEYS.items():
        for key in keys:
            if other is not role and key in f:
                f.reader.error(f.key_node(key), f"fleet.{key} is for role {other.value} only")
    if role is FleetRole.CENTRAL and "database" not in f:
        f.reader.error(f.key_node("role"), "fleet role central needs a database")
    if role is FleetRole.AGENT and "key_file" not in f:
        f.reader.error(f.key_node("role"), "fleet role agent needs a key_file")
    _check_key_length(f)
    heartbeat, lease = values.get("heartbeat", 2.0), values.get("lease", 6.0)
    if lease < 2 * heartbeat:
        where = f.nodes["lease"] if "lease" in f else f.nodes["heartbeat"]
        f.reader.error(where, f"fleet.lease must be at least twice heartbeat ({heartbeat:g}s)")
    # without host: "" until the configuration's node name is known (see _config)
    return FleetConfig(role=role, **{"host": "", **values})


def _journal(f: Fields) -> Any:
    values = f.values()
    backend = JournalBackend(values.pop("backend")) if "backend" in values else None
    database = values.get("database")
    if backend is None and database is not None:
        backend = JournalBackend.POSTGRESQL  # a database given says which backend
    if backend is JournalBackend.SQLITE and database is not None:
        f.reader.error(f.key_node("database"), "journal.database is for backend postgresql")
    return JournalConfig(backend=backend, **values)


def _check_key_length(f: Fields) -> None:
    path = f.get("key_file")
    try:
        short = path is not None and len(read_secret(path).encode()) < MIN_FLEET_KEY_BYTES
    except (OSError, UnicodeDecodeError):
        return  # (said already, by the secret file's kind)
    if short:
        where = f.nodes["key_file"]
        f.reader.error(where, f"a fleet key must be at least {MIN_FLEET_KEY_BYTES} bytes")


def _subscription(f: Fields) -> Any:
    # without a topic there is nothing to subscribe to: the other keys are not read
    if "topic" not in f or not f.valid():
        return INVALID
    return Subscription(**f.values())


def _rate(f: Fields) -> Any:
    if "count" not in f or "per" not in f or not f.valid():
        return INVALID
    return RateLimit(**f.values())


# -- the sections of batond.yaml (docs/configuration.md) ------------------------------
SUBSCRIPTION_FIELDS = Section(
    "subscription mapping",
    (
        Field("topic", Text("topic filter"), True, "MQTT topic filter"),
        Field("format", Choice(("json", "influx"), "format"), doc="payload format (default json)"),
        Field("qos", Integer(0, 1, "qos must be 0 or 1"), doc="0 or 1 (default 0)"),
    ),
    build=_subscription,
)
HTTP_FIELDS = Section(
    "http mapping",
    (
        Field("listen", _Listen(), doc="HOST:PORT of the API (default 127.0.0.1:9180)"),
        Field("token_file", _SecretFile(), doc="file with the bearer token mutations need"),
        Field("max_body", Size(), doc="largest request body (default 1MiB)"),
        Field(
            "ack",
            Choice(("accepted", "decided"), "http ack"),
            doc="answer input once queued (accepted, default) or once decided and journaled",
        ),
    ),
    build=_http,
)
MQTT_FIELDS = Section(
    "mqtt mapping",
    (
        Field("url", _MQTT_URL, doc="mqtt://HOST[:PORT] or mqtts://HOST[:PORT]"),
        Field("client_id", Name("client id"), doc="default batond-<node>"),
        Field("username", Text("user name")),
        Field("password_file", _SecretFile(), doc="file with the password (needs username)"),
        Field("ca_file", _SecretFile(), doc="CA bundle for mqtts://"),
        Field("cert_file", _SecretFile(), doc="client certificate (with key_file)"),
        Field("key_file", _SecretFile(), doc="client key (with cert_file)"),
        Field("subscribe", ListOf(Nested(SUBSCRIPTION_FIELDS), "list of subscriptions")),
        Field("publish_prefix", Text("topic prefix"), doc="incidents and runs are published here"),
        Field("max_payload", Size(), doc="larger messages are rejected unparsed (default 256KiB)"),
        Field(
            "ack",
            Choice(("decided", "received"), "mqtt ack"),
            doc="acknowledge QoS 1 once decided and journaled (default) or once received",
        ),
    ),
    build=_mqtt,
)
HOST_FIELDS = Section(
    "host mapping",
    (
        Field("interval", Duration(0.1), doc="sampling period (default 5s)"),
        Field("processes", ListOf(Text(), "list of strings"), doc="process names to watch"),
    ),
    build=lambda f: HostConfig(**f.values()),
)
RATE_FIELDS = Section(
    "mapping {count, per}",
    (
        Field("count", Integer(1), True, "runs allowed"),
        Field("per", Duration(0.001), True, "sliding window"),
    ),
    build=_rate,
)
GOVERNOR_FIELDS = Section(
    "governor mapping",
    (
        Field("max_concurrent_runs", Integer(1), doc="runs at once (default 4)"),
        Field("max_runs", Nested(RATE_FIELDS), doc="runs in all (default 30 per 1h)"),
        Field("per_target", Nested(RATE_FIELDS), doc="runs per target (default 3 per 1h)"),
        Field("max_targets_fraction", Number(0.0, 1.0), doc="blast radius (default 0.2)"),
        Field("min_fleet", Integer(1), doc="hosts known before the fraction applies"),
        Field("kill_switch_file", FilePath(), doc="while it exists, nothing is executed"),
    ),
    build=lambda f: GovernorConfig(**f.values()),
)
RECORD_FIELDS = Section(
    "record mapping",
    (
        Field("max_age", Duration(1.0), doc="recorded inputs kept this long (default 7d)"),
        Field("max_size", Size(), doc="and at most this much (default 1GiB)"),
    ),
    build=lambda f: RecordConfig(**f.values()),
)
JOURNAL_FIELDS = Section(
    "journal mapping",
    (
        Field("retention", Duration(1.0), doc="history older than this is pruned (default 30d)"),
        Field("record", Nested(RECORD_FIELDS), doc="record every input (absent: not recorded)"),
        Field(
            "backend",
            Choice(tuple(b.value for b in JournalBackend), "journal backend"),
            doc="sqlite (default) or postgresql",
        ),
        Field("database", _PG_DSN, doc="postgresql:// DSN (backend postgresql)"),
    ),
    build=_journal,
)
NOTIFY_FIELDS = Section(
    "notify mapping {url}",
    (Field("url", _NOTIFY_URL, True, "webhook that gets what needs a human"),),
    build=lambda f: NotifyConfig(**f.values()) if "url" in f.values() else INVALID,
)
LOG_FIELDS = Section(
    "log mapping",
    (
        Field("level", Choice(LOG_LEVELS, "log level"), doc="default info"),
        Field("format", Choice(("text", "json"), "log format"), doc="default: json under journald"),
    ),
    build=lambda f: LogConfig(**f.values()),
)
FLEET_FIELDS = Section(
    "fleet mapping",
    (
        Field(
            "role",
            Choice(tuple(r.value for r in FleetRole), "fleet role"),
            True,
            "agent or central",
        ),
        Field(
            "prefix",
            Name("topic prefix", _FLEET_PREFIX_PATTERN, _FLEET_PREFIX_HINT),
            doc="topic prefix (default batond/fleet)",
        ),
        Field("partitions", Integer(1, 4096), doc="partition count (default 64)"),
        Field(
            "host",
            Name("host name", FLEET_HOST_PATTERN, _FLEET_HOST_HINT),
            doc="this host's name in the fleet (default: node)",
        ),
        Field("batch_interval", Duration(0.1), doc="agent: one batch per interval (default 10s)"),
        Field("key_file", _SecretFile(), doc="agent: HMAC key of remediation requests"),
        Field("database", _PG_DSN, doc="central: postgresql:// DSN (required there)"),
        Field("keys_dir", FilePath(), doc="central: one <host>.key per agent"),
        Field("instance", Name("instance id"), doc="central: instance id (default HOST-PID)"),
        Field("heartbeat", Duration(0.1), doc="membership heartbeat period (default 2s)"),
        Field("lease", Duration(0.2), doc="a member not heard within it is gone (default 6s)"),
    ),
    build=_fleet,
)
CONFIG_FIELDS = Section(
    "configuration mapping",
    (
        Field("node", Name("node name"), doc="name of this machine (default: the host name)"),
        Field("state_dir", FilePath(), doc="journal, learned state, recorded inputs"),
        Field("rules", ListOf(FilePath(), "list of paths"), doc="rule files or folders"),
        Field("models", ListOf(FilePath(), "list of paths"), doc="model files or folders"),
        Field("mode", Choice(("enforce", "shadow"), "mode"), doc="shadow: never execute"),
        Field("http", Nested(HTTP_FIELDS)),
        Field("mqtt", Nested(MQTT_FIELDS), doc="absent: no MQTT"),
        Field("host", Nested(HOST_FIELDS)),
        Field("governor", Nested(GOVERNOR_FIELDS)),
        Field("journal", Nested(JOURNAL_FIELDS)),
        Field("notify", Nested(NOTIFY_FIELDS), doc="where batond tells a human (absent: nowhere)"),
        Field("log", Nested(LOG_FIELDS)),
        Field("fleet", Nested(FLEET_FIELDS), doc="absent: no fleet (docs/fleet.md)"),
    ),
    doc="batond.yaml",
)


def _host_port(text: str) -> tuple[str, int] | None:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        return None
    host = host.strip("[]")
    return (host or "127.0.0.1", int(port))


def config_problem(path: Path, message: str) -> ConfigError:
    """A problem that concerns a whole file (1:1)."""
    return ConfigError([Problem(str(path), 1, 1, message)])
