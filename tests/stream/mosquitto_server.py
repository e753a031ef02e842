"""A private Mosquitto broker on a free 127.0.0.1 port, for tests that restart or lock a broker.

    with PrivateMosquitto(users={"ann": "secret"}, tls=True) as broker:
        broker.url        # "mqtt://127.0.0.1:PORT"
        broker.tls_url    # "mqtts://127.0.0.1:TLSPORT" (CA in broker.ca_file)
        broker.restart()  # SIGTERM (persistence saved), then the same config and port again

The broker keeps QoS 1 messages of persistent sessions on disk (saved on a clean stop), has
no queue or in-flight limits, and lives in a temporary folder removed on exit. It never
touches the shared broker on 1883.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.stream.private_server import PrivateServer, free_port

MOSQUITTO = "/usr/sbin/mosquitto"


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_certificates(folder: Path) -> None:
    """A self-signed CA (``ca.crt``) and a server certificate for 127.0.0.1 / localhost."""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl(
        "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
        "-subj", "/CN=loopline test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=folder,
    )  # fmt: skip
    _openssl(
        "req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1",
        cwd=folder,
    )  # fmt: skip
    (folder / "server.ext").write_text(
        "basicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
        "authorityKeyIdentifier=keyid\n"
        "subjectKeyIdentifier=hash\n"
    )
    _openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.crt", "-days", "2", "-extfile", "server.ext",
        cwd=folder,
    )  # fmt: skip


class PrivateMosquitto(PrivateServer):
    """``/usr/sbin/mosquitto`` with a generated config in a temporary folder.

    ``users`` (name → password) turns anonymous access off and writes a password file with
    ``mosquitto_passwd``; ``tls=True`` adds a TLS listener with a fresh CA and server cert.
    """

    prefix = "loopline-mosquitto-"
    log_name = "mosquitto.log"

    def __init__(self, *, users: dict[str, str] | None = None, tls: bool = False) -> None:
        super().__init__()
        self.tls_port = free_port() if tls else None
        self.users = dict(users or {})
        self._write_config()

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    @property
    def tls_url(self) -> str:
        if self.tls_port is None:
            raise RuntimeError("this broker was started without tls=True")
        return f"mqtts://127.0.0.1:{self.tls_port}"

    @property
    def ca_file(self) -> str:
        return str(self.dir / "ca.crt")

    def _write_config(self) -> None:
        d = self.dir
        lines = [
            "user root",
            "per_listener_settings false",
            "persistence true",
            f"persistence_location {d}/",
            "autosave_interval 1",
            "max_queued_messages 0",
            "max_inflight_messages 0",
            f"log_dest file {d}/mosquitto.log",
            "log_type error",
            "log_type warning",
            "log_type notice",
            f"listener {self.port} 127.0.0.1",
        ]
        if self.users:
            pw = d / "passwd"
            pw.touch(mode=0o600)
            for name, password in self.users.items():
                subprocess.run(
                    ["mosquitto_passwd", "-b", str(pw), name, password],
                    check=True,
                    capture_output=True,
                )
            lines += ["allow_anonymous false", f"password_file {pw}"]
        else:
            lines.append("allow_anonymous true")
        if self.tls_port is not None:
            make_certificates(d)
            lines += [
                f"listener {self.tls_port} 127.0.0.1",
                f"cafile {d}/ca.crt",
                f"certfile {d}/server.crt",
                f"keyfile {d}/server.key",
            ]
        (d / "mosquitto.conf").write_text("\n".join(lines) + "\n")

    def command(self) -> list[str]:
        return [MOSQUITTO, "-c", str(self.dir / "mosquitto.conf")]

    def ports(self) -> list[int]:
        return [p for p in (self.port, self.tls_port) if p is not None]
