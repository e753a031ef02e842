"""Which configuration a command uses: ``--config``, ./loopline.yaml, or the defaults."""

from __future__ import annotations

from pathlib import Path

from loopline.config import CONFIG_FILENAME, LooplineConfig, config_from_dict, load_config


def project_config(config_path: Path | None) -> LooplineConfig:
    """``--config`` if given, else ./loopline.yaml if present, else defaults in this folder."""
    if config_path is not None or Path(CONFIG_FILENAME).is_file():
        return load_config(config_path)
    return config_from_dict({}, project_dir=Path.cwd())
