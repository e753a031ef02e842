"""CSV reader: dialect, encoding and header detection; options override detection."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from loopline.config.sources import CsvOptions, FileSourceConfig
from loopline.ingest.sources import FileSource
from loopline.ingest.sources.csv import detect_dialect, detect_encoding, read_csv


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
