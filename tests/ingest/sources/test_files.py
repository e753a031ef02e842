"""FileSource: discovery, compression, incremental state, chunking, bounded memory."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import zstandard

import loopline.ingest.sources as sources_pkg
from loopline.config.sources import FileSourceConfig
from loopline.errors import ConfigError, SourceError
from loopline.ingest.sources import FileSource
from loopline.ingest.sources.base import Chunk, Source
from loopline.ingest.sources.files import discover, fingerprint, format_of, rebatch


def make_source(base: Path, path: str, **options: Any) -> FileSource:
    spec = FileSourceConfig.model_validate({"type": "file", "path": path, **options})
    return FileSource("src", spec, base_dir=base)


def rows_csv(n: int, start: int = 0) -> str:
    return "id,name\n" + "".join(f"{i},name{i}\n" for i in range(start, start + n))


def all_rows(chunks: list[Chunk]) -> list[dict[str, Any]]:
    return [row for chunk in chunks for row in chunk.data.to_pylist()]


def test_package_exports_file_source() -> None:
    assert sources_pkg.__all__ == ["FileSource"]
    assert sources_pkg.FileSource is FileSource


def test_file_source_satisfies_the_source_protocol(tmp_path: Path) -> None:
    assert isinstance(make_source(tmp_path, "x.csv"), Source)


def test_format_of_looks_through_compression() -> None:
    assert format_of(Path("a.tsv")) == "csv"
    assert format_of(Path("a.ndjson.zst")) == "json"
    assert format_of(Path("a.PQ")) == "parquet"
    assert format_of(Path("a.xml.gz")) == "xml"
    assert format_of(Path("a.dat")) is None


def test_glob_with_double_star_finds_nested_files_sorted(tmp_path: Path) -> None:
    (tmp_path / "in" / "b").mkdir(parents=True)
    (tmp_path / "in" / "b" / "2.csv").write_text(rows_csv(1, 2))
    (tmp_path / "in" / "1.csv").write_text(rows_csv(1, 1))
    (tmp_path / "in" / "notes.md").write_text("not data")
    found = discover("in/**/*.csv", base_dir=tmp_path)
    assert found == [tmp_path / "in" / "1.csv", tmp_path / "in" / "b" / "2.csv"]


def test_folder_reads_supported_files_in_order_and_skips_hidden(tmp_path: Path) -> None:
    folder = tmp_path / "drop"
    (folder / "sub").mkdir(parents=True)
    (folder / "b.csv").write_text(rows_csv(1, 2))
    (folder / "a.csv").write_text(rows_csv(1, 1))
    (folder / "sub" / "c.jsonl").write_text('{"id": "3"}\n')
    (folder / ".hidden.csv").write_text(rows_csv(1, 99))
    (folder / "readme.md").write_text("# not data")
    chunks = list(make_source(tmp_path, "drop").read(None))
    assert [c.origin for c in chunks] == [
        "file:drop/a.csv",
        "file:drop/b.csv",
        "file:drop/sub/c.jsonl",
    ]
    assert [r["id"] for r in all_rows(chunks)] == ["1", "2", "3"]


def test_absolute_path_outside_base_dir_is_kept_absolute(tmp_path: Path) -> None:
    data = tmp_path / "data.csv"
    data.write_text(rows_csv(2))
    base = tmp_path / "project"
    base.mkdir()
    chunks = list(make_source(base, str(data)).read(None))
    assert chunks[-1].origin == f"file:{data}"
    assert list(chunks[-1].state["files"]) == [str(data)]  # type: ignore[index]


def test_no_match_raises_source_error_with_pattern_and_hint(tmp_path: Path) -> None:
    with pytest.raises(SourceError) as info:
        list(make_source(tmp_path, "missing/*.csv").read(None))
    assert "missing/*.csv" in str(info.value)
    assert info.value.hint


def test_unknown_extension_of_a_named_file_asks_for_a_format(tmp_path: Path) -> None:
    (tmp_path / "data.dat").write_text(rows_csv(2))
    with pytest.raises(SourceError, match="format"):
        list(make_source(tmp_path, "data.dat").read(None))
    chunks = list(make_source(tmp_path, "data.dat", format="csv").read(None))
    assert chunks[0].num_rows == 2


def test_xml_format_without_record_path_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="record_path"):
        make_source(tmp_path, "a.xml", format="xml")


@pytest.mark.parametrize("suffix", [".gz", ".zst"])
def test_compressed_files_are_decompressed(tmp_path: Path, suffix: str) -> None:
    raw = rows_csv(25).encode()
    packed = gzip.compress(raw) if suffix == ".gz" else zstandard.ZstdCompressor().compress(raw)
    (tmp_path / f"data.csv{suffix}").write_bytes(packed)
    chunks = list(make_source(tmp_path, f"data.csv{suffix}", batch_size=10).read(None))
    assert [c.num_rows for c in chunks] == [10, 10, 5]
    assert all_rows(chunks)[24] == {"id": "24", "name": "name24"}


def test_chunks_are_batch_sized_and_positions_deterministic(tmp_path: Path) -> None:
    (tmp_path / "data.csv").write_text(rows_csv(95))
    source = make_source(tmp_path, "data.csv", batch_size=10)
    first = list(source.read(None))
    second = list(source.read(None))
    sha = fingerprint(tmp_path / "data.csv").sha256
    assert [c.num_rows for c in first] == [10] * 9 + [5]
    assert [c.position for c in first] == [f"data.csv:{sha}:{i}" for i in range(10)]
    assert [c.position for c in second] == [c.position for c in first]
    assert all(c.origin == "file:data.csv" for c in first)


def test_identical_files_get_distinct_positions(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text(rows_csv(3))
    (tmp_path / "b.csv").write_text(rows_csv(3))
    chunks = list(make_source(tmp_path, "*.csv").read(None))
    assert len({c.position for c in chunks}) == 2


def test_only_the_last_chunk_of_a_file_carries_state(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text(rows_csv(25))
    (tmp_path / "b.csv").write_text(rows_csv(5, 100))
    chunks = list(make_source(tmp_path, "*.csv", batch_size=10).read(None))
    states = [c.state for c in chunks]
    assert states[:2] == [None, None]
    assert states[2] is not None
    assert list(states[2]["files"]) == ["a.csv"]
    assert states[3] is not None
    assert list(states[3]["files"]) == ["a.csv", "b.csv"]
    stamp = fingerprint(tmp_path / "b.csv")
    assert states[3]["files"]["b.csv"] == {"size": stamp.size, "sha256": stamp.sha256}


def test_second_read_with_final_state_yields_nothing(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text(rows_csv(3))
    source = make_source(tmp_path, "*.csv")
    chunks = list(source.read(None))
    assert list(source.read(chunks[-1].state)) == []


def test_modified_file_is_read_again_and_new_file_alone_is_read(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text(rows_csv(3))
    source = make_source(tmp_path, "*.csv")
    state = list(source.read(None))[-1].state
    (tmp_path / "b.csv").write_text(rows_csv(2, 50))
    chunks = list(source.read(state))
    assert [c.origin for c in chunks] == ["file:b.csv"]
    state = chunks[-1].state
    (tmp_path / "a.csv").write_text(rows_csv(4))
    chunks = list(source.read(state))
    assert [c.origin for c in chunks] == ["file:a.csv"]
    assert chunks[0].num_rows == 4


def test_non_incremental_source_rereads_and_carries_no_state(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text(rows_csv(3))
    source = make_source(tmp_path, "a.csv", incremental=False)
    first = list(source.read(None))
    assert [c.state for c in first] == [None]
    assert len(list(source.read({"files": {}}))) == 1


def test_empty_file_yields_one_empty_chunk_that_remembers_it(tmp_path: Path) -> None:
    (tmp_path / "empty.csv").write_bytes(b"")
    source = make_source(tmp_path, "empty.csv")
    chunks = list(source.read(None))
    assert [c.num_rows for c in chunks] == [0]
    assert chunks[0].state == {
        "files": {"empty.csv": {"size": 0, "sha256": fingerprint(tmp_path / "empty.csv").sha256}}
    }
    assert list(source.read(chunks[0].state)) == []


def test_rebatch_flushes_on_schema_change_and_keeps_columns_of_empty_input() -> None:
    parts = [pa.table({"a": [1, 2, 3]}), pa.table({"a": ["x", "y"]})]
    assert [t.num_rows for t in rebatch(parts, 5)] == [3, 2]
    empty = list(rebatch([pa.table({"a": pa.array([], pa.string())})], 5))
    assert [(t.num_rows, t.column_names) for t in empty] == [(0, ["a"])]


def test_large_csv_is_streamed_with_bounded_memory(tmp_path: Path) -> None:
    block = "".join(
        f"{i},customer_{i},{i * 1.5},some free text for padding\n" for i in range(10_000)
    )
    path = tmp_path / "big.csv"
    with path.open("w") as handle:
        handle.write("id,name,amount,note\n")
        for _ in range(100):
            handle.write(block)
    size = path.stat().st_size
    assert size > 45_000_000
    baseline = pa.total_allocated_bytes()
    peak = 0
    rows = 0
    chunks = 0
    for chunk in make_source(tmp_path, "big.csv", batch_size=10_000).read(None):
        peak = max(peak, pa.total_allocated_bytes() - baseline)
        rows += chunk.num_rows
        chunks += 1
    assert rows == 1_000_000
    assert chunks == 100
    assert peak < size / 5, f"peak Arrow memory {peak} for a {size}-byte file"
