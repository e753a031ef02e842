"""Type coercion and type inference for contract columns, as vectorised Polars expressions.

:func:`convert` turns a column of any dtype into a contract type; :func:`conversion_failed`
says where a non-null value did not survive (it is quarantined, never silently nulled).
:func:`infer_type` picks a contract type for a string column from a sample.

Parsing rules for strings: surrounding spaces are ignored; thousands separators
(``"1,234"``) are not parsed; ``NaN`` and infinities are failures for float types (null
tokens are turned into nulls earlier, by cleansing); booleans accept
``true/false/yes/no/1/0/t/f/y/n`` in any case; datetimes accept ISO 8601 with ``T`` or a
space, with or without seconds, fractions and a zone (``Z``, ``+02:00``, ``+0200``), or
a date alone (midnight), or the column's ``format``; datetimes are stored as UTC
microseconds, a value without a zone is taken as UTC. Decimals are ``Decimal(38, 9)``.

>>> import polars as pl
>>> df = pl.DataFrame({"n": [" 12 ", "1,234", None]})
>>> value = convert(pl.col("n"), pl.String(), pl.Int64())
>>> df.select(value.alias("v"), conversion_failed(pl.col("n"), value, pl.String(),
...     pl.Int64()).alias("failed")).rows()
[(12, False), (None, True), (None, False)]
>>> infer_type(pl.Series(["1.5", "2", "x"] + ["3.25"] * 57))
'float64'
"""

from __future__ import annotations

from typing import get_args

import polars as pl
import pyarrow as pa

from loopline.config.contracts import ColumnType

DTYPES: dict[ColumnType, pl.DataType] = {
    "string": pl.String(),
    "int64": pl.Int64(),
    "int32": pl.Int32(),
    "float64": pl.Float64(),
    "float32": pl.Float32(),
    "bool": pl.Boolean(),
    "date": pl.Date(),
    "datetime": pl.Datetime("us", "UTC"),
    "decimal": pl.Decimal(38, 9),
}
COLUMN_TYPES: tuple[ColumnType, ...] = get_args(ColumnType)

INFERENCE_SAMPLE_ROWS = 10_000
INFERENCE_THRESHOLD = 0.95

_BOOLS = {
    **dict.fromkeys(("true", "t", "yes", "y", "1"), True),
    **dict.fromkeys(("false", "f", "no", "n", "0"), False),
}
_ISO_FORMATS = (
    "%Y-%m-%dT%H:%M:%S%.f%z",
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%dT%H:%M%z",
    "%Y-%m-%dT%H:%M",
    "%Y-%m-%d",
)
_HAS_TIME = r"\d[T ]\d{1,2}:\d{2}"


def polars_dtype(type_: ColumnType) -> pl.DataType:
    """The Polars dtype a contract type is stored as.

    >>> polars_dtype("datetime")
    Datetime(time_unit='us', time_zone='UTC')
    """
    return DTYPES[type_]


def column_type(dtype: pl.DataType) -> ColumnType | None:
    """The contract type stored exactly as ``dtype``, or ``None`` (e.g. ``Int16``, lists).

    >>> column_type(pl.Int32()), column_type(pl.Int16())
    ('int32', None)
    """
    for name, candidate in DTYPES.items():
        if candidate == dtype:
            return name
    return None


def convert(
    expr: pl.Expr,
    source: pl.DataType,
    target: pl.DataType,
    fmt: str | None = None,
    *,
    quick: bool = False,
) -> pl.Expr:
    """``expr`` (of dtype ``source``) as ``target``; values that do not convert become null.

    ``quick`` skips stripping whitespace around numbers (half the cost of parsing them);
    a caller using it retries the values that failed without it.
    """
    if source == target:
        return expr
    if source == pl.String():
        return _parse(expr, target, fmt, quick=quick)
    if target == pl.Datetime("us", "UTC"):
        if isinstance(source, pl.Datetime):
            as_utc = (
                expr.dt.convert_time_zone("UTC")
                if source.time_zone
                else expr.dt.replace_time_zone("UTC")
            )
            return as_utc.dt.cast_time_unit("us")
        if source == pl.Date():
            return expr.cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
    if target == pl.Date() and isinstance(source, pl.Datetime):
        return expr.dt.date()
    return expr.cast(target, strict=False)


def conversion_failed(
    original: pl.Expr, converted: pl.Expr, source: pl.DataType, target: pl.DataType
) -> pl.Expr:
    """True where a non-null ``original`` value was lost or changed by the conversion.

    Besides nulls, a numeric value that does not round-trip into an integer or boolean
    target (``2.5`` → int, ``7`` → bool) fails.
    """
    if source == target:
        return pl.lit(False)
    failed = original.is_not_null() & converted.is_null()
    if source.is_numeric() and (target.is_integer() or target == pl.Boolean()):
        failed = failed | (converted.cast(source, strict=False) != original).fill_null(False)
    return failed


def _parse(text: pl.Expr, target: pl.DataType, fmt: str | None, *, quick: bool = False) -> pl.Expr:
    if not (quick and target.is_numeric()):
        text = text.str.strip_chars()
    if target == pl.String():
        return text
    if target.is_float():
        value = text.cast(target, strict=False)
        # 'NaN' / 'inf' are not measurements; treat them as unparseable.
        return pl.when(value.is_finite()).then(value)
    if target.is_numeric():
        return text.cast(target, strict=False)
    if target == pl.Boolean():
        return text.str.to_lowercase().replace_strict(
            _BOOLS, default=None, return_dtype=pl.Boolean()
        )
    if target == pl.Date():
        return text.str.to_date(fmt or "%Y-%m-%d", strict=False)
    if isinstance(target, pl.Datetime):
        if fmt is not None:
            parsed = text.str.to_datetime(fmt, strict=False, time_unit="us", time_zone="UTC")
        else:
            iso = text.str.replace(r"^(\d{4}-\d{2}-\d{2}) ", "${1}T").str.replace(
                r"[Zz]$", "+00:00"
            )
            parsed = pl.coalesce(
                iso.str.to_datetime(f, strict=False, time_unit="us", time_zone="UTC")
                for f in _ISO_FORMATS
            )
        parsed = parsed.dt.cast_time_unit(target.time_unit)
        if target.time_zone is None:  # a naive target (a stored table's) keeps UTC wall time
            return parsed.dt.replace_time_zone(None)
        return parsed.dt.convert_time_zone(target.time_zone)
    return text.cast(target, strict=False)


_FAST_FORMATS = tuple(
    f.replace("T", sep) + zone
    # Fraction-less first: '%.f' parses them too but ~4x slower, and ties go to the first.
    for f in ("%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M")
    for sep in ("T", " ")
    for zone in ("", "%z", "Z")
)


def iso_datetimes(values: pl.Series, target: pl.Datetime) -> pl.Series | None:
    """``values`` parsed by Arrow's strict ISO 8601 parser, or ``None`` if any value fails.

    The fast path for clean timestamp columns (~10x cheaper than strptime): naive values are
    taken as UTC, values with an offset are converted to UTC; a column mixing both, or
    holding a value that does not parse, returns ``None`` and takes the slow path.

    >>> iso_datetimes(pl.Series(["2024-01-02 03:04:05", None]), pl.Datetime("us", "UTC"))[0]
    datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=zoneinfo.ZoneInfo(key='UTC'))
    """
    arrow = values.to_arrow()
    for arrow_type in (pa.timestamp("us"), pa.timestamp("us", "UTC")):
        try:
            parsed = pl.Series(values.name, arrow.cast(arrow_type))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            continue
        if arrow_type.tz is None:
            parsed = parsed.dt.replace_time_zone("UTC")
        parsed = parsed.dt.cast_time_unit(target.time_unit)
        if target.time_zone is None:
            return parsed.dt.replace_time_zone(None)
        return parsed.dt.convert_time_zone(target.time_zone)
    return None


def detect_datetime_format(values: pl.Series, *, sample: int = 1_000) -> str | None:
    """The one ISO 8601 format that parses a sample of ``values`` best, or ``None``.

    Parsing a column with one known format is ~20x cheaper than trying every ISO variant on
    every value; values the detected format misses get the full treatment (see
    :meth:`~loopline.ingest.contract.ContractEngine.coerce`).

    >>> detect_datetime_format(pl.Series(["2024-01-02T03:04:05Z", "2024-01-03T00:00:00Z"]))
    '%Y-%m-%dT%H:%M:%SZ'
    """
    head = values.drop_nulls().head(sample).str.strip_chars()
    if head.is_empty():
        return None
    frame = head.to_frame("v")
    shares = frame.select(
        pl.col("v")
        .str.to_datetime(f, strict=False, time_unit="us", time_zone="UTC")
        .is_not_null()
        .mean()
        .alias(str(i))
        for i, f in enumerate(_FAST_FORMATS)
    ).row(0)
    best = max(range(len(_FAST_FORMATS)), key=lambda i: shares[i] or 0.0)
    return _FAST_FORMATS[best] if (shares[best] or 0.0) >= 0.5 else None


def infer_type(values: pl.Series) -> ColumnType:
    """The contract type for a column, from (up to 10k rows of) a sample.

    A non-string column keeps its dtype (``string`` when no contract type stores it
    exactly). A string column gets the first of int64, float64, bool, datetime, date
    that parses at least 95% of its non-null values (the rest are quarantined when the
    batch is coerced), else string. A datetime needs a time of day in most values, so a
    column of plain dates infers as ``date``.

    >>> infer_type(pl.Series(["2024-01-02", "2024-02-03"]))
    'date'
    >>> infer_type(pl.Series(["yes", "no", "free text"]))
    'string'
    """
    if values.dtype != pl.String():
        return column_type(values.dtype) or "string"
    sample = values.head(INFERENCE_SAMPLE_ROWS).drop_nulls()
    if sample.len() == 0:
        return "string"
    frame = sample.to_frame("v")
    has_time = pl.col("v").str.contains(_HAS_TIME)
    candidates: list[tuple[ColumnType, pl.Expr]] = [
        ("int64", _parse(pl.col("v"), pl.Int64(), None).is_not_null()),
        ("float64", _parse(pl.col("v"), pl.Float64(), None).is_not_null()),
        ("bool", _parse(pl.col("v"), pl.Boolean(), None).is_not_null()),
        ("datetime", _parse(pl.col("v"), DTYPES["datetime"], None).is_not_null() & has_time),
        ("date", _parse(pl.col("v"), pl.Date(), None).is_not_null()),
        ("datetime", _parse(pl.col("v"), DTYPES["datetime"], None).is_not_null()),
    ]
    shares = frame.select(expr.mean().alias(str(i)) for i, (_, expr) in enumerate(candidates)).row(
        0
    )
    for (name, _), share in zip(candidates, shares, strict=True):
        if share >= INFERENCE_THRESHOLD:
            return name
    return "string"
