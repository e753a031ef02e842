"""Parquet reader: record batches straight from the file's row groups.

Parquet needs random access, so a compressed file (``.parquet.gz``) is first
decompressed, as a stream, into a temporary file.

>>> import io, pyarrow as pa, pyarrow.parquet as pq
>>> sink = io.BytesIO()
>>> pq.write_table(pa.table({"a": list(range(5))}), sink)
>>> batches = read_parquet(lambda: pa.BufferReader(sink.getvalue()), path="a.parquet",
...                        batch_size=2)
>>> [b.num_rows for b in batches]
[2, 2, 1]
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

Opener = Callable[[], Any]
"""Opens a fresh binary stream of the (decompressed) file."""

_COPY_BYTES = 1 << 20


def read_parquet(
    open_stream: Opener,
    *,
    path: Path | str,
    batch_size: int = 65_536,
    seekable: bool = True,
) -> Iterator[pa.RecordBatch]:
    """Stream record batches of at most ``batch_size`` rows.

    ``seekable=False`` (a compressed file): spool it to a temporary file first.
    """
    del path  # errors are named by the caller
    if seekable:
        with open_stream() as raw:
            yield from _batches(raw, batch_size)
        return
    with tempfile.TemporaryFile(prefix="loopline-", suffix=".parquet") as spool:
        with open_stream() as raw:
            shutil.copyfileobj(raw, spool, _COPY_BYTES)
        spool.seek(0)
        yield from _batches(spool, batch_size)


def _batches(source: Any, batch_size: int) -> Iterator[pa.RecordBatch]:
    parquet = pq.ParquetFile(source)
    emitted = 0
    for batch in parquet.iter_batches(batch_size=batch_size, use_threads=False):
        emitted += batch.num_rows
        yield batch
    if emitted == 0:
        yield pa.RecordBatch.from_pylist([], schema=parquet.schema_arrow)
