"""The app's contract without a model: health, request ids, body limit, CORS, errors, OpenAPI,
JSON logs."""

from __future__ import annotations

import io
import logging
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi import FastAPI

from loopline.config import LooplineConfig, config_from_dict
from loopline.serve.app import create_app
from loopline.serve.http_logging import JsonFormatter, access_log

with warnings.catch_warnings():
    # starlette asks for httpx2 (not installed); the client works the same with httpx
    warnings.simplefilter("ignore", UserWarning)
    from fastapi.testclient import TestClient


def config(folder: Path, **serve: Any) -> LooplineConfig:
    return config_from_dict({"project": "shop", "serve": serve}, project_dir=folder)


def wait_ready(client: TestClient, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while client.get("/health/ready").status_code != 200:
        assert time.monotonic() < deadline, client.get("/health/ready").json()
        time.sleep(0.05)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One project folder for every app here: its tracking store is created once."""
    return tmp_path_factory.mktemp("app")


@pytest.fixture(scope="module")
def app(folder: Path) -> FastAPI:
    app = create_app(config(folder, limits={"max_body_bytes": 2048}))

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret internals: /etc/passwd")

    return app


@pytest.fixture(scope="module")
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as client:
        wait_ready(client)
        yield client


def test_live_and_ready_answer(client: TestClient) -> None:
    live = client.get("/health/live")
    assert live.status_code == 200
    assert live.json() == {"status": "ok"}
    ready = client.get("/health/ready")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "models": []}


def test_ready_is_503_while_a_model_cannot_load(folder: Path, client: TestClient) -> None:
    app = create_app(config(folder, models=[{"name": "ghost"}], poll_interval=30))
    with TestClient(app) as client:
        assert client.get("/health/live").status_code == 200
        deadline = time.monotonic() + 60
        while not app.state.loopline or not app.state.loopline.loaded.is_set():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        ready = client.get("/health/ready")
        assert ready.status_code == 503
        assert ready.json()["request_id"] == ready.headers["x-request-id"]
        predict = client.post("/v1/models/ghost/predict", json={"row": {"a": 1}})
        assert predict.status_code == 503
        assert client.post("/v1/models/other/predict", json={"row": {}}).status_code == 404


def test_every_response_carries_a_request_id(client: TestClient) -> None:
    made = client.get("/health/live").headers["x-request-id"]
    assert len(made) == 32
    assert client.get("/health/live").headers["x-request-id"] != made
    given = client.get("/health/live", headers={"X-Request-ID": "abc-123.x"})
    assert given.headers["x-request-id"] == "abc-123.x"
    odd = client.get("/health/live", headers={"X-Request-ID": "no spaces <script>"})
    assert odd.headers["x-request-id"] != "no spaces <script>"
    missing = client.get("/nowhere")
    assert missing.status_code == 404
    assert missing.json()["request_id"] == missing.headers["x-request-id"]


def test_body_over_the_limit_is_413_by_length_and_by_counting(client: TestClient) -> None:
    big = client.post("/v1/models/churn/predict", content=b"x" * 4096)
    assert big.status_code == 413
    assert big.json()["request_id"] == big.headers["x-request-id"]
    chunked = client.post(
        "/v1/models/churn/predict", content=iter([b"x" * 1000] * 5)
    )  # no Content-Length: counted while read
    assert chunked.status_code == 413
    assert "2048" in chunked.json()["detail"]


def test_bad_json_and_unknown_model(client: TestClient) -> None:
    bad = client.post("/v1/models/churn/predict", content=b"{not json")
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["type"] == "json_invalid"
    unknown = client.post("/v1/models/churn/predict", json={"row": {"a": 1}})
    assert unknown.status_code == 404
    assert "not served" in unknown.json()["detail"]


def test_unhandled_error_is_500_without_internals(
    app: FastAPI, client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="loopline.serve.middleware"):
        response = client.get("/boom")
    assert response.status_code == 500
    assert response.json() == {
        "detail": "internal error",
        "request_id": response.headers["x-request-id"],
    }
    assert "secret" not in response.text
    assert "Traceback" not in response.text
    assert any("secret internals" in (r.exc_text or "") for r in caplog.records)


def test_cors_is_closed_by_default(client: TestClient) -> None:
    preflight = client.options(
        "/v1/models",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
    )
    assert "access-control-allow-origin" not in preflight.headers
    simple = client.get("/v1/models", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in simple.headers


def test_cors_opens_for_listed_origins(folder: Path, client: TestClient) -> None:
    app = create_app(config(folder, cors={"allow_origins": ["https://app.example"]}))
    with TestClient(app) as client:
        ok = client.options(
            "/v1/models",
            headers={"Origin": "https://app.example", "Access-Control-Request-Method": "GET"},
        )
        assert ok.status_code == 200
        assert ok.headers["access-control-allow-origin"] == "https://app.example"
        assert "x-request-id" in ok.headers
        other = client.options(
            "/v1/models",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
        )
        assert "access-control-allow-origin" not in other.headers
        deadline = time.monotonic() + 60
        while client.get("/health/ready").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        hot = client.post(  # a fast-lane route gets the same CORS answer
            "/v1/models/churn/predict", json={"row": {}}, headers={"Origin": "https://app.example"}
        )
        assert hot.status_code == 404
        assert hot.headers["access-control-allow-origin"] == "https://app.example"


def test_openapi_documents_every_route(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    paths = schema["paths"]
    for path in ("/health/live", "/health/ready", "/metrics", "/v1/models"):
        assert "get" in paths[path]
    predict = paths["/v1/models/{name}/predict"]["post"]
    body = predict["requestBody"]["content"]["application/json"]["schema"]
    assert set(body["properties"]) == {"row", "rows", "unit_id"}
    ok = predict["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok["$ref"].endswith("/PredictResponse")
    assert {"401", "403", "404", "413", "422", "429", "503"} <= set(predict["responses"])
    assert "securitySchemes" not in schema.get("components", {})  # open API: no auth
    assert client.get("/docs").status_code == 200


def test_one_json_log_line_per_request(client: TestClient) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    access_log.addHandler(handler)
    level = access_log.level
    access_log.setLevel(logging.INFO)
    try:
        response = client.get("/v1/models", headers={"X-Request-ID": "log-me-1"})
    finally:
        access_log.removeHandler(handler)
        access_log.setLevel(level)
    (line,) = stream.getvalue().splitlines()
    entry = orjson.loads(line)
    assert response.status_code == 200
    assert entry["request_id"] == "log-me-1"
    assert entry["method"] == "GET"
    assert entry["path"] == "/v1/models"
    assert entry["status"] == 200
    assert entry["caller"] == "anonymous"
    assert entry["latency_ms"] >= 0
    assert {"ts", "level", "logger", "msg"} <= set(entry)


def test_log_payloads_are_masked() -> None:
    record = logging.LogRecord("x", logging.WARNING, __file__, 1, "rows", None, None)
    record.payload = [{"email": "a@b.c", "tenure": 3}]
    entry = orjson.loads(JsonFormatter(pii_fields=["EMAIL"]).format(record))
    assert entry["payload"] == [{"email": "***", "tenure": 3}]
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        record.exc_info = sys.exc_info()
    assert "ValueError: boom" in orjson.loads(JsonFormatter().format(record))["exc"]
