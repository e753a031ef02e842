"""JSON reader: a streamed array (ijson) or NDJSON, into Arrow tables of records.

``layout: auto`` looks at the first non-space byte: ``[`` is an array, ``{`` is NDJSON.
With ``records_path`` (an ijson prefix such as ``data.item``) the records are taken from
inside each document instead. ``flatten`` turns nested objects into ``a.b`` columns, else
they stay Arrow structs. A key whose values mix types across records (``1``, ``"x"``,
``2.5``) becomes a string column: strings as they are, other values as JSON text, so the
contract can coerce them and quarantine what does not fit.

Given a :class:`RejectLog`, an NDJSON line that is not valid JSON, or not an object, is
logged (line, raw text, parser message) and the rest of the file read; a file where most
of the first lines fail raises instead (it is not NDJSON), and so does a first line that is
only the start of a value (a pretty-printed document). Without a log, any bad line is an
error. An array is all or nothing: a broken one is a truncated or corrupt file.

>>> import pyarrow as pa
>>> from loopline.config.sources import JsonOptions
>>> data = b'[{"id": 1, "user": {"name": "ann"}}, {"id": "x"}]'
>>> [t.to_pylist() for t in read_json(lambda: pa.BufferReader(data), JsonOptions(), path="a")]
[[{'id': '1', 'user.name': 'ann'}, {'id': 'x', 'user.name': None}]]
"""

from __future__ import annotations

import codecs
import io
import json
from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from pathlib import Path
from typing import Any

import ijson
import pyarrow as pa

from loopline.config.sources import JsonOptions
from loopline.errors import SourceError
from loopline.ingest.sources.rejects import MostlyInvalidCheck, RejectLog

Opener = Callable[[], Any]
"""Opens a fresh binary stream of the (decompressed) file."""

_HEAD_BYTES = 64 * 1024
_CONVERSION_ERRORS = (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError)


def read_json(
    open_stream: Opener,
    options: JsonOptions,
    *,
    path: Path | str,
    batch_size: int = 65_536,
    rejects: RejectLog | None = None,
) -> Iterator[pa.Table]:
    """Stream tables of at most ``batch_size`` records; nothing for a blank file.

    Bad NDJSON lines go to ``rejects`` as they are met, so those before a table's last
    record are logged when it is yielded.
    """
    first, bom = _first_byte(open_stream)
    if first is None:
        return
    with open_stream() as raw:
        if bom:
            raw.read(len(codecs.BOM_UTF8))
        records = _records(raw, options, first, path, rejects)
        for rows in _batched(records, batch_size):
            yield records_to_table(rows, flatten=options.flatten, path=path)


def records_to_table(
    rows: list[Any], *, flatten: bool = True, path: Path | str | None = None
) -> pa.Table:
    """Arrow table of a list of JSON objects; mixed-type keys become string columns.

    >>> records_to_table([{"a": {"b": 1}}, {"a": {"b": 2}}]).column_names
    ['a.b']
    >>> records_to_table([{"a": 1}, {"a": True}]).column("a").to_pylist()
    ['1', 'true']
    """
    try:
        array = pa.array(rows)
    except _CONVERSION_ERRORS:
        table = _table_by_column(rows, flatten=flatten, path=path)
    else:
        if not pa.types.is_struct(array.type) and len(rows):
            raise _not_objects(path)
        table = pa.Table.from_struct_array(array) if len(rows) else pa.table({})
    if flatten:
        while any(pa.types.is_struct(field.type) for field in table.schema):
            table = table.flatten()
    return table


def _first_byte(open_stream: Opener) -> tuple[str | None, bool]:
    """The first non-space character (``None``: blank file) and whether a BOM precedes it."""
    with open_stream() as raw:
        head: bytes = raw.read(_HEAD_BYTES)
        bom = head.startswith(codecs.BOM_UTF8)
        if bom:
            head = head[len(codecs.BOM_UTF8) :]
        while head:
            stripped = head.lstrip()
            if stripped:
                return chr(stripped[0]), bom
            head = raw.read(_HEAD_BYTES)
    return None, bom


def _records(
    raw: Any, options: JsonOptions, first: str, path: Path | str, rejects: RejectLog | None
) -> Iterator[Any]:
    if options.records_path:
        return iter(ijson.items(raw, options.records_path, use_float=True, multiple_values=True))
    layout: str = options.layout
    if layout == "auto":
        layout = {"[": "array", "{": "ndjson"}.get(first, "unknown")
    if layout == "array":
        return iter(ijson.items(raw, "item", use_float=True))
    if layout == "ndjson":
        return _ndjson(raw, path, rejects)
    raise SourceError(
        f"not JSON: the file starts with {first!r}, neither '[' (array) nor '{{' (NDJSON)",
        path=str(path),
        hint="check the file, or set json.layout / json.records_path",
    )


def _ndjson(raw: Any, path: Path | str, rejects: RejectLog | None) -> Iterator[Any]:
    check = MostlyInvalidCheck(
        "the file does not look like NDJSON (one JSON object per line)",
        path=str(path),
        hint=_NDJSON_HINT,
    )
    valid = rejected = 0
    for number, line in enumerate(io.BufferedReader(raw), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            reason = _line_error(exc)
            if rejects is None or (valid + rejected == 0 and _incomplete(exc)):
                raise SourceError(
                    f"line {number} is not {reason.removeprefix('not ')}",
                    path=str(path),
                    line=number,
                    hint=_NDJSON_HINT,
                ) from exc
        else:
            if isinstance(record, dict):
                valid += 1
                yield record
                check.update(valid=valid, rejected=rejected)
                continue
            if rejects is None:
                raise _not_objects(path)
            reason = f"not a JSON object but {_json_kind(record)}"
        rejects.add(number, line.decode("utf-8", "replace").rstrip("\r\n"), reason)
        rejected += 1
        check.update(valid=valid, rejected=rejected)
    check.update(valid=valid, rejected=rejected, final=True)


_NDJSON_HINT = (
    "NDJSON needs one JSON object per line; for one document holding a list, set "
    "json.records_path (e.g. 'data.item')"
)


def _line_error(exc: ValueError) -> str:
    if not isinstance(exc, json.JSONDecodeError):
        return "not UTF-8 text"
    end = len(exc.doc.rstrip())
    where = "at the end of the line" if exc.pos >= end else f"at column {exc.pos + 1}"
    return f"not valid JSON: {exc.msg} {where}"


def _incomplete(exc: ValueError) -> bool:
    """The line is only the start of a value (``{`` of a pretty-printed document)."""
    return isinstance(exc, json.JSONDecodeError) and exc.pos >= len(exc.doc.rstrip())


def _json_kind(value: Any) -> str:
    """What a JSON value is, for a reject's reason.

    >>> _json_kind([1]), _json_kind("a"), _json_kind(None)
    ('an array', 'a string', 'null')
    """
    if value is None:
        return "null"
    kinds = {list: "an array", str: "a string", bool: "a boolean"}
    return kinds.get(type(value), "a number")


def _batched(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


def _table_by_column(rows: list[Any], *, flatten: bool, path: Path | str | None) -> pa.Table:
    """Slow path for mixed types: one column at a time, failing ones as text."""
    if not all(isinstance(row, dict) for row in rows):
        raise _not_objects(path)
    if flatten:
        rows = [_flatten_record(row) for row in rows]
    keys = list(dict.fromkeys(key for row in rows for key in row))
    columns: dict[str, pa.Array] = {}
    for key in keys:
        values = [row.get(key) for row in rows]
        try:
            columns[key] = pa.array(values)
        except _CONVERSION_ERRORS:
            columns[key] = pa.array([_as_text(v) for v in values], pa.string())
    return pa.table(columns)


def _flatten_record(record: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(_flatten_record(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _as_text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def _not_objects(path: Path | str | None) -> SourceError:
    return SourceError(
        "the records are not JSON objects",
        path=None if path is None else str(path),
        hint="point json.records_path at a list of objects (e.g. 'data.item')",
    )
