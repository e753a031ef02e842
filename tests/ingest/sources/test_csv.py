"""CSV reader: dialect, encoding and header detection; options override detection."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from loopline.config.sources import CsvOptions, FileSourceConfig
from loopline.errors import SourceError
from loopline.ingest.sources import FileSource
from loopline.ingest.sources.base import Chunk
from loopline.ingest.sources.csv import detect_dialect, detect_encoding, read_csv
from loopline.ingest.sources.csv_typed import TypedColumns
from loopline.ingest.sources.rejects import RejectLog


def read_file(path: Path, **options: Any) -> list[dict[str, Any]]:
    spec = FileSourceConfig.model_validate({"type": "file", "path": path.name, **options})
    chunks = list(FileSource("csv", spec, base_dir=path.parent).read(None))
    return [row for chunk in chunks for row in chunk.data.to_pylist()]


def read_bytes(data: bytes, **options: Any) -> pa.Table:
    batches = read_csv(lambda: pa.BufferReader(data), CsvOptions(**options), path="mem.csv")
    return pa.Table.from_batches(list(batches))


def test_latin1_semicolon_file_with_quotes_is_detected(tmp_path: Path) -> None:
    text = 'name;city;note\n"Müller; Jörg";Zürich;"said ""hi"""\nRené;Besançon;ok\nAnaïs;Orléans;\n'
    path = tmp_path / "people.csv"
    path.write_bytes(text.encode("latin-1"))
    assert read_file(path) == [
        {"name": "Müller; Jörg", "city": "Zürich", "note": 'said "hi"'},
        {"name": "René", "city": "Besançon", "note": "ok"},
        {"name": "Anaïs", "city": "Orléans", "note": ""},
    ]


def test_utf8_with_bom_has_clean_first_column_name(tmp_path: Path) -> None:
    path = tmp_path / "bom.csv"
    path.write_bytes("\ufeffid,città\n1,Sanremo\n".encode())
    assert read_file(path) == [{"id": "1", "città": "Sanremo"}]


@pytest.mark.parametrize("delimiter", ["\t", "|", ";", ","])
def test_delimiter_is_sniffed(delimiter: str) -> None:
    data = delimiter.join(["id", "name", "qty"]) + "\n"
    data += "".join(delimiter.join([str(i), f"n{i}", str(i * 2)]) + "\n" for i in range(5))
    table = read_bytes(data.encode())
    assert table.column_names == ["id", "name", "qty"]
    assert table.column("qty").to_pylist() == ["0", "2", "4", "6", "8"]


def test_all_values_stay_strings_with_empty_kept(tmp_path: Path) -> None:
    table = read_bytes(b"zip,amount,flag\n00123,1.50,\n,NaN,NULL\n")
    assert table.schema.types == [pa.string()] * 3
    assert table.to_pylist() == [
        {"zip": "00123", "amount": "1.50", "flag": ""},
        {"zip": "", "amount": "NaN", "flag": "NULL"},
    ]


def test_numeric_first_row_means_no_header() -> None:
    table = read_bytes(b"1,2.5,3\n4,5.5,6\n")
    assert table.column_names == ["column_1", "column_2", "column_3"]
    assert table.num_rows == 2


def test_header_option_overrides_detection() -> None:
    table = read_bytes(b"id,name\n1,ann\n", header=False)
    assert table.column_names == ["column_1", "column_2"]
    assert table.column("column_2").to_pylist() == ["name", "ann"]


def test_delimiter_and_quote_options_override_detection() -> None:
    table = read_bytes(b"a|b\n'x|y'|z\n", delimiter="|", quote_char="'")
    assert table.to_pylist() == [{"a": "x|y", "b": "z"}]


def test_encoding_option_overrides_detection() -> None:
    table = read_bytes("name\nŁódź\n".encode("cp1250"), encoding="cp1250")
    assert table.column("name").to_pylist() == ["Łódź"]


def test_quoted_newlines_stay_inside_the_field() -> None:
    table = read_bytes(b'id,text\n1,"line one\nline two"\n2,plain\n')
    assert table.column("text").to_pylist() == ["line one\nline two", "plain"]


def test_duplicate_and_empty_header_names_are_made_unique() -> None:
    table = read_bytes(b"id,id,,name\n1,2,3,4\n")
    assert table.column_names == ["id", "id_2", "column_3", "name"]


def test_tsv_extension_reads_tab_separated(tmp_path: Path) -> None:
    path = tmp_path / "a.tsv"
    path.write_text("id\tname\n1\tann, the first\n")
    assert read_file(path) == [{"id": "1", "name": "ann, the first"}]


def test_detect_dialect_reports_what_it_found() -> None:
    sample = 'Name;Ville\n"Dupont; J";Paris\nMartin;Lyon\n'.encode("latin-1")
    dialect = detect_dialect(sample, CsvOptions(), complete=True)
    assert (dialect.delimiter, dialect.quote_char, dialect.header) == (";", '"', True)
    assert dialect.columns == ["Name", "Ville"]


def test_detect_encoding_prefers_utf8_and_recognises_bom() -> None:
    assert detect_encoding("é".encode(), complete=True) == "utf-8"
    assert detect_encoding(b"\xef\xbb\xbfa", complete=True) == "utf-8-sig"
    # a multi-byte character cut by the sample's end is still UTF-8
    assert detect_encoding("aé".encode()[:-1], complete=False) == "utf-8"
    assert detect_encoding("café crème brûlée\n".encode("latin-1"), complete=True) != "utf-8"


def test_header_only_file_gives_columns_and_no_rows() -> None:
    table = read_bytes(b"id,name\n")
    assert (table.num_rows, table.column_names) == (0, ["id", "name"])


@pytest.mark.parametrize("data", [b"\n\nid,name\n1,ann\n", b"\r\n\r\nid,name\r\n1,ann\r\n"])
def test_blank_lines_before_the_header_are_skipped(data: bytes) -> None:
    assert read_bytes(data).to_pylist() == [{"id": "1", "name": "ann"}]


def test_latin1_western_names_are_not_read_as_central_european() -> None:
    text = "name;city\n" + "".join(
        f"{n};{c}\n"
        for n, c in [("Hélène", "Zürich"), ("Øster", "Århus"), ("Björn", "Málaga")] * 40
    )
    assert detect_encoding(text.encode("latin-1"), complete=True) == "cp1252"


def read_chunks(path: Path, **options: Any) -> list[Chunk]:
    spec = FileSourceConfig.model_validate({"type": "file", "path": path.name, **options})
    return list(FileSource("csv", spec, base_dir=path.parent).read(None))


def rejects_of(chunks: list[Chunk]) -> list[dict[str, Any]]:
    return [row for c in chunks if c.rejects is not None for row in c.rejects.to_pylist()]


def test_rows_with_wrong_field_counts_are_rejected_at_their_line(tmp_path: Path) -> None:
    path = tmp_path / "dirty.csv"
    path.write_bytes(
        b"id,name\n1,ann\n2,bob,extra\n"  # line 3: one field too many
        b'3,"two\nlines"\n4\n'  # lines 4-5: one quoted value; line 6: one field short
        b"5,eve\n"
    )
    chunks = read_chunks(path)
    assert [r["id"] for c in chunks for r in c.data.to_pylist()] == ["1", "3", "5"]
    assert rejects_of(chunks) == [
        {"line": 3, "raw": "2,bob,extra", "reason": "expected 2 fields, got 3"},
        {"line": 6, "raw": "4", "reason": "expected 2 fields, got 1"},
    ]
    assert chunks[0].rejects is not None
    assert chunks[0].rejects.schema.metadata == {b"format": b"csv"}


def test_each_reject_travels_on_exactly_one_chunk(tmp_path: Path) -> None:
    lines = [f"{i},n{i}" if i % 17 else f"{i},n{i},x" for i in range(1, 101)]
    path = tmp_path / "many.csv"
    path.write_text("id,name\n" + "\n".join(lines) + "\n")
    chunks = read_chunks(path, batch_size=10)
    assert sum(c.num_rows for c in chunks) == 95
    assert [r["line"] for r in rejects_of(chunks)] == [18, 35, 52, 69, 86]
    assert [r["raw"] for r in rejects_of(chunks)] == [f"{i},n{i},x" for i in range(17, 86, 17)]


def test_file_of_only_bad_rows_gives_an_empty_chunk_carrying_them(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("id,name,amount\n1,ann\n2,bob,3,4\n")
    (chunk,) = read_chunks(path)
    assert (chunk.num_rows, chunk.data.column_names) == (0, ["id", "name", "amount"])
    assert chunk.state is not None
    assert rejects_of([chunk]) == [
        {"line": 2, "raw": "1,ann", "reason": "expected 3 fields, got 2"},
        {"line": 3, "raw": "2,bob,3,4", "reason": "expected 3 fields, got 4"},
    ]


def test_mostly_malformed_file_raises_asking_for_the_delimiter(tmp_path: Path) -> None:
    # Semicolons with decimal commas, read with a forced ',' delimiter: rows split at the
    # decimal comma, so nearly every row has the wrong number of fields.
    rows = "".join(f"{i};item {i};{i},5\n" for i in range(100))
    path = tmp_path / "euro.csv"
    path.write_text("id,name,price\n" + rows)
    with pytest.raises(SourceError, match="100 of the first 100 rows") as info:
        read_chunks(path, csv={"delimiter": ","})
    assert info.value.hint is not None
    assert "csv.delimiter" in info.value.hint
    assert info.value.fields["path"] == str(path)


def test_raw_text_of_a_reject_is_cut_to_ten_thousand_characters(tmp_path: Path) -> None:
    path = tmp_path / "long.csv"
    path.write_text("id,text\n1,ok\n2,x,x" + "y" * 20_000 + "\n")
    (reject,) = rejects_of(read_chunks(path))
    assert len(reject["raw"]) == 10_000
    assert reject["raw"].startswith("2,x,xyyy")


def test_rejects_are_not_repeated_when_a_huge_row_makes_the_file_read_again() -> None:
    big = b"x" * (3 << 20)  # bigger than the first block: pyarrow reads again
    data = b'id,v\n1,a,b\n2,ok\n3,"' + big + b'"\n4,c,d\n5,ok\n'
    log = RejectLog("csv")
    table = pa.Table.from_batches(
        list(read_csv(lambda: pa.BufferReader(data), CsvOptions(), path="m.csv", rejects=log))
    )
    assert table.column("id").to_pylist() == ["2", "3", "5"]
    rejects = log.take()
    assert rejects is not None
    assert rejects.select(["line", "raw"]).to_pylist() == [
        {"line": 2, "raw": "1,a,b"},
        {"line": 5, "raw": "4,c,d"},
    ]


def test_without_a_reject_log_a_malformed_row_is_an_error() -> None:
    with pytest.raises(pa.ArrowInvalid, match="Expected 2 columns, got 3"):
        read_bytes(b"a,b\n1,2\n3,4,5\n")


def read_typed(
    data: bytes, types: dict[str, pa.DataType], nulls: list[str]
) -> list[pa.RecordBatch]:
    batches = read_csv(
        lambda: pa.BufferReader(data),
        CsvOptions(),
        path="mem.csv",
        column_types=types,
        null_values=nulls,
    )
    return list(batches)


TYPED = {"f": pa.float64(), "t": pa.timestamp("us"), "d": pa.date32()}


def test_clean_columns_parse_typed_with_null_values_and_text_stays_text() -> None:
    data = b'f,t,d,s\n1.5,2024-01-02T03:04:05,2024-01-02,N/A\nN/A,"",,""\n'
    table = pa.Table.from_batches(read_typed(data, TYPED, ["", "N/A"]))
    assert table.schema.types == [pa.float64(), pa.timestamp("us"), pa.date32(), pa.string()]
    rows = table.to_pylist()
    assert rows[1] == {"f": None, "t": None, "d": None, "s": ""}
    assert rows[0]["s"] == "N/A"  # text columns never get nulls: null tokens are a later step


def test_a_column_that_does_not_parse_or_is_not_finite_stays_text() -> None:
    data = b"f,t,d\n1.5,2024-01-02,2024-1-2\ninf,2024-01-03,2024-01-03\n"
    table = pa.Table.from_batches(read_typed(data, TYPED, []))
    assert table.schema.types == [pa.string(), pa.timestamp("us"), pa.string()]
    assert table.column("f").to_pylist() == ["1.5", "inf"]
    assert table.column("d").to_pylist() == ["2024-1-2", "2024-01-03"]


@pytest.mark.parametrize("bad", ["??", "inf"])
def test_a_typed_column_failing_in_the_sample_is_text_from_the_first_read(bad: str) -> None:
    rows = [f"{i}.5,{i}.25" for i in range(50_000)]  # well past the 64 KiB sample
    rows[10] = f"{bad},1"
    data = ("f,g\n" + "\n".join(rows) + "\n").encode()
    opened = []

    def opener() -> pa.BufferReader:
        opened.append(1)
        return pa.BufferReader(data)

    types = {"f": pa.float64(), "g": pa.float64()}
    batches = list(read_csv(opener, CsvOptions(), path="m.csv", column_types=types))
    assert len(opened) == 2  # the sample, then one read: no second start for 'f'
    assert {b.schema.field("f").type for b in batches} == {pa.string()}
    assert {b.schema.field("g").type for b in batches} == {pa.float64()}
    assert [v for b in batches for v in b.column("f").to_pylist()] == [
        r.split(",")[0] for r in rows
    ]


def test_non_finite_floats_are_found_in_slices_and_never_under_nulls() -> None:
    # A null's slot may hold any bits (NaN here): only valid values count.
    valid = np.packbits([1, 1, 1, 0, 1, 1, 1, 1, 1, 1], bitorder="little").tobytes()
    values = np.array([1, 2, 3, np.nan, 5, 6, 7, np.inf, 9, 10], dtype=np.float64)
    column = pa.Array.from_buffers(pa.float64(), 10, [pa.py_buffer(valid), pa.py_buffer(values)])
    typed = TypedColumns({"f": pa.float64()}, [])

    def found(array: pa.Array) -> str | None:
        return typed.non_finite(pa.record_batch({"f": array}))

    assert found(column.slice(0, 7)) is None
    assert found(column) == found(column.slice(6)) == found(column.slice(7, 1)) == "f"
    assert found(pa.array([1.0, None, -np.inf], pa.float32())) == "f"
    assert found(pa.array([None, None], pa.float64())) is None


def test_a_typed_column_failing_in_a_later_block_continues_as_text() -> None:
    rows = [f"{i}.5,{i}" for i in range(200_000)]
    rows[-1] = "oops,-1"
    data = ("f,n\n" + "\n".join(rows) + "\n").encode()
    batches = read_typed(data, {"f": pa.float64()}, [])
    assert batches[0].schema.field("f").type == pa.float64()
    assert batches[-1].schema.field("f").type == pa.string()
    values = [str(v) for b in batches for v in b.column(0).to_pylist()]
    assert values == [r.split(",")[0] for r in rows]  # every row once, in order
    assert [int(v) for b in batches for v in b.column(1).to_pylist()][-2:] == [199_998, -1]
