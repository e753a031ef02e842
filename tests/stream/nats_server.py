"""A private NATS JetStream server on a free 127.0.0.1 port, for tests that restart a broker.

    with PrivateNats() as server:
        server.url        # "nats://127.0.0.1:PORT"
        server.restart()  # SIGTERM, then the same store folder and port: streams survive

The store lives in a temporary folder removed on exit; the shared server on 4222 is never
touched.
"""

from __future__ import annotations

from tests.stream.private_server import PrivateServer

NATS_SERVER = "/usr/sbin/nats-server"


class PrivateNats(PrivateServer):
    """``nats-server -js`` with its JetStream store in a temporary folder.

    ``user`` / ``password`` make the server require them (``--user`` / ``--pass``).
    """

    prefix = "loopline-nats-"
    log_name = "nats.log"

    def __init__(self, *, user: str | None = None, password: str | None = None) -> None:
        super().__init__()
        self.user, self.password = user, password

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        command = [
            NATS_SERVER, "-js", "-sd", str(self.dir / "store"), "-a", "127.0.0.1",
            "-p", str(self.port), "-l", str(self.dir / "nats.log"),
        ]  # fmt: skip
        if self.user:
            command += ["--user", self.user, "--pass", self.password or ""]
        return command
