"""JSON reader: array vs NDJSON vs records_path, flatten vs structs, mixed types."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from loopline.config.sources import FileSourceConfig
from loopline.errors import SourceError
from loopline.ingest.sources import FileSource
from loopline.ingest.sources.base import Chunk
from loopline.ingest.sources.json import records_to_table

RECORDS = [
    {"id": 1, "user": {"name": "ann", "address": {"city": "Oslo"}}, "tags": ["a", "b"]},
    {"id": 2, "user": {"name": "bob", "address": {"city": "Rome"}}, "tags": []},
]


def read_chunks(path: Path, **options: Any) -> list[Chunk]:
    spec = FileSourceConfig.model_validate({"type": "file", "path": path.name, **options})
    return list(FileSource("json", spec, base_dir=path.parent).read(None))


def read_rows(path: Path, **options: Any) -> list[dict[str, Any]]:
    return [row for chunk in read_chunks(path, **options) for row in chunk.data.to_pylist()]


FLAT = [
    {"id": 1, "tags": ["a", "b"], "user.name": "ann", "user.address.city": "Oslo"},
    {"id": 2, "tags": [], "user.name": "bob", "user.address.city": "Rome"},
]


def test_array_is_flattened_by_default(tmp_path: Path) -> None:
    path = tmp_path / "a.json"
    path.write_text(json.dumps(RECORDS, indent=2))
    assert read_rows(path) == FLAT


def test_ndjson_is_detected_and_blank_lines_skipped(tmp_path: Path) -> None:
    path = tmp_path / "a.json"
    path.write_text("\n".join(json.dumps(r) for r in RECORDS) + "\n\n")
    assert read_rows(path) == FLAT


def test_flatten_false_keeps_structs(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in RECORDS))
    chunks = read_chunks(path, json={"flatten": False})
    table = chunks[0].data
    assert table.column_names == ["id", "user", "tags"]
    assert pa.types.is_struct(table.schema.field("user").type)
    assert table.to_pylist() == RECORDS


def test_records_path_selects_records_inside_a_document(tmp_path: Path) -> None:
    path = tmp_path / "api.json"
    path.write_text(json.dumps({"meta": {"count": 2}, "data": {"items": RECORDS}}))
    assert read_rows(path, json={"records_path": "data.items.item"}) == FLAT


def test_records_path_applies_to_each_ndjson_document(tmp_path: Path) -> None:
    path = tmp_path / "pages.ndjson"
    path.write_text('{"data": [{"id": 1}, {"id": 2}]}\n{"data": [{"id": 3}]}\n')
    rows = read_rows(path, json={"records_path": "data.item"})
    assert rows == [{"id": 1}, {"id": 2}, {"id": 3}]


def test_explicit_layout_array(tmp_path: Path) -> None:
    path = tmp_path / "a.json"
    path.write_text('  \n [{"id": 1}]')
    assert read_rows(path, json={"layout": "array"}) == [{"id": 1}]


def test_mixed_types_per_key_become_strings(tmp_path: Path) -> None:
    path = tmp_path / "mixed.json"
    path.write_text(
        '[{"v": 1, "n": 1}, {"v": "x", "n": 2.5}, {"v": 2.5}, {"v": null}, {"v": true}]'
    )
    table = read_chunks(path)[0].data
    assert table.schema.field("v").type == pa.string()
    assert table.column("v").to_pylist() == ["1", "x", "2.5", None, "true"]
    assert table.schema.field("n").type == pa.float64()


def test_mixed_nested_types_are_strings_after_flatten() -> None:
    table = records_to_table([{"a": {"b": 1}}, {"a": {"b": "two"}}, {"a": 5}])
    assert table.column("a.b").to_pylist() == ["1", "two", None]
    assert table.column("a").to_pylist() == [None, None, 5]


def test_mixed_types_in_struct_mode_keep_the_value_as_json_text() -> None:
    table = records_to_table([{"a": {"b": 1}}, {"a": "plain"}], flatten=False)
    assert table.column("a").to_pylist() == ['{"b": 1}', "plain"]


def test_integers_beyond_int64_become_strings() -> None:
    table = records_to_table([{"big": 2**70}, {"big": 1}])
    assert table.column("big").to_pylist() == [str(2**70), "1"]


def test_records_that_are_not_objects_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "scalars.json"
    path.write_text("[1, 2, 3]")
    with pytest.raises(SourceError, match="not JSON objects") as info:
        read_rows(path)
    assert info.value.fields["path"] == str(path)


def rejects_of(chunks: list[Chunk]) -> list[dict[str, Any]]:
    return [row for c in chunks if c.rejects is not None for row in c.rejects.to_pylist()]


def test_bad_ndjson_lines_are_rejected_with_line_text_and_reason(tmp_path: Path) -> None:
    path = tmp_path / "dirty.jsonl"
    path.write_bytes(b'{"id": 1}\n\n{"id": 2,}\n[1, 2]\n{"id": "caf\xe9"}\n{"id": 3}\n{"id": ')
    chunks = read_chunks(path)
    assert [r["id"] for c in chunks for r in c.data.to_pylist()] == [1, 3]
    assert rejects_of(chunks) == [
        {
            "line": 3,
            "raw": '{"id": 2,}',
            "reason": "not valid JSON: Expecting property name enclosed in double quotes "
            "at column 10",
        },
        {"line": 4, "raw": "[1, 2]", "reason": "not a JSON object but an array"},
        {"line": 5, "raw": '{"id": "caf\ufffd"}', "reason": "not UTF-8 text"},
        {
            "line": 7,
            "raw": '{"id": ',
            "reason": "not valid JSON: Expecting value at the end of the line",
        },
    ]
    assert chunks[-1].rejects is not None
    assert chunks[-1].rejects.schema.metadata == {b"format": b"json"}


def test_ndjson_rejects_travel_with_the_chunk_of_their_lines(tmp_path: Path) -> None:
    path = tmp_path / "many.jsonl"
    path.write_text("\n".join("oops" if i in (3, 14) else json.dumps({"i": i}) for i in range(20)))
    chunks = read_chunks(path, batch_size=5)
    assert [c.num_rows for c in chunks] == [5, 5, 5, 3]
    assert [[r["line"] for r in rejects_of([c])] for c in chunks] == [[4], [], [15], []]


def test_ndjson_of_only_bad_lines_gives_one_empty_chunk_carrying_them(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"id": 1,,}\n42\n')
    (chunk,) = read_chunks(path)
    assert chunk.num_rows == 0
    assert chunk.state is not None
    assert [(r["line"], r["raw"]) for r in rejects_of([chunk])] == [(1, '{"id": 1,,}'), (2, "42")]


def test_mostly_bad_ndjson_raises(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    path.write_text('{"id": 1}\n' + "\n".join(f"INFO {i} started" for i in range(50)))
    with pytest.raises(SourceError, match="50 of the first 51 rows") as info:
        read_rows(path)
    assert info.value.fields["path"] == str(path)
    assert "records_path" in (info.value.hint or "")


def test_pretty_printed_document_read_as_ndjson_names_the_first_line(tmp_path: Path) -> None:
    path = tmp_path / "doc.json"
    path.write_text(json.dumps({"data": RECORDS}, indent=2))
    with pytest.raises(SourceError, match="line 1 is not valid JSON") as info:
        read_rows(path)
    assert info.value.fields["line"] == 1
    assert "records_path" in (info.value.hint or "")


def test_broken_array_still_fails_the_whole_file(tmp_path: Path) -> None:
    path = tmp_path / "cut.json"
    path.write_text('[{"id": 1}, {"id": 2,}, {"id": 3}]')
    with pytest.raises(SourceError, match="cannot read json file"):
        read_rows(path)


def test_array_is_chunked_by_batch_size_with_gzip(tmp_path: Path) -> None:
    path = tmp_path / "many.json.gz"
    path.write_bytes(gzip.compress(json.dumps([{"i": i} for i in range(95)]).encode()))
    chunks = read_chunks(path, batch_size=10)
    assert [c.num_rows for c in chunks] == [10] * 9 + [5]
    assert [r["i"] for c in chunks for r in c.data.to_pylist()] == list(range(95))


def test_empty_array_yields_one_empty_chunk_with_state(tmp_path: Path) -> None:
    path = tmp_path / "none.json"
    path.write_text("[]")
    chunks = read_chunks(path)
    assert [c.num_rows for c in chunks] == [0]
    assert chunks[0].state is not None
    assert "none.json" in chunks[0].state["files"]
