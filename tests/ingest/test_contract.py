"""The data contract engine (loopline.ingest.contract): coercion, rules, drift, inference."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from typing import Any

import polars as pl
import pyarrow as pa
import pytest

from loopline.config.contracts import ContractConfig
from loopline.errors import ContractError, FatalRuleError, SchemaDriftError
from loopline.ingest.contract import ContractEngine, parse_duration
from loopline.ingest.quarantine import QUARANTINE_SCHEMA

INGESTED = datetime(2024, 5, 1, 12, tzinfo=UTC)
NOW = datetime(2024, 5, 10, 12, tzinfo=UTC)


def batch(**columns: Any) -> pl.DataFrame:
    """A frame as the pipeline hands it over: payload plus the lineage columns."""
    return pl.DataFrame(columns).with_columns(
        pl.lit("orders.csv").alias("_source"),
        pl.lit("b-1").alias("_batch_id"),
        pl.lit(INGESTED).alias("_ingested_at"),
    )


def engine(spec: dict[str, Any]) -> ContractEngine:
    return ContractEngine(ContractConfig.model_validate(spec), now=lambda: NOW)


def rules_of(quarantine: pl.DataFrame) -> list[str]:
    return quarantine["_rule"].to_list()


# --- coerce -------------------------------------------------------------------------------


def test_coerce_quarantines_unparseable_values_with_raw_value_record_and_lineage() -> None:
    e = engine({"columns": {"id": "int64", "amount": "float64"}})
    result = e.coerce(batch(id=["1", "2"], amount=[" 9.5 ", "1,234"]))
    assert result.data["amount"].to_list() == [9.5]
    assert result.data.schema["id"] == pl.Int64
    assert result.counts == {"type:amount": 1}
    row = result.quarantine.row(0, named=True)
    assert row["_rule"] == "type:amount"
    assert row["_column"] == "amount"
    assert row["_raw_value"] == "1,234"
    assert json.loads(row["_record"]) == {"id": "2", "amount": "1,234"}
    assert (row["_source"], row["_batch_id"], row["_ingested_at"]) == (
        "orders.csv",
        "b-1",
        INGESTED,
    )
    assert result.quarantine.schema == pl.Schema(QUARANTINE_SCHEMA)


def test_coerce_row_failing_two_columns_is_quarantined_twice_and_removed_once() -> None:
    e = engine({"columns": {"a": "int64", "b": "date"}})
    result = e.coerce(batch(a=["x", "1", "2"], b=["2024-01-01", "bad", "nope"]))
    assert result.data["a"].to_list() == []
    assert result.counts == {"type:a": 1, "type:b": 2}
    assert sorted(result.quarantine["_raw_value"].to_list()) == ["bad", "nope", "x"]


def test_coerce_converts_every_declared_type() -> None:
    e = engine(
        {
            "columns": {
                "i": "int32",
                "f": "float32",
                "ok": "bool",
                "d": "date",
                "ts": "datetime",
                "price": "decimal",
                "n": "string",
            }
        }
    )
    result = e.coerce(
        batch(
            i=["7"],
            f=["0.25"],
            ok=["Yes"],
            d=["2024-03-01"],
            ts=["2024-03-01T10:00:00+01:00"],
            price=["19.99"],
            n=[42],
        )
    )
    assert result.counts == {}
    row = result.data.row(0, named=True)
    assert (row["i"], row["f"], row["ok"], row["d"]) == (7, 0.25, True, date(2024, 3, 1))
    assert row["ts"] == datetime(2024, 3, 1, 9, tzinfo=UTC)
    assert str(row["price"]) == "19.990000000"
    assert row["n"] == "42"
    assert result.data.schema["price"] == pl.Decimal(38, 9)


def test_coerce_missing_required_column_quarantines_every_row() -> None:
    e = engine({"columns": {"id": "int64", "email": "string"}})
    result = e.coerce(batch(id=["1", "2"]))
    assert result.data.height == 0
    assert result.counts == {"presence:email": 2}
    assert set(rules_of(result.quarantine)) == {"presence:email"}


def test_coerce_missing_optional_column_is_added_as_typed_nulls() -> None:
    e = engine({"columns": {"id": "int64", "score": {"type": "float64", "required": False}}})
    result = e.coerce(batch(id=["1"]))
    assert result.data["score"].to_list() == [None]
    assert result.data.schema["score"] == pl.Float64


def test_coerce_leaves_undeclared_and_already_typed_columns_alone() -> None:
    e = engine({"columns": {"id": "int64"}})
    df = batch(id=[1, 2], extra=["  x ", None])
    result = e.coerce(df)
    assert result.data.equals(df)
    assert result.quarantine.height == 0


# --- rules --------------------------------------------------------------------------------


def test_not_null_shorthand_quarantines_nulls() -> None:
    result = engine({"columns": {"id": {"type": "int64", "nullable": False}}}).validate(
        batch(id=[1, None, 3]), None
    )
    assert result.data["id"].to_list() == [1, 3]
    assert result.counts == {"not_null:id": 1}
    assert result.quarantine["_raw_value"].to_list() == [None]


def test_range_shorthand_and_nulls_pass_other_checks() -> None:
    e = engine({"columns": {"amount": {"type": "float64", "min": 0, "max": 100}}})
    result = e.validate(batch(amount=[-1.0, 0.0, 100.0, 100.5, None]), None)
    assert result.data["amount"].to_list() == [0.0, 100.0, None]
    assert result.counts == {"range:amount": 2}
    assert result.quarantine["_raw_value"].to_list() == ["-1.0", "100.5"]


def test_range_on_a_decimal_column() -> None:
    e = engine({"columns": {"p": {"type": "decimal", "max": 10}}})
    typed = e.coerce(batch(p=["9.5", "10.5"])).data
    assert e.validate(typed, None).counts == {"range:p": 1}


def test_allowed_values_on_strings_and_numbers() -> None:
    e = engine(
        {
            "columns": {
                "status": {"allowed": ["new", "paid"]},
                "level": {"type": "float64", "allowed": [1, 2]},
            }
        }
    )
    df = batch(status=["new", "lost", None, "paid"], level=[1.0, 2.0, 3.0, None])
    result = e.validate(df, None)
    assert result.counts == {"allowed:status": 1, "allowed:level": 1}
    assert result.data["status"].to_list() == ["new", "paid"]


def test_regex_must_match_the_whole_value() -> None:
    e = engine({"columns": {"sku": {"regex": "[A-Z]{3}-\\d+"}}})
    result = e.validate(batch(sku=["ABC-1", "xABC-12", "ABC-12x", None]), None)
    assert result.data["sku"].to_list() == ["ABC-1", None]
    assert result.counts == {"regex:sku": 2}


def test_length_shorthand() -> None:
    e = engine({"columns": {"code": {"min_length": 2, "max_length": 3}}})
    result = e.validate(batch(code=["a", "ab", "abc", "abcd"]), None)
    assert result.data["code"].to_list() == ["ab", "abc"]
    assert result.counts == {"length:code": 2}


def test_unique_flags_every_copy_but_the_first_and_ignores_null_keys() -> None:
    e = engine({"columns": {"email": {"unique": True}}})
    result = e.validate(batch(email=["a", "b", "a", None, None, "a"]), None)
    assert result.data["email"].to_list() == ["a", "b", None, None]
    assert result.counts == {"unique:email": 2}


def test_primary_key_expands_to_composite_unique_and_not_null() -> None:
    e = engine({"primary_key": ["k1", "k2"]})
    result = e.validate(batch(k1=[1, 1, 1, None], k2=["x", "y", "x", "z"]), None)
    assert result.counts == {"unique:k1+k2": 1, "not_null:k1": 1}
    assert result.data.select("k1", "k2").rows() == [(1, "x"), (1, "y")]
    unique_row = result.quarantine.filter(pl.col("_rule") == "unique:k1+k2").row(0, named=True)
    assert unique_row["_column"] is None
    assert json.loads(unique_row["_record"]) == {"k1": 1, "k2": "x"}


def test_expression_rule_across_columns_with_null_passing() -> None:
    e = engine({"rules": [{"check": "expression", "expr": "price * quantity <= total"}]})
    df = batch(price=[2.0, 2.0, None], quantity=[3, 3, 1], total=[6.0, 5.0, 1.0])
    result = e.validate(df, None)
    assert result.data["total"].to_list() == [6.0, 1.0]
    assert result.counts == {"expression:price * quantity <= total": 1}


def test_explicit_rule_name_is_used() -> None:
    e = engine({"rules": [{"check": "range", "column": "x", "min": 0, "name": "positive_x"}]})
    assert e.validate(batch(x=[-1, 1]), None).counts == {"positive_x": 1}


def test_row_failing_several_rules_appears_in_each_and_is_removed_once() -> None:
    e = engine({"columns": {"code": {"min_length": 3, "regex": "[a-z]+"}, "n": {"type": "int64"}}})
    result = e.validate(batch(code=["A1", "abc"], n=[1, 2]), None)
    assert sorted(rules_of(result.quarantine)) == ["length:code", "regex:code"]
    assert result.data["n"].to_list() == [2]


def test_freshness_stale_batch_with_error_quarantines_every_row() -> None:
    e = engine({"rules": [{"check": "freshness", "column": "ts", "max_age": "7d"}]})
    stale = batch(ts=[NOW - timedelta(days=9), NOW - timedelta(days=8)])
    result = e.validate(stale, None)
    assert result.data.height == 0
    assert result.counts == {"freshness:ts": 2}
    fresh = batch(ts=[NOW - timedelta(days=9), NOW - timedelta(hours=1)])
    assert e.validate(fresh, None).counts == {}


def test_freshness_on_naive_and_date_columns() -> None:
    e = engine({"rules": [{"check": "freshness", "column": "d", "max_age": "2d"}]})
    assert e.validate(batch(d=[date(2024, 5, 1)]), None).counts == {"freshness:d": 1}
    naive = batch(d=[datetime(2024, 5, 10, 11)])
    assert e.validate(naive, None).counts == {}


def test_freshness_warn_counts_and_keeps_rows() -> None:
    e = engine(
        {"rules": [{"check": "freshness", "column": "ts", "max_age": "12h", "severity": "warn"}]}
    )
    result = e.validate(batch(ts=[NOW - timedelta(hours=13)]), None)
    assert result.warnings == {"freshness:ts": 1}
    assert result.counts == {}
    assert result.data.height == 1


def test_warn_severity_counts_rows_and_keeps_them() -> None:
    e = engine({"rules": [{"check": "range", "column": "x", "max": 10, "severity": "warn"}]})
    result = e.validate(batch(x=[5, 11, 12]), None)
    assert result.warnings == {"range:x": 2}
    assert result.data.height == 3
    assert result.quarantine.height == 0


def test_fatal_severity_raises_with_rule_count_and_example() -> None:
    e = engine(
        {"rules": [{"check": "allowed", "column": "c", "values": ["EUR"], "severity": "fatal"}]}
    )
    with pytest.raises(FatalRuleError) as info:
        e.validate(batch(c=["EUR", "USD", "GBP"]), None)
    assert info.value.fields == {
        "rule": "allowed:c",
        "failing_rows": 2,
        "example": "USD",
    }


def test_fatal_freshness_aborts_a_stale_batch() -> None:
    e = engine(
        {"rules": [{"check": "freshness", "column": "ts", "max_age": "30s", "severity": "fatal"}]}
    )
    with pytest.raises(FatalRuleError, match="freshness:ts"):
        e.validate(batch(ts=[NOW - timedelta(minutes=1)]), None)
    e.validate(batch(ts=[NOW - timedelta(seconds=10)]), None)


def test_explicit_rule_overrides_the_shorthand_of_the_same_name() -> None:
    e = engine(
        {
            "columns": {"id": {"nullable": False}},
            "rules": [{"check": "not_null", "column": "id", "severity": "fatal"}],
        }
    )
    with pytest.raises(FatalRuleError):
        e.validate(batch(id=[None]), None)


# --- contract errors ------------------------------------------------------------------------


def test_invalid_regex_fails_at_construction() -> None:
    with pytest.raises(ContractError, match="invalid pattern") as info:
        engine({"columns": {"sku": {"regex": "([A-Z"}}})
    assert info.value.fields["rule"] == "regex:sku"


def test_invalid_expression_fails_at_construction() -> None:
    with pytest.raises(ContractError, match="not valid SQL") as info:
        engine({"rules": [{"check": "expression", "expr": "price >> ; 1", "name": "bad"}]})
    assert info.value.fields == {"rule": "bad", "expr": "price >> ; 1"}


def test_invalid_duration_fails_at_construction() -> None:
    with pytest.raises(ContractError, match="duration"):
        engine({"rules": [{"check": "freshness", "column": "ts", "max_age": "a week"}]})
    assert parse_duration("15m") == timedelta(minutes=15)


def test_duplicate_rule_names_fail_at_construction() -> None:
    rule = {"check": "not_null", "column": "a"}
    with pytest.raises(ContractError, match="two rules"):
        engine({"rules": [rule, rule]})


def test_rule_on_a_column_the_batch_lacks_names_the_rule() -> None:
    e = engine({"rules": [{"check": "expression", "expr": "qty > 0"}]})
    with pytest.raises(ContractError, match="qty"):
        e.validate(batch(quantity=[1]), None)


def test_non_boolean_expression_and_type_mismatch_name_the_rule() -> None:
    e = engine({"rules": [{"check": "expression", "expr": "a + 1", "name": "sum"}]})
    with pytest.raises(ContractError, match="not a boolean"):
        e.validate(batch(a=[1]), None)
    e = engine({"rules": [{"check": "range", "column": "s", "min": 1}]})
    with pytest.raises(ContractError, match="range:s"):
        e.validate(batch(s=["x"]), None)


# --- schema drift ---------------------------------------------------------------------------

STORED = pa.schema(
    [
        ("id", pa.int64()),
        ("name", pa.string()),
        ("_source", pa.string()),
        ("_batch_id", pa.string()),
        ("_ingested_at", pa.timestamp("us", tz="UTC")),
    ]
)


def test_evolve_keeps_new_columns_and_fills_missing_with_stored_type() -> None:
    result = engine({}).validate(batch(id=[1, 2], email=["a@x", None]), STORED)
    assert result.drift is not None
    assert (result.drift.new, result.drift.missing) == (["email"], ["name"])
    assert result.data["email"].to_list() == ["a@x", None]
    assert result.data["name"].to_list() == [None, None]
    assert result.data.schema["name"] == pl.String
    assert result.quarantine.height == 0


def test_freeze_quarantine_drops_new_columns_and_quarantines_rows_using_them() -> None:
    e = engine({"schema_policy": "freeze", "on_drift": "quarantine"})
    result = e.validate(batch(id=[1, 2], name=["a", "b"], email=["a@x", None]), STORED)
    assert result.data.columns == ["id", "name", "_source", "_batch_id", "_ingested_at"]
    assert result.data["id"].to_list() == [2]
    assert result.counts == {"schema:new_column:email": 1}
    row = result.quarantine.row(0, named=True)
    assert (row["_column"], row["_raw_value"]) == ("email", "a@x")


def test_freeze_abort_raises_with_the_drift_summary() -> None:
    e = engine({"schema_policy": "freeze", "on_drift": "abort"})
    with pytest.raises(SchemaDriftError, match="new columns: email") as info:
        e.validate(batch(id=[1], name=["a"], email=["a@x"]), STORED)
    assert info.value.fields["new"] == ["email"]
    e.validate(batch(id=[1], name=["a"]), STORED)


def test_retyped_column_is_cast_silently_when_lossless() -> None:
    result = engine({}).validate(
        batch(id=pl.Series([1, 2], dtype=pl.Int32), name=["a", "b"]), STORED
    )
    assert result.data.schema["id"] == pl.Int64
    assert result.drift is not None
    assert result.drift.retyped == {"id": ("Int64", "Int32")}
    assert result.quarantine.height == 0


def test_retyped_column_quarantines_values_that_do_not_survive_the_cast() -> None:
    result = engine({}).validate(batch(id=["1", "two", " 3"], name=["a", "b", "c"]), STORED)
    assert result.data["id"].to_list() == [1, 3]
    assert result.counts == {"schema:retyped:id": 1}
    assert result.quarantine["_raw_value"].to_list() == ["two"]


def test_retyped_strings_are_parsed_into_a_naive_stored_timestamp() -> None:
    stored = pa.schema([("ts", pa.timestamp("ms"))])
    result = engine({}).validate(batch(ts=["2024-01-02T03:04:05+01:00", "later"]), stored)
    assert result.data.schema["ts"] == pl.Datetime("ms")
    assert result.data["ts"].to_list() == [datetime(2024, 1, 2, 2, 4, 5)]
    assert result.counts == {"schema:retyped:ts": 1}


# --- inference ------------------------------------------------------------------------------


def test_inferred_engine_types_columns_and_quarantines_the_few_bad_values() -> None:
    floats = [f"{i}.5" for i in range(97)] + ["n/a!", "?", "--"]
    sample = batch(
        qty=[str(i) for i in range(100)],
        price=floats,
        day=["2024-01-02"] * 100,
        note=[f"free text {i}" for i in range(100)],
        seen=[True] * 100,
    )
    e = ContractEngine.inferred(sample)
    types = {name: spec.type for name, spec in e.contract.columns.items()}
    assert types == {
        "qty": "int64",
        "price": "float64",
        "day": "date",
        "note": "string",
        "seen": "bool",
    }
    assert all(spec.nullable and not spec.required for spec in e.contract.columns.values())
    result = e.coerce(sample)
    assert result.counts == {"type:price": 3}
    assert result.data.schema["day"] == pl.Date


def test_inferred_engine_takes_types_from_the_stored_schema() -> None:
    e = ContractEngine.inferred(batch(id=["7"], name=["12"], extra=["1.5"]), STORED)
    types = {name: spec.type for name, spec in e.contract.columns.items()}
    assert types == {"id": "int64", "name": "string", "extra": "float64"}
    assert not e.contract.rules


def test_no_contract_passes_everything() -> None:
    e = ContractEngine(None)
    df = batch(a=["x"])
    assert e.coerce(df).data.equals(df)
    assert e.validate(df, None).data.equals(df)


# --- scale --------------------------------------------------------------------------------


def test_large_batch_with_ten_rules_is_checked_in_one_vectorised_pass() -> None:
    n = 200_000
    e = engine(
        {
            "columns": {
                "id": {"type": "int64", "nullable": False, "unique": True},
                "amount": {"type": "float64", "min": 0, "max": 1000},
                "status": {"allowed": ["new", "paid", "sent"]},
                "code": {"regex": "[A-Z]{2}\\d{3}", "min_length": 5},
            },
            "rules": [
                {"check": "expression", "expr": "amount < 999 OR status = 'paid'"},
                {"check": "freshness", "column": "ts", "max_age": "1d", "severity": "warn"},
                {"check": "not_null", "column": "status", "severity": "warn"},
            ],
        }
    )
    i = pl.int_range(n, eager=True)
    df = batch(
        id=i,
        amount=(i % 1001).cast(pl.Float64),
        status=pl.Series(["new", "paid", "sent", "lost"]).gather(i % 4),
        code=pl.Series(["AB123", "XY999", "bad"]).gather(i % 3),
        ts=pl.repeat(NOW, n, eager=True),
    )
    result = e.validate(df, None)
    assert result.counts["allowed:status"] == n // 4
    assert result.counts["regex:code"] == len(range(2, n, 3))
    assert result.warnings == {}
    kept = (i % 4 != 3) & (i % 3 != 2) & ((i % 1001 < 999) | (i % 4 == 1))
    assert result.data["id"].equals(i.filter(kept))


def test_datetimes_in_mixed_iso_variants_all_parse_without_quarantine() -> None:
    engine = ContractEngine(ContractConfig.model_validate({"columns": {"ts": "datetime"}}))
    values = ["2024-01-02T03:04:05"] * 50 + ["2024-01-02 03:04:05", "2024-01-02T03:04:05Z"]
    values += ["2024-01-02T05:04:05+02:00", "not a time"]
    result = engine.coerce(pl.DataFrame({"ts": values}))
    assert result.counts == {"type:ts": 1}
    assert result.data.height == len(values) - 1
    assert result.data["ts"].n_unique() == 1  # every variant is the same instant in UTC
