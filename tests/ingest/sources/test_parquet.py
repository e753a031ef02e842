"""Parquet reader: batching across row groups, types kept, compressed files."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from loopline.config.sources import FileSourceConfig
from loopline.ingest.sources import FileSource
from loopline.ingest.sources.base import Chunk

TABLE = pa.table(
    {
        "id": pa.array(range(95), pa.int64()),
        "price": pa.array([i * 0.5 for i in range(95)], pa.float64()),
        "name": pa.array([f"n{i}" for i in range(95)], pa.string()),
    }
)


def read_chunks(path: Path, **options: Any) -> list[Chunk]:
    spec = FileSourceConfig.model_validate({"type": "file", "path": path.name, **options})
    return list(FileSource("pq", spec, base_dir=path.parent).read(None))


def test_batches_span_row_groups_and_keep_types(tmp_path: Path) -> None:
    path = tmp_path / "items.parquet"
    pq.write_table(TABLE, path, row_group_size=33)
    chunks = read_chunks(path, batch_size=10)
    assert [c.num_rows for c in chunks] == [10] * 9 + [5]
    assert chunks[0].data.schema == TABLE.schema
    assert pa.concat_tables([c.data for c in chunks]).equals(TABLE)


def test_pq_extension_and_positions_are_stable(tmp_path: Path) -> None:
    path = tmp_path / "items.pq"
    pq.write_table(TABLE, path)
    first = [c.position for c in read_chunks(path, batch_size=50)]
    second = [c.position for c in read_chunks(path, batch_size=50)]
    assert first == second
    assert len(first) == 2


def test_gzipped_parquet_is_spooled_and_read(tmp_path: Path) -> None:
    plain = tmp_path / "plain.parquet"
    pq.write_table(TABLE, plain)
    path = tmp_path / "items.parquet.gz"
    path.write_bytes(gzip.compress(plain.read_bytes()))
    chunks = read_chunks(path, batch_size=40)
    assert [c.num_rows for c in chunks] == [40, 40, 15]
    assert pa.concat_tables([c.data for c in chunks]).equals(TABLE)


def test_zero_row_parquet_keeps_its_schema(tmp_path: Path) -> None:
    path = tmp_path / "empty.parquet"
    pq.write_table(TABLE.slice(0, 0), path)
    chunks = read_chunks(path)
    assert [c.num_rows for c in chunks] == [0]
    assert chunks[0].data.schema == TABLE.schema
    assert chunks[0].state is not None
