"""Training job specifications: the target transform option."""

from __future__ import annotations

import pytest

from loopline.config import config_from_dict
from loopline.config.training import TrainJobConfig
from loopline.errors import ConfigError


def test_the_target_transform_defaults_to_none() -> None:
    job = TrainJobConfig.model_validate({"table": "ames", "target": "Sale_Price"})
    assert job.target_transform == "none"


def test_a_log_target_transform_loads_from_the_train_section() -> None:
    config = config_from_dict(
        {"train": {"ames": {"table": "ames", "target": "price", "target_transform": "log"}}}
    )
    assert config.train["ames"].target_transform == "log"


def test_an_unknown_target_transform_names_its_yaml_path() -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict(
            {"train": {"ames": {"table": "ames", "target": "price", "target_transform": "sqrt"}}}
        )
    assert "train.ames.target_transform" in str(info.value)
    assert "'sqrt'" in str(info.value)
