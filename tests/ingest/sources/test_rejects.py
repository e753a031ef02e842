"""Reject log and the mostly-invalid check shared by the CSV and NDJSON readers."""

from __future__ import annotations

import pytest

from loopline.errors import SourceError
from loopline.ingest.sources.base import REJECTS_SCHEMA
from loopline.ingest.sources.rejects import MostlyInvalidCheck, RejectLog, concat_rejects


def check() -> MostlyInvalidCheck:
    return MostlyInvalidCheck("wrong dialect", path="a.csv", hint="set csv.delimiter")


def test_log_hands_each_reject_on_once_with_the_schema_and_format() -> None:
    log = RejectLog("csv")
    log.add(None, "x" * 20_000, "expected 2 fields, got 1")
    first = log.take()
    log.add(9, "a,b,c", "expected 2 fields, got 3")
    second = log.take()
    assert first is not None
    assert second is not None
    assert first.schema.equals(REJECTS_SCHEMA)
    assert first.schema.metadata == {b"format": b"csv"}
    assert first.column("line").to_pylist() == [None]
    assert len(first.column("raw")[0].as_py()) == 10_000
    both = concat_rejects(first, None, second)
    assert both is not None
    assert both.column("line").to_pylist() == [None, 9]
    assert log.take() is None
    assert log.total == 2


def test_more_than_half_rejected_raises_with_counts_and_hint() -> None:
    with pytest.raises(SourceError, match="600 of the first 1000 rows") as info:
        check().update(valid=400, rejected=600)
    assert info.value.hint == "set csv.delimiter"
    assert info.value.fields == {"path": "a.csv", "rejected": 600, "rows": 1000}


def test_verdict_waits_for_enough_rows_then_is_given_once() -> None:
    judge = check()
    judge.update(valid=0, rejected=900)  # under 1000 rows, file not over: no verdict yet
    judge.update(valid=900, rejected=900)  # 50%: not more than half, passes
    judge.update(valid=0, rejected=10_000)  # already judged


def test_small_files_are_never_judged() -> None:
    check().update(valid=0, rejected=19, final=True)
    with pytest.raises(SourceError):
        check().update(valid=0, rejected=20, final=True)
