"""``POST /v1/models/{name}/predict`` with a real registered churn model: answers, 422s,
A/B assignment, shadow scoring, the request log, the kill switch and the metrics."""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from tests.serve.churn_project import FEATURES, ChurnProject, make_churn_project
from tests.serve.fast_lane_check import Call, assert_lane_matches_fastapi

from loopline.config.serving import ServeConfig
from loopline.serve.app import create_app
from loopline.serve.experiments import set_experiment_state
from loopline.serve.log_tables import serve_requests
from loopline.serve.state import ServeState

with warnings.catch_warnings():
    # starlette asks for httpx2 (not installed); the client works the same with httpx
    warnings.simplefilter("ignore", UserWarning)
    from fastapi.testclient import TestClient

PREDICT = "/v1/models/churn/predict"
SERVE = {
    "models": [{"name": "churn"}],
    "limits": {"max_rows": 20},
    "experiments": {
        "churn_ab": {
            "model": "churn",
            "variants": [{"name": "a", "alias": "champion"}, {"name": "b", "version": "2"}],
            "shadow": "challenger",
        }
    },
}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> ChurnProject:
    return make_churn_project(tmp_path_factory.mktemp("predict"), serve=SERVE)


@pytest.fixture(scope="module")
def client(project: ChurnProject) -> Iterator[TestClient]:
    cfg = project.config
    assert cfg.serve == ServeConfig.model_validate(SERVE)
    with TestClient(create_app(cfg)) as client:
        deadline = time.monotonic() + 120
        while client.get("/health/ready").status_code != 200:
            assert time.monotonic() < deadline, client.get("/health/ready").json()
            time.sleep(0.1)
        yield client


def state_of(client: TestClient) -> ServeState:
    state: ServeState = client.app.state.loopline  # type: ignore[attr-defined]
    return state


def expected(project: ChurnProject, version: str, rows: list[dict[str, Any]]) -> np.ndarray:
    model = project.models[version]
    frame = pd.DataFrame(rows)[FEATURES]
    proba: np.ndarray = model.predict_proba(frame)[:, list(model.classes_).index("Yes")]
    return proba


def test_one_row_gets_the_full_answer(project: ChurnProject, client: TestClient) -> None:
    row = project.rows(1)[0]
    response = client.post(PREDICT, json={"row": row, "unit_id": "user-1"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {
        "request_id",
        "model",
        "version",
        "experiment",
        "variant",
        "predictions",
        "probabilities",
        "labels",
        "threshold",
    }
    assert body["request_id"] == response.headers["x-request-id"]
    assert body["model"] == "churn"
    assert body["experiment"] == "churn_ab"
    assert body["version"] == {"a": "1", "b": "2"}[body["variant"]]
    assert body["threshold"] == 0.4
    (p_yes,) = expected(project, body["version"], [row])
    assert body["probabilities"][0]["Yes"] == pytest.approx(p_yes)
    assert sum(body["probabilities"][0].values()) == pytest.approx(1.0)
    assert body["labels"] == ["Yes" if p_yes >= 0.4 else "No"]
    assert body["predictions"][0] in ("Yes", "No")


def test_a_batch_gets_one_answer_per_row(project: ChurnProject, client: TestClient) -> None:
    rows = project.rows(7)
    body = client.post(PREDICT, json={"rows": rows, "unit_id": "user-2"}).json()
    assert len(body["predictions"]) == len(body["probabilities"]) == len(body["labels"]) == 7
    want = expected(project, body["version"], rows)
    assert [p["Yes"] for p in body["probabilities"]] == pytest.approx(list(want))


def test_assignment_is_sticky_and_splits_traffic(project: ChurnProject, client: TestClient) -> None:
    row = project.rows(1)[0]
    first = client.post(PREDICT, json={"row": row, "unit_id": "sticky"}).json()["variant"]
    for _ in range(3):
        again = client.post(PREDICT, json={"row": row, "unit_id": "sticky"}).json()
        assert again["variant"] == first
    by_header = client.post(PREDICT, json={"row": row}, headers={"X-User-Id": "sticky"}).json()
    assert by_header["variant"] == first
    numeric = client.post(PREDICT, json={"row": row, "unit_id": 42}).json()
    assert (
        numeric["variant"]
        == client.post(PREDICT, json={"row": row, "unit_id": "42"}).json()["variant"]
    )
    seen = {
        client.post(PREDICT, json={"row": row, "unit_id": f"u{i}"}).json()["variant"]
        for i in range(30)
    }
    assert seen == {"a", "b"}


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ([1, 2], ["body"]),
        ({}, ["body"]),
        ({"row": {"tenure": 1.0}, "rows": []}, ["body"]),
        ({"rows": []}, ["body", "rows"]),
        ({"rows": {"tenure": 1}}, ["body", "rows"]),
        ({"rows": [1]}, ["body", "rows", 0]),
        ({"row": "x"}, ["body", "row"]),
        ({"row": {}, "extra": 1}, ["body", "extra"]),
        ({"row": {}, "unit_id": [1]}, ["body", "unit_id"]),
    ],
)
def test_malformed_bodies_are_422(client: TestClient, body: Any, loc: list[Any]) -> None:
    response = client.post(PREDICT, json=body)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == loc
    assert response.json()["request_id"] == response.headers["x-request-id"]


def test_rows_that_break_the_signature_are_422_per_field(
    project: ChurnProject, client: TestClient
) -> None:
    row = project.rows(1)[0] | {"tenure": "long", "seats": None}
    del row["contract"]
    detail = client.post(PREDICT, json={"rows": [project.rows(1)[0], row]}).json()["detail"]
    locs = {tuple(d["loc"]) for d in detail}
    assert ("body", "rows", 1, "tenure") in locs
    assert ("body", "rows", 1, "contract") in locs
    assert all({"loc", "msg", "type"} == set(d) for d in detail)


def test_too_many_rows_is_422(project: ChurnProject, client: TestClient) -> None:
    response = client.post(PREDICT, json={"rows": project.rows(21)})
    assert response.status_code == 422
    assert "20" in response.json()["detail"][0]["msg"]


def test_unknown_model_is_404(project: ChurnProject, client: TestClient) -> None:
    response = client.post("/v1/models/nope/predict", json={"row": project.rows(1)[0]})
    assert response.status_code == 404
    assert response.json()["request_id"] == response.headers["x-request-id"]


def test_models_lists_the_served_version(client: TestClient) -> None:
    (entry,) = client.get("/v1/models").json()["models"]
    assert entry["name"] == "churn"
    assert entry["alias"] == "champion"
    assert entry["version"] == "1"
    assert [i["name"] for i in entry["inputs"]] == FEATURES


def logged(client: TestClient) -> list[dict[str, Any]]:
    state = state_of(client)
    deadline = time.monotonic() + 30
    while state.tasks:  # shadow scorings still running
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert state.request_log is not None
    assert state.metadata is not None
    state.request_log.flush()
    with state.metadata.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(sa.select(serve_requests))]


def test_requests_and_shadow_scores_are_logged(project: ChurnProject, client: TestClient) -> None:
    response = client.post(PREDICT, json={"row": project.rows(1)[0], "unit_id": "logged"})
    request_id = response.json()["request_id"]
    rows = [r for r in logged(client) if r["request_id"] == request_id]
    served = [r for r in rows if not r["shadow"]]
    shadow = [r for r in rows if r["shadow"]]
    assert len(served) == 1
    assert len(shadow) == 1
    assert served[0]["version"] == response.json()["version"]
    assert served[0]["variant"] == response.json()["variant"]
    assert served[0]["unit_id"] == "logged"
    assert shadow[0]["version"] == "2"  # challenger


def test_kill_switch_sends_everyone_to_the_champion(
    project: ChurnProject, client: TestClient
) -> None:
    state = state_of(client)
    assert state.metadata is not None
    assert state.experiments is not None
    set_experiment_state(state.metadata, "churn_ab", enabled=False)
    state.experiments.refresh()
    try:
        for i in range(10):
            body = client.post(PREDICT, json={"row": project.rows(1)[0], "unit_id": f"k{i}"})
            assert (body.json()["experiment"], body.json()["version"]) == (None, "1")
    finally:
        set_experiment_state(state.metadata, "churn_ab", enabled=True)
        state.experiments.refresh()


def test_metrics_count_predictions_by_version_and_variant(client: TestClient) -> None:
    text = client.get("/metrics").text
    assert 'loopline_predictions_total{model="churn",variant="a",version="1"}' in text
    assert 'loopline_predictions_total{model="churn",variant="b",version="2"}' in text
    assert 'loopline_predictions_total{model="churn",variant="",version="1"}' in text
    assert 'loopline_rows_scored_total{model="churn"}' in text
    assert 'loopline_prediction_errors_total{error="SignatureError",model="churn"}' in text
    assert 'loopline_prediction_errors_total{error="NotServedError",model="_unknown"}' in text
    assert 'loopline_model_version{alias="champion",model="churn"} 1.0' in text
    assert 'loopline_shadow_predictions_total{model="churn",outcome="ok",version="2"}' in text


def test_the_fast_lane_answers_as_fastapi_does(project: ChurnProject, client: TestClient) -> None:
    row = project.rows(1)[0]
    broken = row | {"tenure": "long"}
    calls: list[Call] = [
        lambda c, h: c.post(PREDICT, json={"row": row, "unit_id": "u1"}, headers=h),
        lambda c, h: c.post(PREDICT, json={"rows": project.rows(3), "unit_id": "u2"}, headers=h),
        lambda c, h: c.post(PREDICT, content=b"{not json", headers=h),
        lambda c, h: c.post(PREDICT, json={"row": row, "extra": 1}, headers=h),
        lambda c, h: c.post(PREDICT, json={"rows": [row, broken]}, headers=h),
        lambda c, h: c.post("/v1/models/nope/predict", json={"row": row}, headers=h),
    ]
    assert_lane_matches_fastapi(client, calls)
