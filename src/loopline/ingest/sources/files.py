"""Local files as a source: discovery, decompression, fingerprints and chunking.

``path`` is a file, a glob (``**`` included) or a folder (every supported file inside,
recursively, sorted; hidden files skipped); relative paths are taken from ``base_dir``.
With ``format: auto`` the extension picks the reader, looking through ``.gz`` / ``.zst``
(decompressed as a stream). Paths in state and chunk origins are relative to ``base_dir``
when the file lies inside it, else absolute.

Incremental state is ``{"files": {path: {"size": int, "sha256": str}}}``: a file whose
path, size and content hash are already there is skipped. Each chunk's position is
``"<path>:<sha256>:<chunk index>"`` (two files with the same bytes are two inputs); only
the last chunk of a file carries the new state, so a file counts as ingested once all its
chunks are durable. CSV rows and NDJSON lines that cannot be parsed travel as
``Chunk.rejects`` on the chunk being cut when the reader met them (the file's last chunk,
empty if need be, for those after its last row).

>>> import tempfile
>>> from loopline.config.sources import FileSourceConfig
>>> folder = Path(tempfile.mkdtemp())
>>> _ = (folder / "a.csv").write_text("id,name\\n1,ann\\n2,bob\\n")
>>> source = FileSource("people", FileSourceConfig(type="file", path="*.csv"), base_dir=folder)
>>> chunks = list(source.read(None))
>>> [(c.origin, c.num_rows, list(c.state["files"])) for c in chunks]
[('file:a.csv', 2, ['a.csv'])]
>>> list(source.read(chunks[-1].state))
[]
>>> import shutil; shutil.rmtree(folder)
"""

from __future__ import annotations

import csv as std_csv
import glob
import hashlib
import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from loopline.config.sources import FileSourceConfig
from loopline.errors import ConfigError, SourceError
from loopline.ingest.sources.base import Chunk
from loopline.ingest.sources.csv import read_csv
from loopline.ingest.sources.rejects import RejectLog, concat_rejects

logger = logging.getLogger(__name__)

FORMATS = {
    ".csv": "csv",
    ".tsv": "csv",
    ".txt": "csv",
    ".json": "json",
    ".jsonl": "json",
    ".ndjson": "json",
    ".xml": "xml",
    ".parquet": "parquet",
    ".pq": "parquet",
}
"""Reader chosen by extension when ``format: auto``."""

COMPRESSIONS = {".gz": "gzip", ".zst": "zstd"}
"""Compressed extensions and their pyarrow codec."""

_READ_ERRORS: tuple[type[Exception], ...] = (
    pa.ArrowException,
    OSError,
    EOFError,
    UnicodeError,
    std_csv.Error,
)
"""What a failed read raises, whatever the format; :func:`read_errors` adds the parsers'."""


def read_errors(fmt: str | None) -> tuple[type[Exception], ...]:
    """The exceptions that mean "this file cannot be read as ``fmt``".

    The JSON and XML parsers are imported for their formats only (a CSV run never loads
    them), so their errors join the tuple only for those formats.

    >>> import ijson
    >>> ijson.JSONError in read_errors("json"), ijson.JSONError in read_errors("csv")
    (True, False)
    """
    if fmt == "json":
        import ijson

        return (*_READ_ERRORS, ijson.JSONError)
    if fmt == "xml":
        from lxml import etree

        return (*_READ_ERRORS, etree.Error)
    return _READ_ERRORS


@dataclass(frozen=True)
class Fingerprint:
    """Size and content hash of a file, as stored in incremental state."""

    size: int
    sha256: str

    def as_state(self) -> dict[str, Any]:
        return {"size": self.size, "sha256": self.sha256}


def compression_of(path: Path) -> str | None:
    """The pyarrow codec of a compressed file, else ``None``.

    >>> compression_of(Path("a.csv.zst")), compression_of(Path("a.csv"))
    ('zstd', None)
    """
    return COMPRESSIONS.get(path.suffix.lower())


def format_of(path: Path) -> str | None:
    """The format an extension names, looking through compression; ``None``: unknown.

    >>> format_of(Path("orders.JSONL.gz"))
    'json'
    """
    name = path.with_suffix("") if compression_of(path) else path
    return FORMATS.get(name.suffix.lower())


def discover(pattern: str, *, base_dir: Path, fmt: str = "auto") -> list[Path]:
    """The files ``pattern`` names, sorted; a :class:`SourceError` when there are none."""
    expanded = Path(pattern).expanduser()
    full = expanded if expanded.is_absolute() else base_dir / expanded
    if any(ch in pattern for ch in "*?["):
        matches = [Path(p) for p in glob.glob(str(full), recursive=True)]
        files = [p for p in matches if p.is_file() and (fmt != "auto" or format_of(p))]
    elif full.is_dir():
        files = [
            p
            for p in full.rglob("*")
            if p.is_file()
            and not any(part.startswith(".") for part in p.relative_to(full).parts)
            and (fmt != "auto" or format_of(p))
        ]
    else:
        files = [full] if full.is_file() else []
    if not files:
        raise SourceError(
            f"no file matches {pattern!r}",
            path=str(full),
            hint="check the path (relative paths start at the project folder); "
            "with format: auto only .csv .tsv .txt .json .jsonl .ndjson .xml .parquet .pq "
            "(optionally .gz / .zst) files are picked up",
        )
    return sorted(files)


def open_stream(path: Path) -> Any:
    """A binary stream of the file's content, decompressed on the fly for .gz / .zst."""
    compression = compression_of(path)
    if compression is None:
        return pa.OSFile(str(path))
    return pa.input_stream(str(path), compression=compression)


def fingerprint(path: Path) -> Fingerprint:
    """Size and sha256 of a file, read as a stream."""
    with path.open("rb") as handle:
        digest = hashlib.file_digest(handle, "sha256")
        size = handle.tell()
    return Fingerprint(size=size, sha256=digest.hexdigest())


def rebatch(
    batches: Iterable[Any], batch_size: int, *, to_text: bool = False
) -> Iterator[pa.Table]:
    """Tables of exactly ``batch_size`` rows (the last one fewer), whatever came in.

    Boundaries depend only on the rows, so positions are stable across re-reads. A change
    of schema ends the current table early; with ``to_text`` (CSV read typed), columns that
    turn to text instead turn to text in the rows held too (their values all parsed, so
    their canonical text parses back to the same values), keeping the boundaries. With no
    rows at all, one empty table carries the columns (when known).

    >>> [t.num_rows for t in rebatch([pa.table({"a": range(7)})] * 2, 5)]
    [5, 5, 4]
    >>> mixed = [pa.table({"a": [1.5, 2.0]}), pa.table({"a": ["x"]})]
    >>> [t.column("a").to_pylist() for t in rebatch(mixed, 5, to_text=True)]
    [['1.5', '2', 'x']]
    """
    pending: list[pa.Table] = []
    rows = 0
    schema: Any = None
    emitted = False
    for item in batches:
        table = item if isinstance(item, pa.Table) else pa.Table.from_batches([item])
        if to_text and pending and _turned_to_text(schema, table.schema):
            pending = [t.cast(table.schema) for t in pending]
            schema = table.schema
        if schema is not None and not table.schema.equals(schema) and pending:
            yield pa.concat_tables(pending)
            emitted, pending, rows = True, [], 0
        schema = table.schema
        if table.num_rows == 0:
            continue
        pending.append(table)
        rows += table.num_rows
        while rows >= batch_size:
            combined = pa.concat_tables(pending)
            yield combined.slice(0, batch_size)
            emitted = True
            rest = combined.slice(batch_size)
            pending, rows = ([rest] if rest.num_rows else []), rows - batch_size
    if pending:
        yield pa.concat_tables(pending)
    elif not emitted and schema is not None:
        yield schema.empty_table()


def _turned_to_text(before: pa.Schema, after: pa.Schema) -> bool:
    """Whether ``after`` is ``before`` with some non-text columns now text, nothing else."""
    if before.names != after.names or before.equals(after):
        return False
    return all(
        old.type == new.type or (new.type == pa.string() and not pa.types.is_string(old.type))
        for old, new in zip(before, after, strict=True)
    )


class FileSource:
    """Reads local CSV, JSON, XML and Parquet files in chunks of ``spec.batch_size`` rows."""

    def __init__(self, name: str, spec: FileSourceConfig, *, base_dir: Path) -> None:
        if spec.format == "xml" and spec.xml is None:
            raise ConfigError(
                f"source {name!r} reads XML but has no xml.record_path",
                path=f"sources.{name}.xml.record_path",
                hint="add xml: {record_path: orders/order}",
            )
        self.name = name
        self.spec = spec
        self.base_dir = Path(base_dir).absolute()
        self._types: dict[str, pa.DataType] = {}
        self._null_values: list[str] = []

    def prefer_types(self, types: Mapping[str, pa.DataType], null_values: Sequence[str]) -> None:
        """Parse these CSV columns typed while they parse cleanly (``null_values`` are nulls
        there); a column with a value that does not parse is read as text, as without this.

        The pipeline asks for the simple types a contract declares (float64, timestamp,
        date), saving the text → type conversion; other formats ignore it.
        """
        self._types = dict(types)
        self._null_values = list(null_values)

    def read(self, state: Mapping[str, Any] | None) -> Iterator[Chunk]:
        """Chunks of every file not yet ingested, file by file, in sorted order."""
        incremental = self.spec.incremental
        seen: dict[str, Any] = dict((state or {}).get("files", {})) if incremental else {}
        for path in discover(self.spec.path, base_dir=self.base_dir, fmt=self.spec.format):
            key = self._key(path)
            try:
                stamp = fingerprint(path)
            except OSError as exc:
                raise SourceError(
                    f"cannot read file {key}: {exc}", source=self.name, path=str(path)
                ) from exc
            if incremental and seen.get(key) == stamp.as_state():
                logger.debug("source %s: %s already ingested, skipped", self.name, key)
                continue
            new_state = {"files": {**seen, key: stamp.as_state()}} if incremental else None
            yield from self._file_chunks(path, key, stamp, new_state)
            if incremental:
                seen[key] = stamp.as_state()

    def _key(self, path: Path) -> str:
        try:
            return path.relative_to(self.base_dir).as_posix()
        except ValueError:
            return str(path)

    def _file_chunks(
        self, path: Path, key: str, stamp: Fingerprint, state: dict[str, Any] | None
    ) -> Iterator[Chunk]:
        origin = f"file:{key}"
        fmt = self.spec.format if self.spec.format != "auto" else format_of(path)
        rejects = RejectLog(fmt or "file")
        held: pa.Table | None = None
        held_rejects: pa.Table | None = None
        index = 0
        # One chunk of look-ahead: the last chunk of the file is the one that carries state.
        for table in self._tables(path, key, stamp, fmt, rejects):
            if held is not None:
                position = f"{key}:{stamp.sha256}:{index}"
                yield Chunk(held, origin, position, state=None, rejects=held_rejects)
                index += 1
            held, held_rejects = table, rejects.take()
        if held is None:
            held = pa.table({})
        last_rejects = concat_rejects(held_rejects, rejects.take())
        position = f"{key}:{stamp.sha256}:{index}"
        yield Chunk(held, origin, position, state=state, rejects=last_rejects)

    def _tables(
        self, path: Path, key: str, stamp: Fingerprint, fmt: str | None, rejects: RejectLog
    ) -> Iterator[pa.Table]:
        if stamp.size == 0:
            return
        try:
            batches = self._batches(path, fmt, rejects)
            yield from rebatch(batches, self.spec.batch_size, to_text=fmt == "csv")
        except SourceError as exc:
            exc.fields = {"source": self.name, "path": str(path), **exc.fields}
            raise
        except read_errors(fmt) as exc:
            detail = " ".join(str(exc).split())[:300] or type(exc).__name__
            raise SourceError(
                f"cannot read {fmt} file {key}: {detail}",
                source=self.name,
                path=str(path),
                hint=f"check that the file is complete, valid {fmt}"
                + (" and that the csv options match it" if fmt == "csv" else ""),
            ) from exc

    def _batches(self, path: Path, fmt: str | None, rejects: RejectLog) -> Iterator[Any]:
        def opener() -> Any:
            return open_stream(path)

        size = self.spec.batch_size
        if fmt == "csv":
            tsv = path.with_suffix("").suffix if compression_of(path) else path.suffix
            delimiter = "\t" if tsv.lower() == ".tsv" else ","
            return read_csv(
                opener,
                self.spec.csv,
                path=path,
                default_delimiter=delimiter,
                rejects=rejects,
                column_types=self._types,
                null_values=self._null_values,
            )
        if fmt == "json":
            from loopline.ingest.sources.json import read_json

            options = self.spec.json_options
            return read_json(opener, options, path=path, batch_size=size, rejects=rejects)
        if fmt == "parquet":
            from loopline.ingest.sources.parquet import read_parquet

            seekable = compression_of(path) is None
            return read_parquet(opener, path=path, batch_size=size, seekable=seekable)
        if fmt == "xml":
            if self.spec.xml is None:
                raise SourceError(
                    f"{path.name} is XML but the source has no xml.record_path",
                    hint="add xml: {record_path: orders/order} to the source",
                )
            from loopline.ingest.sources.xml import read_xml

            return read_xml(opener, self.spec.xml, path=path, batch_size=size)
        raise SourceError(
            f"cannot tell the format of {path.name} from its extension",
            hint="set format: csv | json | xml | parquet on the source",
        )
