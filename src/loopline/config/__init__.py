"""Configuration: pydantic models of ``loopline.yaml`` and the loader."""

from loopline.config.cleanse import STRING_STEPS, CleanseStep, CleanseStepSpec
from loopline.config.contracts import ColumnSpec, ContractConfig, Rule, Severity
from loopline.config.destinations import DestinationConfig
from loopline.config.loading import CONFIG_FILENAME, config_from_dict, load_config
from loopline.config.project import IngestJobConfig, LooplineConfig
from loopline.config.sources import (
    FileSourceConfig,
    HttpSourceConfig,
    SourceConfig,
    SqlSourceConfig,
)
from loopline.config.stores import AlertsConfig, StoresConfig
from loopline.config.training import (
    CandidateConfig,
    FeatureOptions,
    FeatureRoles,
    SearchConfig,
    TrackingConfig,
    TrainJobConfig,
    ValidationConfig,
)

__all__ = [
    "CONFIG_FILENAME",
    "STRING_STEPS",
    "AlertsConfig",
    "CandidateConfig",
    "CleanseStep",
    "CleanseStepSpec",
    "ColumnSpec",
    "ContractConfig",
    "DestinationConfig",
    "FeatureOptions",
    "FeatureRoles",
    "FileSourceConfig",
    "HttpSourceConfig",
    "IngestJobConfig",
    "LooplineConfig",
    "Rule",
    "SearchConfig",
    "Severity",
    "SourceConfig",
    "SqlSourceConfig",
    "StoresConfig",
    "TrackingConfig",
    "TrainJobConfig",
    "ValidationConfig",
    "config_from_dict",
    "load_config",
]
