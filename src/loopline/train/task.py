"""The learning task of a job: inferred from the target, checked, and the target encoded.

Rules of :func:`infer_task`, on the non-null values of the target:

- exactly 2 distinct values → ``binary`` (whatever the dtype: ``yes/no``, ``0/1``, ``True/False``);
- strings, categories or booleans with 3 or more values → ``multiclass``;
- integers with 3 to 20 distinct values → ``multiclass``;
- floats, and integers with more than 20 distinct values → ``regression``.

Give ``task:`` in the job to override the rule (a 1-to-5 rating may well be a regression).

>>> import pandas as pd
>>> infer_task(pd.Series(["No", "Yes", "No"])), infer_task(pd.Series([1.5, 2.0, 7.25]))
('binary', 'regression')
>>> y, classes = encode_target(pd.Series(["No", "Yes", "No"]), "binary")
>>> y.tolist(), classes
([0, 1, 0], ['No', 'Yes'])
"""

from __future__ import annotations

import difflib
import logging
from typing import Any

import numpy as np
import pandas as pd

from loopline.config.training import Task
from loopline.errors import TrainError

log = logging.getLogger(__name__)

MAX_INTEGER_CLASSES = 20
"""An integer target with more distinct values than this is a regression target."""

POSITIVE_TOKENS = frozenset({"yes", "true", "1", "y", "t"})
"""String values (compared lower-case) that name the positive class of a binary target."""


def infer_task(y: pd.Series) -> Task:
    """The task a target asks for (see the module docstring for the rules).

    >>> infer_task(pd.Series([0, 1, 2, 1])), infer_task(pd.Series(range(100)))
    ('multiclass', 'regression')
    """
    values = y.dropna()
    distinct = values.nunique()
    if distinct < 2:
        raise TrainError(
            f"cannot infer the task: the target has {distinct} distinct non-null value(s)",
            column=y.name,
            hint="a model needs a target that varies; check the target column",
        )
    if distinct == 2:
        return "binary"
    dtype = y.dtype
    if pd.api.types.is_bool_dtype(dtype) or not pd.api.types.is_numeric_dtype(dtype):
        return "multiclass"
    if pd.api.types.is_integer_dtype(dtype) and distinct <= MAX_INTEGER_CLASSES:
        return "multiclass"
    return "regression"


def check_target(df: pd.DataFrame, target: str, task: Task) -> np.ndarray:
    """Check that ``target`` can be learnt as ``task``; the mask of rows to keep.

    Rows with a null target are not an error: they are left out (the mask is ``False``
    there) and their count is logged. Everything else that would make training fail or
    mislead raises :class:`~loopline.errors.TrainError` with a hint.

    >>> frame = pd.DataFrame({"churn": ["Yes", "No", None, "No", "Yes"]})
    >>> check_target(frame, "churn", "binary").tolist()
    [True, True, False, True, True]
    """
    if target not in df.columns:
        columns = [str(c) for c in df.columns]
        close = difflib.get_close_matches(target, columns, n=1)
        hint = f"did you mean {close[0]!r}?" if close else "set 'target' to one of the columns"
        raise TrainError(
            f"target column {target!r} not found; columns: {', '.join(columns)}",
            column=target,
            hint=hint,
        )
    y = df[target]
    keep: np.ndarray = y.notna().to_numpy(dtype=bool)
    if not keep.any():
        raise TrainError(
            "the target column is null on every row",
            column=target,
            rows=len(df),
            hint="check the source table or the target name",
        )
    values = y[keep]
    counts = values.value_counts()
    if task == "regression":
        _check_regression(values, target)
    else:
        _check_classes(counts, target, task)
    dropped = int((~keep).sum())
    if dropped:
        log.warning("left out %d row(s) with a null target %r", dropped, target)
    return keep


def _check_regression(values: pd.Series, target: str) -> None:
    if pd.api.types.is_bool_dtype(values.dtype) or not pd.api.types.is_numeric_dtype(values.dtype):
        raise TrainError(
            f"a regression target must be numeric; got dtype {values.dtype}",
            column=target,
            hint="set 'task: binary' or 'task: multiclass' for a categorical target",
        )
    numbers = values.to_numpy(dtype=np.float64)
    if not np.isfinite(numbers).all():
        raise TrainError(
            f"the target has {int((~np.isfinite(numbers)).sum())} infinite value(s)",
            column=target,
            hint="cleanse or drop those rows before training",
        )
    if np.unique(numbers).size < 2:
        raise TrainError(
            f"the target is constant ({numbers[0]!r} on every row)",
            column=target,
            hint="a model needs a target that varies; check the target column",
        )


def _check_classes(counts: pd.Series, target: str, task: Task) -> None:
    if len(counts) < 2:
        raise TrainError(
            f"the target has a single class ({counts.index[0]!r}); a classifier needs two",
            column=target,
            hint="check the source rows or filter; a constant target cannot be learnt",
        )
    if task == "binary" and len(counts) > 2:
        shown = ", ".join(repr(c) for c in counts.index[:10])
        raise TrainError(
            f"a binary target needs 2 classes; got {len(counts)}: {shown}",
            column=target,
            hint="set 'task: multiclass', or map the target to two values",
        )
    rare = counts[counts < 2]
    if len(rare):
        names = ", ".join(f"{c!r} ({n} row)" for c, n in rare.items())
        raise TrainError(
            f"class(es) with fewer than 2 rows cannot be stratified: {names}",
            column=target,
            hint="merge the rare class into another one or drop its rows",
        )


def encode_target(y: pd.Series, task: Task) -> tuple[np.ndarray, list[Any]]:
    """The target as numbers for the estimators, and the class labels in code order.

    - ``regression``: float64 values and no classes.
    - ``multiclass``: codes ``0..k-1`` of the sorted class labels.
    - ``binary``: ``classes == [negative, positive]``, positive coded 1. The positive class
      is ``1`` / ``True`` when the classes are ``{0, 1}`` / ``{False, True}``; for string
      classes, the one that reads as yes (in :data:`POSITIVE_TOKENS`, case-insensitive)
      when exactly one does; otherwise the minority class (the later in sorted order on a
      tie). So ``Yes/No`` churn, ``0/1`` flags and ``bad/good`` credit (bad being rare)
      all make the interesting class positive.

    ``y`` must hold no nulls (apply the mask of :func:`check_target` first).

    >>> encode_target(pd.Series(["good", "bad", "good"]), "binary")[1]
    ['good', 'bad']
    >>> encode_target(pd.Series(["b", "c", "a"]), "multiclass")[0].tolist()
    [1, 2, 0]
    """
    if y.isna().any():
        raise TrainError(
            f"the target has {int(y.isna().sum())} null value(s)",
            column=y.name,
            hint="keep only the rows that check_target's mask marks",
        )
    if task == "regression":
        return y.to_numpy(dtype=np.float64), []
    labels = sorted(y.unique().tolist(), key=_sort_key)
    if task == "binary":
        if len(labels) != 2:
            raise TrainError(
                f"a binary target needs 2 classes; got {len(labels)}",
                column=y.name,
                hint="set 'task: multiclass' or map the target to two values",
            )
        positive = _positive_class(y, labels)
        negative = labels[0] if positive == labels[1] else labels[1]
        labels = [negative, positive]
    encoded = pd.Categorical(y, categories=labels).codes.astype(np.int64)
    return encoded, [_plain(label) for label in labels]


def _positive_class(y: pd.Series, labels: list[Any]) -> Any:
    if all(isinstance(label, bool | int | float | np.number) for label in labels):
        if sorted(float(label) for label in labels) == [0.0, 1.0]:
            return labels[0] if float(labels[0]) == 1.0 else labels[1]
    else:
        yes = [label for label in labels if str(label).strip().lower() in POSITIVE_TOKENS]
        if len(yes) == 1:
            return yes[0]
    counts = y.value_counts()
    first, second = labels
    return first if counts[first] < counts[second] else second


def _sort_key(label: Any) -> tuple[str, Any]:
    # Mixed label types (an object column of 1 and "1") still sort deterministically.
    return (type(label).__name__, label)


def _plain(label: Any) -> Any:
    """A numpy scalar as the Python value (readable in reports, JSON-serialisable)."""
    return label.item() if isinstance(label, np.generic) else label
