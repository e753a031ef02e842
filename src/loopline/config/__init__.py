"""Configuration: pydantic models of ``loopline.yaml`` and the loader."""

from loopline.config.cleanse import STRING_STEPS, CleanseStep, CleanseStepSpec
from loopline.config.contracts import ColumnSpec, ContractConfig, Rule, Severity
from loopline.config.destinations import DestinationConfig
from loopline.config.loading import CONFIG_FILENAME, config_from_dict, load_config
from loopline.config.project import IngestJobConfig, LooplineConfig
from loopline.config.serving import (
    ExperimentConfig,
    RecommenderJobConfig,
    RecommenderServeConfig,
    ServeConfig,
    ServedModelConfig,
)
from loopline.config.sources import (
    FileSourceConfig,
    HttpSourceConfig,
    SourceConfig,
    SqlSourceConfig,
)
from loopline.config.stores import AlertsConfig, StoresConfig
from loopline.config.streams import (
    DetectorConfig,
    GatewayConfig,
    MemoryTransportConfig,
    MqttTransportConfig,
    NatsTransportConfig,
    StreamPipelineConfig,
    StreamSinkConfig,
    TransportConfig,
    WatermarkConfig,
    WindowConfig,
)
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
    "DetectorConfig",
    "ExperimentConfig",
    "FeatureOptions",
    "FeatureRoles",
    "FileSourceConfig",
    "GatewayConfig",
    "HttpSourceConfig",
    "IngestJobConfig",
    "LooplineConfig",
    "MemoryTransportConfig",
    "MqttTransportConfig",
    "NatsTransportConfig",
    "RecommenderJobConfig",
    "RecommenderServeConfig",
    "Rule",
    "SearchConfig",
    "ServeConfig",
    "ServedModelConfig",
    "Severity",
    "SourceConfig",
    "SqlSourceConfig",
    "StoresConfig",
    "StreamPipelineConfig",
    "StreamSinkConfig",
    "TrackingConfig",
    "TrainJobConfig",
    "TransportConfig",
    "ValidationConfig",
    "WatermarkConfig",
    "WindowConfig",
    "config_from_dict",
    "load_config",
]
