"""The root of ``loopline.yaml``: stores, sources, contracts, jobs, streams and serving."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from loopline.config.cleanse import CleanseStepSpec
from loopline.config.contracts import ContractConfig
from loopline.config.destinations import DestinationConfig
from loopline.config.serving import RecommenderJobConfig, ServeConfig
from loopline.config.sources import SourceConfig
from loopline.config.stores import AlertsConfig, StoresConfig
from loopline.config.streams import GatewayConfig, StreamPipelineConfig
from loopline.config.training import TrackingConfig, TrainJobConfig


class IngestJobConfig(BaseModel):
    """One ingest job: read ``source``, cleanse, check ``contract``, write ``destination``.

    ``source`` and ``contract`` name entries of the top-level ``sources`` / ``contracts``
    sections, or are given inline.
    """

    model_config = ConfigDict(extra="forbid")

    source: str | SourceConfig
    contract: str | ContractConfig | None = None
    cleanse: list[CleanseStepSpec] = Field(default_factory=list)
    destination: DestinationConfig


class LooplineConfig(BaseModel):
    """Everything in ``loopline.yaml``. ``project_dir`` is where relative paths start."""

    model_config = ConfigDict(extra="forbid")

    project: str = "loopline"
    stores: StoresConfig = Field(default_factory=StoresConfig)
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)
    sources: dict[str, SourceConfig] = Field(default_factory=dict)
    contracts: dict[str, ContractConfig] = Field(default_factory=dict)
    ingest: dict[str, IngestJobConfig] = Field(default_factory=dict)
    train: dict[str, TrainJobConfig] = Field(default_factory=dict)
    streams: dict[str, StreamPipelineConfig] = Field(default_factory=dict)
    gateways: dict[str, GatewayConfig] = Field(default_factory=dict)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    serve: ServeConfig = Field(default_factory=ServeConfig)
    recommenders: dict[str, RecommenderJobConfig] = Field(default_factory=dict)
    project_dir: Path = Field(default_factory=Path.cwd, exclude=True)

    @model_validator(mode="after")
    def _references_exist(self) -> LooplineConfig:
        for name, job in self.ingest.items():
            if isinstance(job.source, str) and job.source not in self.sources:
                raise ValueError(
                    f"ingest.{name}.source names '{job.source}', which is not in 'sources' "
                    f"(known: {sorted(self.sources) or 'none'})"
                )
            if isinstance(job.contract, str) and job.contract not in self.contracts:
                raise ValueError(
                    f"ingest.{name}.contract names '{job.contract}', which is not in 'contracts' "
                    f"(known: {sorted(self.contracts) or 'none'})"
                )
        for name, stream in self.streams.items():
            if isinstance(stream.contract, str) and stream.contract not in self.contracts:
                raise ValueError(
                    f"streams.{name}.contract names '{stream.contract}', which is not in "
                    f"'contracts' (known: {sorted(self.contracts) or 'none'})"
                )
        return self

    def stream_contract(self, stream: StreamPipelineConfig) -> ContractConfig | None:
        """The contract of ``stream``, resolving a name against ``contracts``."""
        if isinstance(stream.contract, str):
            return self.contracts[stream.contract]
        return stream.contract

    def job_source(self, job: IngestJobConfig) -> SourceConfig:
        """The source spec of ``job``, resolving a name against ``sources``."""
        return self.sources[job.source] if isinstance(job.source, str) else job.source

    def job_contract(self, job: IngestJobConfig) -> ContractConfig | None:
        """The contract of ``job``, resolving a name against ``contracts``."""
        if isinstance(job.contract, str):
            return self.contracts[job.contract]
        return job.contract

    def resolve_path(self, path: str | Path) -> Path:
        """``path`` made absolute against the project folder."""
        p = Path(path).expanduser()
        return p if p.is_absolute() else self.project_dir / p
