"""InputSchema: MLflow signature -> column specs; JSON rows -> typed columns or 422 errors."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
import pytest
from mlflow.models import infer_signature
from mlflow.types.schema import ColSpec, Schema, TensorSpec
from tests.serve.churn_project import FEATURES, churn_frame

from loopline.errors import SignatureError
from loopline.serve.signature import MAX_ERRORS, ColumnSpec, InputSchema, ParsedRows
from loopline.store.tracking import quiet_mlflow

CHURN = InputSchema(
    (
        ColumnSpec("tenure", "double"),
        ColumnSpec("charges", "double"),
        ColumnSpec("contract", "string"),
        ColumnSpec("seats", "long"),
    )
)
ROW = {"tenure": 12.5, "charges": 70.0, "contract": "monthly", "seats": 3}


def errors_of(schema: InputSchema, rows: Any, **kwargs: Any) -> list[tuple[list[Any], str]]:
    with pytest.raises(SignatureError) as caught:
        schema.parse(rows, **kwargs)
    return [(e["loc"], e["type"]) for e in caught.value.errors]


def test_schema_from_the_churn_signature() -> None:
    frame = churn_frame(20, seed=0)[FEATURES]
    with quiet_mlflow():
        signature = infer_signature(frame, np.zeros(20))
    schema = InputSchema.from_signature(signature)
    assert schema == CHURN
    assert schema.describe() == [
        {"name": "tenure", "type": "double", "required": True},
        {"name": "charges", "type": "double", "required": True},
        {"name": "contract", "type": "string", "required": True},
        {"name": "seats", "type": "long", "required": True},
    ]


def test_valid_rows_become_typed_columns_and_the_model_frame() -> None:
    rows = [ROW, {"tenure": 3, "charges": 1e3, "contract": "yearly", "seats": 4.0, "extra": [1]}]
    parsed = CHURN.parse(rows)
    arrays = parsed.arrays()
    assert parsed.n == 2
    assert arrays["tenure"].dtype == np.float64
    assert arrays["tenure"].tolist() == [12.5, 3.0]
    assert arrays["seats"].dtype == np.int64
    assert arrays["seats"].tolist() == [3, 4]
    assert arrays["contract"].tolist() == ["monthly", "yearly"]
    assert "extra" not in arrays  # unknown fields are ignored
    expected = pd.DataFrame([{k: r[k] for k in FEATURES} for r in rows])
    expected["tenure"] = expected["tenure"].astype(float)
    expected["seats"] = expected["seats"].astype(int)
    pd.testing.assert_frame_equal(parsed.frame(), expected)


def test_every_error_is_reported_with_its_location() -> None:
    rows = [
        {"tenure": True, "charges": "70", "contract": 3, "seats": 2.5},
        {"charges": None, "contract": "monthly", "seats": False},
        "not an object",
    ]
    assert errors_of(CHURN, rows) == [(["body", "rows", 2], "dict_type")]
    assert errors_of(CHURN, rows[:2]) == [
        (["body", "rows", 0, "tenure"], "float_type"),
        (["body", "rows", 1, "tenure"], "missing"),
        (["body", "rows", 0, "charges"], "float_type"),
        (["body", "rows", 1, "charges"], "float_type"),
        (["body", "rows", 0, "contract"], "string_type"),
        (["body", "rows", 0, "seats"], "int_from_float"),
        (["body", "rows", 1, "seats"], "int_type"),
    ]


def test_error_details_follow_fastapi() -> None:
    with pytest.raises(SignatureError) as caught:
        CHURN.parse([{**ROW, "charges": None, "tenure": "x"}])
    first, null = caught.value.errors
    assert first == {
        "loc": ["body", "rows", 0, "tenure"],
        "msg": "Input should be a valid number",
        "type": "float_type",
        "input": "x",
    }
    assert null["input"] is None
    assert "null" in null["msg"]
    assert "2 invalid field(s)" in caught.value.message


def test_the_list_itself_is_checked() -> None:
    assert errors_of(CHURN, {"tenure": 1}) == [(["body", "rows"], "list_type")]
    assert errors_of(CHURN, []) == [(["body", "rows"], "too_short")]
    assert errors_of(CHURN, [ROW] * 3, max_rows=2) == [(["body", "rows"], "too_long")]
    assert CHURN.parse([ROW] * 2, max_rows=2).n == 2


def test_errors_are_capped() -> None:
    rows = [{"tenure": "bad"}] * 40
    found = errors_of(CHURN, rows)
    assert len(found) == MAX_ERRORS


@pytest.mark.parametrize(
    ("kind", "good", "bad"),
    [
        ("double", [1, 2.5, -3], [True, "1", [1]]),
        ("float", [1, 2.5], [False, {}]),
        ("long", [1, 2.0, -(2**63)], [1.5, True, "2", 2**63]),
        ("integer", [1, 2**31 - 1], [2**31, 0.1]),
        ("string", ["a", ""], [1, True, None]),
        ("boolean", [True, False], [1, 0, "true"]),
        ("datetime", ["2024-05-01T10:00:00", "2024-05-01", "2024-05-01T12:00:00+02:00"], [1, "x"]),
    ],
)
def test_each_type_accepts_and_rejects(kind: str, good: list[Any], bad: list[Any]) -> None:
    schema = InputSchema((ColumnSpec("x", kind),))
    schema.parse([{"x": v} for v in good]).arrays()
    found = errors_of(schema, [{"x": v} for v in bad])
    assert [loc for loc, _ in found] == [["body", "rows", i, "x"] for i in range(len(bad))]


def test_datetimes_are_parsed_to_utc() -> None:
    schema = InputSchema((ColumnSpec("at", "datetime"),))
    at = schema.parse([{"at": "2024-05-01T12:00:00+02:00"}, {"at": "2024-05-01T10:30:00Z"}])
    assert at.arrays()["at"].tolist() == [datetime(2024, 5, 1, 10), datetime(2024, 5, 1, 10, 30)]


def test_optional_columns_may_be_absent_or_null() -> None:
    schema = InputSchema(
        (
            ColumnSpec("a", "double", required=False),
            ColumnSpec("n", "long", required=False),
            ColumnSpec("s", "string", required=False),
            ColumnSpec("b", "boolean", required=False),
        )
    )
    arrays = schema.parse([{"a": 1.0, "n": 2, "s": "x", "b": True}, {"a": None}]).arrays()
    assert np.isnan(arrays["a"][1])
    assert np.isnan(arrays["n"][1])
    assert arrays["s"].tolist() == ["x", None]
    assert arrays["b"].tolist() == [True, None]


def test_without_a_signature_rows_pass_as_given() -> None:
    schema = InputSchema.from_signature(None)
    assert schema.columns is None
    assert schema.describe() is None
    parsed = schema.parse([{"anything": [1, 2]}, {"b": "x"}])
    assert parsed.records == [{"anything": [1, 2]}, {"b": "x"}]
    assert list(parsed.frame().columns) == ["anything", "b"]
    assert errors_of(schema, [1]) == [(["body", "rows", 0], "dict_type")]
    tensor = Schema([TensorSpec(np.dtype("float64"), (-1, 3))])
    assert InputSchema.from_signature(type("Sig", (), {"inputs": tensor})()).columns is None


def test_columns_of_other_mlflow_types_pass_unchecked() -> None:
    from mlflow.types.schema import Array

    signature = type("Sig", (), {"inputs": Schema([ColSpec(Array("double"), "v")])})()
    schema = InputSchema.from_signature(signature)
    assert schema.columns == (ColumnSpec("v", "any"),)
    cells = schema.parse([{"v": [1.0, 2.0]}, {"v": [3.0]}]).arrays()["v"]
    assert cells.shape == (2,)
    assert cells[0] == [1.0, 2.0]
    assert errors_of(schema, [{"v": None}]) == [(["body", "rows", 0, "v"], "value_error")]
    unnamed = type("Sig", (), {"inputs": Schema([ColSpec("double")])})()
    assert InputSchema.from_signature(unnamed).columns is None


def test_concat_joins_requests_into_one_batch() -> None:
    parts = [CHURN.parse([ROW]), CHURN.parse([{**ROW, "seats": 9}] * 2)]
    batch = ParsedRows.concat(parts)
    assert batch.n == 3
    assert batch.arrays()["seats"].tolist() == [3, 9, 9]
    assert ParsedRows.concat(parts[:1]) is parts[0]
    free = InputSchema(None)
    joined = ParsedRows.concat([free.parse([{"a": 1}]), free.parse([{"a": 2}])])
    assert joined.records == [{"a": 1}, {"a": 2}]


@pytest.mark.parametrize(
    ("field", "value", "kind"),
    [
        ("tenure", True, "float_type"),
        ("seats", 2**63, "int_overflow"),
        ("seats", 2.5, "int_from_float"),
        ("contract", None, "string_type"),
    ],
)
def test_a_single_row_gets_the_same_checks(field: str, value: Any, kind: str) -> None:
    assert errors_of(CHURN, [{**ROW, field: value}]) == [(["body", "rows", 0, field], kind)]
    assert CHURN.parse([ROW]).columns == {k: [v] for k, v in ROW.items()}
    assert CHURN.parse([{**ROW, "seats": 4.0}]).columns["seats"] == [4]  # type: ignore[index]
