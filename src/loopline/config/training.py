"""Training job specifications: data, target, features, candidates, search, validation.

>>> job = TrainJobConfig.model_validate({"table": "churn", "target": "churned"})
>>> job.validation.cv, job.search.method, job.seed
('auto', 'optuna', 42)
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Task = Literal["binary", "multiclass", "regression"]
CandidateName = Literal[
    "logistic",
    "linear",
    "ridge",
    "lasso",
    "elastic_net",
    "decision_tree",
    "random_forest",
    "hist_gradient_boosting",
    "lightgbm",
    "xgboost",
]


DatetimePart = Literal["year", "month", "day", "dayofweek", "hour"]
DEFAULT_PARTS: tuple[DatetimePart, ...] = ("year", "month", "dayofweek")


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FeatureRoles(_Spec):
    """Override the inferred role of columns; every other column is inferred."""

    numeric: list[str] = Field(default_factory=list)
    categorical: list[str] = Field(default_factory=list)
    datetime: list[str] = Field(default_factory=list)
    text: list[str] = Field(default_factory=list)


class FeatureOptions(_Spec):
    """The preprocessing pipeline (fitted on training data only, shipped with the model)."""

    impute_numeric: Literal["median", "mean", "constant"] = "median"
    impute_categorical: Literal["most_frequent", "constant"] = "constant"
    encoding: Literal["onehot", "ordinal", "target"] = "onehot"
    min_frequency: float = Field(
        0.01, gt=0, description="Categories rarer than this share are grouped as infrequent."
    )
    scaling: Literal["standard", "robust", "minmax", "none"] = "standard"
    datetime_parts: list[DatetimePart] = Field(default_factory=lambda: list(DEFAULT_PARTS))
    pca_variance: float | None = Field(
        None, gt=0, le=1, description="Keep PCA components explaining this share of variance."
    )


class CandidateConfig(_Spec):
    """A model to try: fixed ``params`` and a ``search_space`` (param → distribution).

    Distributions: ``{int: [low, high]}``, ``{float: [low, high], log: true}``,
    ``{choice: [a, b]}``; a plain list is a grid.
    """

    name: CandidateName
    params: dict[str, Any] = Field(default_factory=dict)
    search_space: dict[str, Any] | None = Field(
        None, description="None: the candidate's default space."
    )


class SearchConfig(_Spec):
    method: Literal["none", "grid", "random", "optuna"] = "optuna"
    n_trials: int = Field(30, ge=1)
    timeout_s: float | None = Field(None, gt=0)
    inner_folds: int = Field(3, ge=2, description="CV folds inside the search.")
    pruning: bool = True
    ray_address: str | None = Field(
        None,
        description="Run trials as Ray tasks (extra 'ray'): 'ray://host:10001' (Ray Client), "
        "'auto' (the cluster this machine belongs to) or 'local' (start a local cluster); "
        "None: no Ray.",
    )


class ThresholdConfig(_Spec):
    """How the shipped decision threshold is chosen (binary tasks)."""

    strategy: Literal["max_f1", "target_recall", "target_precision", "cost", "fixed"] = "max_f1"
    value: float | None = Field(None, ge=0, le=1, description="Target recall / precision / fixed.")
    cost_fp: float = 1.0
    cost_fn: float = 1.0

    @model_validator(mode="after")
    def _value_needed(self) -> ThresholdConfig:
        if self.strategy in ("target_recall", "target_precision", "fixed") and self.value is None:
            raise ValueError(f"threshold strategy {self.strategy!r} needs 'value'")
        return self


class ImbalanceConfig(_Spec):
    class_weight: bool = False
    resample: Literal["none", "smote", "random_over", "random_under"] = "none"


class ValidationConfig(_Spec):
    """Holdout and cross-validation. ``auto``: stratified for classification, k-fold else."""

    holdout: float = Field(0.2, gt=0, lt=1)
    split: Literal["auto", "random", "stratified", "group", "time"] = "auto"
    cv: Literal["auto", "kfold", "stratified", "repeated", "group", "timeseries"] = "auto"
    folds: int = Field(5, ge=2)
    repeats: int = Field(1, ge=1)
    group_column: str | None = None
    time_column: str | None = None
    threshold: ThresholdConfig = Field(default_factory=ThresholdConfig)
    imbalance: ImbalanceConfig = Field(default_factory=ImbalanceConfig)
    calibration: Literal["none", "isotonic", "sigmoid"] = "none"


class TrainJobConfig(_Spec):
    """One training job. Data comes from a warehouse ``table``, a ``query`` or a ``file``."""

    table: str | None = None
    query: str | None = None
    file: str | None = None
    target: str
    task: Task | None = Field(None, description="Inferred from the target when not given.")
    target_transform: Literal["none", "log"] = Field(
        "none",
        description="Regression only. 'log': the model is trained on log(target) and predicts "
        "on the original scale (every target value must be > 0); metrics stay on that scale.",
    )
    drop: list[str] = Field(default_factory=list, description="Ids, leakage columns.")
    roles: FeatureRoles = Field(default_factory=FeatureRoles)
    features: FeatureOptions = Field(default_factory=FeatureOptions)
    candidates: list[CandidateConfig] = Field(
        default_factory=lambda: [CandidateConfig(name="logistic"), CandidateConfig(name="lightgbm")]
    )
    search: SearchConfig = Field(default_factory=SearchConfig)
    validation: ValidationConfig = Field(default_factory=ValidationConfig)
    seed: int = 42
    register_as: str | None = Field(None, description="Registered model name.")

    @model_validator(mode="after")
    def _one_source(self) -> TrainJobConfig:
        given = [k for k in ("table", "query", "file") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError(
                f"give exactly one of 'table', 'query', 'file' (got {given or 'none'})"
            )
        return self


class TrackingConfig(_Spec):
    """MLflow: a SQLite store and local artifacts by default, or a tracking server URL."""

    uri: str = Field("sqlite:///.loopline/mlflow.db", description="env LOOPLINE_TRACKING_URI")
    artifacts: str = Field(".loopline/mlartifacts", description="artifact root for local stores")
    experiment: str | None = Field(None, description="Defaults to the project name.")
