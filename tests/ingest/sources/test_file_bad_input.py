"""Bad input corpus: each case is read correctly, rejects its bad rows, or raises a
SourceError naming the file."""

from __future__ import annotations

import gzip
import io
import json
import random
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from loopline.config.sources import FileSourceConfig
from loopline.errors import LooplineError, SourceError
from loopline.ingest.sources import FileSource
from loopline.ingest.sources.base import Chunk

CSV_ROWS = b"id,name\n" + b"".join(b"%d,name%d\n" % (i, i) for i in range(2000))


def read(path: Path, **options: Any) -> list[Chunk]:
    spec = FileSourceConfig.model_validate({"type": "file", "path": path.name, **options})
    return list(FileSource("bad", spec, base_dir=path.parent).read(None))


def source_error(path: Path, **options: Any) -> SourceError:
    with pytest.raises(SourceError) as info:
        read(path, **options)
    error = info.value
    assert isinstance(error, LooplineError)
    assert path.name in str(error)
    assert error.fields["source"] == "bad"
    assert error.fields["path"] == str(path)
    return error


def garbage(size: int = 4096) -> bytes:
    return random.Random(7).randbytes(size)


def parquet_bytes() -> bytes:
    sink = io.BytesIO()
    pq.write_table(pa.table({"a": list(range(1000))}), sink)
    return sink.getvalue()


BROKEN: dict[str, tuple[str, bytes, dict[str, Any]]] = {
    "csv_unterminated_quote": ("cut.csv", b'id,text\n1,ok\n2,"never closed, at EOF\n', {}),
    "csv_mostly_ragged": ("ragged.csv", b"a,b\n" + b"1,2,3\n" * 30 + b"4,5\n", {}),
    "truncated_gzip": ("cut.csv.gz", gzip.compress(CSV_ROWS)[:-40], {}),
    "truncated_zstd": ("cut.csv.zst", zstandard.ZstdCompressor().compress(CSV_ROWS)[:-40], {}),
    "truncated_json_array": ("cut.json", b'[{"a": 1}, {"a": 2}, {"a":', {}),
    "truncated_ndjson_first_line": ("cut.jsonl", b'{"a": ', {}),
    "truncated_xml": ("cut.xml", b"<r><x><v>1</v></x><x><v>2", {"xml": {"record_path": "r/x"}}),
    "truncated_parquet": ("cut.parquet", parquet_bytes()[:-100], {}),
    "garbage_csv": ("noise.csv", garbage(), {}),
    "garbage_csv_gz": ("noise.csv.gz", garbage(), {}),
    "garbage_json": ("noise.json", garbage(), {}),
    "garbage_parquet": ("noise.parquet", garbage(), {}),
    "garbage_xml": ("noise.xml", garbage(), {"xml": {"record_path": "r/x"}}),
    "json_scalar_document": ("scalar.json", b"42", {}),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_file_raises_source_error_naming_it(tmp_path: Path, case: str) -> None:
    name, data, options = BROKEN[case]
    path = tmp_path / name
    path.write_bytes(data)
    error = source_error(path, **options)
    assert error.__cause__ is None or not isinstance(error.__cause__, LooplineError)


def rejects_of(chunks: list[Chunk]) -> list[tuple[int, str]]:
    return [
        (r["line"], r["raw"])
        for c in chunks
        if c.rejects is not None
        for r in c.rejects.to_pylist()
    ]


def test_ragged_csv_row_is_rejected_and_the_rest_read(tmp_path: Path) -> None:
    path = tmp_path / "ragged.csv"
    path.write_bytes(b"a,b\n1,2\n3,4,5\n6,7\n")
    chunks = read(path)
    assert [r for c in chunks for r in c.data.to_pylist()] == [
        {"a": "1", "b": "2"},
        {"a": "6", "b": "7"},
    ]
    assert rejects_of(chunks) == [(3, "3,4,5")]


def test_ndjson_cut_in_its_last_line_rejects_that_line(tmp_path: Path) -> None:
    path = tmp_path / "cut.jsonl"
    path.write_bytes(b'{"a": 1}\n{"a": 2}\n{"a": ')
    chunks = read(path)
    assert [r["a"] for c in chunks for r in c.data.to_pylist()] == [1, 2]
    assert rejects_of(chunks) == [(3, '{"a": ')]


def test_unterminated_quote_error_says_truncated(tmp_path: Path) -> None:
    path = tmp_path / "cut.csv"
    path.write_bytes(BROKEN["csv_unterminated_quote"][1])
    assert "unterminated" in str(source_error(path))


def test_stray_quote_inside_unquoted_field_is_not_mistaken_for_truncation(tmp_path: Path) -> None:
    path = tmp_path / "screens.csv"
    path.write_bytes(b'id,model\n1,Monitor 27" wide\n2,Monitor 24\n')
    rows = [r for c in read(path) for r in c.data.to_pylist()]
    assert rows == [{"id": "1", "model": 'Monitor 27" wide'}, {"id": "2", "model": "Monitor 24"}]


LATIN1 = "id;city\n1;Zürich\n2;Besançon\n".encode("latin-1")


def test_latin1_declared_as_utf8_names_file_and_byte_offset(tmp_path: Path) -> None:
    path = tmp_path / "declared.csv"
    path.write_bytes(LATIN1)
    error = source_error(path, csv={"encoding": "utf-8"})
    assert error.fields["offset"] == LATIN1.index(b"\xfc")
    assert f"byte offset {error.fields['offset']}" in str(error)
    assert error.hint
    assert "encoding" in error.hint


def test_latin1_without_override_is_detected_and_read(tmp_path: Path) -> None:
    path = tmp_path / "detected.csv"
    path.write_bytes(LATIN1)
    rows = [r for c in read(path) for r in c.data.to_pylist()]
    assert rows == [{"id": "1", "city": "Zürich"}, {"id": "2", "city": "Besançon"}]


def test_entity_bomb_is_refused(tmp_path: Path) -> None:
    levels = "".join(f'<!ENTITY e{i} "{("&e" + str(i - 1) + ";") * 10}">' for i in range(1, 12))
    path = tmp_path / "bomb.xml"
    path.write_text(f'<!DOCTYPE r [<!ENTITY e0 "ha">{levels}]><r><x>&e11;</x></r>')
    source_error(path, xml={"record_path": "r/x"})


def test_ten_megabyte_single_field_is_read(tmp_path: Path) -> None:
    big = b"x" * (10 * 1024 * 1024)
    path = tmp_path / "wide.csv"
    path.write_bytes(b'id,payload\n1,"' + big + b'"\n2,small\n')
    chunks = read(path)
    payload = pa.concat_tables([c.data for c in chunks]).column("payload")
    assert [len(v) for v in payload.to_pylist()] == [len(big), 5]


def test_header_only_csv_has_columns_and_zero_rows(tmp_path: Path) -> None:
    path = tmp_path / "header.csv"
    path.write_bytes(b"id,name,amount\n")
    chunks = read(path)
    assert [(c.num_rows, c.data.column_names) for c in chunks] == [(0, ["id", "name", "amount"])]
    assert chunks[0].state is not None


@pytest.mark.parametrize("name", ["e.csv", "e.json", "e.xml", "e.parquet", "e.jsonl"])
def test_empty_file_gives_one_empty_chunk_and_is_remembered(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(b"")
    spec = FileSourceConfig.model_validate(
        {"type": "file", "path": name, "xml": {"record_path": "r/x"}}
    )
    source = FileSource("bad", spec, base_dir=tmp_path)
    chunks = list(source.read(None))
    assert [c.num_rows for c in chunks] == [0]
    assert list(source.read(chunks[0].state)) == []


@pytest.mark.parametrize("name", ["blank.csv.gz", "blank.json.gz", "blank.xml.gz"])
def test_compressed_blank_file_gives_one_empty_chunk(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(gzip.compress(b"  \n"))
    assert [c.num_rows for c in read(path, xml={"record_path": "r/x"})] == [0]


def test_json_with_mixed_types_per_key_is_read_as_strings(tmp_path: Path) -> None:
    path = tmp_path / "mixed.jsonl"
    path.write_text("\n".join(json.dumps({"v": v}) for v in [1, "x", 2.5, {"k": 1}, [1]]))
    values = [r["v"] for c in read(path, json={"flatten": False}) for r in c.data.to_pylist()]
    assert values == ["1", "x", "2.5", '{"k": 1}', "[1]"]
    flat = next(c.data for c in read(path))
    assert flat.column("v").to_pylist() == ["1", "x", "2.5", None, "[1]"]
    assert flat.column("v.k").to_pylist() == [None, None, None, 1, None]
