"""Data contract specifications: columns (presence, type, nullability) and rules.

A contract is declared in YAML or built in Python; both give the same models, and the
same engine (:mod:`loopline.ingest.contract`) evaluates them.

>>> c = ContractConfig.model_validate({
...     "columns": {"id": {"type": "int64", "nullable": False}, "amount": "float64"},
...     "rules": [{"check": "range", "column": "amount", "min": 0}],
... })
>>> c.columns["amount"].type
'float64'
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Severity = Literal["error", "warn", "fatal"]
ColumnType = Literal[
    "string", "int64", "int32", "float64", "float32", "bool", "date", "datetime", "decimal"
]


class _Rule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, description="Defaults to '<check>:<column>'.")
    severity: Severity = "error"


class RangeRule(_Rule):
    check: Literal["range"]
    column: str
    min: float | None = None
    max: float | None = None


class AllowedRule(_Rule):
    check: Literal["allowed"]
    column: str
    values: list[Any]


class RegexRule(_Rule):
    check: Literal["regex"]
    column: str
    pattern: str


class LengthRule(_Rule):
    check: Literal["length"]
    column: str
    min: int | None = Field(None, ge=0)
    max: int | None = Field(None, ge=0)


class NotNullRule(_Rule):
    check: Literal["not_null"]
    column: str


class UniqueRule(_Rule):
    """Uniqueness of one column or a composite key, within the batch."""

    check: Literal["unique"]
    columns: list[str]


class ExpressionRule(_Rule):
    """A cross-column condition in SQL expression syntax that must hold for each row."""

    check: Literal["expression"]
    expr: str


class FreshnessRule(_Rule):
    """The newest value of a timestamp column must be younger than ``max_age`` (e.g. '7d')."""

    check: Literal["freshness"]
    column: str
    max_age: str


Rule = Annotated[
    RangeRule
    | AllowedRule
    | RegexRule
    | LengthRule
    | NotNullRule
    | UniqueRule
    | ExpressionRule
    | FreshnessRule,
    Field(discriminator="check"),
]


class ColumnSpec(BaseModel):
    """A declared column: its type (values are coerced; failures are quarantined) and shorthands.

    The shorthands (``min``, ``max``, ``allowed``, ``regex``, ``min_length``, ``max_length``,
    ``unique``) expand to rules of severity ``error``; write a rule for another severity.
    """

    model_config = ConfigDict(extra="forbid")

    type: ColumnType = "string"
    nullable: bool = True
    required: bool = Field(True, description="A missing column is a schema violation.")
    format: str | None = Field(None, description="strptime format for date / datetime parsing.")
    min: float | None = None
    max: float | None = None
    allowed: list[Any] | None = None
    regex: str | None = None
    min_length: int | None = Field(None, ge=0)
    max_length: int | None = Field(None, ge=0)
    unique: bool = False

    @model_validator(mode="before")
    @classmethod
    def _type_shorthand(cls, value: Any) -> Any:
        return {"type": value} if isinstance(value, str) else value


class ContractConfig(BaseModel):
    """Columns and rules for one table.

    ``schema_policy``: ``evolve`` adds new columns, ``freeze`` rejects them: with
    ``on_drift: quarantine`` the offending rows are quarantined, with ``abort`` the batch is.
    """

    model_config = ConfigDict(extra="forbid")

    columns: dict[str, ColumnSpec] = Field(default_factory=dict)
    primary_key: list[str] = Field(default_factory=list)
    rules: list[Rule] = Field(default_factory=list)
    schema_policy: Literal["evolve", "freeze"] = "evolve"
    on_drift: Literal["quarantine", "abort"] = "quarantine"
