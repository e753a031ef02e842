"""loopline: one package that closes the machine-learning loop.

The Python API mirrors ``loopline.yaml`` and the CLI::

    from loopline import IngestPipeline, load_config

    config = load_config("shop")                      # the folder holding loopline.yaml
    run = IngestPipeline(config, "customers").run()
    print(run.rows_written, run.rows_quarantined, run.rule_failures)

    from loopline import TrainingJob                  # needs the 'train' extra
    result = TrainingJob(config, "churn").run()

    import threading
    from loopline import StreamProcessor              # needs the 'stream' extra
    pipeline = config.streams["sensors"]
    status = StreamProcessor("sensors", pipeline, config=config).run(threading.Event())
"""

from typing import TYPE_CHECKING as _TYPE_CHECKING
from typing import Any as _Any

from loopline.config import (
    ContractConfig,
    DestinationConfig,
    FileSourceConfig,
    HttpSourceConfig,
    IngestJobConfig,
    LooplineConfig,
    SqlSourceConfig,
    config_from_dict,
    load_config,
)
from loopline.errors import LooplineError
from loopline.ingest.contract import ContractEngine
from loopline.ingest.ledger import RunRecord
from loopline.ingest.pipeline import IngestPipeline

if _TYPE_CHECKING:
    from loopline.registry import ModelRegistry
    from loopline.stream.gateway import Gateway
    from loopline.stream.processor import StreamProcessor
    from loopline.stream.simulator import Simulator, SimulatorConfig
    from loopline.stream.transports.factory import open_transport
    from loopline.train.job import TrainingJob, TrainResult

# Training needs the 'train' extra (scikit-learn, LightGBM, MLflow ...), streaming the 'stream'
# extra (paho-mqtt, nats-py, River ...): imported on first use, so `import loopline` stays
# light for ingestion. name -> (module, extra)
_LAZY = {
    "Gateway": ("loopline.stream.gateway", "stream"),
    "ModelRegistry": ("loopline.registry", "train"),
    "Simulator": ("loopline.stream.simulator", "stream"),
    "SimulatorConfig": ("loopline.stream.simulator", "stream"),
    "StreamProcessor": ("loopline.stream.processor", "stream"),
    "TrainResult": ("loopline.train.job", "train"),
    "TrainingJob": ("loopline.train.job", "train"),
    "open_transport": ("loopline.stream.transports.factory", "stream"),
}


def __getattr__(name: str) -> _Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'loopline' has no attribute {name!r}")
    import importlib

    from loopline.errors import MissingDependencyError

    module_name, extra = _LAZY[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        package = exc.name or f"a library of the {extra!r} extra"
        raise MissingDependencyError(package, extra) from exc
    return getattr(module, name)


__all__ = [
    "ContractConfig",
    "ContractEngine",
    "DestinationConfig",
    "FileSourceConfig",
    "Gateway",
    "HttpSourceConfig",
    "IngestJobConfig",
    "IngestPipeline",
    "LooplineConfig",
    "LooplineError",
    "ModelRegistry",
    "RunRecord",
    "Simulator",
    "SimulatorConfig",
    "SqlSourceConfig",
    "StreamProcessor",
    "TrainResult",
    "TrainingJob",
    "__version__",
    "config_from_dict",
    "load_config",
    "open_transport",
]
__version__ = "0.1.0"
