"""A private NATS JetStream server on a free 127.0.0.1 port, for tests that restart a broker.

    with PrivateNats() as server:
        server.url        # "nats://127.0.0.1:PORT"
        server.restart()  # SIGTERM, then the same store folder and port: streams survive

The store lives in a temporary folder removed on exit; the shared server on 4222 is never
touched.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType

from tests.stream.mosquitto_server import _wait_port as wait_port
from tests.stream.mosquitto_server import free_port

NATS_SERVER = "/usr/sbin/nats-server"


class PrivateNats:
    """``nats-server -js`` with its JetStream store in a temporary folder.

    ``user`` / ``password`` make the server require them (``--user`` / ``--pass``).
    """

    def __init__(self, *, user: str | None = None, password: str | None = None) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="loopline-nats-"))
        self.port = free_port()
        self.user, self.password = user, password
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def log(self) -> str:
        """The server's log so far (for assertion messages)."""
        path = self.dir / "nats.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start(self) -> None:
        """Start the server (a no-op while it runs) and wait until it accepts clients."""
        if self._proc is not None and self._proc.poll() is None:
            return
        command = [
            NATS_SERVER, "-js", "-sd", str(self.dir / "store"), "-a", "127.0.0.1",
            "-p", str(self.port), "-l", str(self.dir / "nats.log"),
        ]  # fmt: skip
        if self.user:
            command += ["--user", self.user, "--pass", self.password or ""]
        self._proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port, 10.0, self._proc, self.dir / "nats.log")

    def stop(self) -> None:
        """Stop with SIGTERM (JetStream flushes its store); a no-op when stopped."""
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

    def __enter__(self) -> PrivateNats:
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
        """Stop the server and remove its folder."""
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
