"""loopline: one package that closes the machine-learning loop.

The Python API mirrors ``loopline.yaml`` and the CLI::

    from loopline import IngestPipeline, load_config

    config = load_config("shop")                      # the folder holding loopline.yaml
    run = IngestPipeline(config, "customers").run()
    print(run.rows_written, run.rows_quarantined, run.rule_failures)

    from loopline import TrainingJob                  # needs the 'train' extra
    result = TrainingJob(config, "churn").run()
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
    from loopline.train.job import TrainingJob, TrainResult

# Training needs the 'train' extra (scikit-learn, LightGBM, MLflow ...): imported on first use,
# so `import loopline` stays light for ingestion.
_LAZY = {
    "ModelRegistry": "loopline.registry",
    "TrainResult": "loopline.train.job",
    "TrainingJob": "loopline.train.job",
}


def __getattr__(name: str) -> _Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'loopline' has no attribute {name!r}")
    import importlib

    from loopline.errors import MissingDependencyError

    try:
        module = importlib.import_module(_LAZY[name])
    except ImportError as exc:
        raise MissingDependencyError(exc.name or "a training library", "train") from exc
    return getattr(module, name)


__all__ = [
    "ContractConfig",
    "ContractEngine",
    "DestinationConfig",
    "FileSourceConfig",
    "HttpSourceConfig",
    "IngestJobConfig",
    "IngestPipeline",
    "LooplineConfig",
    "LooplineError",
    "ModelRegistry",
    "RunRecord",
    "SqlSourceConfig",
    "TrainResult",
    "TrainingJob",
    "__version__",
    "config_from_dict",
    "load_config",
]
__version__ = "0.1.0"
