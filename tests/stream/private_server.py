"""A server process of the tests' own (a private broker) on a free 127.0.0.1 port.

Subclasses say how to start it (:meth:`PrivateServer.command`) and where it logs; this class
starts it, waits until its ports accept connections, stops it with SIGTERM (brokers save
their state on a clean stop), restarts it on the same ports and folder, and removes the
folder on exit.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Self


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, timeout: float, proc: subprocess.Popen[bytes], log: Path) -> None:
    """Wait until ``port`` accepts a connection; fail early, with the log, if ``proc`` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            text = log.read_text(errors="replace") if log.exists() else ""
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}: {text[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"nothing listened on 127.0.0.1:{port} within {timeout}s")


class PrivateServer:
    """Base of the private brokers: a temporary folder, a port, one process."""

    prefix = "loopline-server-"
    log_name = "server.log"

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix=self.prefix))
        self.port = free_port()
        self._proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def ports(self) -> list[int]:
        """The ports that must accept connections before :meth:`start` returns."""
        return [self.port]

    @property
    def log(self) -> str:
        """The server's log so far (for assertion messages)."""
        path = self.dir / self.log_name
        return path.read_text(errors="replace") if path.exists() else ""

    def start(self) -> None:
        """Start the server (a no-op while it runs) and wait until every port accepts."""
        if self._proc is not None and self._proc.poll() is None:
            return
        self._proc = subprocess.Popen(
            self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        for port in self.ports():
            wait_port(port, 10.0, self._proc, self.dir / self.log_name)

    def stop(self) -> None:
        """Stop with SIGTERM, so the server saves its state; a no-op when stopped."""
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

    def close(self) -> None:
        """Stop the server and remove its folder."""
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Self:
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
