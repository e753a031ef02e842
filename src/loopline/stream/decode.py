"""Turn a batch of raw deliveries into one Polars frame of readings and one of rejects.

The processor hands :func:`decode_batch` every delivery of a micro-batch; what comes back
is columnar, so nothing downstream touches one Python object per message. JSON takes a
fast path: the payloads are joined into one NDJSON buffer (raw line breaks inside a
payload become spaces) and parsed once by Polars, with the schema inferred over the whole
batch. Payloads that do not look like ``{...}`` are checked one by one first, so a
truncated or garbage message does not spoil the fast parse; when it fails anyway, one
vectorised validity pass splits good from bad and the good ones are parsed fast again; a
batch Polars cannot put in one frame (a field mixing kinds of value) is built from the
decoded dicts. MessagePack payloads are unpacked one by one (``msgpack.unpackb``) and the
frame is built from the dicts. NaN, infinities and numbers beyond float range are not
JSON here (``decode:json``).

What a good row looks like:

- payload fields, with one level of nested objects flattened as ``parent_child``; deeper
  objects are kept as JSON text, arrays as lists;
- JSON numbers stay as Polars infers them *for the batch*: a field holding only integers
  is ``Int64``, one holding any fraction is ``Float64``; a field mixing kinds (a number in
  one message, a string in another) is ``String``, so the contract's coercion decides and
  quarantines instead of a value being silently changed here;
- the id column (``id_field``) is ``String``; a message without one (missing, null or
  empty) gets the first 24 hex characters of the SHA-256 of its payload, so a device
  re-sending the same bytes is deduplicated;
- the device column is ``String`` (numbers are turned into text);
- the time column is ``Datetime("us", "UTC")``: numbers are epoch seconds, or milliseconds
  when larger than 1e11, or microseconds when larger than 1e14; strings are ISO 8601 with
  or without an offset (a value without one is UTC) or numbers in text;
- ``_topic`` (``String``), ``_received_ns`` (``Int64``), ``_pos`` (``UInt32``, the index of
  the delivery in the input); payload fields of these names are replaced;
- a field that is null (or absent) in every message of the batch has dtype ``Null``.

A bad message becomes one rejects row, by the first rule it breaks, in this order:
``decode:json`` / ``decode:msgpack`` (not parseable), ``decode:not_object`` (an array, a
number ...), ``decode:missing_field:<device_field>``, ``decode:missing_field:<time_field>``
(missing or null), ``decode:time`` (present but not a time). ``_raw_value`` and
``_record`` hold the payload text (UTF-8, undecodable bytes replaced), cut at 1,000
characters, ``_column`` the field at fault.

>>> from loopline.stream.transport import Delivery
>>> batch = decode_batch(
...     [Delivery(b'{"device": "d1", "ts": 1700000000, "t": 21.5}', "s/d1", 1),
...      Delivery(b'{"device": "d1"', "s/d1", 2)],
...     fmt="json", id_field="msg_id", device_field="device", time_field="ts")
>>> batch.frame.select("device", "ts", "t", "_pos").rows()
[('d1', datetime.datetime(2023, 11, 14, 22, 13, 20, tzinfo=zoneinfo.ZoneInfo(key='UTC')), 21.5, 0)]
>>> batch.rejects.select("_rule", "_pos").rows()
[('decode:json', 1)]
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import numpy as np
import polars as pl

from loopline.errors import DecodeError, MissingDependencyError
from loopline.ingest.coerce import convert, iso_datetimes
from loopline.stream.transport import Delivery

logger = logging.getLogger(__name__)

RAW_LIMIT = 1000
"""Characters of a rejected payload kept in ``_raw_value`` / ``_record``."""

TIME_DTYPE = pl.Datetime("us", "UTC")
REJECTS_SCHEMA: dict[str, pl.DataType] = {
    "_rule": pl.String(),
    "_column": pl.String(),
    "_raw_value": pl.String(),
    "_record": pl.String(),
    "_topic": pl.String(),
    "_pos": pl.UInt32(),
}
_MS_ABOVE = 1e11
_US_ABOVE = 1e14


@dataclass
class DecodedBatch:
    """Good messages as one frame, bad ones as rejects (see the module docstring)."""

    frame: pl.DataFrame
    rejects: pl.DataFrame


def decode_batch(
    deliveries: Sequence[Delivery],
    *,
    fmt: Literal["json", "msgpack"],
    id_field: str,
    device_field: str,
    time_field: str,
) -> DecodedBatch:
    """Decode ``deliveries`` into readings and rejects; never raises for a bad payload."""
    payloads = [d.payload for d in deliveries]
    rejects: list[tuple[int, str, str | None]] = []
    if fmt == "json":
        frame, positions = _parse_json(payloads, rejects)
    elif fmt == "msgpack":
        frame, positions = _parse_msgpack(payloads, rejects)
    else:
        raise DecodeError(
            f"unknown payload format {fmt!r}", hint="use 'json' or 'msgpack'", format=fmt
        )
    frame = _flatten(frame)
    frame = frame.with_columns(pl.Series("_pos", positions, dtype=pl.UInt32))
    frame = _check_fields(frame, rejects, device_field=device_field, time_field=time_field)
    frame = _with_ids(frame, payloads, id_field)
    topics = pl.Series("_topic", [d.topic for d in deliveries], dtype=pl.String)
    received = pl.Series("_received_ns", [d.received_ns for d in deliveries], dtype=pl.Int64)
    if frame.height < len(deliveries):
        topics, received = topics.gather(frame["_pos"]), received.gather(frame["_pos"])
    frame = frame.with_columns(topics, received)
    lead = [id_field, device_field, time_field]
    rest = [
        c for c in frame.columns if c not in lead and c not in ("_topic", "_received_ns", "_pos")
    ]
    frame = frame.select(*lead, *rest, "_topic", "_received_ns", "_pos")
    return DecodedBatch(frame=frame, rejects=_rejects_frame(rejects, deliveries))


def payload_text(payload: bytes) -> str:
    """A payload as text for quarantine: UTF-8 with bad bytes replaced, at most 1,000 chars.

    >>> payload_text(b'{"a": 1}\\xff')
    '{"a": 1}\\ufffd'
    """
    return payload[: RAW_LIMIT * 4].decode("utf-8", errors="replace")[:RAW_LIMIT]


def payload_id(payload: bytes) -> str:
    """The id of a message that carries none: SHA-256 of the payload, first 24 hex chars.

    >>> payload_id(b"{}")
    '44136fa355b3678a1146ad16'
    """
    return hashlib.sha256(payload).hexdigest()[:24]


# -- parsing ------------------------------------------------------------------------------


def _parse_json(
    payloads: list[bytes], rejects: list[tuple[int, str, str | None]]
) -> tuple[pl.DataFrame, list[int]]:
    if not payloads:
        return pl.DataFrame(), []
    # Truncated or garbage payloads rarely look like {...}: parsing the suspects one by one
    # first keeps them from failing the fast parse of the whole batch.
    suspects = [
        pos for pos, p in enumerate(payloads) if not (p.startswith(b"{") and p.endswith(b"}"))
    ]
    if suspects:
        _, passed = _parse_json_slowly(payloads, suspects, rejects)
        dropped = set(suspects) - set(passed)
        candidates = [pos for pos in range(len(payloads)) if pos not in dropped]
    else:
        candidates = list(range(len(payloads)))
    frame = _read_ndjson([payloads[i] for i in candidates]) if candidates else pl.DataFrame()
    if frame is not None:
        return frame, candidates
    logger.debug("%d payloads: fast JSON parse failed, finding the bad ones", len(payloads))
    # Some payload still spoils the batch: find the bad ones in one vectorised pass (~2 us
    # per message; json.loads costs twice that), then parse the good ones fast again.
    texts: list[str | None] = []
    for pos in candidates:
        try:
            texts.append(payloads[pos].decode("utf-8"))
        except UnicodeDecodeError:
            texts.append(None)
    text = pl.Series(texts, dtype=pl.String)
    document = text.str.json_path_match("$")  # null unless the whole payload is JSON
    is_object = document.str.starts_with("{").fill_null(False)
    not_object = (document.is_not_null() | (text.str.strip_chars() == "null")).fill_null(False)
    good: list[int] = []
    for pos, obj, other in zip(candidates, is_object, not_object, strict=True):
        if obj:
            good.append(pos)
        else:
            rejects.append((pos, "decode:not_object" if other else "decode:json", None))
    frame = _read_ndjson([payloads[i] for i in good]) if good else pl.DataFrame()
    if frame is not None:
        return frame, good
    return _parse_json_slowly(payloads, good, rejects)


def _parse_json_slowly(
    payloads: list[bytes], candidates: list[int], rejects: list[tuple[int, str, str | None]]
) -> tuple[pl.DataFrame, list[int]]:
    """One payload at a time: JSON Polars will not put in one frame (mixed kinds of value)."""

    def loads(payload: bytes) -> Any:
        return json.loads(payload, parse_constant=_reject_constant)

    # JSONDecodeError and UnicodeDecodeError are ValueErrors
    return _decode_each(payloads, candidates, loads, "decode:json", (ValueError,), rejects)


def _decode_each(
    payloads: list[bytes],
    positions: Iterable[int],
    loads: Callable[[bytes], Any],
    rule: str,
    errors: tuple[type[Exception], ...],
    rejects: list[tuple[int, str, str | None]],
) -> tuple[pl.DataFrame, list[int]]:
    """Decode ``payloads[pos]`` one by one: objects go in the frame, the rest to ``rejects``
    (``rule`` when ``loads`` raises one of ``errors``, ``decode:not_object`` otherwise)."""
    objects: list[dict[str, Any]] = []
    good: list[int] = []
    for pos in positions:
        try:
            value = loads(payloads[pos])
        except errors:
            rejects.append((pos, rule, None))
            continue
        if not isinstance(value, dict):
            rejects.append((pos, "decode:not_object", None))
            continue
        objects.append(value)
        good.append(pos)
    return _from_dicts(objects), good


def _read_ndjson(payloads: list[bytes]) -> pl.DataFrame | None:
    """One Polars parse of the payloads as NDJSON, or ``None`` if any payload spoils it."""
    buffer = b"\n".join(payloads)
    if buffer.count(b"\n") != len(payloads) - 1 or b"\r" in buffer:
        # Raw line breaks cannot occur inside JSON strings, only between tokens.
        buffer = b"\n".join(p.replace(b"\n", b" ").replace(b"\r", b" ") for p in payloads)
    try:
        frame = pl.read_ndjson(io.BytesIO(buffer), infer_schema_length=None)
    except (pl.exceptions.PolarsError, OverflowError, ValueError):
        return None
    # Polars skips blank lines: a blank payload would shift every row after it.
    return frame if frame.height == len(payloads) else None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _parse_msgpack(
    payloads: list[bytes], rejects: list[tuple[int, str, str | None]]
) -> tuple[pl.DataFrame, list[int]]:
    try:
        import msgpack
    except ImportError as exc:
        raise MissingDependencyError("msgpack", "stream") from exc

    def loads(payload: bytes) -> Any:
        return msgpack.unpackb(payload, raw=False, timestamp=3)

    errors = (ValueError, TypeError, msgpack.UnpackException)
    return _decode_each(payloads, range(len(payloads)), loads, "decode:msgpack", errors, rejects)


def _kind(value: object) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    return type(value).__name__


def _from_dicts(objects: list[dict[str, Any]]) -> pl.DataFrame:
    """A frame from decoded objects; a field mixing kinds of value becomes JSON text."""
    if not objects:
        return pl.DataFrame()
    kinds: dict[str, set[str]] = {}
    for obj in objects:
        for key, value in obj.items():
            if value is not None:
                kinds.setdefault(key, set()).add(_kind(value))
    mixed = {key for key, seen in kinds.items() if len(seen) > 1}
    if mixed:
        objects = [
            {k: (_as_text(v) if k in mixed and v is not None else v) for k, v in obj.items()}
            for obj in objects
        ]
    return pl.from_dicts(objects, infer_schema_length=None, strict=False)


def _as_text(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return json.dumps(value, default=str)


def _flatten(frame: pl.DataFrame) -> pl.DataFrame:
    """Nested objects one level up as ``parent_child``; deeper objects as JSON text."""
    structs = [c for c, t in frame.schema.items() if isinstance(t, pl.Struct)]
    if structs:
        taken = set(frame.columns)
        exprs: list[pl.Expr] = []
        for name, dtype in frame.schema.items():
            if name not in structs:
                exprs.append(pl.col(name))
                continue
            assert isinstance(dtype, pl.Struct)
            for fld in dtype.fields:
                alias = f"{name}_{fld.name}"
                while alias in taken:  # a top-level field of that name wins
                    alias += "_"
                taken.add(alias)
                exprs.append(pl.col(name).struct.field(fld.name).alias(alias))
        frame = frame.select(exprs)
    deeper = [c for c, t in frame.schema.items() if isinstance(t, pl.Struct)]
    if deeper:
        frame = frame.with_columns(
            pl.when(pl.col(c).is_not_null()).then(pl.col(c).struct.json_encode()).alias(c)
            for c in deeper
        )
    return frame


# -- required fields and time ---------------------------------------------------------------


def _check_fields(
    frame: pl.DataFrame,
    rejects: list[tuple[int, str, str | None]],
    *,
    device_field: str,
    time_field: str,
) -> pl.DataFrame:
    height = frame.height
    device = _text(_column(frame, device_field))
    raw_time = _column(frame, time_field)
    event_time = event_times(raw_time) if height else pl.Series(time_field, [], TIME_DTYPE)
    blank = device.str.strip_chars() == ""
    if not (device.null_count() or event_time.null_count() or blank.any()):
        return frame.with_columns(device.alias(device_field), event_time.alias(time_field))
    missing_device = device.is_null() | blank
    missing_time = raw_time.is_null()
    bad_time = event_time.is_null() & ~missing_time
    positions = frame["_pos"]
    bad = pl.Series([False] * height, dtype=pl.Boolean)
    for mask, rule, column in (
        (missing_device, f"decode:missing_field:{device_field}", device_field),
        (missing_time, f"decode:missing_field:{time_field}", time_field),
        (bad_time, "decode:time", time_field),
    ):
        hit = mask & ~bad
        if hit.any():
            rejects.extend((pos, rule, column) for pos in positions.filter(hit))
            bad = bad | hit
    frame = frame.with_columns(device.alias(device_field), event_time.alias(time_field))
    return frame.filter(~bad) if bad.any() else frame


def _text(values: pl.Series) -> pl.Series:
    """An id or device column as text (numbers and booleans as written in JSON)."""
    if values.dtype == pl.String:
        return values
    if values.dtype.is_nested() or values.dtype == pl.Binary:
        texts = [None if v is None else _as_text(v) for v in values.to_list()]
        return pl.Series(values.name, texts, dtype=pl.String)
    return values.cast(pl.String, strict=False)


def _column(frame: pl.DataFrame, name: str) -> pl.Series:
    if name in frame.columns:
        return frame[name]
    return pl.Series(name, [None] * frame.height, dtype=pl.Null)


def event_times(values: pl.Series) -> pl.Series:
    """``values`` as ``Datetime("us", "UTC")``; what is not a time becomes null.

    Numbers are epoch seconds, milliseconds (> 1e11) or microseconds (> 1e14); strings are
    ISO 8601 (no offset = UTC) or numbers in text.

    >>> event_times(pl.Series([1.7e9, 1.7e12, 1.7e15])).dt.epoch("s").to_list()
    [1700000000, 1700000000, 1700000000]
    >>> event_times(pl.Series(["2024-01-02T03:04:05+02:00", "2024-01-02 01:04:05", "x"])
    ...     ).dt.strftime("%H:%M").to_list()
    ['01:04', '01:04', None]
    """
    name = values.name
    dtype = values.dtype
    if isinstance(dtype, pl.Datetime):
        return values.to_frame().select(convert(pl.col(name), dtype, TIME_DTYPE))[name]
    if dtype.is_integer():
        return _epoch_to_time(values.cast(pl.Int64, strict=False), integer=True)
    if dtype.is_float():
        return _float_epoch_to_time(values.cast(pl.Float64))
    if dtype == pl.String:
        text = values.str.strip_chars()
        numbers = text.cast(pl.Float64, strict=False)
        times = _epoch_to_time(numbers, integer=False)
        rest = numbers.is_null() & text.is_not_null()
        if not rest.any():
            return times
        where = rest.arg_true()
        iso = text.gather(where)
        parsed = iso_datetimes(iso, TIME_DTYPE)
        if parsed is None:
            parsed = iso.to_frame().select(convert(pl.col(name), pl.String(), TIME_DTYPE))[name]
        return times.scatter(where, parsed)
    return pl.Series(name, [None] * len(values), dtype=TIME_DTYPE)


def _float_epoch_to_time(values: pl.Series) -> pl.Series:
    """:func:`_epoch_to_time` of floats, in NumPy (the usual ``ts`` field; a third of the
    cost)."""
    x = values.to_numpy()  # nulls as NaN: both become null below
    magnitude = np.abs(x)
    with np.errstate(invalid="ignore", over="ignore"):
        scaled = np.where(
            magnitude > _US_ABOVE, x, np.where(magnitude > _MS_ABOVE, x * 1e3, x * 1e6)
        )
        ok = np.isfinite(scaled) & (np.abs(scaled) < 9e18)
    rounded = np.rint(np.where(ok, scaled, 0.0))  # halves to even, as Polars' round
    micros = pl.Series(values.name, rounded.astype(np.int64)).cast(TIME_DTYPE)
    return micros if ok.all() else micros.scatter(np.flatnonzero(~ok), None)


def _epoch_to_time(values: pl.Series, *, integer: bool) -> pl.Series:
    name = values.name
    v = pl.col(name)
    magnitude = v.abs()
    if integer:
        micros = (
            pl.when(magnitude > _US_ABOVE)
            .then(v)
            .when(magnitude > _MS_ABOVE)
            .then(v * 1_000)
            .otherwise(v * 1_000_000)
        )
    else:
        scaled = (
            pl.when(magnitude > _US_ABOVE)
            .then(v)
            .when(magnitude > _MS_ABOVE)
            .then(v * 1e3)
            .otherwise(v * 1e6)
        )
        micros = pl.when(scaled.is_finite() & (scaled.abs() < 9e18)).then(
            scaled.round(0).cast(pl.Int64)
        )
    out = values.to_frame().select(micros.cast(pl.Datetime("us")).dt.replace_time_zone("UTC"))
    return out.to_series().alias(name)


def _with_ids(frame: pl.DataFrame, payloads: list[bytes], id_field: str) -> pl.DataFrame:
    ids = _text(_column(frame, id_field))
    absent = ids.is_null() | (ids == "")
    if absent.any():
        where = absent.arg_true()
        hashes = [payload_id(payloads[pos]) for pos in frame["_pos"].gather(where)]
        ids = ids.scatter(where, hashes)
    return frame.with_columns(ids.alias(id_field))


def _rejects_frame(
    rejects: list[tuple[int, str, str | None]], deliveries: Sequence[Delivery]
) -> pl.DataFrame:
    if not rejects:
        return pl.DataFrame(schema=REJECTS_SCHEMA)
    rejects.sort(key=lambda r: r[0])
    texts = [payload_text(deliveries[pos].payload) for pos, _, _ in rejects]
    return pl.DataFrame(
        {
            "_rule": [rule for _, rule, _ in rejects],
            "_column": [column for _, _, column in rejects],
            "_raw_value": texts,
            "_record": texts,
            "_topic": [deliveries[pos].topic for pos, _, _ in rejects],
            "_pos": [pos for pos, _, _ in rejects],
        },
        schema=REJECTS_SCHEMA,
    )
