from __future__ import annotations

import datetime as dt
import json
from typing import Any, Literal

import polars as pl
import pytest

from loopline.config.cleanse import CleanseStep, CleanseStepSpec
from loopline.errors import ContractError
from loopline.ingest.cleanse import apply_steps, default_string_steps, validate_steps
from loopline.ingest.quarantine import QUARANTINE_SCHEMA, StageResult

AT = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC)


def specs(*raw: dict[str, Any]) -> list[CleanseStepSpec]:
    return [CleanseStep.validate_python(s) for s in raw]


def frame(**columns: Any) -> pl.DataFrame:
    """A chunk as the pipeline hands it over: payload columns plus lineage."""
    df = pl.DataFrame(columns)
    return df.with_columns(
        pl.lit("orders.csv").alias("_source"),
        pl.lit("b1").alias("_batch_id"),
        pl.lit(AT).alias("_ingested_at"),
    )


def run(
    df: pl.DataFrame, *raw: dict[str, Any], phase: Literal["string", "value"] = "value"
) -> StageResult:
    return apply_steps(df, specs(*raw), phase=phase)


def payload(result: StageResult) -> dict[str, list[Any]]:
    return result.data.drop("_source", "_batch_id", "_ingested_at").to_dict(as_series=False)


def quarantined(result: StageResult) -> list[tuple[str, str, str]]:
    return list(result.quarantine.select("_rule", "_column", "_raw_value").iter_rows())


# --- null tokens, defaults ---------------------------------------------------------------


def test_default_null_tokens_turn_common_placeholders_into_null() -> None:
    df = frame(a=["N/A", "", " null ", "NaN", "-", "x", None], n=[1, 2, 3, 4, 5, 6, 7])
    df = df.with_columns(pl.lit("-").alias("_source"))
    result = apply_steps(df, default_string_steps([]), phase="string")
    assert payload(result) == {
        "a": [None, None, None, None, None, "x", None],
        "n": list(range(1, 8)),
    }
    assert result.data["_source"].to_list() == ["-"] * 7  # lineage is never cleansed


def test_default_string_steps_prepends_null_tokens_only_when_none_declared() -> None:
    declared = specs({"step": "null_tokens", "tokens": ["?"]}, {"step": "trim"})
    assert default_string_steps(declared) == declared
    added = default_string_steps(specs({"step": "trim"}))
    assert [s.step for s in added] == ["null_tokens", "trim"]
    result = apply_steps(frame(a=["?", "N/A"]), declared, phase="string")
    assert payload(result) == {"a": [None, "N/A"]}


def test_null_tokens_on_named_columns_only() -> None:
    df = frame(a=["none", " none"], b=["none", "x"])
    result = run(df, {"step": "null_tokens", "tokens": ["none"], "columns": ["a"]}, phase="string")
    assert payload(result) == {"a": [None, None], "b": ["none", "x"]}


def test_string_steps_skip_an_all_null_column() -> None:
    df = frame(a=pl.Series([None, None], dtype=pl.Null), b=[" x", "y "])
    result = run(df, {"step": "trim", "columns": ["a", "b"]}, phase="string")
    assert payload(result) == {"a": [None, None], "b": ["x", "y"]}


@pytest.mark.parametrize(
    ("tokens_on", "trim_on"),
    [(None, None), (None, ["b"]), (["a"], None), (["a"], ["b"]), (["b", "c"], ["a", "b", "c"])],
)
@pytest.mark.parametrize("unpadded", [frozenset(), frozenset({"c"})])
def test_null_tokens_then_trim_in_one_pass_equals_the_steps_one_by_one(
    tokens_on: list[str] | None, trim_on: list[str] | None, unpadded: frozenset[str]
) -> None:
    # null_tokens right before trim strips the columns both name once: same values.
    values = [" N/A ", "N/A", "  x", "y\t", "", " ", "-", None, "\u3000null\u3000", "n /a"]
    clean = ["N/A", "x", "", "-", None, "null", "y z", "NaN", "a", "b"]  # no value padded
    df = frame(a=values, b=list(reversed(values)), c=clean)
    steps = specs(
        {"step": "null_tokens", "columns": tokens_on}, {"step": "trim", "columns": trim_on}
    )
    together = apply_steps(df, steps, phase="string", unpadded=unpadded)
    one_by_one = df
    for step in steps:
        one_by_one = apply_steps(one_by_one, [step], phase="string", unpadded=unpadded).data
        unpadded = frozenset()  # only the first step may use it
    assert together.data.to_dict(as_series=False) == one_by_one.to_dict(as_series=False)


def test_trim_after_null_tokens_still_checks_its_columns() -> None:
    steps = specs({"step": "null_tokens"}, {"step": "trim", "columns": ["n"]})
    with pytest.raises(ContractError, match=r"cleanse step 1 \(trim\) needs a string column"):
        apply_steps(frame(a=[" x"], n=[1]), steps, phase="string")


# --- trim, case, unicode, rename ---------------------------------------------------------


def test_trim_strips_every_string_payload_column() -> None:
    df = frame(a=["  x ", "\ty\n"], b=[" z", None], n=[1, 2]).with_columns(
        pl.lit(" src ").alias("_source")
    )
    result = run(df, {"step": "trim"}, phase="string")
    assert payload(result) == {"a": ["x", "y"], "b": ["z", None], "n": [1, 2]}
    assert result.data["_source"].to_list() == [" src ", " src "]


def test_trim_named_columns_only() -> None:
    result = run(frame(a=[" x"], b=[" y"]), {"step": "trim", "columns": ["b"]}, phase="string")
    assert payload(result) == {"a": [" x"], "b": ["y"]}


@pytest.mark.parametrize(
    ("to", "expected"),
    [("lower", "hello wörld"), ("upper", "HELLO WÖRLD"), ("title", "Hello Wörld")],
)
def test_case(to: str, expected: str) -> None:
    result = run(
        frame(a=["hELLo wÖrld"]), {"step": "case", "columns": ["a"], "to": to}, phase="string"
    )
    assert payload(result) == {"a": [expected]}


@pytest.mark.parametrize(
    ("form", "expected"),
    [
        ("NFC", "\u00e9\ufb01"),
        ("NFD", "e\u0301\ufb01"),
        ("NFKC", "\u00e9fi"),
        ("NFKD", "e\u0301fi"),
    ],
)
def test_normalize_unicode(form: str, expected: str) -> None:
    df = frame(a=["e\u0301\ufb01"])  # e + combining acute, then the 'fi' ligature
    result = run(df, {"step": "normalize_unicode", "form": form}, phase="string")
    assert payload(result) == {"a": [expected]}


def test_rename() -> None:
    result = run(frame(a=["1"], b=["2"]), {"step": "rename", "mapping": {"a": "x"}}, phase="string")
    assert result.data.columns == ["x", "b", "_source", "_batch_id", "_ingested_at"]


def test_rename_of_a_missing_column_names_it_and_the_columns_present() -> None:
    with pytest.raises(ContractError) as info:
        run(frame(a=["1"], b=["2"]), {"step": "rename", "mapping": {"c": "x"}}, phase="string")
    assert str(info.value).startswith(
        "cleanse step 0 (rename) refers to missing column 'c'; columns present: ['a', 'b']"
    )
    assert info.value.fields["column"] == "c"


def test_rename_onto_an_existing_column_is_refused() -> None:
    with pytest.raises(ContractError, match="would overwrite existing column 'b'"):
        run(frame(a=["1"], b=["2"]), {"step": "rename", "mapping": {"a": "b"}}, phase="string")


# --- cast ----------------------------------------------------------------------------------


def test_cast_converts_strings_and_quarantines_values_that_fail() -> None:
    df = frame(
        id=["1", "2", "3", "4"],
        qty=[" 5", "five", None, "7"],
        price=["1.5", "2", "x", "3e2"],
        ok=["yes", "False", "1", "maybe"],
        day=["2024-01-02", "2024-02-03", "2024-03-04", "2024-04-05"],
    )
    result = run(
        df,
        {
            "step": "cast",
            "columns": {
                "qty": "int64",
                "price": "float64",
                "ok": "bool",
                "day": "date",
                "id": "int64",
            },
        },
    )
    assert payload(result) == {
        "id": [1],
        "qty": [5],
        "price": [1.5],
        "ok": [True],
        "day": [dt.date(2024, 1, 2)],
    }
    assert result.data.schema["qty"] == pl.Int64
    assert sorted(quarantined(result)) == [
        ("cast:ok", "ok", "maybe"),
        ("cast:price", "price", "x"),
        ("cast:qty", "qty", "five"),
    ]
    assert result.counts == {"cast:qty": 1, "cast:price": 1, "cast:ok": 1}


def test_cast_quarantine_rows_carry_lineage_and_the_raw_record() -> None:
    result = run(frame(qty=["1", "bad"]), {"step": "cast", "columns": {"qty": "int64"}})
    assert result.quarantine.schema == pl.Schema(QUARANTINE_SCHEMA)
    row = result.quarantine.row(0, named=True)
    assert row["_source"] == "orders.csv"
    assert row["_batch_id"] == "b1"
    assert row["_ingested_at"] == AT
    assert json.loads(row["_record"]) == {"qty": "bad"}


def test_cast_float_to_int_quarantines_fractions_instead_of_truncating() -> None:
    result = run(frame(x=[2.0, 2.5, None]), {"step": "cast", "columns": {"x": "int64"}})
    assert payload(result) == {"x": [2, None]}
    assert quarantined(result) == [("cast:x", "x", "2.5")]


def test_cast_datetime_and_to_string() -> None:
    df = frame(ts=["2024-01-02 03:04:05", "nope"], n=[1, 2])
    result = run(df, {"step": "cast", "columns": {"ts": "datetime", "n": "string"}})
    utc = dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC)  # same as contract datetimes: UTC
    assert payload(result) == {"ts": [utc], "n": ["1"]}
    assert quarantined(result) == [("cast:ts", "ts", "nope")]


def test_cast_to_an_unknown_type_is_a_contract_error() -> None:
    with pytest.raises(ContractError, match="casts 'x' to unknown type 'integer'") as info:
        validate_steps(specs({"step": "cast", "columns": {"x": "integer"}}))
    assert "int64" in (info.value.hint or "")


# --- derive --------------------------------------------------------------------------------


def test_derive_adds_a_column_from_a_sql_expression() -> None:
    df = frame(price=[2.0, 3.0], qty=[3, None], name=["a", "b"])
    result = run(
        df,
        {"step": "derive", "column": "total", "expr": "price * qty"},
        {"step": "derive", "column": "label", "expr": "upper(name) || '-' || price"},
    )
    assert payload(result)["total"] == [6.0, None]
    assert payload(result)["label"] == ["A-2.0", "B-3.0"]


def test_a_bad_derive_expression_fails_up_front_whatever_the_phase() -> None:
    steps = specs({"step": "trim"}, {"step": "derive", "column": "t", "expr": "price * * qty"})
    with pytest.raises(ContractError) as info:
        apply_steps(frame(price=[" 1"]), steps, phase="string")
    assert str(info.value).startswith(
        "cleanse step 1 (derive) has an invalid SQL expression 'price * * qty'"
    )


def test_derive_over_a_missing_column_names_it() -> None:
    with pytest.raises(ContractError, match=r"step 0 \(derive\) refers to missing column 'qty'"):
        run(frame(price=[1.0]), {"step": "derive", "column": "t", "expr": "price * qty"})


# --- convert_units -------------------------------------------------------------------------


def test_convert_units_in_place_and_into_a_new_column() -> None:
    df = frame(temp=[212.0, 32.0], dist=[1, None])
    result = run(
        df,
        {"step": "convert_units", "column": "temp", "from": "degF", "to": "degC"},
        {"step": "convert_units", "column": "dist", "from": "mi", "to": "km", "into": "dist_km"},
    )
    assert payload(result) == {"temp": [100.0, 0.0], "dist": [1, None], "dist_km": [1.609344, None]}


def test_convert_units_with_an_unknown_unit_lists_the_known_ones() -> None:
    with pytest.raises(ContractError) as info:
        validate_steps(specs({"step": "convert_units", "column": "t", "from": "C", "to": "degF"}))
    message = str(info.value)
    assert message.startswith("cleanse step 0 (convert_units) on 't': unknown unit 'C'")
    assert "temperature: K, degC, degF" in message


def test_convert_units_between_dimensions_is_refused() -> None:
    with pytest.raises(ContractError, match=r"cannot convert 'kg' \(mass\) to 'km' \(length\)"):
        validate_steps(specs({"step": "convert_units", "column": "w", "from": "kg", "to": "km"}))


def test_convert_units_needs_a_numeric_column() -> None:
    with pytest.raises(ContractError, match="needs a numeric column, 't' is String"):
        run(frame(t=["1"]), {"step": "convert_units", "column": "t", "from": "m", "to": "km"})


# --- dedupe --------------------------------------------------------------------------------


def test_dedupe_exact_rows_ignores_lineage_and_keeps_the_first() -> None:
    df = frame(a=[1, 2, 1, 1], b=["x", "y", "x", "z"]).with_columns(
        pl.Series("_batch_id", ["b1", "b1", "b2", "b2"])
    )
    result = run(df, {"step": "dedupe"})
    assert payload(result) == {"a": [1, 2, 1], "b": ["x", "y", "z"]}
    assert result.data["_batch_id"].to_list() == ["b1", "b1", "b2"]
    assert result.deduplicated == 1


def test_dedupe_by_key_keeps_the_latest_row_nulls_last() -> None:
    df = frame(
        id=[1, 2, 1, 3, 2, 3, 4, 4],
        version=[1, 5, 3, None, 5, 2, None, None],
        tag=["a", "b", "c", "d", "e", "f", "g", "h"],
    )
    result = run(df, {"step": "dedupe", "key": ["id"], "keep_latest_by": "version"})
    # id 1: version 3 wins; id 2: tie on 5, last row wins; id 3: non-null beats null;
    # id 4: all null, last row wins. Survivors keep their input order.
    assert payload(result) == {
        "id": [1, 2, 3, 4],
        "version": [3, 5, 2, None],
        "tag": ["c", "e", "f", "h"],
    }
    assert result.deduplicated == 4


def test_dedupe_by_key_without_order_keeps_the_last_row() -> None:
    df = frame(k1=["a", "a", "b", "a"], k2=[1, 1, 1, 2], v=[10, 20, 30, 40])
    result = run(df, {"step": "dedupe", "key": ["k1", "k2"]})
    assert payload(result) == {"k1": ["a", "b", "a"], "k2": [1, 1, 2], "v": [20, 30, 40]}
    assert result.deduplicated == 1


@pytest.mark.parametrize(
    ("step", "message"),
    [
        ({"step": "dedupe", "keep_latest_by": "v"}, "needs a non-empty 'key'"),
        ({"step": "dedupe", "key": []}, "needs a non-empty 'key'"),
        ({"step": "dedupe", "key": ["_batch_id"]}, "touches internal column '_batch_id'"),
    ],
)
def test_bad_dedupe_steps(step: dict[str, Any], message: str) -> None:
    with pytest.raises(ContractError, match=message):
        validate_steps(specs(step))


def test_dedupe_may_order_by_a_lineage_column() -> None:
    df = frame(id=[1, 1]).with_columns(
        pl.Series("_ingested_at", [AT, AT - dt.timedelta(days=1)]),
        pl.Series("_batch_id", ["new", "old"]),
    )
    result = run(df, {"step": "dedupe", "key": ["id"], "keep_latest_by": "_ingested_at"})
    assert result.data["_batch_id"].to_list() == ["new"]


# --- impute --------------------------------------------------------------------------------


def test_impute_constant() -> None:
    df = frame(a=[1, None], s=[None, "x"])
    result = run(
        df,
        {"step": "impute", "columns": ["a"], "strategy": "constant", "value": 0},
        {"step": "impute", "columns": ["s"], "strategy": "constant", "value": "unknown"},
    )
    assert payload(result) == {"a": [1, 0], "s": ["unknown", "x"]}
    assert result.data.schema["a"] == pl.Int64


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [("mean", 4.0), ("median", 2.5), ("mode", 1.0)],
)
def test_impute_statistics_on_the_batch(strategy: str, expected: float) -> None:
    df = frame(x=[1.0, None, 1.0, 4.0, 10.0])
    result = run(df, {"step": "impute", "columns": ["x"], "strategy": strategy})
    assert payload(result) == {"x": [1.0, expected, 1.0, 4.0, 10.0]}


def test_impute_mean_of_an_integer_column_rounds_and_keeps_the_type() -> None:
    result = run(frame(x=[1, 2, None]), {"step": "impute", "columns": ["x"], "strategy": "mean"})
    assert payload(result) == {"x": [1, 2, 2]}  # mean 1.5 rounds half to even
    assert result.data.schema["x"] == pl.Int64


def test_impute_mode_of_strings_breaks_ties_by_the_smallest_value() -> None:
    df = frame(s=["b", "a", None, "b", "a"])
    result = run(df, {"step": "impute", "columns": ["s"], "strategy": "mode"})
    assert payload(result) == {"s": ["b", "a", "a", "b", "a"]}


def test_impute_mean_per_group_falls_back_to_the_batch_mean() -> None:
    df = frame(g=["a", "a", "b", "b", "b", "c"], x=[1.0, None, 10.0, None, 20.0, None])
    result = run(df, {"step": "impute", "columns": ["x"], "strategy": "mean", "group_by": ["g"]})
    # group c has no value: the batch mean (31 / 3) fills it
    assert payload(result)["x"] == [1.0, 1.0, 10.0, 15.0, 20.0, pytest.approx(31 / 3)]


def test_impute_ffill_per_group_in_row_order() -> None:
    df = frame(d=["a", "b", "a", "b", "a", "c"], x=[1, 5, None, None, None, None])
    grouped = run(df, {"step": "impute", "columns": ["x"], "strategy": "ffill", "group_by": ["d"]})
    assert payload(grouped)["x"] == [1, 5, 1, 5, 1, None]
    plain = run(df, {"step": "impute", "columns": ["x"], "strategy": "ffill"})
    assert payload(plain)["x"] == [1, 5, 5, 5, 5, 5]


@pytest.mark.parametrize(
    ("step", "message"),
    [
        ({"strategy": "constant"}, "'value' goes with strategy 'constant'"),
        ({"strategy": "mean", "value": 1}, "'value' goes with strategy 'constant'"),
        ({"strategy": "mean", "columns": ["s"]}, "needs a numeric column, 's' is String"),
        ({"strategy": "constant", "value": "zero"}, "cannot fill \\['x'\\] with 'zero'"),
        ({"strategy": "mean", "group_by": ["g"]}, "refers to missing column 'g'"),
    ],
)
def test_bad_impute_steps(step: dict[str, Any], message: str) -> None:
    full = {"step": "impute", "columns": ["x"], **step}
    with pytest.raises(ContractError, match=message):
        run(frame(x=[1, None], s=["a", None]), full)


# --- outliers ------------------------------------------------------------------------------

# x: Q1 = 2, Q3 = 4, IQR = 2 -> normal range [-1, 7]; 100 is the outlier.
IQR_VALUES = [1.0, 2.0, 3.0, 4.0, 100.0, None]
# y: 19 zeros and a 10: mean 0.5, std sqrt(5), z(10) = 4.25 > 3; range 0.5 ± 3*sqrt(5).
Z_VALUES = [0] * 19 + [10]


def test_outliers_iqr_flag() -> None:
    result = run(frame(x=IQR_VALUES), {"step": "outliers", "columns": ["x"]})
    assert payload(result)["x_outlier"] == [False, False, False, False, True, False]
    assert result.data.height == 6


def test_outliers_iqr_clip() -> None:
    result = run(frame(x=IQR_VALUES), {"step": "outliers", "columns": ["x"], "action": "clip"})
    assert payload(result) == {"x": [1.0, 2.0, 3.0, 4.0, 7.0, None]}


def test_outliers_iqr_quarantine_keeps_lineage_and_raw_value() -> None:
    df = frame(id=[1, 2, 3, 4, 5, 6], x=IQR_VALUES)
    result = run(df, {"step": "outliers", "columns": ["x"], "action": "quarantine"})
    assert payload(result) == {"id": [1, 2, 3, 4, 6], "x": [1.0, 2.0, 3.0, 4.0, None]}
    assert quarantined(result) == [("outlier:x", "x", "100.0")]
    assert result.counts == {"outlier:x": 1}
    row = result.quarantine.row(0, named=True)
    assert (row["_source"], row["_batch_id"], row["_ingested_at"]) == ("orders.csv", "b1", AT)
    assert json.loads(row["_record"]) == {"id": 5, "x": 100.0}


def test_outliers_iqr_threshold() -> None:
    # threshold 0: anything outside [Q1, Q3] = [2, 4]
    step = {"step": "outliers", "columns": ["x"], "threshold": 0}
    assert payload(run(frame(x=IQR_VALUES), step))["x_outlier"] == [
        True,
        False,
        False,
        False,
        True,
        False,
    ]


def test_outliers_zscore_flag() -> None:
    result = run(frame(y=Z_VALUES), {"step": "outliers", "columns": ["y"], "method": "zscore"})
    assert payload(result)["y_outlier"] == [False] * 19 + [True]


def test_outliers_zscore_clip_keeps_an_integer_column_integer() -> None:
    step = {"step": "outliers", "columns": ["y"], "method": "zscore", "action": "clip"}
    result = run(frame(y=Z_VALUES), step)
    assert payload(result)["y"] == [0] * 19 + [7]  # floor(0.5 + 3 * sqrt(5)) = 7
    assert result.data.schema["y"] == pl.Int64


def test_outliers_zscore_quarantine() -> None:
    step = {"step": "outliers", "columns": ["y"], "method": "zscore", "action": "quarantine"}
    result = run(frame(y=Z_VALUES), step)
    assert payload(result)["y"] == [0] * 19
    assert quarantined(result) == [("outlier:y", "y", "10")]
    assert result.quarantine["_batch_id"].to_list() == ["b1"]


def test_outliers_zscore_threshold_is_applied_to_the_absolute_score() -> None:
    # mean 0, std 2 (sample): z = -1.5, 0.5, 0.5, 0.5; threshold 1 flags only the low one
    df = frame(y=[-3.0, 1.0, 1.0, 1.0])
    step = {"step": "outliers", "columns": ["y"], "method": "zscore", "threshold": 1}
    assert payload(run(df, step))["y_outlier"] == [True, False, False, False]


def test_outliers_per_column_quarantine_each_failure_once_per_column() -> None:
    df = frame(a=[1, 2, 3, 4, 100, 2], b=[1, 2, 3, 4, 100, -100])
    result = run(df, {"step": "outliers", "columns": ["a", "b"], "action": "quarantine"})
    assert payload(result) == {"a": [1, 2, 3, 4], "b": [1, 2, 3, 4]}
    assert quarantined(result) == [
        ("outlier:a", "a", "100"),
        ("outlier:b", "b", "100"),
        ("outlier:b", "b", "-100"),
    ]
    assert result.counts == {"outlier:a": 1, "outlier:b": 2}


def test_outliers_on_too_few_values_flag_nothing() -> None:
    step = {"step": "outliers", "columns": ["y"], "method": "zscore"}
    assert payload(run(frame(y=[5.0]), step))["y_outlier"] == [False]


def test_outliers_need_a_numeric_column() -> None:
    with pytest.raises(ContractError, match=r"step 0 \(outliers\) needs a numeric column"):
        run(frame(s=["a"]), {"step": "outliers", "columns": ["s"]})


def test_negative_threshold_is_refused() -> None:
    with pytest.raises(ContractError, match="threshold must be >= 0"):
        validate_steps(specs({"step": "outliers", "columns": ["x"], "threshold": -1}))


# --- phases and general errors -------------------------------------------------------------


def test_string_phase_ignores_value_steps_and_vice_versa() -> None:
    steps = specs(
        {"step": "trim"},
        {"step": "impute", "columns": ["s"], "strategy": "constant", "value": "?"},
    )
    df = frame(s=[" a ", None])
    assert payload(apply_steps(df, steps, phase="string")) == {"s": ["a", None]}
    assert payload(apply_steps(df, steps, phase="value")) == {"s": [" a ", "?"]}


def test_value_steps_run_in_declared_order() -> None:
    df = frame(x=[1.0, None])
    impute_then_derive = run(
        df,
        {"step": "impute", "columns": ["x"], "strategy": "constant", "value": 5},
        {"step": "derive", "column": "y", "expr": "x * 2"},
    )
    derive_then_impute = run(
        df,
        {"step": "derive", "column": "y", "expr": "x * 2"},
        {"step": "impute", "columns": ["x"], "strategy": "constant", "value": 5},
    )
    assert payload(impute_then_derive)["y"] == [2.0, 10.0]
    assert payload(derive_then_impute)["y"] == [2.0, None]


def test_value_steps_on_an_empty_chunk() -> None:
    df = frame(x=pl.Series([], dtype=pl.Float64))
    result = run(
        df,
        {"step": "dedupe"},
        {"step": "impute", "columns": ["x"], "strategy": "mean"},
        {"step": "outliers", "columns": ["x"], "action": "quarantine"},
    )
    assert result.data.height == 0
    assert result.quarantine.height == 0


@pytest.mark.parametrize(
    ("step", "where", "column"),
    [
        ({"step": "case", "columns": ["nope"], "to": "lower"}, "0 (case)", "nope"),
        ({"step": "cast", "columns": {"nope": "int64"}}, "0 (cast)", "nope"),
        ({"step": "impute", "columns": ["nope"], "strategy": "mean"}, "0 (impute)", "nope"),
        ({"step": "outliers", "columns": ["nope"]}, "0 (outliers)", "nope"),
        ({"step": "dedupe", "key": ["nope"]}, "0 (dedupe)", "nope"),
        ({"step": "dedupe", "key": ["a"], "keep_latest_by": "nope"}, "0 (dedupe)", "nope"),
    ],
)
def test_steps_on_missing_columns_name_step_and_column(
    step: dict[str, Any], where: str, column: str
) -> None:
    phase: Literal["string", "value"] = "string" if step["step"] == "case" else "value"
    with pytest.raises(ContractError) as info:
        run(frame(a=["x"]), step, phase=phase)
    assert str(info.value).startswith(
        f"cleanse step {where} refers to missing column '{column}'; columns present: ['a']"
    )
    assert info.value.fields == {"step": f"cleanse step {where}", "column": column}


def test_string_steps_refuse_a_typed_column_named_explicitly() -> None:
    with pytest.raises(ContractError, match="needs a string column, 'n' is Int64"):
        run(frame(n=[1]), {"step": "trim", "columns": ["n"]}, phase="string")


@pytest.mark.parametrize(
    "step",
    [
        {"step": "trim", "columns": ["_source"]},
        {"step": "rename", "mapping": {"a": "_a"}},
        {"step": "derive", "column": "_x", "expr": "1"},
        {"step": "impute", "columns": ["_batch_id"], "strategy": "ffill"},
    ],
)
def test_steps_may_not_write_internal_columns(step: dict[str, Any]) -> None:
    with pytest.raises(ContractError, match="touches internal column '_"):
        validate_steps(specs(step))


def test_rename_of_two_columns_to_one_name_is_refused() -> None:
    with pytest.raises(ContractError, match="renames both 'a' and 'b' to 'x'"):
        validate_steps(specs({"step": "rename", "mapping": {"a": "x", "b": "x"}}))


def test_rename_steps_may_reuse_a_name_freed_by_an_earlier_one() -> None:
    result = run(
        frame(a=["1"], b=["2"]),
        {"step": "rename", "mapping": {"a": "x"}},
        {"step": "rename", "mapping": {"x": "y", "b": "x"}},
        phase="string",
    )
    assert payload(result) == {"y": ["1"], "x": ["2"]}
