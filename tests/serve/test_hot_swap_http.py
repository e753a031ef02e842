"""Hot swap over real HTTP: a uvicorn server under concurrent load while ``champion`` moves
from version 1 to 2. Every request must succeed, and the answers switch to version 2."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn
from tests.serve.churn_project import ChurnProject, make_churn_project

from loopline.serve.app import create_app

WORKERS = 16


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> ChurnProject:
    serve = {"models": [{"name": "churn"}], "poll_interval": 0.2}
    return make_churn_project(tmp_path_factory.mktemp("swap"), serve=serve)


@pytest.fixture(scope="module")
def base_url(project: ChurnProject) -> Iterator[str]:
    port = free_port()
    config = uvicorn.Config(
        create_app(project.config),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="on",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        assert thread.is_alive(), "the server stopped"
        assert time.monotonic() < deadline, "the server did not get ready"
        try:
            if httpx.get(f"{url}/health/ready").status_code == 200:
                break
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    yield url
    server.should_exit = True
    thread.join(timeout=30)


async def load(
    url: str, row: dict[str, object], stop: threading.Event
) -> list[list[tuple[int, str | None]]]:
    """WORKERS clients posting one row after another until ``stop``: (status, version)."""
    limits = httpx.Limits(max_connections=WORKERS)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:

        async def worker() -> list[tuple[int, str | None]]:
            seen: list[tuple[int, str | None]] = []
            while not stop.is_set():
                response = await client.post("/v1/models/churn/predict", json={"row": row})
                version = response.json().get("version") if response.status_code == 200 else None
                seen.append((response.status_code, version))
            return seen

        return list(await asyncio.gather(*(worker() for _ in range(WORKERS))))


def test_alias_move_under_load_drops_nothing(project: ChurnProject, base_url: str) -> None:
    stop = threading.Event()
    results: list[list[list[tuple[int, str | None]]]] = []
    runner = threading.Thread(
        target=lambda: results.append(asyncio.run(load(base_url, project.rows(1)[0], stop)))
    )
    runner.start()
    try:
        time.sleep(1.0)
        project.registry.tracker.client.set_registered_model_alias("churn", "champion", "2")
        deadline = time.monotonic() + 60
        while httpx.get(f"{base_url}/v1/models").json()["models"][0]["version"] != "2":
            assert time.monotonic() < deadline, "the server never swapped to version 2"
            time.sleep(0.1)
        time.sleep(1.0)  # keep the load on after the swap
    finally:
        stop.set()
        runner.join(timeout=60)
        project.registry.tracker.client.set_registered_model_alias("churn", "champion", "1")
    (per_worker,) = results
    answers = [answer for seen in per_worker for answer in seen]
    statuses = {status for status, _ in answers}
    assert statuses == {200}, f"non-200 answers during the swap: {statuses}"
    assert {version for _, version in answers} == {"1", "2"}
    for seen in per_worker:  # once a client got version 2, it never went back to 1
        versions = [version for _, version in seen]
        if "2" in versions:
            assert "1" not in versions[versions.index("2") :]
    assert per_worker[0][-1][1] == "2"
    assert len(answers) > 2 * WORKERS
