"""loopline: one package that closes the machine-learning loop.

The Python API mirrors ``loopline.yaml`` and the CLI::

    from loopline import IngestPipeline, load_config

    config = load_config("shop")                      # the folder holding loopline.yaml
    run = IngestPipeline(config, "customers").run()
    print(run.rows_written, run.rows_quarantined, run.rule_failures)
"""

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
    "RunRecord",
    "SqlSourceConfig",
    "__version__",
    "config_from_dict",
    "load_config",
]
__version__ = "0.1.0"
