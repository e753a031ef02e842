"""Request validation against a model's MLflow input signature, without pandas.

:class:`InputSchema` is built once per model version from its signature; :meth:`InputSchema.parse`
checks the JSON rows of a request (dicts, as ``orjson`` decodes them) and returns a
:class:`ParsedRows` of typed, validated columns. Every offending field is reported at once as a
FastAPI-style error (``{"loc": ["body", "rows", i, field], "msg", "type"}``) in one
:class:`~loopline.errors.SignatureError`. The NumPy arrays (and the DataFrame the model needs)
are built once per scored batch, not per request (see :meth:`ParsedRows.concat`).

>>> schema = InputSchema((ColumnSpec("tenure", "double"), ColumnSpec("seats", "long")))
>>> rows = schema.parse([{"tenure": 3, "seats": 2.0, "extra": "ignored"}])
>>> rows.arrays()
{'tenure': array([3.]), 'seats': array([2])}
>>> try:
...     schema.parse([{"tenure": "3"}])
... except SignatureError as exc:
...     [(e["loc"], e["type"]) for e in exc.errors]
[(['body', 'rows', 0, 'tenure'], 'float_type'), (['body', 'rows', 0, 'seats'], 'missing')]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

import numpy as np

from loopline.errors import SignatureError

MAX_ERRORS = 50
"""Errors reported for one request, at most (the rest are counted in the message)."""

_MISSING: Any = object()
_ROWS_LOC = ("body", "rows")
_INT_RANGES = {"long": (-(2**63), 2**63 - 1), "integer": (-(2**31), 2**31 - 1)}
_DTYPES: dict[str, Any] = {
    "double": np.float64,
    "float": np.float32,
    "long": np.int64,
    "integer": np.int32,
    "boolean": np.bool_,
    "datetime": "datetime64[us]",
}
_PLAIN_TYPES: dict[str, frozenset[type]] = {
    "double": frozenset((float, int)),
    "float": frozenset((float, int)),
    "long": frozenset((int,)),
    "integer": frozenset((int,)),
    "string": frozenset((str,)),
    "binary": frozenset((str,)),
    "boolean": frozenset((bool,)),
}
_NUMBER = {int, float}
_INT_ONLY = {int}
_FLOAT_ONLY = {float}


@dataclass(frozen=True)
class ColumnSpec:
    """One input column: its name, MLflow type and whether a value is required.

    ``kind`` is an MLflow ``DataType`` name (``double``, ``float``, ``long``, ``integer``,
    ``string``, ``boolean``, ``datetime``, ``binary``) or ``any`` (an array, object, map or
    ``AnyType`` column: passed to the model as given, unchecked).
    """

    name: str
    kind: str
    required: bool = True

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.kind, "required": self.required}


@dataclass
class ParsedRows:
    """Validated request rows: ``columns`` maps each signature column to its Python values
    (already of the column's type; ``None`` where an optional value is absent), in signature
    order. Without a signature, ``columns`` is None and ``records`` holds the rows as given."""

    n: int
    columns: dict[str, list[Any]] | None
    schema: InputSchema
    records: list[dict[str, Any]] | None = None
    raw: Any = field(default=None, repr=False)

    def arrays(self) -> dict[str, np.ndarray]:
        """The columns as typed NumPy arrays (``long`` with a missing value: float64 + NaN)."""
        columns, specs = self.columns, self.schema.columns
        if columns is None or specs is None:
            raise ValueError("rows parsed without a signature have no typed columns")
        return {spec.name: _to_array(spec, columns[spec.name]) for spec in specs}

    def frame(self) -> Any:
        """The pandas DataFrame the model scores (built once per batch, in the scoring thread)."""
        import pandas as pd

        if self.columns is None:
            return pd.DataFrame(self.records)
        return pd.DataFrame(self.arrays(), copy=False)

    @staticmethod
    def concat(parts: Sequence[ParsedRows]) -> ParsedRows:
        """One batch from the rows of several requests parsed against the same schema."""
        if len(parts) == 1:
            return parts[0]
        first = parts[0]
        n = sum(p.n for p in parts)
        if first.columns is None:
            records = [r for p in parts for r in (p.records or ())]
            return ParsedRows(n, None, first.schema, records)
        columns = {
            name: [v for p in parts for v in (p.columns or {})[name]] for name in first.columns
        }
        return ParsedRows(n, columns, first.schema)


@dataclass(frozen=True)
class InputSchema:
    """The input columns a model version accepts; ``columns`` None: no signature (rows are
    passed to the model as given, only checked to be objects)."""

    columns: tuple[ColumnSpec, ...] | None

    @classmethod
    def from_signature(cls, signature: Any) -> InputSchema:
        """From an ``mlflow.models.ModelSignature`` (or None): column-based signatures only;
        a tensor signature or none at all gives a schema that accepts any rows."""
        inputs = getattr(signature, "inputs", None)
        if inputs is None or inputs.is_tensor_spec():
            return cls(None)
        if any(col.name is None for col in inputs.inputs):
            return cls(None)  # unnamed columns (e.g. MLflow's AnyType fallback): nothing to check
        specs = []
        for col in inputs.inputs:
            kind = getattr(col.type, "name", None)
            if kind not in _CHECKS:
                kind = "any"
            specs.append(ColumnSpec(str(col.name), kind, bool(getattr(col, "required", True))))
        return cls(tuple(specs))

    @cached_property
    def _one_row(self) -> tuple[tuple[str, frozenset[type], int | None, int | None], ...] | None:
        """Per column: the value types a single row may have as is (and an int range);
        None when a column needs more than a type check (datetime, any)."""
        if self.columns is None or any(c.kind not in _PLAIN_TYPES for c in self.columns):
            return None
        no_range: tuple[int | None, int | None] = (None, None)
        return tuple(
            (c.name, _PLAIN_TYPES[c.kind], *_INT_RANGES.get(c.kind, no_range)) for c in self.columns
        )

    def describe(self) -> list[dict[str, Any]] | None:
        """The columns as JSON (``GET /v1/models``); None without a signature."""
        return None if self.columns is None else [c.describe() for c in self.columns]

    def parse(self, rows: Any, *, max_rows: int = 1000) -> ParsedRows:
        """Validate ``rows`` (a list of dicts); unknown extra fields are ignored.

        Raises :class:`SignatureError` listing every bad field (at most :data:`MAX_ERRORS`).
        """
        if type(rows) is not list:
            _fail([_error(_ROWS_LOC, "list_type", "Input should be a valid list")])
        n = len(rows)
        if n == 0 or n > max_rows:
            kind, bound = ("too_short", "at least 1 item") if n == 0 else ("too_long", "")
            bound = bound or f"at most {max_rows} items"
            _fail([_error(_ROWS_LOC, kind, f"List should have {bound} after validation, not {n}")])
        errors: list[dict[str, Any]] = []
        for i, row in enumerate(rows):
            if type(row) is not dict:
                errors.append(
                    _error((*_ROWS_LOC, i), "dict_type", "Input should be a valid dictionary")
                )
        if errors:
            _fail(errors)
        if self.columns is None:
            return ParsedRows(n, None, self, records=rows, raw=rows)
        if n == 1 and self._one_row is not None:  # the common request: no list, no set per column
            row, one = rows[0], {}
            for name, allowed, lo, hi in self._one_row:
                value = row.get(name, _MISSING)
                if type(value) not in allowed or (lo is not None and not lo <= value <= hi):
                    break  # the general path below names the error
                one[name] = [value]
            else:
                return ParsedRows(1, one, self, raw=rows)
        columns: dict[str, list[Any]] = {}
        for spec in self.columns:
            values = [row.get(spec.name, _MISSING) for row in rows]
            columns[spec.name] = _CHECKS[spec.kind](spec, values, errors)
            if len(errors) >= MAX_ERRORS:
                break
        if errors:
            _fail(errors)
        return ParsedRows(n, columns, self, raw=rows)


# ---- column checks: a fast path over the value types, a slow path that names each error ----


def _check_number(spec: ColumnSpec, values: list[Any], errors: list[dict[str, Any]]) -> list[Any]:
    kinds = set(map(type, values))
    if kinds <= _FLOAT_ONLY or kinds <= _NUMBER:
        return values
    return _each(spec, values, errors, _number, "float_type", "Input should be a valid number")


def _number(value: Any) -> Any:
    if type(value) is float or type(value) is int:
        return value
    raise _Invalid(None)


def _check_int(spec: ColumnSpec, values: list[Any], errors: list[dict[str, Any]]) -> list[Any]:
    lo, hi = _INT_RANGES[spec.kind]
    if set(map(type, values)) <= _INT_ONLY and lo <= min(values) and max(values) <= hi:
        return values

    def integer(value: Any) -> Any:
        if type(value) is float:
            if not value.is_integer():
                raise _Invalid(
                    (
                        "int_from_float",
                        "Input should be a valid integer, got a number with a fractional part",
                    )
                )
            value = int(value)
        if type(value) is not int:
            raise _Invalid(None)
        if not lo <= value <= hi:
            raise _Invalid(("int_overflow", f"Input should be an integer between {lo} and {hi}"))
        return value

    return _each(spec, values, errors, integer, "int_type", "Input should be a valid integer")


def _check_str(spec: ColumnSpec, values: list[Any], errors: list[dict[str, Any]]) -> list[Any]:
    if set(map(type, values)) == {str}:
        return values
    return _each(spec, values, errors, _exact(str), "string_type", "Input should be a valid string")


def _check_bool(spec: ColumnSpec, values: list[Any], errors: list[dict[str, Any]]) -> list[Any]:
    if set(map(type, values)) == {bool}:
        return values
    return _each(spec, values, errors, _exact(bool), "bool_type", "Input should be a valid boolean")


def _check_datetime(spec: ColumnSpec, values: list[Any], errors: list[dict[str, Any]]) -> list[Any]:
    return _each(
        spec, values, errors, _datetime, "datetime_type", "Input should be a valid datetime"
    )


def _datetime(value: Any) -> datetime:
    if type(value) is not str:
        raise _Invalid(None)
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise _Invalid(
            ("datetime_parsing", "Input should be a valid datetime in ISO 8601 format")
        ) from None
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(UTC).replace(tzinfo=None)
    return parsed


def _check_any(spec: ColumnSpec, values: list[Any], errors: list[dict[str, Any]]) -> list[Any]:
    return _each(spec, values, errors, lambda v: v, "value_error", "Input should be a value")


def _exact(kind: type) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if type(value) is not kind:
            raise _Invalid(None)
        return value

    return check


class _Invalid(Exception):
    """A value of the wrong type: ``detail`` (type, msg) overrides the column's default."""

    def __init__(self, detail: tuple[str, str] | None) -> None:
        self.detail = detail


def _each(
    spec: ColumnSpec,
    values: list[Any],
    errors: list[dict[str, Any]],
    convert: Callable[[Any], Any],
    error_type: str,
    message: str,
) -> list[Any]:
    out: list[Any] = []
    for i, value in enumerate(values):
        if value is _MISSING or value is None:
            out.append(None)
            if spec.required:
                loc = (*_ROWS_LOC, i, spec.name)
                if value is _MISSING:
                    errors.append(_error(loc, "missing", "Field required"))
                else:
                    errors.append(_error(loc, error_type, f"{message}, got null", input=None))
            continue
        try:
            out.append(convert(value))
        except _Invalid as bad:
            kind, msg = bad.detail or (error_type, message)
            errors.append(_error((*_ROWS_LOC, i, spec.name), kind, msg, input=_shown(value)))
            out.append(None)
        if len(errors) >= MAX_ERRORS:
            break
    return out


def _shown(value: Any) -> Any:
    if isinstance(value, str) and len(value) > 100:
        return value[:100] + "..."
    if isinstance(value, dict | list):
        return f"<{type(value).__name__}>"
    return value


def _error(loc: Sequence[Any], kind: str, msg: str, **extra: Any) -> dict[str, Any]:
    return {"loc": list(loc), "msg": msg, "type": kind, **extra}


def _fail(errors: list[dict[str, Any]]) -> Any:
    shown = errors[:MAX_ERRORS]
    more = f" (first {MAX_ERRORS} shown)" if len(errors) > MAX_ERRORS else ""
    raise SignatureError(
        f"the request does not match the model's input signature: "
        f"{len(errors)} invalid field(s){more}",
        shown,
    )


def _to_array(spec: ColumnSpec, values: list[Any]) -> np.ndarray:
    dtype = _DTYPES.get(spec.kind)
    if dtype is None:
        array = np.empty(len(values), dtype=object)
        for i, value in enumerate(values):  # element by element: a list value stays one cell
            array[i] = value
        return array
    if not spec.required and any(v is None for v in values):
        if spec.kind in ("long", "integer"):
            return np.array(values, dtype=np.float64)  # NaN marks the gap, as pandas does
        if spec.kind == "boolean":
            return np.array(values, dtype=object)
    return np.array(values, dtype=dtype)


_CHECKS: dict[str, Callable[[ColumnSpec, list[Any], list[dict[str, Any]]], list[Any]]] = {
    "double": _check_number,
    "float": _check_number,
    "long": _check_int,
    "integer": _check_int,
    "string": _check_str,
    "binary": _check_str,
    "boolean": _check_bool,
    "datetime": _check_datetime,
    "any": _check_any,
}
