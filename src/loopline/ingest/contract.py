"""The data contract engine: coerce a batch to its declared types, then check its rules.

A :class:`ContractEngine` compiles a :class:`~loopline.config.ContractConfig` once (a bad
regex or SQL expression fails here, before any data is read) into one boolean Polars
expression per rule, True where a row fails. Both verbs return a
:class:`~loopline.ingest.quarantine.StageResult`: good rows go on, failing rows go to
quarantine with the rule name, the column and the raw value.

Semantics worth knowing:

- Nulls fail only ``not_null``; every other check passes on null.
- ``unique`` flags every occurrence of a key but the first (rows with a null key pass).
- ``regex`` must match the whole value (Rust ``regex`` syntax, as Polars uses).
- ``freshness`` judges the batch: when the newest value is older than ``max_age`` every
  row fails (an all-null column passes).
- Severities: ``error`` quarantines, ``warn`` only counts (``StageResult.warnings``),
  ``fatal`` raises :class:`~loopline.errors.FatalRuleError` and the batch is not written.
- Schema drift against the stored table is handled in :meth:`ContractEngine.validate`.

>>> import polars as pl
>>> engine = ContractEngine(ContractConfig.model_validate({"columns": {
...     "id": {"type": "int64", "nullable": False}, "amount": {"type": "float64", "min": 0}}}))
>>> typed = engine.coerce(pl.DataFrame({"id": ["1", "2", "x"], "amount": [5.0, -1.0, 2.0]}))
>>> typed.counts, typed.data["id"].to_list()
({'type:id': 1}, [1, 2])
>>> checked = engine.validate(typed.data, None)
>>> checked.counts, checked.data["amount"].to_list()
({'range:amount': 1}, [5.0])
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl
import pyarrow as pa

from loopline import lineage
from loopline.config.contracts import (
    AllowedRule,
    ColumnSpec,
    ContractConfig,
    ExpressionRule,
    FreshnessRule,
    LengthRule,
    NotNullRule,
    RangeRule,
    RegexRule,
    Rule,
    Severity,
    UniqueRule,
)
from loopline.errors import ContractError, FatalRuleError, SchemaDriftError
from loopline.ingest.coerce import (
    column_type,
    conversion_failed,
    convert,
    detect_datetime_format,
    infer_type,
    iso_datetimes,
)
from loopline.ingest.coerce import polars_dtype as _dtype
from loopline.ingest.quarantine import StageResult, empty_quarantine, to_quarantine
from loopline.ingest.schema_drift import SchemaDrift, detect_drift, polars_schema

_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}

# Builds a rule's "fails" expression from the batch schema and the current time.
_Build = Callable[[pl.Schema, datetime], pl.Expr]


@dataclass(frozen=True)
class _Check:
    name: str
    severity: Severity
    column: str | None  # reported in quarantine; None for multi-column rules
    reads: tuple[str, ...]
    build: _Build
    condition: pl.Expr | None = None  # expression rules: must evaluate to a boolean


class ContractEngine:
    """Coerces and validates batches against one contract (or an inferred one)."""

    def __init__(
        self, contract: ContractConfig | None, *, now: Callable[[], datetime] | None = None
    ) -> None:
        self._contract = contract if contract is not None else ContractConfig()
        self._now = now or (lambda: datetime.now(UTC))
        self._checks = _compile(self._contract)

    @classmethod
    def inferred(cls, sample: pl.DataFrame, stored: pa.Schema | None = None) -> ContractEngine:
        """An engine without rules whose column types come from ``stored``, else the sample.

        Every column is nullable and optional (a later batch may lack it); columns of a
        dtype no contract type stores exactly (``Int16``, lists ...) are left undeclared
        and pass through.

        >>> e = ContractEngine.inferred(pl.DataFrame({"n": ["1", "2"], "s": ["a", "b"]}))
        >>> {k: v.type for k, v in e.contract.columns.items()}
        {'n': 'int64', 's': 'string'}
        """
        types: dict[str, Any] = {}
        kept = polars_schema(stored) if stored is not None else pl.Schema()
        for name, dtype in kept.items():
            if not lineage.is_lineage(name) and (stored_type := column_type(dtype)):
                types[name] = stored_type
        for name in sample.columns:
            if lineage.is_lineage(name) or name in kept:
                continue
            dtype = sample.schema[name]
            found = infer_type(sample[name]) if dtype == pl.String() else column_type(dtype)
            if found is not None:
                types[name] = found
        columns = {name: {"type": t, "required": False} for name, t in types.items()}
        return cls(ContractConfig.model_validate({"columns": columns}))

    @property
    def contract(self) -> ContractConfig:
        return self._contract

    def coerce(self, df: pl.DataFrame) -> StageResult:
        """Cast declared columns to their types; unparseable values quarantine their row.

        A required column missing from the batch quarantines every row under
        ``presence:<col>``; an optional one is added as nulls. Undeclared columns pass.
        """
        specs = {c: s for c, s in self._contract.columns.items() if not lineage.is_lineage(c)}
        absent = [c for c in specs if c not in df.columns]
        df = self._fast_datetimes(df, specs)
        casts = {
            c: (df.schema[c], _dtype(s.type), s.format)
            for c, s in specs.items()
            if c in df.columns and df.schema[c] != _dtype(s.type)
        }
        detected = {
            c: fmt
            for c, (src, dst, given) in casts.items()
            if given is None
            and src == pl.String()
            and isinstance(dst, pl.Datetime)
            and (fmt := detect_datetime_format(df[c])) is not None
        }
        tmp = {c: f"__coerced_{i}" for i, c in enumerate(casts)}
        # A quick pass (no whitespace strip, one detected datetime format), then the careful
        # one on just the values it missed: most batches are mostly clean.
        # Lazy: common subexpressions (a float parsed, then tested for finiteness) run once.
        work = (
            df.lazy()
            .with_columns(
                convert(pl.col(c), src, dst, detected.get(c, fmt), quick=True).alias(tmp[c])
                for c, (src, dst, fmt) in casts.items()
            )
            .collect()
        )
        failed = work.select(
            conversion_failed(pl.col(c), pl.col(tmp[c]), src, dst).alias(c)
            for c, (src, dst, _) in casts.items()
        )
        texts = [c for c, (src, _, _) in casts.items() if src == pl.String()]
        work, failed = self._retry_carefully(df, work, failed, casts, tmp, texts)
        parts: list[pl.DataFrame] = []
        counts: dict[str, int] = {}
        for c in absent:
            if specs[c].required and df.height:
                parts.append(to_quarantine(df, rule=f"presence:{c}", column=c, raw=None))
                counts[f"presence:{c}"] = df.height
        for c in failed.columns:
            n = int(failed[c].sum())
            if n:
                failing = df.filter(failed[c])
                parts.append(to_quarantine(failing, rule=f"type:{c}", column=c, raw=pl.col(c)))
                counts[f"type:{c}"] = n
        if any(specs[c].required for c in absent):
            keep = pl.repeat(False, df.height, eager=True)
        elif failed.width:
            keep = ~failed.select(pl.any_horizontal(pl.all())).to_series()
        else:
            keep = pl.repeat(True, df.height, eager=True)
        # Select first: the filter then copies the converted columns only, not their text.
        data = work.select(
            pl.col(tmp[c]).alias(c) if c in tmp else pl.col(c) for c in df.columns
        ).filter(keep)
        data = data.with_columns(pl.lit(None, dtype=_dtype(specs[c].type)).alias(c) for c in absent)
        return StageResult(data=data, quarantine=_concat(parts), counts=counts)

    @staticmethod
    def _fast_datetimes(df: pl.DataFrame, specs: dict[str, ColumnSpec]) -> pl.DataFrame:
        """Clean ISO timestamp text columns parsed in one strict Arrow pass (no failures)."""
        parsed = []
        for c, spec in specs.items():
            target = _dtype(spec.type)
            if (
                spec.format is None
                and isinstance(target, pl.Datetime)
                and df.schema.get(c) == pl.String()
                and (series := iso_datetimes(df[c], target)) is not None
            ):
                parsed.append(series)
        return df.with_columns(parsed) if parsed else df

    @staticmethod
    def _retry_carefully(
        df: pl.DataFrame,
        work: pl.DataFrame,
        failed: pl.DataFrame,
        casts: dict[str, tuple[pl.DataType, pl.DataType, str | None]],
        tmp: dict[str, str],
        columns: list[str],
    ) -> tuple[pl.DataFrame, pl.DataFrame]:
        """Re-parse the values the quick pass missed: stripped, every ISO variant."""
        for c in columns:
            rows = failed[c].arg_true()
            if rows.len() == 0:
                continue
            src, dst, fmt = casts[c]
            again = df[c].gather(rows).to_frame().select(convert(pl.col(c), src, dst, fmt))
            parsed = work[tmp[c]].scatter(rows, again.to_series())
            work = work.with_columns(parsed)
            failed = failed.with_columns((df[c].is_not_null() & parsed.is_null()).alias(c))
        return work, failed

    def validate(self, df: pl.DataFrame, stored: pa.Schema | None) -> StageResult:
        """Apply the schema drift policy against ``stored``, then every rule.

        Drift: a retyped column is cast to the stored type (values that do not survive are
        quarantined under ``schema:retyped:<col>``); missing columns are filled with nulls.
        ``evolve`` keeps new columns; ``freeze`` + ``quarantine`` quarantines rows with a
        value in a new column (``schema:new_column:<col>``) and drops those columns;
        ``freeze`` + ``abort`` raises :class:`SchemaDriftError` on new or missing columns
        or a retyped column that cannot be cast.
        """
        drift = detect_drift(df.schema, stored)
        frame, drift_flags = self._align(df, drift, stored)
        for check in self._checks:
            for c in check.reads:
                if c not in frame.columns:
                    raise ContractError(
                        f"rule {check.name!r} reads column {c!r}, which the batch lacks",
                        rule=check.name,
                        column=c,
                        hint="declare the column in the contract or fix the rule's column name",
                    )
        now = self._now()
        exprs = [check.build(frame.schema, now) for check in self._checks]
        self._check_types(frame, exprs)
        names = [f"__rule_{i}" for i in range(len(exprs))]
        flags = frame.with_columns(e.alias(n) for e, n in zip(exprs, names, strict=True)).select(
            names
        )
        totals = flags.sum().row(0) if names else ()
        counts: dict[str, int] = {}
        warnings: dict[str, int] = {}
        parts: list[pl.DataFrame] = []
        removed: list[pl.Series] = []
        for check, name, total in zip(self._checks, names, totals, strict=True):
            if total and check.severity == "fatal":
                example = self._quarantine(frame.filter(flags[name]).head(1), check)
                raise FatalRuleError(
                    f"fatal rule {check.name!r} failed on {total} rows; the batch is not written",
                    rule=check.name,
                    failing_rows=int(total),
                    example=example["_raw_value"][0] or example["_record"][0],
                    hint="fix the source data, or lower the rule's severity to error or warn",
                )
        for rule, (column, mask) in drift_flags.items():
            if n := int(mask.sum()):
                raw = pl.col(column)
                parts.append(to_quarantine(df.filter(mask), rule=rule, column=column, raw=raw))
                counts[rule] = n
                removed.append(mask)
        for check, name, total in zip(self._checks, names, totals, strict=True):
            if not total:
                continue
            if check.severity == "warn":
                warnings[check.name] = int(total)
            else:
                parts.append(self._quarantine(frame.filter(flags[name]), check))
                counts[check.name] = int(total)
                removed.append(flags[name])
        if removed:
            frame = frame.filter(~pl.any_horizontal(removed))
        if self._contract.schema_policy == "freeze":
            frame = frame.drop(drift.new)
        return StageResult(
            data=frame, quarantine=_concat(parts), counts=counts, warnings=warnings, drift=drift
        )

    def _align(
        self, df: pl.DataFrame, drift: SchemaDrift, stored: pa.Schema | None
    ) -> tuple[pl.DataFrame, dict[str, tuple[str, pl.Series]]]:
        """Cast retyped columns, fill missing ones; masks of rows that drift quarantines."""
        if stored is None or not drift.changed:
            return df, {}
        kept = polars_schema(stored)
        specs = self._contract.columns
        casts = {
            c: (df.schema[c], kept[c], specs[c].format if c in specs else None)
            for c in drift.retyped
        }
        tmp = {c: f"__cast_{i}" for i, c in enumerate(casts)}
        work = df.with_columns(
            convert(pl.col(c), src, dst, fmt).alias(tmp[c]) for c, (src, dst, fmt) in casts.items()
        )
        lossy = work.select(
            conversion_failed(pl.col(c), pl.col(tmp[c]), src, dst).alias(c)
            for c, (src, dst, _) in casts.items()
        )
        frame = work.with_columns(pl.col(tmp[c]).alias(c) for c in casts).drop(tmp.values())
        broken = [c for c in lossy.columns if lossy[c].any()]
        policy = self._contract
        frozen = policy.schema_policy == "freeze"
        if frozen and policy.on_drift == "abort" and (drift.new or drift.missing or broken):
            raise SchemaDriftError(
                f"the batch does not match the frozen table schema: {drift.summary()}",
                new=drift.new or None,
                missing=drift.missing or None,
                retyped=broken or None,
                hint="fix the source, or set schema_policy: evolve to let the table change",
            )
        masks: dict[str, tuple[str, pl.Series]] = {
            f"schema:retyped:{c}": (c, lossy[c]) for c in broken
        }
        if frozen:
            for c in drift.new:
                masks[f"schema:new_column:{c}"] = (c, df[c].is_not_null())
        frame = frame.with_columns(pl.lit(None, dtype=kept[c]).alias(c) for c in drift.missing)
        return frame, masks

    def _check_types(self, frame: pl.DataFrame, exprs: list[pl.Expr]) -> None:
        """Evaluate every rule on an empty frame, so a type mismatch names its rule."""
        empty = frame.clear()
        for check, expr in zip(self._checks, exprs, strict=True):
            try:
                empty.select(expr.alias("f"))
                dtype = (
                    empty.select(check.condition).dtypes[0] if check.condition is not None else None
                )
            except pl.exceptions.PolarsError as exc:
                raise ContractError(
                    f"rule {check.name!r} cannot be evaluated on this batch: {exc}".splitlines()[0],
                    rule=check.name,
                    column=check.column,
                    hint="check that the rule fits the column's type (range needs numbers)",
                ) from exc
            if dtype is not None and dtype != pl.Boolean():
                raise ContractError(
                    f"expression rule {check.name!r} gives {dtype}, not a boolean",
                    rule=check.name,
                    hint="write a condition, e.g. 'price * quantity > 0'",
                )

    @staticmethod
    def _quarantine(failing: pl.DataFrame, check: _Check) -> pl.DataFrame:
        raw = pl.col(check.column) if check.column is not None else None
        return to_quarantine(failing, rule=check.name, column=check.column, raw=raw)


def _concat(parts: list[pl.DataFrame]) -> pl.DataFrame:
    return pl.concat(parts) if parts else empty_quarantine()


def rule_name(rule: Rule) -> str:
    """A rule's ``name``, or ``<check>:<column>`` (``unique:a+b``, ``expression:<expr>``).

    >>> rule_name(UniqueRule(check="unique", columns=["a", "b"]))
    'unique:a+b'
    """
    if rule.name:
        return rule.name
    if isinstance(rule, UniqueRule):
        return f"unique:{'+'.join(rule.columns)}"
    if isinstance(rule, ExpressionRule):
        return f"expression:{rule.expr}"
    return f"{rule.check}:{rule.column}"


def _expand(contract: ContractConfig) -> list[Rule]:
    """Rules implied by column shorthands and the primary key (severity ``error``)."""
    implied: list[Rule] = []
    for col, spec in contract.columns.items():
        if lineage.is_lineage(col):
            continue
        if not spec.nullable:
            implied.append(NotNullRule(check="not_null", column=col))
        if spec.min is not None or spec.max is not None:
            implied.append(RangeRule(check="range", column=col, min=spec.min, max=spec.max))
        if spec.allowed is not None:
            implied.append(AllowedRule(check="allowed", column=col, values=spec.allowed))
        if spec.regex is not None:
            implied.append(RegexRule(check="regex", column=col, pattern=spec.regex))
        if spec.min_length is not None or spec.max_length is not None:
            implied.append(
                LengthRule(check="length", column=col, min=spec.min_length, max=spec.max_length)
            )
        if spec.unique:
            implied.append(UniqueRule(check="unique", columns=[col]))
    if contract.primary_key:
        implied.append(UniqueRule(check="unique", columns=list(contract.primary_key)))
        implied.extend(NotNullRule(check="not_null", column=c) for c in contract.primary_key)
    return implied


def _compile(contract: ContractConfig) -> list[_Check]:
    checks: dict[str, _Check] = {}
    for rule in contract.rules:
        name = rule_name(rule)
        if name in checks:
            raise ContractError(
                f"two rules are named {name!r}",
                rule=name,
                hint="give one of them a distinct `name`",
            )
        checks[name] = _compile_rule(rule, name)
    for rule in _expand(contract):
        # An explicit rule of the same name (e.g. a fatal not_null) overrides a shorthand.
        checks.setdefault(rule_name(rule), _compile_rule(rule, rule_name(rule)))
    return list(checks.values())


def _compile_rule(rule: Rule, name: str) -> _Check:
    sev = rule.severity
    if isinstance(rule, UniqueRule):
        keys = [pl.col(c) for c in rule.columns]
        key = keys[0] if len(keys) == 1 else pl.struct(keys)
        dup = ~key.is_first_distinct() & pl.all_horizontal(k.is_not_null() for k in keys)
        column = rule.columns[0] if len(rule.columns) == 1 else None
        return _Check(name, sev, column, tuple(rule.columns), lambda _s, _n: dup)
    if isinstance(rule, ExpressionRule):
        try:
            cond = pl.sql_expr(rule.expr)
        except pl.exceptions.PolarsError as exc:
            raise ContractError(
                f"expression rule {name!r} is not valid SQL: {rule.expr!r}",
                rule=name,
                expr=rule.expr,
                hint="write a SQL condition over the columns, e.g. 'price * quantity > 0'",
            ) from exc
        fails = cond.not_().fill_null(False)
        reads = tuple(cond.meta.root_names())
        return _Check(name, sev, None, reads, lambda _s, _n: fails, condition=cond)
    col = pl.col(rule.column)
    reads = (rule.column,)
    if isinstance(rule, NotNullRule):
        return _Check(name, sev, rule.column, reads, lambda _s, _n: col.is_null())
    if isinstance(rule, RangeRule):
        return _Check(name, sev, rule.column, reads, _range(rule))
    if isinstance(rule, AllowedRule):
        return _Check(name, sev, rule.column, reads, _allowed(rule))
    if isinstance(rule, RegexRule):
        return _Check(name, sev, rule.column, reads, _regex(rule, name))
    if isinstance(rule, LengthRule):
        n = col.cast(pl.String).str.len_chars()
        too_short = n < rule.min if rule.min is not None else pl.lit(False)
        too_long = n > rule.max if rule.max is not None else pl.lit(False)
        fails = (too_short | too_long).fill_null(False)
        return _Check(name, sev, rule.column, reads, lambda _s, _n: fails)
    return _Check(name, sev, rule.column, reads, _freshness(rule, name))


def _range(rule: RangeRule) -> _Build:
    def build(schema: pl.Schema, _now: datetime) -> pl.Expr:
        col = pl.col(rule.column)
        if isinstance(schema[rule.column], pl.Decimal):
            col = col.cast(pl.Float64)
        low = col < rule.min if rule.min is not None else pl.lit(False)
        high = col > rule.max if rule.max is not None else pl.lit(False)
        return (low | high).fill_null(False)

    return build


_FEW = 8
"""Allowed string values up to this many are checked by comparisons, not a hash lookup."""


def _allowed(rule: AllowedRule) -> _Build:
    def build(schema: pl.Schema, _now: datetime) -> pl.Expr:
        dtype = schema[rule.column]
        values = pl.Series(rule.values, strict=False)
        col = pl.col(rule.column)
        if dtype.is_numeric() and values.dtype.is_numeric() and values.dtype != dtype:
            col, values = col.cast(pl.Float64), values.cast(pl.Float64)
        elif values.dtype != dtype:
            values = values.cast(pl.String).cast(dtype, strict=False)
        values = values.drop_nulls()
        if dtype == pl.String() and 0 < values.len() <= _FEW:
            # A few values: comparisons beat hashing every string (~3x).
            return (~pl.any_horizontal(col == v for v in values)).fill_null(False)
        return (~col.is_in(values.implode())).fill_null(False)

    return build


def _regex(rule: RegexRule, name: str) -> _Build:
    pattern = f"^(?:{rule.pattern})$"
    try:
        pl.Series([""], dtype=pl.String).str.contains(pattern)
    except pl.exceptions.PolarsError as exc:
        raise ContractError(
            f"regex rule {name!r} has an invalid pattern: {rule.pattern!r}",
            rule=name,
            pattern=rule.pattern,
            hint="fix the pattern (Rust regex syntax: no look-around or backreferences)",
        ) from exc
    fails = ~pl.col(rule.column).cast(pl.String).str.contains(pattern).fill_null(True)
    return lambda _s, _n: fails


def _freshness(rule: FreshnessRule, name: str) -> _Build:
    max_age = parse_duration(rule.max_age, rule=name)

    def build(schema: pl.Schema, now: datetime) -> pl.Expr:
        dtype = schema[rule.column]
        newest = pl.col(rule.column).max()
        # A naive clock reading or column is taken as UTC, as coercion stores them.
        limit = (now if now.tzinfo else now.replace(tzinfo=UTC)).astimezone(UTC) - max_age
        if isinstance(dtype, pl.Datetime) and dtype.time_zone is None:
            threshold = pl.lit(limit.replace(tzinfo=None))
        elif isinstance(dtype, pl.Datetime):
            newest = pl.col(rule.column).dt.convert_time_zone("UTC").max()
            threshold = pl.lit(limit)
        elif dtype == pl.Date():
            threshold = pl.lit(limit.date())
        else:
            raise ContractError(
                f"freshness rule {name!r} needs a date or datetime column; "
                f"{rule.column!r} is {dtype}",
                rule=name,
                column=rule.column,
                hint=f"declare {rule.column!r} with type: datetime in the contract",
            )
        return (newest < threshold).fill_null(False)

    return build


def parse_duration(text: str, *, rule: str | None = None) -> timedelta:
    """A duration such as ``'30s'``, ``'15m'``, ``'12h'``, ``'7d'`` or ``'2w'``.

    >>> parse_duration("12h")
    datetime.timedelta(seconds=43200)
    """
    match = _DURATION.match(text)
    if match is None:
        raise ContractError(
            f"cannot read the duration {text!r}",
            rule=rule,
            value=text,
            hint="write a number and a unit: s, m, h, d or w (e.g. '7d')",
        )
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
