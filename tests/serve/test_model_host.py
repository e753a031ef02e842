"""ModelHost on a real MLflow store: load by alias, validate, predict in batches, versions."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.linear_model import LinearRegression
from tests.serve.churn_project import FEATURES, MODEL, THRESHOLD, ChurnProject, make_churn_project

from loopline.config.serving import ServedModelConfig
from loopline.errors import NotServedError, ServeError, SignatureError
from loopline.serve.loaded_model import LoadedModel, Prediction
from loopline.serve.model_host import ModelHost
from loopline.serve.signature import ColumnSpec, InputSchema


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> ChurnProject:
    return make_churn_project(tmp_path_factory.mktemp("serve") / "project")


@pytest.fixture(scope="module")
def host(project: ChurnProject) -> Iterator[ModelHost]:
    host = ModelHost(
        project.registry, [ServedModelConfig(name=MODEL)], poll_interval=60, max_rows=500
    )
    host.start()
    yield host
    host.close()


def expected_proba(project: ChurnProject, version: str, rows: list[dict[str, Any]]) -> Any:
    return project.models[version].predict_proba(pd.DataFrame(rows)[FEATURES])


def predict(host: ModelHost, rows: list[dict[str, Any]], version: str | None = None) -> Prediction:
    async def call() -> Prediction:
        return await host.predict(MODEL, host.parse(MODEL, rows, version=version), version=version)

    return asyncio.run(call())


def test_the_champion_is_loaded_with_its_signature_and_tags(host: ModelHost) -> None:
    assert host.ready
    (entry,) = host.served()
    assert entry["name"] == MODEL
    assert entry["alias"] == "champion"
    assert entry["version"] == "1"
    assert entry["task"] == "binary"
    assert entry["threshold"] == THRESHOLD
    assert entry["classes"] == ["No", "Yes"]
    assert [(c["name"], c["type"]) for c in entry["inputs"]] == [
        ("tenure", "double"),
        ("charges", "double"),
        ("contract", "string"),
        ("seats", "long"),
    ]
    assert entry["loaded_at"].endswith("+00:00")


def test_predictions_equal_the_model_on_the_same_rows(
    host: ModelHost, project: ChurnProject
) -> None:
    rows = project.rows(200)
    result = predict(host, rows)
    proba = expected_proba(project, "1", rows)
    assert result.version == "1"
    assert [[p["No"], p["Yes"]] for p in result.probabilities or []] == proba.tolist()
    assert result.predictions == project.models["1"].predict(pd.DataFrame(rows)).tolist()
    assert result.threshold == THRESHOLD
    assert result.labels == ["Yes" if p >= THRESHOLD else "No" for p in proba[:, 1]]
    assert result.labels != result.predictions  # the threshold (0.4) moved some decisions
    assert all(type(p) is str for p in result.predictions)  # JSON-ready, no NumPy scalars
    assert all(type(v) is float for p in result.probabilities or [] for v in p.values())


def test_concurrent_requests_are_batched_and_each_gets_its_rows(
    host: ModelHost, project: ChurnProject
) -> None:
    rows = project.rows(120)
    requests = [rows[i : i + 1 + i % 3] for i in range(0, 120, 4)]  # 1-3 rows each
    before = host.model(MODEL).batcher.stats.batches

    async def many() -> list[Prediction]:
        parsed = [host.parse(MODEL, r) for r in requests]
        return list(await asyncio.gather(*(host.predict(MODEL, p) for p in parsed)))

    results = asyncio.run(many())
    stats = host.model(MODEL).batcher.stats
    assert stats.batches - before < len(requests)  # some requests shared a model call
    assert stats.largest > 1
    for request, result in zip(requests, results, strict=True):
        proba = expected_proba(project, "1", request)
        assert [p["Yes"] for p in result.probabilities or []] == proba[:, 1].tolist()


def test_bad_rows_raise_signature_errors(host: ModelHost, project: ChurnProject) -> None:
    row = project.rows(1)[0]
    with pytest.raises(SignatureError) as caught:
        host.parse(MODEL, [row, {**row, "seats": "three"}, {"tenure": 1.0}])
    assert [e["loc"] for e in caught.value.errors] == [
        ["body", "rows", 2, "charges"],
        ["body", "rows", 2, "contract"],
        ["body", "rows", 1, "seats"],
        ["body", "rows", 2, "seats"],
    ]
    with pytest.raises(SignatureError, match="invalid field"):
        host.parse(MODEL, [row] * 501)


def test_unknown_models_and_versions_are_not_served(host: ModelHost) -> None:
    with pytest.raises(NotServedError) as caught:
        host.parse("nope", [{}])
    assert caught.value.fields["status"] == 404
    with pytest.raises(NotServedError) as caught:
        host.resolve(MODEL, "99")
    assert caught.value.fields["status"] == 404
    with pytest.raises(NotServedError) as caught:
        host.resolve(MODEL, "no_such_alias")
    assert caught.value.fields["status"] == 404


def test_explicit_versions_and_aliases_load_on_first_use(
    host: ModelHost, project: ChurnProject
) -> None:
    rows = project.rows(5)
    result = predict(host, rows, version="2")
    assert result.version == "2"
    assert [p["Yes"] for p in result.probabilities or []] == (
        expected_proba(project, "2", rows)[:, 1].tolist()
    )
    assert host.resolve(MODEL, "challenger") == "2"
    assert host.model(MODEL, "challenger") is host.model(MODEL, "2")  # loaded once
    assert predict(host, rows).version == "1"  # the champion is unchanged
    (entry,) = host.served()
    assert entry["versions"] == ["1", "2"]
    assert entry["aliases"] == {"champion": "1", "challenger": "2"}


class Exploding:
    """A model that fails on rows whose contract is 'boom' (a fault inside the model)."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.classes_ = model.classes_
        self.calls = 0

    def predict_proba(self, frame: pd.DataFrame) -> Any:
        self.calls += 1
        if (frame["contract"] == "boom").any():
            raise ValueError("cannot score 'boom'")
        return self.model.predict_proba(frame)


def test_a_model_error_fails_only_its_batch(host: ModelHost, project: ChurnProject) -> None:
    base = host.model(MODEL)
    loaded = replace(base, model=Exploding(base.model))  # its own scoring thread
    row = project.rows(1)[0]
    good = loaded.schema.parse([row])
    bad = loaded.schema.parse([{**row, "contract": "boom"}])

    async def scenario() -> tuple[Any, list[Any]]:
        with pytest.raises(ServeError) as caught:
            await loaded.batcher.submit(bad)
        mixed = [good, bad, good, good, bad, good]
        outcomes = await asyncio.gather(
            *(loaded.batcher.submit(p) for p in mixed), return_exceptions=True
        )
        return caught.value, outcomes

    error, outcomes = asyncio.run(scenario())
    assert error.fields == {"model": MODEL, "version": "1", "error": "ValueError", "status": 500}
    assert "cannot score 'boom'" in str(error.__cause__)
    assert "boom" not in error.message  # the model's words stay in the log
    assert isinstance(outcomes[1], ServeError)
    assert isinstance(outcomes[4], ServeError)
    assert all(isinstance(o, Prediction | ServeError) for o in outcomes)
    assert predict_with(loaded, good).version == "1"  # the scorer lives on
    loaded.batcher.close(wait=2)


def predict_with(loaded: LoadedModel, parsed: Any) -> Prediction:
    return asyncio.run(loaded.batcher.submit(parsed))


class Slow:
    def __init__(self, model: Any) -> None:
        self.model = model
        self.classes_ = model.classes_

    def predict_proba(self, frame: pd.DataFrame) -> Any:
        time.sleep(0.3)
        return self.model.predict_proba(frame)


def test_a_slow_prediction_times_out_with_503(project: ChurnProject) -> None:
    host = ModelHost(
        project.registry,
        [ServedModelConfig(name=MODEL)],
        poll_interval=60,
        max_rows=10,
        timeout=0.05,
    )
    host.start()
    loaded = host.model(MODEL)
    loaded.model = Slow(loaded.model)
    with pytest.raises(NotServedError, match=r"did not answer within 0\.05 s") as caught:
        predict(host, project.rows(1))
    assert caught.value.fields["status"] == 503
    host.close()


def test_a_model_without_signature_or_classes_predicts_values() -> None:
    frame = pd.DataFrame({"x": [0.0, 1.0, 2.0], "y": [1.0, 3.0, 5.0]})
    regressor = LinearRegression().fit(frame[["x"]], frame["y"])
    loaded = LoadedModel(
        name="price",
        version="3",
        info=None,  # type: ignore[arg-type]  # not read when scoring
        model=regressor,
        schema=InputSchema(None),
        task="regression",
        threshold=None,
        positive_class=None,
        classes=[],
        loaded_at=pd.Timestamp.now(tz="UTC").to_pydatetime(),
    )
    result = predict_with(loaded, loaded.schema.parse([{"x": 4.0}, {"x": 10}]))
    assert np.allclose(result.predictions, [9.0, 21.0])
    assert result.probabilities is None
    assert result.labels is None
    assert loaded.describe()["inputs"] is None
    typed = replace(loaded, schema=InputSchema((ColumnSpec("x", "double"),)))
    assert predict_with(typed, typed.schema.parse([{"x": 1, "z": "ignored"}])).predictions == [
        pytest.approx(3.0)
    ]
    loaded.batcher.close()
    typed.batcher.close()


def test_a_model_that_cannot_load_leaves_the_host_not_ready(
    project: ChurnProject, tmp_path: Path
) -> None:
    host = ModelHost(
        project.registry,
        [ServedModelConfig(name=MODEL, alias="nobody")],
        poll_interval=60,
        max_rows=10,
    )
    host.start()
    assert not host.ready
    (entry,) = host.served()
    assert entry["loaded"] is False
    assert "no 'nobody' version" in entry["error"]
    with pytest.raises(NotServedError) as caught:
        host.parse(MODEL, project.rows(1))
    assert caught.value.fields["status"] == 503
    host.close()


def test_each_batch_is_reported_to_the_hook(project: ChurnProject) -> None:
    seen: list[tuple[str, str, int, int]] = []
    host = ModelHost(
        project.registry,
        [ServedModelConfig(name=MODEL, max_batch=8)],
        poll_interval=60,
        max_rows=10,
        on_batch=lambda model, version, requests, rows, seconds: seen.append(
            (model, version, requests, rows)
        ),
    )
    host.start()
    seen.clear()  # the warm-up batch
    predict(host, project.rows(3))
    host.close()
    assert seen == [(MODEL, "1", 1, 3)]


def test_encoded_classes_answer_with_the_tagged_labels(project: ChurnProject) -> None:
    """Training fits on encoded labels (classes_ 0, 1) and tags the real ones in that order."""
    frame = project.test[FEATURES].assign(churned=(project.test["churned"] == "Yes").astype(int))
    encoded = clone(project.models["1"]).fit(frame[FEATURES], frame["churned"])
    loaded = LoadedModel(
        name="churn",
        version="9",
        info=None,  # type: ignore[arg-type]  # not read when scoring
        model=encoded,
        schema=InputSchema(None),
        task="binary",
        threshold=THRESHOLD,
        positive_class="Yes",
        classes=["No", "Yes"],
        loaded_at=pd.Timestamp.now(tz="UTC").to_pydatetime(),
    )
    rows = project.rows(50)
    result = predict_with(loaded, loaded.schema.parse(rows))
    loaded.batcher.close()
    proba = encoded.predict_proba(pd.DataFrame(rows)[FEATURES])[:, 1]
    assert set(result.predictions) <= {"No", "Yes"}
    assert [p["Yes"] for p in result.probabilities or []] == proba.tolist()
    assert result.labels == ["Yes" if p >= THRESHOLD else "No" for p in proba]
