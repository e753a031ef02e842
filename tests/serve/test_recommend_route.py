"""POST /v1/events and GET /v1/recommendations/{user}: contract, validation, experiments,
and the Redis-backed state shared by two real server processes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import yaml
from fastapi import FastAPI
from tests.conftest import service_url
from tests.serve.fast_lane_check import Call, assert_lane_matches_fastapi
from tests.serve.recommend.recommender_project import (
    make_recommender_project,
    register_recommender,
    synthetic_model,
)

from loopline.config import config_from_dict, load_config
from loopline.registry import ModelRegistry
from loopline.serve.app import create_app
from loopline.serve.log_tables import ab_exposures, serve_events

with warnings.catch_warnings():
    # starlette asks for httpx2 (not installed); the client works the same with httpx
    warnings.simplefilter("ignore", UserWarning)
    from fastapi.testclient import TestClient

EXPERIMENT = {
    "rec_strategy": {
        "variants": [
            {"name": "blend", "strategy": "blend"},
            {"name": "popular", "strategy": "popular"},
        ],
        "outcome": "purchase",
    }
}


def wait_ready(client: TestClient | httpx.Client, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while client.get("/health/ready").status_code != 200:
        assert time.monotonic() < deadline, client.get("/health/ready").json()
        time.sleep(0.05)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ModelRegistry]:
    """A project serving the synthetic recommender ``movies`` (registered once, ~6 s)."""
    folder = tmp_path_factory.mktemp("recommend")
    serve = {
        "recommender": {"model": "movies", "max_k": 20, "default_k": 3},
        "experiments": EXPERIMENT,
    }
    return folder, make_recommender_project(folder, serve)


@pytest.fixture(scope="module")
def folder(project: tuple[Path, ModelRegistry]) -> Path:
    return project[0]


@pytest.fixture(scope="module")
def app(folder: Path) -> FastAPI:
    return create_app(load_config(folder))


@pytest.fixture(scope="module")
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as client:
        wait_ready(client)
        yield client


def strategy_of(client: TestClient, user: str) -> str:
    strategy: str = client.get(f"/v1/recommendations/{user}").json()["strategy"]
    return strategy


def a_user_on(client: TestClient, strategy: str) -> str:
    """A fresh user id the experiment assigns to ``strategy``."""
    for n in range(200):
        user = f"{strategy}-{uuid.uuid4().hex[:8]}-{n}"
        if strategy_of(client, user) == strategy:
            return user
    raise AssertionError(f"no user assigned to {strategy}")


def items(body: dict[str, Any]) -> list[str]:
    return [i["item"] for i in body["items"]]


def test_an_event_changes_the_very_next_recommendation(client: TestClient) -> None:
    user = a_user_on(client, "blend")
    before = client.get(f"/v1/recommendations/{user}", params={"k": 3}).json()
    assert "i10" not in items(before)
    sent = client.post("/v1/events", json={"user": user, "item": "i06", "type": "view"})
    assert sent.status_code == 202
    assert sent.json() == {"accepted": 1, "request_id": sent.headers["x-request-id"]}
    after = client.get(f"/v1/recommendations/{user}", params={"k": 3})
    assert after.status_code == 200
    body = after.json()
    assert items(body)[0] == "i10"
    assert body["items"][0]["reason"] == "covisit"
    assert "i06" not in items(body)  # already seen


def test_response_shape(client: TestClient) -> None:
    response = client.get("/v1/recommendations/alice")
    body = response.json()
    assert set(body) == {"user", "items", "strategy", "experiment", "variant", "version",
                         "request_id"}  # fmt: skip
    assert body["user"] == "alice"
    assert len(body["items"]) == 3  # default_k
    assert set(body["items"][0]) == {"item", "score", "reason"}
    assert body["experiment"] == "rec_strategy"
    assert body["variant"] == body["strategy"]
    assert body["version"] == "1"
    assert body["request_id"] == response.headers["x-request-id"]


def test_batch_of_events_with_timestamps(client: TestClient) -> None:
    user = f"batch-{uuid.uuid4().hex[:8]}"
    events = [
        {"user": user, "item": "i03", "type": "view", "timestamp": "2026-11-27T10:00:00Z"},
        {"user": user, "item": "i04", "type": "click", "timestamp": 1795780800},
        {"user": user, "item": "new-item", "type": "purchase"},
    ]
    response = client.post("/v1/events", json={"events": events})
    assert response.status_code == 202
    assert response.json()["accepted"] == 3
    returned = items(client.get(f"/v1/recommendations/{user}", params={"k": 20}).json())
    assert not {"i03", "i04", "new-item"} & set(returned)


def test_exclude_and_k_bound(client: TestClient) -> None:
    user = a_user_on(client, "popular")
    top = items(client.get(f"/v1/recommendations/{user}", params={"k": 4}).json())
    assert len(top) == 4
    exclude = f"{top[0]}, {top[2]},,not-an-item"
    rest = client.get(f"/v1/recommendations/{user}", params={"k": 2, "exclude": exclude})
    assert items(rest.json()) == [top[1], top[3]]
    everything = items(client.get(f"/v1/recommendations/{user}", params={"k": 20}).json())
    assert 12 <= len(everything) <= 20
    assert len(set(everything)) == len(everything)


@pytest.mark.parametrize("k", [0, -1, 21, "ten"])
def test_k_out_of_range_is_422(client: TestClient, k: object) -> None:
    response = client.get("/v1/recommendations/alice", params={"k": k})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", "k"]


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"item": "i01", "type": "view"}, ["body", "user"]),
        ({"user": "u", "item": "i01", "type": "like"}, ["body", "type"]),
        ({"user": "u", "item": "i01", "type": "view", "timestamp": "yesterday"},
         ["body", "timestamp"]),
        ({"user": "u", "item": "i01", "type": "view", "extra": 1}, ["body", "extra"]),
        ({"user": "", "item": "i01", "type": "view"}, ["body", "user"]),
        ({"user": ["u"], "item": "i01", "type": "view"}, ["body", "user"]),
        ({"events": []}, ["body", "events"]),
        ({"events": [{"user": "u", "item": "i01", "type": "view"}, 3]}, ["body", "events", 1]),
        ([1, 2], ["body"]),
    ],
)  # fmt: skip
def test_invalid_events_are_422_and_change_nothing(
    client: TestClient, body: Any, loc: list[Any]
) -> None:
    response = client.post("/v1/events", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == loc


def test_invalid_json_is_422(client: TestClient) -> None:
    response = client.post(
        "/v1/events", content=b"{nope", headers={"content-type": "application/json"}
    )
    assert response.status_code == 422


def test_events_and_exposures_reach_the_request_log(app: FastAPI, client: TestClient) -> None:
    user = a_user_on(client, "popular")
    client.post("/v1/events", json={"user": user, "item": "i05", "type": "purchase"})
    state = app.state.loopline
    state.request_log.flush()
    engine = state.metadata.engine
    with engine.connect() as conn:
        events = conn.execute(
            sa.select(serve_events.c.item, serve_events.c.variant).where(
                serve_events.c.user == user
            )
        ).all()
        exposures = conn.execute(
            sa.select(ab_exposures.c.variant).where(ab_exposures.c.unit_id == user)
        ).all()
    assert [tuple(e) for e in events] == [("i05", "popular")]
    assert [e[0] for e in exposures] == ["popular"]


def test_without_a_recommender_the_routes_are_404(folder: Path) -> None:
    app = create_app(config_from_dict({"project": "shop", "serve": {}}, project_dir=folder))
    with TestClient(app) as client:
        wait_ready(client)
        assert client.get("/v1/recommendations/alice").status_code == 404
        sent = client.post("/v1/events", json={"user": "u", "item": "i", "type": "view"})
        assert sent.status_code == 404


def test_a_recommender_that_cannot_load_is_503(folder: Path) -> None:
    config = config_from_dict(
        {"project": "shop", "serve": {"recommender": {"model": "ghost"}}}, project_dir=folder
    )
    app = create_app(config)
    with TestClient(app) as client:
        deadline = time.monotonic() + 60
        while app.state.loopline is None or not app.state.loopline.loaded.is_set():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        response = client.get("/v1/recommendations/alice")
        assert response.status_code == 503
        assert "ghost" in response.json()["detail"]


def test_moving_the_alias_swaps_the_model_and_keeps_the_live_state(
    app: FastAPI, client: TestClient, project: tuple[Path, ModelRegistry]
) -> None:
    user = a_user_on(client, "blend")
    client.post("/v1/events", json={"user": user, "item": "i02", "type": "view"})
    newer = synthetic_model()
    newer.popularity = newer.popularity[::-1].copy()  # i11 most popular now
    register_recommender(project[1], newer, "movies")  # version 2 becomes champion
    assert app.state.loopline.recommender.refresh()
    body = client.get(f"/v1/recommendations/{user}", params={"k": 20}).json()
    assert body["version"] == "2"
    assert "i02" not in items(body)  # the live history survived the swap
    cold = client.get("/v1/recommendations/someone-new", params={"k": 1}).json()
    assert cold["version"] == "2"


# ---- two real server processes sharing Redis -----------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.mark.services
@pytest.mark.slow
def test_redis_state_is_shared_by_two_server_processes(
    project: tuple[Path, ModelRegistry],
) -> None:
    redis_url = service_url("redis")
    folder, registry = project
    name = f"movies_{uuid.uuid4().hex[:8]}"  # its own key prefix in Redis
    register_recommender(registry, synthetic_model(), name)
    serve = {"recommender": {"model": name, "state_url": redis_url}}
    config = folder / "redis.yaml"
    config.write_text(yaml.safe_dump({"project": "shop", "serve": serve}))
    ports = [free_port(), free_port()]
    env = {**os.environ, "LOOPLINE_SERVE_CONFIG": str(config)}
    logs = [(folder / f"server-{port}.log").open("wb") for port in ports]
    servers = [
        subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "loopline.serve.app:app_from_environment",
             "--factory", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
            env=env,
            cwd=folder,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        for port, log in zip(ports, logs, strict=True)
    ]  # fmt: skip
    one, two = (httpx.Client(base_url=f"http://127.0.0.1:{p}", timeout=10) for p in ports)
    try:
        for client, server, log in zip((one, two), servers, logs, strict=True):
            deadline = time.monotonic() + 90
            while True:
                assert server.poll() is None, Path(log.name).read_text()
                try:
                    if client.get("/health/ready").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "server not ready"
                time.sleep(0.2)
        before = items(two.get("/v1/recommendations/zoe", params={"k": 3}).json())
        assert before == ["i00", "i01", "i02"]  # unknown user: popular
        sent = one.post("/v1/events", json={"user": "zoe", "item": "i07", "type": "view"})
        assert sent.status_code == 202
        after = two.get("/v1/recommendations/zoe", params={"k": 3}).json()
        assert items(after)[0] == "i10"  # i07's top neighbour, on the other server
        assert "i07" not in items(after)
        trending = one.get("/v1/recommendations/somebody-else", params={"k": 1}).json()
        assert items(trending) == ["i07"]  # trending from the first server's event
    finally:
        one.close()
        two.close()
        for server in servers:
            server.terminate()
        for server in servers:
            server.wait(timeout=30)
        for log in logs:
            log.close()
        import redis

        client = redis.Redis.from_url(redis_url)
        keys = list(client.scan_iter(match=f"loopline:rec:{name}:*"))
        if keys:
            client.delete(*keys)
        client.close()


def test_the_fast_lane_answers_as_fastapi_does(client: TestClient) -> None:
    recs = "/v1/recommendations"
    event = {"user": "lane", "item": "i02", "type": "like"}  # invalid: a valid one would
    # change the trending items between the two passes
    calls: list[Call] = [
        lambda c, h: c.get(f"{recs}/alice", headers=h),
        lambda c, h: c.get(f"{recs}/bob", params={"k": 5, "exclude": "i01,i02"}, headers=h),
        lambda c, h: c.get(f"{recs}/bob", params={"k": "ten"}, headers=h),
        lambda c, h: c.get(f"{recs}/bob", params={"k": 0}, headers=h),
        lambda c, h: c.get(f"{recs}/bob", params={"k": 21}, headers=h),
        lambda c, h: c.post("/v1/events", json=event, headers=h),
        lambda c, h: c.post("/v1/events", content=b"[", headers=h),
    ]
    assert_lane_matches_fastapi(client, calls)
