"""The lake destination: Delta Lake tables (Parquet files plus a transaction log).

Every table is a Delta table in a folder under the lake root (a local folder, ``file://``,
``s3://``, ``az://`` / ``abfss://`` or ``gs://``). Each batch is one Delta commit, so a
reader sees a whole batch or none of it, and a crash mid-write leaves only unreferenced
files behind. The job's new source state rides in the same commit (commit metadata) and is
then copied to a small per-job state table, the index :meth:`ParquetLake.read_state` starts
from. Re-committing a ``batch_id`` replaces that batch's rows in one commit instead of
adding them twice.

>>> import tempfile
>>> lake = ParquetLake("lake", base_dir=Path(tempfile.mkdtemp()))
>>> lake.commit_batch(table="orders", data=pa.table({"id": [1, 2]}), mode="append", key=[],
...                   quarantine=None, job="orders", batch_id="b1", state={"offset": 2})
2
>>> lake.read_table("orders").num_rows, lake.read_state("orders")
(2, {'offset': 2})
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import polars as pl
import pyarrow as pa
from deltalake import CommitProperties, DeltaTable, write_deltalake
from deltalake.exceptions import DeltaError, SchemaMismatchError, TableNotFoundError
from deltalake.fs import DeltaStorageHandler

from loopline.errors import StoreError
from loopline.lineage import BATCH_ID
from loopline.store.destination import QUARANTINE_TABLE, STATE_TABLE, WriteMode, with_batch_id

log = logging.getLogger(__name__)

STAGING_DIR = "_loopline_staging"
"""Folder under the lake root holding the tables a ``replace`` run builds before the swap."""
STATE_KEY = "loopline.state."
"""Commit-metadata key prefix (``loopline.state.<job>``) carrying a job's source state."""
REMOTE_SCHEMES = frozenset({"s3", "s3a", "az", "abfs", "abfss", "gs", "gcs"})
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*\Z")


class ParquetLake:
    """A :class:`~loopline.store.destination.Destination` writing Delta tables to a lake.

    ``url``: a folder (relative to ``base_dir``) or a ``file://`` / ``s3://`` / ``az://`` /
    ``abfss://`` / ``gs://`` URL. ``partition_by``: hive-style partition columns of the
    tables this lake creates (internal tables are never partitioned). ``storage_options``:
    passed to delta-rs (credentials, endpoint); the ``AWS_*`` / ``AZURE_*`` / ``GOOGLE_*``
    environment variables are read as well.
    """

    def __init__(
        self,
        url: str,
        *,
        base_dir: Path,
        partition_by: Sequence[str] = (),
        storage_options: Mapping[str, str] | None = None,
    ) -> None:
        self.root = _resolve_root(url, base_dir)
        self.partition_by = list(partition_by)
        self.storage_options = dict(storage_options) if storage_options else None
        self._tables: dict[str, DeltaTable] = {}
        self._staging: set[str] = set()  # tables this instance has begun to stage

    # -- Destination -------------------------------------------------------------------

    def table_schema(self, table: str) -> pa.Schema | None:
        """The stored schema of ``table``, or ``None`` when it does not exist yet."""
        with _store_errors("read schema of", table):
            dt = self._open(self._uri(table))
            return None if dt is None else pa.schema(dt.schema().to_arrow())

    def read_state(self, job: str) -> dict[str, Any] | None:
        """``job``'s state from its last committed batch (recovered from the data table's
        commit metadata if the process died before the state table was updated)."""
        _check_name(job, "job")
        with _store_errors("read state of", job):
            index = self._open(self._state_uri(job))
            if index is None:
                return None
            found = index.to_pyarrow_table().to_pylist()
            if not found:
                return None
            row = found[0]
            data = self._open(self._uri(row["table"]))
            if data is not None:
                newer = _latest_state(data, job, after=int(row["version"]))
                if newer is not None:
                    return newer
            return dict(json.loads(row["state"]))

    def commit_batch(
        self,
        *,
        table: str,
        data: pa.Table,
        mode: WriteMode,
        key: Sequence[str],
        quarantine: pa.Table | None,
        job: str,
        batch_id: str,
        state: dict[str, Any] | None,
        new_batch: bool = False,
    ) -> int:
        """Write one batch as one Delta commit; re-committing ``batch_id`` replaces it.

        ``new_batch`` is accepted for the protocol; the lake always replaces by predicate."""
        _check_name(table, "table")
        _check_name(job, "job")
        data = with_batch_id(data, batch_id)
        if quarantine is not None and quarantine.num_rows:
            with _store_errors("write quarantine rows of", table):
                self._replace_batch(
                    self._uri(QUARANTINE_TABLE), with_batch_id(quarantine, batch_id), batch_id
                )
        if mode == "replace":
            # The state is held in the staging commit until finish_replace swaps it in.
            with _store_errors("stage", table):
                if table not in self._staging:  # a crashed run's batches must not leak in
                    self._tables.pop(self._staging_uri(table), None)
                    self._remove_staging(table)
                    self._staging.add(table)
                self._replace_batch(
                    self._staging_uri(table), data, batch_id, metadata=_state_metadata(job, state)
                )
            return int(data.num_rows)
        version = self._commit_data(
            table=table, data=data, mode=mode, key=key, job=job, batch_id=batch_id, state=state
        )
        if state is not None:
            self._save_state(job, table, version, state)
        return int(data.num_rows)

    def finish_replace(self, *, table: str, job: str) -> None:
        """Swap the staged rows in as ``table`` in one commit, with the held state."""
        _check_name(table, "table")
        staging_uri = self._staging_uri(table)
        with _store_errors("replace", table):
            staging = self._open(staging_uri)
            target_uri = self._uri(table)
            if staging is None:
                # No batch at all: the source is empty now, so is the replaced table.
                target = self._open(target_uri)
                if target is not None:
                    target.delete()
                return
            held = _latest_state(staging, job, after=-1)
            rows = staging.to_pyarrow_dataset().scanner().to_reader()
            write_deltalake(
                target_uri,
                rows,
                mode="overwrite",
                schema_mode="overwrite",
                partition_by=self.partition_by or None,
                storage_options=self.storage_options,
                commit_properties=CommitProperties(custom_metadata=_state_metadata(job, held)),
            )
            target = self._reload(target_uri)
            if held is not None:
                self._save_state(job, table, target.version(), held)
            self._tables.pop(staging_uri, None)
            self._remove_staging(table)
            self._staging.discard(table)

    def read_table(self, table: str) -> pa.Table:
        """The whole table; a :class:`StoreError` when it does not exist."""
        with _store_errors("read", table):
            dt = self._open(self._uri(table))
            if dt is None:
                raise StoreError(
                    "lake table does not exist",
                    table=table,
                    lake=self.root,
                    hint="run an ingest job that writes it first",
                )
            return dt.to_pyarrow_table()

    def close(self) -> None:
        self._tables.clear()

    def read_since(
        self, table: str, column: str, since: datetime, columns: Sequence[str] | None = None
    ) -> pa.Table | None:
        """Rows of ``table`` whose ``column`` is ``since`` or later (``columns`` of them that
        exist, or all); ``None`` when the table does not exist (stream recovery)."""
        import pyarrow.dataset as ds

        _check_name(table, "table")
        with _store_errors("read", table):
            dt = self._open(self._uri(table))
            if dt is None:
                return None
            dataset = dt.to_pyarrow_dataset()
            names = dataset.schema.names
            wanted = [c for c in columns if c in names] if columns is not None else None
            bound = pa.scalar(since, type=dataset.schema.field(column).type)
            return dataset.to_table(columns=wanted, filter=ds.field(column) >= bound)

    def delete_before(self, table: str, column: str, cutoff: datetime) -> int:
        """Delete the rows of ``table`` whose ``column`` is before ``cutoff`` (retention) in
        one commit; returns how many went (0 when the table does not exist)."""
        _check_name(table, "table")
        with _store_errors("delete old rows from", table):
            dt = self._open(self._uri(table))
            if dt is None:
                return 0
            when = cutoff.astimezone(UTC).isoformat()
            metrics = dt.delete(f"`{column}` < '{when}'")
            return int(metrics.get("num_deleted_rows", 0))

    # -- internals ---------------------------------------------------------------------

    def _commit_data(
        self,
        *,
        table: str,
        data: pa.Table,
        mode: WriteMode,
        key: Sequence[str],
        job: str,
        batch_id: str,
        state: dict[str, Any] | None,
    ) -> int:
        """Write ``data`` (append or merge) with ``state`` in the commit; the new version."""
        uri = self._uri(table)
        metadata = _state_metadata(job, state)
        with _store_errors("write", table):
            if mode == "merge":
                return self._merge(uri, table, data, key, metadata)
            return self._replace_batch(uri, data, batch_id, metadata=metadata, user_table=True)

    def _replace_batch(
        self,
        uri: str,
        data: pa.Table,
        batch_id: str,
        *,
        metadata: dict[str, str] | None = None,
        user_table: bool = False,
    ) -> int:
        """Append ``data``, replacing rows an earlier commit of ``batch_id`` wrote."""
        props = CommitProperties(custom_metadata=metadata or None)
        dt = self._open(uri)
        if dt is None:
            partitions = self.partition_by if user_table else []
            _check_columns(data, partitions, uri, "partition_by")
            write_deltalake(
                uri,
                data,
                mode="append",
                partition_by=partitions or None,
                storage_options=self.storage_options,
                commit_properties=props,
            )
            return self._reload(uri).version()
        write_deltalake(
            dt,
            data,
            mode="overwrite",
            predicate=f"`{BATCH_ID}` = {_sql_string(batch_id)}",
            schema_mode="merge",
            commit_properties=props,
        )
        return dt.version()

    def _merge(
        self, uri: str, table: str, data: pa.Table, key: Sequence[str], metadata: dict[str, str]
    ) -> int:
        """Upsert ``data`` by ``key`` (null keys match null keys; the last duplicate wins)."""
        if not key:
            raise StoreError(
                "mode 'merge' needs key columns", table=table, hint="set 'key' on the destination"
            )
        _check_columns(data, key, table, "key")
        data = _last_per_key(data, key)
        dt = self._open(uri)
        if dt is None:
            return self._replace_batch(uri, data, "", metadata=metadata, user_table=True)
        predicate = " AND ".join(f"t.`{k}` <=> s.`{k}`" for k in key)
        (
            dt.merge(
                data,
                predicate,
                source_alias="s",
                target_alias="t",
                merge_schema=True,
                commit_properties=CommitProperties(custom_metadata=metadata or None),
            )
            .when_matched_update_all()
            .when_not_matched_insert_all()
            .execute()
        )
        return dt.version()

    def _save_state(self, job: str, table: str, version: int, state: dict[str, Any]) -> None:
        """Copy ``state`` (already in ``table``'s commit ``version``) to the job's index."""
        row = pa.table(
            {
                "job": [job],
                "table": [table],
                "version": pa.array([version], pa.int64()),
                "state": [json.dumps(state, sort_keys=True, default=str)],
                "committed_at": pa.array([datetime.now(UTC)], pa.timestamp("us", "UTC")),
            }
        )
        uri = self._state_uri(job)
        with _store_errors("save state of", job):
            dt = self._open(uri)
            write_deltalake(
                dt if dt is not None else uri,
                row,
                mode="overwrite",
                storage_options=None if dt is not None else self.storage_options,
            )

    def _open(self, uri: str) -> DeltaTable | None:
        """The Delta table at ``uri`` brought up to date, or ``None`` when there is none."""
        dt = self._tables.get(uri)
        if dt is not None:
            dt.update_incremental()
            return dt
        try:
            dt = DeltaTable(uri, storage_options=self.storage_options)
        except TableNotFoundError:
            return None
        self._tables[uri] = dt
        return dt

    def _reload(self, uri: str) -> DeltaTable:
        self._tables.pop(uri, None)
        dt = self._open(uri)
        assert dt is not None, uri
        return dt

    def _remove_staging(self, table: str) -> None:
        relative = f"{STAGING_DIR}/{table}"
        if "://" in self.root:
            # delta-rs's own object-store client, so the same credentials apply.
            DeltaStorageHandler(self.root, options=self.storage_options).delete_dir(relative)
        else:
            shutil.rmtree(Path(self.root) / relative, ignore_errors=True)

    def _uri(self, table: str) -> str:
        return f"{self.root}/{table}"

    def _staging_uri(self, table: str) -> str:
        return f"{self.root}/{STAGING_DIR}/{table}"

    def _state_uri(self, job: str) -> str:
        return f"{self.root}/{STATE_TABLE}/{job}"


def _resolve_root(url: str, base_dir: Path) -> str:
    """The lake root: an absolute local path, or a remote URL without a trailing slash."""
    scheme = urlparse(url).scheme.lower()
    if scheme in REMOTE_SCHEMES:
        return url.rstrip("/")
    if scheme == "file":
        path = Path(urlparse(url).path)
    elif scheme and len(scheme) > 1:  # one letter: a Windows drive, i.e. a local path
        raise StoreError(
            f"lake URL scheme '{scheme}' is not supported",
            url=url,
            hint=f"use a local folder or one of: file, {', '.join(sorted(REMOTE_SCHEMES))}",
        )
    else:
        path = Path(url)
    path = path if path.is_absolute() else base_dir / path
    path.mkdir(parents=True, exist_ok=True)
    return str(path.resolve())


def _latest_state(dt: DeltaTable, job: str, *, after: int) -> dict[str, Any] | None:
    """The newest state of ``job`` in the commit metadata of versions ``> after``."""
    newer = dt.version() - after
    if newer <= 0:
        return None
    name = STATE_KEY + job
    for commit in dt.history(limit=newer):
        if name in commit and int(commit["version"]) > after:
            return dict(json.loads(commit[name]))
    return None


def _state_metadata(job: str, state: dict[str, Any] | None) -> dict[str, str]:
    if state is None:
        return {}
    return {STATE_KEY + job: json.dumps(state, sort_keys=True, default=str)}


def _last_per_key(data: pa.Table, key: Sequence[str]) -> pa.Table:
    """``data`` keeping the last row of each key (a merge source must not repeat a key)."""
    keys = pl.from_arrow(data.select(list(key)))
    assert isinstance(keys, pl.DataFrame)
    index = keys.with_row_index("_row").unique(subset=list(key), keep="last", maintain_order=True)
    if index.height == data.num_rows:
        return data
    return data.take(index["_row"].to_arrow())


def _check_columns(data: pa.Table, columns: Sequence[str], table: str, what: str) -> None:
    missing = [c for c in columns if c not in data.column_names]
    if missing:
        raise StoreError(
            f"{what} column(s) missing from the batch",
            table=table,
            column=", ".join(missing),
            hint=f"the batch has: {', '.join(data.column_names)}",
        )


def _check_name(name: str, what: str) -> None:
    if not _NAME.match(name):
        raise StoreError(
            f"invalid lake {what} name {name!r}",
            hint="use letters, digits, '_', '-' and '.', not starting with '-' or '.'",
        )


def _sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


@contextmanager
def _store_errors(action: str, table: str) -> Iterator[None]:
    """Turn delta-rs / Arrow / OS failures into a :class:`StoreError` naming the table."""
    try:
        yield
    except SchemaMismatchError as exc:
        raise StoreError(
            f"cannot {action} lake table: a column changed type ({exc})",
            table=table,
            hint="cast the column in the contract, or use mode 'replace' to rewrite the table",
        ) from exc
    except (DeltaError, pa.ArrowException, OSError) as exc:
        raise StoreError(
            f"cannot {action} lake table: {exc}",
            table=table,
            hint="check the lake URL, its credentials and free space",
        ) from exc


__all__ = ["REMOTE_SCHEMES", "STAGING_DIR", "STATE_KEY", "ParquetLake"]
