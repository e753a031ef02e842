"""Unpadded text columns, and null tokens matched without stripping where that is exact."""

from __future__ import annotations

import random

import polars as pl
import pyarrow as pa
import pytest

from loopline.config.cleanse import NullTokensStep
from loopline.ingest.cleanse import apply_steps
from loopline.ingest.text_edges import unpadded_columns

SPACES = [" ", "\t", "\n", "\r", "\x0b", "\x0c", "\x85", "\xa0", "\u1680", "\u2003", "\u3000"]


@pytest.mark.parametrize("space", SPACES)
def test_whitespace_at_either_end_marks_the_column(space: str) -> None:
    table = pa.table({"lead": ["a", space + "b"], "tail": ["a", "b" + space], "in": ["a b", ""]})
    assert unpadded_columns(table) == {"in"}


def test_chunks_slices_large_strings_and_non_text_columns() -> None:
    padded = pa.chunked_array([["x"], [" z"]])
    sliced = pa.array([" a", "b", "c"]).slice(1)  # the padded value lies outside the slice
    table = pa.table(
        {
            "padded": padded,
            "sliced": pa.chunked_array([sliced]),
            "large": pa.array(["a", "b"], pa.large_string()),
            "empty": pa.array(["", ""]),
            "nulls": pa.array([None, "x"]),
            "number": pa.array([1, 2]),
        }
    )
    assert unpadded_columns(table) == {"sliced", "large", "empty", "nulls"}


def test_null_tokens_give_the_same_result_with_or_without_the_hint() -> None:
    rng = random.Random(7)
    pool = ["N/A", " N/A", "null ", "", " ", "x", "NaN", "\tNA\t", "n/a", "a b", "-", "é", "None"]
    columns = {f"c{i}": [rng.choice(pool) for _ in range(500)] for i in range(4)}
    columns["clean"] = [rng.choice(["N/A", "x", "", "-", "yes"]) for _ in range(500)]
    table = pa.table(columns)
    hint = unpadded_columns(table)
    assert hint == {"clean"}
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    steps = [NullTokensStep(step="null_tokens")]
    plain = apply_steps(frame, steps, phase="string").data
    hinted = apply_steps(frame, steps, phase="string", unpadded=hint).data
    assert hinted.equals(plain)
    assert plain["clean"].null_count() == sum(v in ("N/A", "", "-") for v in columns["clean"])
