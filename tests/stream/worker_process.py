"""``tests/stream/stream_worker.py`` run as a process of its own, for tests that kill it.

The worker writes its status to a JSON file after each batch; its stderr goes to a log file
(a file, not a pipe: a full pipe would block it).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("stream_worker.py")


class WorkerProcess:
    """The processor of pipeline ``name`` in ``project`` as a subprocess."""

    def __init__(self, project: Path, name: str, *extra: str, idle_exit: float = 3.0) -> None:
        tag = uuid.uuid4().hex[:6]
        self.status_path = project / f"status-{tag}.json"
        self.log_path = project / f"worker-{tag}.log"
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, str(WORKER), str(project), name,
                 "--status", str(self.status_path), "--idle-exit", str(idle_exit), *extra],
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )  # fmt: skip

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def status(self) -> dict[str, Any]:
        try:
            return dict(json.loads(self.status_path.read_text()))
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def wait_for(self, check: Callable[[dict[str, Any]], bool], timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (s := self.status()) and check(s):
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited {self.proc.returncode}: {self.log()}")
            time.sleep(0.02)
        raise AssertionError(f"timed out; last status {self.status()}\n{self.log()}")

    def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def finish(self, timeout: float = 30.0) -> None:
        """Wait for the idle exit; it must exit 0."""
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        assert code == 0, self.log()
