"""Schemathesis against the app's own OpenAPI schema: no request it can generate gets a 5xx.

The app runs in process with a real registered churn model (its lifespan held open by a
``TestClient``); schemathesis calls it through its ASGI transport.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from tests.serve.churn_project import make_churn_project

from loopline.serve.app import create_app

with warnings.catch_warnings():
    # starlette asks for httpx2 (not installed); the client works the same with httpx
    warnings.simplefilter("ignore", UserWarning)
    from fastapi.testclient import TestClient


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastAPI]:
    serve = {"models": [{"name": "churn"}], "limits": {"max_rows": 50}}
    project = make_churn_project(tmp_path_factory.mktemp("fuzz"), serve=serve)
    app = create_app(project.config)
    with TestClient(app) as client:  # runs the lifespan: the models load once
        deadline = time.monotonic() + 120
        while client.get("/health/ready").status_code != 200:
            assert time.monotonic() < deadline, client.get("/health/ready").json()
            time.sleep(0.1)
        yield app


@pytest.fixture(scope="module")
def api_schema(app: FastAPI) -> Any:
    return schemathesis.openapi.from_asgi("/openapi.json", app)


def operations(api_schema: Any) -> list[Any]:
    return [result.ok() for result in api_schema.get_all_operations()]


def test_the_schema_lists_every_route(api_schema: Any) -> None:
    labels = {op.label for op in operations(api_schema)}
    assert {
        "GET /health/live",
        "GET /health/ready",
        "GET /metrics",
        "GET /v1/models",
        "POST /v1/models/{name}/predict",
    } <= labels


# schemathesis' own pytest plugin (``from_fixture``) does not run on pytest 9: drive its
# Hypothesis strategies directly, one operation at a time.
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_server_errors(api_schema: Any, mode: GenerationMode) -> None:
    skipped: list[str] = []
    for operation in operations(api_schema):
        if mode == GenerationMode.NEGATIVE and operation.method.upper() == "GET":
            continue  # nothing to break in a route without parameters or body

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=30,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def check(case: Any) -> None:
            case.call_and_validate(checks=[not_a_server_error])

        try:
            check()
        except Unsatisfiable:
            # negative mode: an operation whose schema accepts anything has no invalid case
            assert mode == GenerationMode.NEGATIVE, operation.label
            skipped.append(operation.label)
    assert "POST /v1/models/{name}/predict" not in skipped
