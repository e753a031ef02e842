"""POST /v1/feedback on the real app, and the whole A/B loop: predict in an experiment, send
feedback, stop the experiment at run time, report."""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from tests.serve.churn_project import ChurnProject, make_churn_project

from loopline.config import LooplineConfig, config_from_dict
from loopline.serve.ab_report import ab_report
from loopline.serve.app import create_app
from loopline.serve.auth import key_digest
from loopline.serve.experiments import set_experiment_state
from loopline.serve.log_tables import ab_exposures, serve_feedback, serve_requests
from loopline.serve.state import ServeState
from loopline.store.metadata import MetadataStore

with warnings.catch_warnings():
    # starlette asks for httpx2 (not installed); the client works the same with httpx
    warnings.simplefilter("ignore", UserWarning)
    from fastapi.testclient import TestClient

KEY = "ll_feedback-test-key"
HEADERS = {"X-API-Key": KEY}


def config(folder: Path, **serve: Any) -> LooplineConfig:
    serve.setdefault("auth", {"keys": [{"name": "ci", "sha256": key_digest(KEY)}]})
    serve.setdefault("request_log", {"flush_interval": 0.05})
    return config_from_dict({"project": "shop", "serve": serve}, project_dir=folder)


def started(client: TestClient, app: FastAPI, timeout: float = 60.0) -> ServeState:
    deadline = time.monotonic() + timeout
    while client.get("/health/ready").status_code != 200:
        assert time.monotonic() < deadline, client.get("/health/ready").json()
        time.sleep(0.05)
    state: ServeState = app.state.loopline
    return state


def table_rows(state: ServeState, table: sa.Table) -> list[dict[str, Any]]:
    assert state.request_log is not None
    assert state.metadata is not None
    state.request_log.flush()
    with state.metadata.engine.connect() as conn:
        return [dict(r) for r in conn.execute(sa.select(table).order_by(table.c.id)).mappings()]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("feedback")


@pytest.fixture(scope="module")
def app(folder: Path) -> FastAPI:
    return create_app(config(folder, limits={"max_rows": 5}))


@pytest.fixture(scope="module")
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as client:
        started(client, app)
        yield client


def test_one_label_is_accepted_and_stored(app: FastAPI, client: TestClient) -> None:
    response = client.post(
        "/v1/feedback",
        json={"request_id": "req-1", "label": "Yes"},
        headers=HEADERS | {"X-User-Id": "user-7", "X-Request-ID": "fb-1"},
    )
    assert response.status_code == 202
    assert response.json() == {"accepted": 1, "logged": True, "request_id": "fb-1"}
    assert response.headers["x-request-id"] == "fb-1"
    rows = [r for r in table_rows(app.state.loopline, serve_feedback) if r["request_id"] == "req-1"]
    assert [(r["label"], r["unit_id"]) for r in rows] == [("Yes", "user-7")]


def test_a_batch_of_labels_for_unknown_requests_is_stored(app: FastAPI, client: TestClient) -> None:
    batch = [
        {"request_id": "never-seen-1", "label": 1, "unit_id": "u1"},
        {"request_id": "never-seen-2", "label": {"churned": False}},
        {"request_id": "never-seen-3", "label": False, "unit_id": 42},
    ]
    response = client.post("/v1/feedback", json={"feedback": batch}, headers=HEADERS)
    assert response.status_code == 202
    assert response.json()["accepted"] == 3
    rows = {r["request_id"]: r for r in table_rows(app.state.loopline, serve_feedback)}
    assert (rows["never-seen-1"]["label"], rows["never-seen-1"]["unit_id"]) == (1, "u1")
    assert (rows["never-seen-2"]["label"], rows["never-seen-2"]["unit_id"]) == (
        {"churned": False},
        None,
    )
    assert rows["never-seen-3"]["unit_id"] == "42"


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"request_id": "r1"}, ["body", "label"]),
        ({"request_id": "r1", "label": None}, ["body", "label"]),
        ({"label": "Yes"}, ["body", "request_id"]),
        ({"request_id": 7, "label": "Yes"}, ["body", "request_id"]),
        ({"request_id": "x" * 129, "label": "Yes"}, ["body", "request_id"]),
        ({"request_id": "r1", "label": "Yes", "extra": 1}, ["body", "extra"]),
        ({"request_id": "r1", "label": "Yes", "unit_id": ["u"]}, ["body", "unit_id"]),
        ({"feedback": []}, ["body", "feedback"]),
        ({"feedback": [{"request_id": "r1", "label": 1}] * 6}, ["body", "feedback"]),
        ({"feedback": [{"request_id": "r1", "label": 1}, "no"]}, ["body", "feedback", 1]),
        ({"feedback": [{"request_id": "r1"}]}, ["body", "feedback", 0, "label"]),
        ({"feedback": [{"request_id": "r1", "label": 1}], "label": 1}, ["body"]),
        (["r1", "Yes"], ["body"]),
    ],
)
def test_malformed_feedback_is_422_naming_the_field(
    client: TestClient, body: Any, loc: list[Any]
) -> None:
    response = client.post("/v1/feedback", json=body, headers=HEADERS)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert detail[0]["loc"] == loc
    assert "request_id" in response.json()


def test_invalid_json_is_422(client: TestClient) -> None:
    response = client.post("/v1/feedback", content=b"{not json", headers=HEADERS)
    assert response.status_code == 422
    assert response.json()["detail"][0]["type"] == "json_invalid"


def test_feedback_needs_credentials(client: TestClient) -> None:
    response = client.post("/v1/feedback", json={"request_id": "r1", "label": 1})
    assert response.status_code == 401
    wrong = client.post(
        "/v1/feedback", json={"request_id": "r1", "label": 1}, headers={"X-API-Key": "nope"}
    )
    assert wrong.status_code == 403


def test_openapi_documents_the_route(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    post = spec["paths"]["/v1/feedback"]["post"]
    assert "202" in post["responses"]
    schema = post["requestBody"]["content"]["application/json"]["schema"]
    assert {"request_id", "label", "feedback"} <= set(schema["properties"])


def test_with_the_request_log_off_nothing_is_stored(folder: Path) -> None:
    app = create_app(config(folder, request_log={"enabled": False}, auth={}))
    with TestClient(app) as client:
        started(client, app)
        response = client.post("/v1/feedback", json={"request_id": "r-off", "label": 1})
    assert response.status_code == 202
    assert response.json()["logged"] is False


# -- the whole loop with a served model ----------------------------------------------------

EXPERIMENT = {
    "churn_ab": {
        "model": "churn",
        "shadow": "challenger",
        "variants": [
            {"name": "control", "alias": "champion"},
            {"name": "v2", "version": "2"},
        ],
    }
}


@pytest.fixture(scope="module")
def churn(tmp_path_factory: pytest.TempPathFactory) -> ChurnProject:
    serve = {"models": [{"name": "churn"}], "experiments": EXPERIMENT}
    return make_churn_project(tmp_path_factory.mktemp("churn_ab"), serve=serve)


def test_predict_feedback_stop_and_report(churn: ChurnProject) -> None:
    cfg = churn.config.model_copy(
        update={
            "serve": churn.config.serve.model_copy(
                update={
                    "request_log": churn.config.serve.request_log.model_copy(
                        update={"flush_interval": 0.05}
                    )
                }
            )
        }
    )
    app = create_app(cfg)
    row = churn.rows(1)[0]
    answers: dict[str, dict[str, Any]] = {}
    with TestClient(app) as client:
        state = started(client, app)
        for u in range(40):
            user = f"user-{u}"
            for _ in range(2):  # a second request: the same variant, one exposure
                response = client.post(
                    "/v1/models/churn/predict", json={"row": row}, headers={"X-User-Id": user}
                )
                assert response.status_code == 200, response.text
                body = response.json()
                assert answers.get(user, body)["variant"] == body["variant"]
                answers[user] = body
            label = "Yes" if u % 4 == 0 else "No"
            feedback = client.post(
                "/v1/feedback",
                json={"request_id": body["request_id"], "label": label},
                headers={"X-User-Id": user},
            )
            assert feedback.status_code == 202
        assert {b["variant"] for b in answers.values()} == {"control", "v2"}
        assert all(
            b["version"] == ("1" if b["variant"] == "control" else "2") for b in answers.values()
        )
        # the kill switch, as `loopline ab stop churn_ab` from another process
        other = MetadataStore(cfg.stores.metadata_url, base_dir=cfg.project_dir)
        set_experiment_state(other, "churn_ab", enabled=False)
        other.close()
        deadline = time.monotonic() + 10
        while True:
            body = client.post(
                "/v1/models/churn/predict", json={"row": row}, headers={"X-User-Id": "late"}
            ).json()
            if body["experiment"] is None:
                break
            assert time.monotonic() < deadline, "the kill switch did not reach the server"
            time.sleep(0.1)
        assert body["version"] == "1"  # the served alias (champion) for everyone
        deadline = time.monotonic() + 10
        while len([r for r in table_rows(state, serve_requests) if r["shadow"]]) < 80:
            assert time.monotonic() < deadline, "shadow rows missing"
            time.sleep(0.05)
        requests = table_rows(state, serve_requests)
        exposures = table_rows(state, ab_exposures)
    # once per unit, not per request ("late" may be exposed until the switch is read)
    assert len([e for e in exposures if e["unit_id"] != "late"]) == 40
    shadow = [r for r in requests if r["shadow"]]
    assert {r["version"] for r in shadow} == {"2"}
    metadata = MetadataStore(cfg.stores.metadata_url, base_dir=cfg.project_dir)
    try:
        report = ab_report(metadata, "churn_ab", cfg.serve.experiments["churn_ab"])
    finally:
        metadata.close()
    late = [e["variant"] for e in exposures if e["unit_id"] == "late"]
    expected = {
        v: (
            sum(1 for b in answers.values() if b["variant"] == v) + late.count(v),
            sum(1 for u, b in answers.items() if b["variant"] == v and int(u[5:]) % 4 == 0),
        )
        for v in ("control", "v2")
    }
    assert {v.variant: (v.units, v.conversions) for v in report.variants} == expected
    assert report.state == "stopped"
