"""Cleansing steps: the declared ``cleanse:`` list applied to one chunk, vectorised.

The pipeline calls :func:`apply_steps` twice per chunk: ``phase="string"`` before the
contract's type coercion (null tokens, trim, case, unicode, rename) and ``phase="value"``
after it (cast, derive, units, dedupe, impute, outliers), each in declared order. Columns
starting with ``_`` (lineage) are never cleansed nor deduplicated on. Values that fail a
``cast`` and rows rejected by ``outliers`` with ``action: quarantine`` go to the quarantine
with their raw value; a malformed step raises :class:`~loopline.errors.ContractError`.

>>> from loopline.config.cleanse import CleanseStep
>>> steps = [CleanseStep.validate_python(s) for s in (
...     {"step": "trim"}, {"step": "dedupe"}, {"step": "cast", "columns": {"qty": "int64"}})]
>>> df = pl.DataFrame({"sku": [" a", "N/A", "a "], "qty": ["1", "2", "1"]})
>>> df = apply_steps(df, default_string_steps(steps), phase="string").data
>>> result = apply_steps(df, steps, phase="value")
>>> result.data.rows(), result.deduplicated
([('a', 1), (None, 2)], 1)
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Literal

import polars as pl

from loopline import lineage
from loopline.config.cleanse import (
    STRING_STEPS,
    CaseStep,
    CastStep,
    CleanseStepSpec,
    ConvertUnitsStep,
    DedupeStep,
    DeriveStep,
    ImputeStep,
    NormalizeUnicodeStep,
    NullTokensStep,
    OutliersStep,
    RenameStep,
    TrimStep,
)
from loopline.errors import ContractError
from loopline.ingest import units
from loopline.ingest.coerce import DTYPES, conversion_failed, convert
from loopline.ingest.quarantine import StageResult, to_quarantine

_TMP = "__cleanse_"  # prefix of scratch columns; internal ('_'), dropped before returning


def default_string_steps(steps: Sequence[CleanseStepSpec]) -> list[CleanseStepSpec]:
    """``steps`` with a default ``null_tokens`` step first unless one is declared.

    >>> [s.step for s in default_string_steps([TrimStep(step="trim")])]
    ['null_tokens', 'trim']
    """
    if any(isinstance(s, NullTokensStep) for s in steps):
        return list(steps)
    return [NullTokensStep(step="null_tokens"), *steps]


def validate_steps(steps: Sequence[CleanseStepSpec]) -> None:
    """Check what can be checked without data (expressions, units, types, internal columns).

    Called by :func:`apply_steps`; call it at start-up to fail before reading anything.
    """
    for index, step in enumerate(steps):
        where = _where(index, step)
        _check_not_internal(where, _written_columns(step))
        match step:
            case RenameStep():
                targets: dict[str, str] = {}
                for source, target in step.mapping.items():
                    if target in targets and targets[target] != source:
                        raise ContractError(
                            f"{where} renames both {targets[target]!r} and {source!r} "
                            f"to {target!r}",
                            step=where,
                            column=target,
                            hint="give each renamed column its own name",
                        )
                    targets[target] = source
            case CastStep():
                for column, type_name in step.columns.items():
                    if type_name not in DTYPES:
                        raise ContractError(
                            f"{where} casts {column!r} to unknown type {type_name!r}",
                            step=where,
                            column=column,
                            hint=f"use one of {', '.join(DTYPES)}",
                        )
            case DeriveStep():
                _derive_expr(where, step)
            case ConvertUnitsStep():
                try:
                    units.conversion(step.from_unit, step.to_unit)
                except ContractError as exc:
                    raise ContractError(
                        f"{where} on {step.column!r}: {exc.message}",
                        step=where,
                        column=step.column,
                        hint=exc.hint,
                    ) from exc
            case DedupeStep() if step.key == [] or (step.key is None and step.keep_latest_by):
                raise ContractError(
                    f"{where} needs a non-empty 'key' (keep_latest_by={step.keep_latest_by!r})",
                    step=where,
                    hint="name the key columns, or drop 'key' and 'keep_latest_by' to remove "
                    "exact duplicate rows",
                )
            case ImputeStep() if (step.strategy == "constant") != (step.value is not None):
                raise ContractError(
                    f"{where}: 'value' goes with strategy 'constant' and only with it "
                    f"(strategy={step.strategy!r}, value={step.value!r})",
                    step=where,
                    hint="set strategy: constant with a value, or remove 'value'",
                )
            case OutliersStep() if step.threshold is not None and step.threshold < 0:
                raise ContractError(
                    f"{where}: threshold must be >= 0, got {step.threshold}",
                    step=where,
                    hint="omit it for the default (1.5 for iqr, 3 for zscore)",
                )
            case _:
                pass


def apply_steps(
    df: pl.DataFrame,
    steps: Sequence[CleanseStepSpec],
    *,
    phase: Literal["string", "value"],
    unpadded: Collection[str] = frozenset(),
) -> StageResult:
    """Run the steps of one phase on ``df``, in declared order.

    ``phase="string"`` runs the steps in ``STRING_STEPS``, ``phase="value"`` the others.
    The whole list is validated first, whatever the phase. ``unpadded``: columns known to
    hold no value with whitespace at either end (see :mod:`loopline.ingest.text_edges`),
    where a first ``null_tokens`` step matches values without stripping them (the same
    result, cheaper); it is ignored once another step has run. A ``null_tokens`` step right
    before a ``trim`` step strips the columns both name once, for both.
    """
    validate_steps(steps)
    result = StageResult(data=df)
    stripped: Collection[str] = frozenset()  # columns the step before already trimmed
    for index, step in enumerate(steps):
        if (step.step in STRING_STEPS) != (phase == "string"):
            continue
        where = _where(index, step)
        following = steps[index + 1] if index + 1 < len(steps) else None
        if isinstance(step, NullTokensStep) and isinstance(following, TrimStep):
            tokens_on = _string_columns(result.data, step.columns, where)
            trim_on = _string_columns(result.data, following.columns, _where(index + 1, following))
            both = frozenset(tokens_on).intersection(trim_on)
            _null_tokens(result, step, tokens_on, unpadded, trim=both)
            stripped = both
        elif isinstance(step, TrimStep) and stripped:
            cols = _string_columns(result.data, step.columns, where)
            result.data = result.data.with_columns(
                pl.col(c).str.strip_chars() for c in cols if c not in stripped
            )
            stripped = frozenset()
        else:
            _apply_step(result, step, where, unpadded)
        unpadded = frozenset()  # the step may have changed the values
    return result


def _null_tokens(
    result: StageResult,
    step: NullTokensStep,
    cols: list[str],
    unpadded: Collection[str],
    *,
    trim: Collection[str] = frozenset(),
) -> None:
    """Null the values that are null tokens once stripped; ``trim``: columns whose other
    values are stripped too (what a ``trim`` step of them does next, at the cost of one
    strip instead of two)."""
    tokens = pl.Series(step.tokens, dtype=pl.String).implode()

    def nulled(c: str) -> pl.Expr:
        if c in trim:
            value = pl.col(c).str.strip_chars()
            return pl.when(value.is_in(tokens)).then(None).otherwise(value)
        matched = pl.col(c) if c in unpadded else pl.col(c).str.strip_chars()
        return pl.when(matched.is_in(tokens)).then(None).otherwise(pl.col(c))

    result.data = result.data.with_columns(nulled(c).alias(c) for c in cols)


def _apply_step(
    result: StageResult,
    step: CleanseStepSpec,
    where: str,
    unpadded: Collection[str] = frozenset(),
) -> None:
    df = result.data
    match step:
        case NullTokensStep():
            _null_tokens(result, step, _string_columns(df, step.columns, where), unpadded)
        case TrimStep():
            cols = _string_columns(df, step.columns, where)
            result.data = df.with_columns(pl.col(c).str.strip_chars() for c in cols)
        case CaseStep():
            cols = _string_columns(df, step.columns, where)
            result.data = df.with_columns(_case(pl.col(c), step.to) for c in cols)
        case NormalizeUnicodeStep():
            cols = _string_columns(df, step.columns, where)
            result.data = df.with_columns(pl.col(c).str.normalize(step.form) for c in cols)
        case RenameStep():
            _require(df, list(step.mapping), where)
            clash = [t for t in step.mapping.values() if t in df.columns and t not in step.mapping]
            if clash:
                raise ContractError(
                    f"{where} would overwrite existing column {clash[0]!r}",
                    step=where,
                    column=clash[0],
                    hint=f"pick a new name; columns present: {_payload(df)}",
                )
            result.data = df.rename(step.mapping)
        case CastStep():
            _cast(result, step, where)
        case DeriveStep():
            expr = _derive_expr(where, step)
            _require(df, expr.meta.root_names(), where)
            try:
                result.data = df.with_columns(expr.alias(step.column))
            except pl.exceptions.PolarsError as exc:
                raise ContractError(
                    f"{where} cannot evaluate {step.expr!r}: {exc}",
                    step=where,
                    column=step.column,
                    hint="check the column types the expression uses",
                ) from exc
        case ConvertUnitsStep():
            _numeric_columns(df, [step.column], where)
            target = step.into or step.column
            converted = units.convert(pl.col(step.column), step.from_unit, step.to_unit)
            result.data = df.with_columns(converted.alias(target))
        case DedupeStep():
            _dedupe(result, step, where)
        case ImputeStep():
            _impute(result, step, where)
        case OutliersStep():
            _outliers(result, step, where)


def _where(index: int, step: CleanseStepSpec) -> str:
    return f"cleanse step {index} ({step.step})"


def _written_columns(step: CleanseStepSpec) -> list[str]:
    match step:
        case NullTokensStep() | TrimStep() | NormalizeUnicodeStep():
            return step.columns or []
        case CaseStep() | ImputeStep() | OutliersStep():
            return step.columns
        case RenameStep():
            return [*step.mapping, *step.mapping.values()]
        case CastStep():
            return list(step.columns)
        case DeriveStep():
            return [step.column]
        case ConvertUnitsStep():
            return [step.column] + ([step.into] if step.into else [])
        case DedupeStep():
            return step.key or []
    return []


def _check_not_internal(where: str, columns: list[str]) -> None:
    internal = [c for c in columns if lineage.is_lineage(c)]
    if internal:
        raise ContractError(
            f"{where} touches internal column {internal[0]!r}",
            step=where,
            column=internal[0],
            hint="columns starting with '_' are lineage: never cleansed nor deduplicated on",
        )


def _derive_expr(where: str, step: DeriveStep) -> pl.Expr:
    try:
        return pl.sql_expr(step.expr)
    except pl.exceptions.PolarsError as exc:
        raise ContractError(
            f"{where} has an invalid SQL expression {step.expr!r}: {exc}",
            step=where,
            column=step.column,
            hint="write one SQL expression over the columns, e.g. 'price * quantity'",
        ) from exc


def _payload(df: pl.DataFrame) -> list[str]:
    return [c for c in df.columns if not lineage.is_lineage(c)]


def _require(df: pl.DataFrame, columns: Sequence[str], where: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ContractError(
            f"{where} refers to missing column {missing[0]!r}; columns present: {_payload(df)}",
            step=where,
            column=missing[0],
            hint="fix the column name, or order the step after the one that creates it",
        )


def _string_columns(df: pl.DataFrame, columns: list[str] | None, where: str) -> list[str]:
    """Columns a string step works on: all String payload columns, or the named ones."""
    if columns is None:
        return [c for c, t in df.schema.items() if t == pl.String and not lineage.is_lineage(c)]
    _require(df, columns, where)
    for c in columns:
        if df.schema[c] not in (pl.String, pl.Null):
            raise ContractError(
                f"{where} needs a string column, {c!r} is {df.schema[c]}",
                step=where,
                column=c,
                hint="string steps run before type coercion; drop the column from this step",
            )
    return [c for c in columns if df.schema[c] == pl.String]  # an all-null column: nothing to do


def _numeric_columns(df: pl.DataFrame, columns: list[str], where: str) -> None:
    _require(df, columns, where)
    for c in columns:
        if not (df.schema[c].is_numeric() or df.schema[c] == pl.Null):
            raise ContractError(
                f"{where} needs a numeric column, {c!r} is {df.schema[c]}",
                step=where,
                column=c,
                hint="cast the column to a number first (contract type or a cast step)",
            )


def _case(col: pl.Expr, to: Literal["lower", "upper", "title"]) -> pl.Expr:
    if to == "lower":
        return col.str.to_lowercase()
    if to == "upper":
        return col.str.to_uppercase()
    return col.str.to_titlecase()


@dataclass(frozen=True)
class _Check:
    """Rows where ``failed`` holds go to the quarantine under ``rule``, raw value of ``column``."""

    rule: str
    column: str
    failed: pl.Expr


def _split(
    result: StageResult, marked: pl.DataFrame, record: list[str], checks: list[_Check]
) -> pl.DataFrame:
    """Quarantine the rows failing any check; the others, with the scratch flags dropped."""
    flags = [f"{_TMP}fail_{i}" for i in range(len(checks))]
    marked = marked.with_columns(
        chk.failed.fill_null(False).alias(flag) for chk, flag in zip(checks, flags, strict=True)
    )
    frames = [result.quarantine]
    for chk, flag in zip(checks, flags, strict=True):
        failing = marked.filter(pl.col(flag)).select(record)
        if failing.height:
            frames.append(
                to_quarantine(failing, rule=chk.rule, column=chk.column, raw=pl.col(chk.column))
            )
            result.counts[chk.rule] = result.counts.get(chk.rule, 0) + failing.height
    result.quarantine = pl.concat(frames, how="vertical")
    if not flags:
        return marked
    return marked.filter(~pl.any_horizontal(flags)).drop(flags)


def _cast(result: StageResult, step: CastStep, where: str) -> None:
    df = result.data
    _require(df, list(step.columns), where)
    scratch = {c: f"{_TMP}cast_{i}" for i, c in enumerate(step.columns)}
    try:
        marked = df.with_columns(
            convert(pl.col(c), df.schema[c], DTYPES[t]).alias(scratch[c])  # type: ignore[index]
            for c, t in step.columns.items()
        )
    except pl.exceptions.InvalidOperationError as exc:
        raise ContractError(
            f"{where} cannot cast {dict(df.select(list(step.columns)).schema)} "
            f"to {step.columns}: {exc}",
            step=where,
            hint="cast through 'string', or fix the contract type",
        ) from exc
    checks = [
        _Check(
            f"cast:{c}",
            c,
            conversion_failed(pl.col(c), pl.col(s), df.schema[c], DTYPES[t]),  # type: ignore[index]
        )
        for (c, s), t in zip(scratch.items(), step.columns.values(), strict=True)
    ]
    kept = _split(result, marked, df.columns, checks)
    result.data = kept.with_columns(pl.col(s).alias(c) for c, s in scratch.items()).drop(
        list(scratch.values())
    )


def _first_of_exact_duplicates(df: pl.DataFrame, subset: list[str]) -> pl.Series:
    """True on each row but the repeats of an earlier identical row (over ``subset``).

    Row hashes settle the common case cheaply (~3x faster than comparing whole rows); only
    rows whose hash repeats are compared exactly, so a hash collision never drops a row.
    """
    repeated = df.select(subset).hash_rows().is_duplicated()
    if not repeated.any():
        return pl.repeat(True, df.height, eager=True)
    suspects = df.select(subset).with_row_index("__row").filter(repeated)
    firsts = suspects.filter(pl.struct(subset).is_first_distinct())["__row"]
    return ~repeated | pl.int_range(df.height, eager=True).is_in(firsts.implode())


def _dedupe(result: StageResult, step: DedupeStep, where: str) -> None:
    df = result.data
    if step.key is None:
        subset = _payload(df)
        deduped = df.filter(_first_of_exact_duplicates(df, subset)) if subset else df
    else:
        _require(df, [*step.key, *([step.keep_latest_by] if step.keep_latest_by else [])], where)
        row = f"{_TMP}row"
        order = [pl.col(step.keep_latest_by)] if step.keep_latest_by else []
        winner = pl.col(row).sort_by([*order, pl.col(row)], descending=True, nulls_last=True)
        deduped = (
            df.with_row_index(row).filter(pl.col(row) == winner.first().over(step.key)).drop(row)
        )
    result.deduplicated += df.height - deduped.height
    result.data = deduped


def _impute(result: StageResult, step: ImputeStep, where: str) -> None:
    df = result.data
    _require(df, [*step.columns, *(step.group_by or [])], where)
    if step.strategy in ("mean", "median"):
        _numeric_columns(df, step.columns, where)
    fills: list[pl.Expr] = []
    for c in step.columns:
        col, dtype = pl.col(c), df.schema[c]
        if step.strategy == "constant":
            fill = pl.lit(step.value).cast(dtype, strict=True)
        elif step.strategy == "ffill":
            fills.append(
                col.forward_fill().over(step.group_by) if step.group_by else col.forward_fill()
            )
            continue
        else:
            stat = {
                "mean": col.mean(),
                "median": col.median(),
                "mode": col.drop_nulls().mode().sort().first(),
            }[step.strategy]
            # a group with no value at all falls back to the batch-wide statistic
            fill = stat.over(step.group_by).fill_null(stat) if step.group_by else stat
            if dtype.is_integer() and step.strategy != "mode":
                fill = fill.round(0)
            fill = fill.cast(dtype)
        fills.append(col.fill_null(fill))
    try:
        result.data = df.with_columns(fills)
    except pl.exceptions.InvalidOperationError as exc:
        raise ContractError(
            f"{where} cannot fill {step.columns} with {step.value!r}: {exc}",
            step=where,
            hint="give a constant of the column's type",
        ) from exc


def _outlier_bounds(df: pl.DataFrame, step: OutliersStep) -> dict[str, tuple[float, float] | None]:
    """Per column, the inclusive range of normal values on this batch (None: too few values)."""
    t = step.threshold if step.threshold is not None else (1.5 if step.method == "iqr" else 3.0)
    aggs: list[pl.Expr] = []
    for c in step.columns:
        x = pl.col(c).cast(pl.Float64)
        if step.method == "iqr":
            q1, q3 = x.quantile(0.25, "linear"), x.quantile(0.75, "linear")
            lo, hi = q1 - t * (q3 - q1), q3 + t * (q3 - q1)
        else:
            lo, hi = x.mean() - t * x.std(), x.mean() + t * x.std()
        aggs += [lo.alias(f"{c}\x00lo"), hi.alias(f"{c}\x00hi")]
    row = df.select(aggs).row(0, named=True)
    return {
        c: None if row[f"{c}\x00lo"] is None else (row[f"{c}\x00lo"], row[f"{c}\x00hi"])
        for c in step.columns
    }


def _outliers(result: StageResult, step: OutliersStep, where: str) -> None:
    df = result.data
    _numeric_columns(df, step.columns, where)
    bounds = {c: b for c, b in _outlier_bounds(df, step).items() if b is not None}
    outside = {c: (pl.col(c) < lo) | (pl.col(c) > hi) for c, (lo, hi) in bounds.items()}
    if step.action == "flag":
        result.data = df.with_columns(
            outside.get(c, pl.lit(False)).fill_null(False).alias(f"{c}_outlier")
            for c in step.columns
        )
    elif step.action == "clip":
        result.data = df.with_columns(
            _clip(c, df.schema[c], lo, hi) for c, (lo, hi) in bounds.items()
        )
    else:
        checks = [_Check(f"outlier:{c}", c, mask) for c, mask in outside.items()]
        result.data = _split(result, df, df.columns, checks)


def _clip(column: str, dtype: pl.DataType, lo: float, hi: float) -> pl.Expr:
    if dtype.is_integer():  # keep the type: the nearest integers inside the bounds
        return pl.col(column).clip(math.ceil(lo), math.floor(hi))
    return pl.col(column).clip(lo, hi)
