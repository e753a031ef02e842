"""The training frame of a job, read from the warehouse or a file, with its data lineage.

A job names one source (see :class:`~loopline.config.training.TrainJobConfig`):

- ``table``: a warehouse table (``stores.warehouse_url``), read whole;
- ``query``: a SQL query run on the warehouse (placeholders are not needed here);
- ``file``: a CSV or Parquet file, relative to the project folder, read with Polars.

:func:`load_training_frame` returns the rows as pandas (what scikit-learn pipelines take)
plus the lineage a tracked run records: where the rows came from, how many, a content
hash and the ingestion batches they belong to. The lineage columns of ingested rows
(``_source``, ``_batch_id``, ``_ingested_at``: see :mod:`loopline.lineage`) are read for
the lineage and then removed, so they can never become features.

The content hash is a SHA-256 over the column names and types and Polars' row hashes of
the data columns (:func:`content_hash`): the same values of the same types in the same
order hash the same whatever their Arrow chunking, and re-ingesting the rows (new
``_ingested_at``, new batch ids) does not change it.

Example (not run here: it needs a project with a warehouse)::

    data = load_training_frame(config, config.train["churn"])
    data.rows, data.content_hash[:12], data.batch_ids[:2]
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from loopline import lineage
from loopline.config import LooplineConfig, TrainJobConfig
from loopline.errors import StoreError, TrainError

MAX_BATCH_IDS = 1000
"""At most this many distinct batch ids are kept in the lineage (the first, sorted)."""
_CSV_SUFFIXES = (".csv", ".tsv", ".txt")
_PARQUET_SUFFIXES = (".parquet", ".pq")


@dataclass(frozen=True)
class TrainingData:
    """The rows of a training job and where they came from.

    ``source`` reads ``table:<name>``, ``query:<sql>`` or ``file:<path>``; ``batch_ids`` are
    the distinct ingestion batches of the rows (empty for a file without ``_batch_id``).
    """

    frame: pd.DataFrame
    source: str
    rows: int
    content_hash: str
    batch_ids: list[str] = field(default_factory=list)

    def lineage(self) -> dict[str, object]:
        """Source, row count and content hash: the ``loopline.lineage`` model-version tag.

        >>> TrainingData(pd.DataFrame({"a": [1]}), "file:x.csv", 1, "ab12").lineage()
        {'source': 'file:x.csv', 'rows': 1, 'content_hash': 'ab12'}
        """
        return {"source": self.source, "rows": self.rows, "content_hash": self.content_hash}


def load_training_frame(config: LooplineConfig, job: TrainJobConfig) -> TrainingData:
    """Read the rows ``job`` names and compute their lineage (module docstring)."""
    if job.file:
        table, source = _read_file(config, job.file), f"file:{job.file}"
    elif job.table:
        table, source = _read_table(config, job.table), f"table:{job.table}"
    else:
        assert job.query is not None  # TrainJobConfig requires exactly one source
        table, source = _run_query(config, job.query), f"query:{job.query}"
    return training_data(table, source)


def training_data(table: pa.Table, source: str) -> TrainingData:
    """Lineage of an Arrow table and its data columns as pandas.

    >>> data = training_data(pa.table({"x": [1, 2], "_batch_id": ["b2", "b1"]}), "test")
    >>> list(data.frame.columns), data.rows, data.batch_ids
    (['x'], 2, ['b1', 'b2'])
    """
    batch_ids: list[str] = []
    if lineage.BATCH_ID in table.column_names:
        distinct = pc.unique(table[lineage.BATCH_ID].drop_null())
        batch_ids = sorted(str(v) for v in distinct.to_pylist())[:MAX_BATCH_IDS]
    data_columns = [c for c in table.column_names if c not in lineage.COLUMNS]
    data = table.select(data_columns)
    frame = data.to_pandas()
    return TrainingData(
        frame=frame,
        source=source,
        rows=table.num_rows,
        content_hash=content_hash(data),
        batch_ids=batch_ids,
    )


def content_hash(table: pa.Table) -> str:
    """SHA-256 (hex) of ``table``'s column names, Polars types and row hashes.

    Independent of Arrow chunking, buffer padding, schema metadata and string layout
    (``large_string`` from Polars, ``string`` from DuckDB read the same). The row hashes are
    Polars' ``hash_rows`` with a fixed seed: stable within one Polars version (Arrow IPC bytes
    are not: the bits past a null bitmap's end and the values under nulls are undefined).

    >>> a = pa.table({"x": [1, 2, None]})
    >>> b = pa.concat_tables([a.slice(0, 1), a.slice(1)])
    >>> content_hash(a) == content_hash(b) != content_hash(a.slice(1))
    True
    """
    import polars as pl

    frame = pl.from_arrow(table.replace_schema_metadata(None), rechunk=True)
    assert isinstance(frame, pl.DataFrame)
    digest = hashlib.sha256(repr(list(frame.schema.items())).encode())
    if frame.width and frame.height:
        rows = frame.hash_rows(seed=0)
        digest.update(rows.to_numpy().astype("<u8", copy=False).tobytes())
    digest.update(str(frame.height).encode())
    return digest.hexdigest()


def _read_table(config: LooplineConfig, name: str) -> pa.Table:
    from loopline.store.sql_names import redact_url
    from loopline.store.warehouse import open_warehouse

    warehouse = open_warehouse(config.stores.warehouse_url, base_dir=config.project_dir)
    try:
        tables = warehouse.tables()
        if name not in tables:
            visible = [t for t in tables if not lineage.is_lineage(t)]
            raise TrainError(
                f"table {name!r} is not in the warehouse; tables: {', '.join(visible) or 'none'}",
                table=name,
                warehouse=redact_url(config.stores.warehouse_url),
                hint="run the ingest job that loads it (`loopline ingest ...`), "
                "or fix 'table' in the training job",
            )
        return warehouse.read_table(name)
    finally:
        warehouse.close()


def _run_query(config: LooplineConfig, sql: str) -> pa.Table:
    from loopline.store.warehouse import open_warehouse

    warehouse = open_warehouse(config.stores.warehouse_url, base_dir=config.project_dir)
    try:
        return warehouse.query(sql)
    except StoreError as exc:
        raise TrainError(
            f"the training query failed: {exc.message}",
            query=sql,
            hint="check the SQL against the warehouse tables (`loopline ...` lists them)",
        ) from exc
    finally:
        warehouse.close()


def _read_file(config: LooplineConfig, file: str) -> pa.Table:
    import polars as pl

    path: Path = config.resolve_path(file)
    if not path.is_file():
        raise TrainError(
            "the training file does not exist",
            path=str(path),
            hint="paths are relative to the project folder",
        )
    suffix = path.suffix.lower()
    try:
        if suffix in _PARQUET_SUFFIXES:
            frame = pl.read_parquet(path)
        elif suffix in _CSV_SUFFIXES:
            frame = pl.read_csv(
                path, separator="\t" if suffix == ".tsv" else ",", infer_schema_length=10_000
            )
        else:
            raise TrainError(
                f"cannot read a {suffix or 'suffix-less'} file for training",
                path=str(path),
                hint="use a .csv or .parquet file, or ingest it into the warehouse first",
            )
    except pl.exceptions.PolarsError as exc:
        raise TrainError(
            f"cannot read the training file: {exc}",
            path=str(path),
            hint="check that it is valid CSV / Parquet",
        ) from exc
    return frame.to_arrow()
