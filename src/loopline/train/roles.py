"""Feature roles: which columns are numeric, categorical, datetime or text, and which are dropped.

:func:`infer_roles` looks at each column once and gives it a role and a reason; the
job prints :meth:`RoleAssignment.summary` so the user can override what it got wrong
(``roles:`` and ``drop:`` in the job). The rules, in order:

1. columns named in ``drop`` → dropped ("dropped by the job"); the target and lineage
   columns (``_source``, ``_batch_id``, ...) are never features;
2. all-null columns → dropped ("all null"), even when overridden: nothing to learn;
3. columns named in ``overrides`` → that role ("override");
4. constant columns (one distinct non-null value) → dropped;
5. id-like columns (integer or string, every value distinct, no nulls, and 20 rows or more
   or a name ending in id) → dropped;
6. datetime dtypes (and object columns of ``date`` / ``datetime`` values) → datetime;
7. strings with long values (mean length > 50) and high cardinality (> half the rows
   distinct) → text; other strings, booleans and categoricals → categorical;
8. integers, floats and decimals → numeric. Integers stay numeric even with few distinct values
   (a count or a 1-5 rating is ordered); name them under ``roles.categorical`` when the
   codes are labels (a zip code, a store number).

>>> import pandas as pd
>>> frame = pd.DataFrame({"customer_id": ["c1", "c2", "c3"], "plan": ["a", "b", "a"],
...                       "tenure": [1, 5, 9], "churn": ["No", "Yes", "No"]})
>>> roles = infer_roles(frame, target="churn")
>>> roles.numeric, roles.categorical, roles.dropped
(('tenure',), ('plan',), {'customer_id': 'id-like (a distinct string on every row)'})
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import pandas as pd

from loopline import lineage
from loopline.config.training import FeatureRoles
from loopline.errors import TrainError

Role = Literal["numeric", "categorical", "datetime", "text", "dropped"]
ROLES: tuple[Role, ...] = ("numeric", "categorical", "datetime", "text")

ID_MIN_ROWS = 20
"""From this many rows on, an integer or string column distinct on every row is id-like;
below, only when its name says id (``id``, ``customer_id``, ``customerID``)."""
_ID_NAME = re.compile(r"(?:^|_)(?:id|Id|ID)$|[a-z](?:ID|Id)$")

_NUMBER_KINDS = frozenset({"decimal", "integer", "floating", "mixed-integer-float"})

TEXT_MIN_MEAN_LENGTH = 50
"""A string column whose values average more characters than this may be text."""
TEXT_MIN_DISTINCT_SHARE = 0.5
"""... when more than this share of its non-null values are distinct."""


@dataclass(frozen=True)
class RoleAssignment:
    """The role of every column of a training frame, with the reason it got it."""

    numeric: tuple[str, ...] = ()
    categorical: tuple[str, ...] = ()
    datetime: tuple[str, ...] = ()
    text: tuple[str, ...] = ()
    dropped: dict[str, str] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)
    order: tuple[str, ...] = ()

    @property
    def features(self) -> tuple[str, ...]:
        """The kept columns, in frame order."""
        kept = set(self.numeric) | set(self.categorical) | set(self.datetime) | set(self.text)
        return tuple(c for c in self.order if c in kept)

    def role_of(self, column: str) -> Role:
        """The role of ``column`` (``dropped`` for a dropped one)."""
        for role in ROLES:
            if column in getattr(self, role):
                return role
        if column in self.dropped:
            return "dropped"
        raise KeyError(column)

    def summary(self) -> list[tuple[str, Role, str]]:
        """``(column, role, reason)`` for every column, in frame order: the printed table.

        >>> RoleAssignment(numeric=("x",), reasons={"x": "float64"}, order=("x",)).summary()
        [('x', 'numeric', 'float64')]
        """
        rows: list[tuple[str, Role, str]] = []
        for column in self.order:
            role = self.role_of(column)
            reason = self.dropped[column] if role == "dropped" else self.reasons[column]
            rows.append((column, role, reason))
        return rows


def infer_roles(
    df: pd.DataFrame,
    *,
    target: str | None = None,
    overrides: FeatureRoles | None = None,
    drop: Sequence[str] = (),
) -> RoleAssignment:
    """Assign a role to every column of ``df`` but ``target`` (rules in the module docstring).

    Raises :class:`~loopline.errors.TrainError` when ``overrides`` or ``drop`` name a
    column that is not in ``df``, name the target, or give one column two roles.
    """
    overrides = overrides or FeatureRoles()
    wanted = _check_requests(df, target, overrides, drop)
    groups: dict[Role, list[str]] = {role: [] for role in (*ROLES, "dropped")}
    reasons: dict[str, str] = {}
    order: list[str] = []
    for name in df.columns:
        column = str(name)
        if column == target:
            continue
        order.append(column)
        role, reason = _role_of(df[name], column, wanted, set(drop))
        groups[role].append(column)
        reasons[column] = reason
    return RoleAssignment(
        numeric=tuple(groups["numeric"]),
        categorical=tuple(groups["categorical"]),
        datetime=tuple(groups["datetime"]),
        text=tuple(groups["text"]),
        dropped={c: reasons[c] for c in groups["dropped"]},
        reasons={c: reasons[c] for c in order if c not in groups["dropped"]},
        order=tuple(order),
    )


def _check_requests(
    df: pd.DataFrame, target: str | None, overrides: FeatureRoles, drop: Sequence[str]
) -> dict[str, Role]:
    """The override of each named column, after checking every name the job gave."""
    columns = [str(c) for c in df.columns]
    known = set(columns)
    wanted: dict[str, Role] = {}
    named: list[tuple[str, str]] = [(c, "drop") for c in drop]
    for role in ROLES:
        for column in getattr(overrides, role):
            named.append((column, f"roles.{role}"))
            if column in wanted:
                raise TrainError(
                    f"column {column!r} is given two roles: {wanted[column]} and {role}",
                    column=column,
                    hint="name each column under one role only",
                )
            wanted[column] = role
    for column, where in named:
        if column not in known:
            raise TrainError(
                f"{where} names column {column!r}, which is not in the data; "
                f"columns: {', '.join(columns)}",
                column=column,
                hint="fix the column name in the job",
            )
        if column == target:
            raise TrainError(
                f"{where} names the target column {column!r}",
                column=column,
                hint="the target is never a feature; remove it from the job's roles / drop",
            )
    both = sorted(set(drop) & set(wanted))
    if both:
        raise TrainError(
            f"column {both[0]!r} is both dropped and given a role",
            column=both[0],
            hint="remove it from 'drop' or from 'roles'",
        )
    return wanted


def _role_of(
    values: pd.Series, column: str, wanted: dict[str, Role], drop: set[str]
) -> tuple[Role, str]:
    if column in drop:
        return "dropped", "dropped by the job"
    if lineage.is_lineage(column):
        return "dropped", "lineage column"
    non_null = values.dropna()
    if non_null.empty:
        return "dropped", "all null"
    if column in wanted:
        return wanted[column], "override"
    distinct = non_null.nunique()
    if distinct == 1:
        return "dropped", f"constant ({non_null.iloc[0]!r} on every non-null row)"
    dtype = values.dtype
    is_string = _is_string(values)
    if pd.api.types.is_datetime64_any_dtype(dtype) or _holds_dates(values):
        return "datetime", str(dtype) if str(dtype) != "object" else "dates"
    if pd.api.types.is_bool_dtype(dtype) or isinstance(dtype, pd.CategoricalDtype):
        return "categorical", str(dtype)
    is_integer = pd.api.types.is_integer_dtype(dtype)
    if (is_integer or is_string) and _is_id_like(values, column, distinct):
        kind = "integer" if is_integer else "string"
        if not (is_string and _is_long_text(non_null)):
            return "dropped", f"id-like (a distinct {kind} on every row)"
    if is_string:
        if _is_long_text(non_null) and distinct > TEXT_MIN_DISTINCT_SHARE * len(non_null):
            return "text", f"long strings ({distinct} distinct)"
        return "categorical", f"strings ({distinct} distinct)"
    if pd.api.types.is_numeric_dtype(dtype):
        return "numeric", str(dtype)
    if pd.api.types.is_object_dtype(dtype):
        inferred = pd.api.types.infer_dtype(values, skipna=True)
        if inferred in _NUMBER_KINDS:  # Arrow decimals arrive as Decimal objects
            return "numeric", f"{inferred} values"
        if inferred == "boolean":
            return "categorical", "booleans with nulls"
        return "categorical", f"mixed values ({distinct} distinct)"
    return "dropped", f"unsupported dtype {dtype}"


def _is_string(values: pd.Series) -> bool:
    if not pd.api.types.is_object_dtype(values.dtype):
        return bool(pd.api.types.is_string_dtype(values.dtype))
    # Object columns holding strings (pandas without the string dtype, Arrow conversions).
    return bool(pd.api.types.infer_dtype(values, skipna=True) == "string")


def _holds_dates(values: pd.Series) -> bool:
    if not pd.api.types.is_object_dtype(values.dtype):
        return False
    return pd.api.types.infer_dtype(values, skipna=True) in ("date", "datetime")


def _is_id_like(values: pd.Series, column: str, distinct: int) -> bool:
    if distinct != len(values) or values.isna().any():
        return False
    # On a handful of rows any column is unique; there only the name tells an id.
    return len(values) >= ID_MIN_ROWS or bool(_ID_NAME.search(column))


def _is_long_text(non_null: pd.Series) -> bool:
    return bool(non_null.astype(str).str.len().mean() > TEXT_MIN_MEAN_LENGTH)
