"""A private Mosquitto broker for tests and benchmarks: free loopback port, own config.

Persistence lives in the broker's temporary folder, so a stop (SIGTERM, which
saves the database) and a start keep sessions and queued QoS 1 messages.
Variants: plain, password (``mosquitto_passwd -b``), an ACL file, TLS with a CA made
here (``openssl``), optionally requiring a client certificate. :class:`Subscriber` is a
plain client on its own thread, for tests that drive a real ``batond run``.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

from paho.mqtt import client as paho

from support import free_port, poll, wait_until

__all__ = ["Certs", "Mosquitto", "Subscriber", "make_certs"]


@dataclass(frozen=True)
class Certs:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_certs(folder: Path) -> Certs:
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate."""
    folder.mkdir(parents=True, exist_ok=True)
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl(
        "req",
        "-x509",
        *ec,
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=batond test CA",
        cwd=folder,
    )
    for who, ext in (
        ("server", "subjectAltName=IP:127.0.0.1,DNS:localhost"),
        ("client", "extendedKeyUsage=clientAuth"),
    ):
        _openssl(
            "req",
            *ec,
            "-keyout",
            f"{who}.key",
            "-out",
            f"{who}.csr",
            "-subj",
            f"/CN=batond test {who}",
            cwd=folder,
        )
        (folder / f"{who}.ext").write_text(ext + "\n")
        _openssl(
            "x509",
            "-req",
            "-in",
            f"{who}.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            f"{who}.pem",
            "-days",
            "2",
            "-extfile",
            f"{who}.ext",
            cwd=folder,
        )
    return Certs(
        folder / "ca.pem",
        folder / "server.pem",
        folder / "server.key",
        folder / "client.pem",
        folder / "client.key",
    )


class Mosquitto:
    def __init__(
        self,
        folder: Path,
        *,
        users: dict[str, str] | None = None,
        certs: Certs | None = None,
        require_client_cert: bool = False,
        max_queued: int = 1_000_000,
        max_inflight: int = 0,
        acl: str | None = None,
    ) -> None:
        self.folder = folder
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "data").mkdir(exist_ok=True)
        lines = [
            f"listener {self.port} 127.0.0.1",
            "user root",
            "persistence true",
            f"persistence_location {folder / 'data'}/",
            "autosave_interval 1",
            f"max_queued_messages {max_queued}",
            f"max_inflight_messages {max_inflight}",  # 0: no bound (Mosquitto's default: 20)
            f"log_dest file {folder / 'mosquitto.log'}",
            "log_type error",
            "log_type warning",
            "log_type notice",
        ]
        if users:
            pw = folder / "passwd"
            pw.write_text("")
            for user, password in users.items():
                subprocess.run(["mosquitto_passwd", "-b", str(pw), user, password], check=True)
            lines += [f"password_file {pw}", "allow_anonymous false"]
        if acl is not None:  # (mosquitto's acl_file format; with users, %u is the user name)
            (folder / "acl").write_text(acl)
            lines.append(f"acl_file {folder / 'acl'}")
        else:
            lines.append("allow_anonymous true")
        if certs is not None:
            lines += [
                f"cafile {certs.ca}",
                f"certfile {certs.server_cert}",
                f"keyfile {certs.server_key}",
                f"require_certificate {'true' if require_client_cert else 'false'}",
            ]
        self.conf = folder / "mosquitto.conf"
        self.conf.write_text("\n".join(lines) + "\n")
        self.url = f"{'mqtts' if certs else 'mqtt'}://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> None:
        assert shutil.which("mosquitto"), "mosquitto is not installed (scripts/bootstrap test)"
        self.process = subprocess.Popen(
            ["mosquitto", "-c", str(self.conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        if not poll(self._listening, timeout, every=0.02):
            raise RuntimeError(f"mosquitto did not listen on {self.port} within {timeout}s")

    def _listening(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            log = (self.folder / "mosquitto.log").read_text(errors="replace")
            raise RuntimeError(f"mosquitto exited with {self.process.returncode}: {log}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        """SIGTERM: mosquitto saves its persistence database on the way out."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> Mosquitto:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


class Subscriber:
    """A plain MQTT client on its own thread (paho's loop) for tests that drive a real
    ``batond run``: it keeps every message of ``topics`` (QoS 1, a persistent session, so
    a broker restart loses none) and publishes at QoS 1."""

    def __init__(
        self,
        broker: Mosquitto,
        topics: tuple[str, ...],
        client_id: str,
        user: tuple[str, str] | None = None,
    ) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()
        self._topics = topics
        self._subscribed = threading.Event()
        client = paho.Client(
            paho.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False
        )
        client.on_connect = self._on_connect
        client.on_subscribe = lambda *_: self._subscribed.set()
        client.on_message = self._on_message
        client.reconnect_delay_set(min_delay=0.05, max_delay=0.5)
        if user is not None:
            client.username_pw_set(*user)
        client.connect("127.0.0.1", broker.port, keepalive=10)
        client.loop_start()
        self._client = client
        if topics:
            wait_until(self._subscribed.is_set, 30, "the subscription")

    def _on_connect(self, client: paho.Client, *_: object) -> None:
        if self._topics:
            client.subscribe([(topic, 1) for topic in self._topics])

    def _on_message(self, _c: paho.Client, _u: object, message: paho.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((message.topic, bytes(message.payload)))

    def on(self, topic: str) -> list[bytes]:
        """The payloads received on ``topic`` so far, in order."""
        with self._lock:
            return [payload for t, payload in self.messages if t == topic]

    def publish(self, topic: str, payload: bytes) -> None:
        self._client.publish(topic, payload, qos=1).wait_for_publish(30)

    def close(self) -> None:
        self._client.loop_stop()
        self._client.disconnect()
