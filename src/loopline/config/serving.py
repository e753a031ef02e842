"""Online serving in ``loopline.yaml``: served models, the recommender, auth, limits, A/B tests.

``serve:`` configures ``loopline serve`` (one FastAPI app run by uvicorn);
``recommenders:`` declares offline recommender training jobs (``loopline recommender train``)
whose registered versions the server's real-time recommender loads.

>>> s = ServeConfig.model_validate({
...     "models": [{"name": "churn"}],
...     "auth": {"keys": [{"name": "ci", "sha256": "ab" * 32, "rate_limit": 50}]},
...     "experiments": {"churn_v2": {"model": "churn", "variants": [
...         {"name": "a", "alias": "champion"},
...         {"name": "b", "alias": "challenger", "weight": 1}]}}})
>>> s.models[0].alias, s.auth.keys[0].rate_limit, s.experiments["churn_v2"].variants[1].weight
('champion', 50.0, 1.0)
>>> s.poll_interval, s.limits.max_body_bytes, s.cors.allow_origins
(5.0, 1048576, [])
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from loopline.config.streams import Duration

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
Strategy = Literal["blend", "als", "covisit", "popular"]
"""How the recommender ranks: ``blend`` of the offline model and the live session signal
(the default), the offline ALS model alone, item-item co-visitation alone, or popularity."""


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ServedModelConfig(_Spec):
    """A registered model the server loads by ``alias`` and follows when the alias moves."""

    name: str = Field(min_length=1)
    alias: str = "champion"
    max_batch: int = Field(
        256, ge=1, description="Most rows scored in one call when requests are batched together."
    )


class ApiKeyConfig(_Spec):
    """One API key: stored as the SHA-256 hex digest of the key (`loopline api-key NAME`)."""

    name: str = Field(min_length=1)
    sha256: str
    rate_limit: float | None = Field(None, gt=0, description="Requests per second; none: no limit.")
    burst: int | None = Field(None, ge=1, description="Bucket size; default 2x rate_limit, >= 1.")

    @field_validator("sha256")
    @classmethod
    def _hex_digest(cls, value: str) -> str:
        value = value.strip().lower()
        if not _HEX64.match(value):
            raise ValueError("expected the 64 hex digits of the key's SHA-256 digest")
        return value


class JwtConfig(_Spec):
    """Bearer tokens signed with a shared secret (HS256 by default)."""

    secret: SecretStr
    algorithms: list[str] = Field(default_factory=lambda: ["HS256"])
    audience: str | None = None
    issuer: str | None = None
    rate_limit: float | None = Field(None, gt=0, description="Per token subject, requests/s.")


class AuthConfig(_Spec):
    """Who may call ``/v1/*``. With no keys and no JWT the API is open (local use)."""

    keys: list[ApiKeyConfig] = Field(default_factory=list)
    jwt: JwtConfig | None = None
    public_paths: list[str] = Field(
        default_factory=lambda: ["/health/live", "/health/ready", "/metrics"],
        description="Paths served without credentials.",
    )

    @property
    def enabled(self) -> bool:
        return bool(self.keys) or self.jwt is not None


class LimitsConfig(_Spec):
    """Request limits: a bigger body gets 413, more rows than ``max_rows`` get 422."""

    max_body_bytes: int = Field(1_048_576, ge=1024)
    max_rows: int = Field(1000, ge=1)
    timeout: Duration = Field(10.0, gt=0, description="A prediction slower than this gets 503.")


class CorsConfig(_Spec):
    """CORS is closed unless origins are listed here."""

    allow_origins: list[str] = Field(default_factory=list)
    allow_methods: list[str] = Field(default_factory=lambda: ["GET", "POST"])
    allow_headers: list[str] = Field(
        default_factory=lambda: ["Authorization", "Content-Type", "X-API-Key"]
    )


class RequestLogConfig(_Spec):
    """What the server records for monitoring (metadata database, tables ``serve_*``)."""

    enabled: bool = True
    sample_rate: float = Field(1.0, ge=0, le=1, description="Share of requests logged.")
    pii_fields: list[str] = Field(
        default_factory=list, description="Input fields masked in logs and the request log."
    )
    queue_size: int = Field(10_000, ge=1, description="Rows waiting to be written, at most.")
    flush_interval: Duration = Field(
        0.2,
        gt=0,
        description="Seconds between writes. Short: each write's CPU burst is small, so it "
        "delays the requests in flight less (p99).",
    )


class VariantConfig(_Spec):
    """One arm of an experiment: a model version / alias, or a recommendation strategy."""

    name: str = Field(min_length=1)
    weight: float = Field(1.0, gt=0)
    version: str | None = None
    alias: str | None = None
    strategy: Strategy | None = None

    @model_validator(mode="after")
    def _one_target(self) -> VariantConfig:
        given = [x for x in (self.version, self.alias, self.strategy) if x is not None]
        if len(given) != 1:
            raise ValueError(
                f"variant {self.name!r} needs exactly one of 'version', 'alias' or 'strategy'"
            )
        return self


class ExperimentConfig(_Spec):
    """An A/B test on a served model (variants are versions or aliases) or on the
    recommender (variants are strategies). Users are assigned by a stable hash of their id."""

    model: str | None = Field(None, description="A served model's name; none: the recommender.")
    variants: list[VariantConfig] = Field(min_length=1)
    shadow: str | None = Field(
        None, description="Alias or version that scores the same requests without answering."
    )
    enabled: bool = Field(
        True,
        description="False: the experiment is off (kill switch): no assignment, everyone gets "
        "the served alias / the default strategy.",
    )
    outcome: str = Field(
        "label",
        description="What counts as success: 'label' (feedback with the positive class) "
        "or an event type of the recommender ('click', 'purchase' ...).",
    )
    salt: str | None = Field(None, description="Hash salt; default the experiment's name.")

    @model_validator(mode="after")
    def _variants_fit(self) -> ExperimentConfig:
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ValueError(f"variant names must be unique, got {names}")
        for v in self.variants:
            if self.model is None and v.strategy is None:
                raise ValueError(f"recommender variant {v.name!r} needs a 'strategy'")
            if self.model is not None and v.strategy is not None:
                raise ValueError(f"model variant {v.name!r} takes a 'version' or 'alias'")
        return self


class RecommenderServeConfig(_Spec):
    """The real-time recommender: a registered recommender model plus live state."""

    model: str = Field(min_length=1, description="Registered recommender model name.")
    alias: str = "champion"
    state_url: str | None = Field(
        None,
        description="redis://host:port/db for state shared by replicas; none: in-process.",
    )
    history_size: int = Field(50, ge=1, description="Recent items kept per user.")
    session_weight: float = Field(
        0.5, ge=0, le=1, description="Blend: share of the live session signal in the score."
    )
    trending_half_life: Duration = Field(3600.0, gt=0)
    default_k: int = Field(10, ge=1)
    max_k: int = Field(100, ge=1)
    event_weights: dict[str, float] = Field(
        default_factory=lambda: {"view": 1.0, "click": 2.0, "rating": 3.0, "purchase": 5.0}
    )

    @field_validator("state_url")
    @classmethod
    def _empty_is_in_process(cls, value: str | None) -> str | None:
        return value.strip() or None if value is not None else None


class ServeConfig(_Spec):
    """``loopline serve``: where it listens, what it serves, who may call it."""

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    workers: int = Field(1, ge=1)
    models: list[ServedModelConfig] = Field(default_factory=list)
    recommender: RecommenderServeConfig | None = None
    poll_interval: Duration = Field(
        5.0, gt=0, description="How often the server checks whether an alias moved."
    )
    auth: AuthConfig = Field(default_factory=AuthConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    cors: CorsConfig = Field(default_factory=CorsConfig)
    request_log: RequestLogConfig = Field(default_factory=RequestLogConfig)
    experiments: dict[str, ExperimentConfig] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _references_exist(self) -> ServeConfig:
        served = {m.name for m in self.models}
        if len(served) != len(self.models):
            raise ValueError("each model may be served once")
        for name, exp in self.experiments.items():
            if exp.model is not None and exp.model not in served:
                raise ValueError(
                    f"experiment {name!r} names model {exp.model!r}, which is not served "
                    f"(served: {sorted(served) or 'none'})"
                )
            if exp.model is None and self.recommender is None:
                raise ValueError(f"experiment {name!r} is on the recommender, but none is served")
        return self


class RecommenderJobConfig(_Spec):
    """Offline training of an implicit-feedback recommender from a warehouse table."""

    table: str = Field(min_length=1, description="Warehouse table of interactions.")
    user: str = "user_id"
    item: str = "item_id"
    time: str = "timestamp"
    rating: str | None = Field(None, description="Explicit rating column, if any.")
    min_rating: float | None = Field(
        None, description="Ratings below this are not positive interactions."
    )
    test_fraction: float = Field(
        0.2, gt=0, lt=1, description="Latest share of interactions (by time) held out."
    )
    split: Literal["user", "global"] = Field(
        "user",
        description="'user': each user's latest interactions are held out; 'global': everyone's "
        "after one cutoff time (few users straddle it in rating logs such as MovieLens).",
    )
    window: int = Field(5, ge=1, description="Co-visitation: the next N items of a history.")
    factors: int = Field(64, ge=1)
    iterations: int = Field(15, ge=1)
    regularization: float = Field(0.05, ge=0)
    alpha: float = Field(2.0, gt=0, description="Confidence scale of implicit feedback.")
    neighbours: int = Field(50, ge=1, description="Co-visitation neighbours kept per item.")
    k: int = Field(10, ge=1, description="Cut-off of the ranking metrics.")
    seed: int = 42
    register_as: str | None = None
