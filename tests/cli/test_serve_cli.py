"""``loopline api-key`` and ``loopline serve`` (a real uvicorn process, stopped by SIGTERM)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import typer
import yaml
from typer.testing import CliRunner

from loopline.cli.serve import api_key, serve

cli = typer.Typer()
cli.command()(serve)
cli.command("api-key")(api_key)
runner = CliRunner()

# `loopline serve` as its own process, whether or not cli/app.py registers it yet
SERVE = "import typer; from loopline.cli.serve import serve; typer.run(serve)"


def test_api_key_prints_the_key_once_and_its_digest() -> None:
    result = runner.invoke(cli, ["api-key", "ci-bot", "--rate-limit", "5"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    key = next(line for line in lines if line.startswith("ll_"))
    snippet = yaml.safe_load(result.output[result.output.index("serve:") :].split("\n\n")[0])
    (entry,) = snippet["serve"]["auth"]["keys"]
    assert entry == {
        "name": "ci-bot",
        "sha256": hashlib.sha256(key.encode()).hexdigest(),
        "rate_limit": 5.0,
    }
    assert result.output.count(key) == 1  # shown once; the hint shows a prefix only


def test_api_key_json() -> None:
    result = runner.invoke(cli, ["api-key", "ci", "--burst", "3", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert payload["sha256"] == hashlib.sha256(payload["key"].encode()).hexdigest()
    assert (payload["name"], payload["burst"]) == ("ci", 3)
    again = json.loads(runner.invoke(cli, ["api-key", "ci", "--json"]).output)
    assert again["key"] != payload["key"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start(folder: Path, *args: str) -> tuple[subprocess.Popen[str], str]:
    (folder / "loopline.yaml").write_text(yaml.safe_dump({"project": "shop"}))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            SERVE,
            "--config",
            str(folder / "loopline.yaml"),
            "--port",
            str(port),
            *args,
        ],
        cwd=folder,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        if process.poll() is not None:
            pytest.fail(f"loopline serve exited: {process.communicate()[1][-3000:]}")
        assert time.monotonic() < deadline, "loopline serve did not answer"
        try:
            if httpx.get(f"{url}/health/live").status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.2)


def stop(process: subprocess.Popen[str]) -> str:
    process.send_signal(signal.SIGTERM)
    try:
        _, stderr = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    # uvicorn shuts down gracefully, then re-raises the signal it caught: -SIGTERM
    assert process.returncode in (0, -signal.SIGTERM), stderr[-3000:]
    assert "Application shutdown complete" in stderr or "Finished server process" in stderr
    return stderr


def test_serve_answers_and_exits_on_sigterm(tmp_path: Path) -> None:
    process, url = start(tmp_path)
    try:
        response = httpx.get(f"{url}/health/live", headers={"X-Request-ID": "cli-test-1"})
        assert response.json() == {"status": "ok"}
    finally:
        stderr = stop(process)
    lines = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    access = [entry for entry in lines if entry.get("request_id") == "cli-test-1"]
    assert access, stderr[-3000:]
    assert access[0]["path"] == "/health/live"
    assert access[0]["status"] == 200


@pytest.mark.slow
def test_serve_with_two_workers_merges_metrics(tmp_path: Path) -> None:
    process, url = start(tmp_path, "--workers", "2")
    try:
        for _ in range(10):
            assert httpx.get(f"{url}/health/live").status_code == 200
        deadline = time.monotonic() + 60
        while True:
            text = httpx.get(f"{url}/metrics").text
            line = next(
                (
                    row
                    for row in text.splitlines()
                    if row.startswith("loopline_http_requests_total")
                    and 'route="/health/live"' in row
                ),
                None,
            )
            if line is not None and float(line.rsplit(" ", 1)[1]) >= 10:
                break
            assert time.monotonic() < deadline, text
            time.sleep(0.2)
    finally:
        stop(process)
