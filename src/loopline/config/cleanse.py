"""Cleansing step specifications, applied in the order given.

String-level steps (``null_tokens``, ``trim``, ``case``, ``normalize_unicode``, ``rename``) run
before the contract's type coercion; the others run after it, in declared order.

>>> CleanseStep.validate_python({"step": "trim"}).columns is None
True
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

DEFAULT_NULL_TOKENS = ["", "N/A", "NA", "n/a", "null", "NULL", "None", "NaN", "nan", "-"]


class _Step(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NullTokensStep(_Step):
    step: Literal["null_tokens"]
    tokens: list[str] = Field(default_factory=lambda: list(DEFAULT_NULL_TOKENS))
    columns: list[str] | None = None


class TrimStep(_Step):
    step: Literal["trim"]
    columns: list[str] | None = None


class CaseStep(_Step):
    step: Literal["case"]
    columns: list[str]
    to: Literal["lower", "upper", "title"]


class NormalizeUnicodeStep(_Step):
    step: Literal["normalize_unicode"]
    form: Literal["NFC", "NFD", "NFKC", "NFKD"] = "NFKC"
    columns: list[str] | None = None


class RenameStep(_Step):
    step: Literal["rename"]
    mapping: dict[str, str]


class CastStep(_Step):
    step: Literal["cast"]
    columns: dict[str, str]


class DeriveStep(_Step):
    """A new column from a SQL expression over the others, e.g. ``price * quantity``."""

    step: Literal["derive"]
    column: str
    expr: str


class ConvertUnitsStep(_Step):
    step: Literal["convert_units"]
    column: str
    from_unit: str = Field(..., alias="from")
    to_unit: str = Field(..., alias="to")
    into: str | None = Field(None, description="Target column; the source column by default.")


class DedupeStep(_Step):
    """Exact duplicate rows, or by ``key`` keeping the row with the largest ``keep_latest_by``."""

    step: Literal["dedupe"]
    key: list[str] | None = None
    keep_latest_by: str | None = None


class ImputeStep(_Step):
    step: Literal["impute"]
    columns: list[str]
    strategy: Literal["constant", "mean", "median", "mode", "ffill"]
    value: Any = None
    group_by: list[str] | None = None


class OutliersStep(_Step):
    step: Literal["outliers"]
    columns: list[str]
    method: Literal["iqr", "zscore"] = "iqr"
    threshold: float | None = Field(None, description="1.5 for IQR, 3.0 for z-score by default.")
    action: Literal["flag", "clip", "quarantine"] = "flag"


CleanseStepSpec = Annotated[
    NullTokensStep
    | TrimStep
    | CaseStep
    | NormalizeUnicodeStep
    | RenameStep
    | CastStep
    | DeriveStep
    | ConvertUnitsStep
    | DedupeStep
    | ImputeStep
    | OutliersStep,
    Field(discriminator="step"),
]
CleanseStep: TypeAdapter[Any] = TypeAdapter(CleanseStepSpec)
STRING_STEPS = frozenset({"null_tokens", "trim", "case", "normalize_unicode", "rename"})
