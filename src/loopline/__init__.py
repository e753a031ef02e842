"""loopline: one package that closes the machine-learning loop."""

from loopline.config import LooplineConfig, config_from_dict, load_config
from loopline.errors import LooplineError

__all__ = ["LooplineConfig", "LooplineError", "config_from_dict", "load_config"]
__version__ = "0.1.0"
