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

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

MOSQUITTO = "/usr/sbin/mosquitto"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_port(port: int, timeout: float, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            text = log.read_text(errors="replace") if log.exists() else ""
            raise RuntimeError(f"mosquitto exited with {proc.returncode}: {text[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"mosquitto did not listen on 127.0.0.1:{port} within {timeout}s")


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


class PrivateMosquitto:
    """``/usr/sbin/mosquitto`` with a generated config in a temporary folder.

    ``users`` (name → password) turns anonymous access off and writes a password file with
    ``mosquitto_passwd``; ``tls=True`` adds a TLS listener with a fresh CA and server cert.
    """

    def __init__(self, *, users: dict[str, str] | None = None, tls: bool = False) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="loopline-mosquitto-"))
        self.port = free_port()
        self.tls_port = free_port() if tls else None
        self.users = dict(users or {})
        self._proc: subprocess.Popen[bytes] | None = None
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

    @property
    def log(self) -> str:
        """The broker's log so far (for assertion messages)."""
        path = self.dir / "mosquitto.log"
        return path.read_text(errors="replace") if path.exists() else ""

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

    def start(self) -> None:
        """Start the broker (a no-op while it runs) and wait until every listener accepts."""
        if self._proc is not None and self._proc.poll() is None:
            return
        self._proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.dir / "mosquitto.conf")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for port in (self.port, self.tls_port):
            if port is not None:
                _wait_port(port, 10.0, self._proc, self.dir / "mosquitto.log")

    def stop(self) -> None:
        """Stop with SIGTERM, so mosquitto saves its persistence file; a no-op when stopped."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> PrivateMosquitto:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop the broker and remove its folder."""
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
