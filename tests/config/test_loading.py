from pathlib import Path

import pytest

from loopline.config import load_config
from loopline.errors import ConfigError

VALID = """
project: shop
sources:
  orders:
    type: file
    path: data/*.csv
contracts:
  orders:
    columns:
      id: {type: int64, nullable: false}
      amount: float64
    rules:
      - {check: range, column: amount, min: 0}
ingest:
  orders:
    source: orders
    contract: orders
    destination: {table: orders}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "loopline.yaml"
    path.write_text(text)
    return path


def test_valid_config_loads_and_resolves_names(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, VALID), env={})
    job = cfg.ingest["orders"]
    assert cfg.job_source(job).type == "file"
    contract = cfg.job_contract(job)
    assert contract is not None
    assert contract.columns["id"].nullable is False
    assert cfg.project_dir == tmp_path.resolve()


def test_error_names_the_yaml_path_of_the_bad_field(tmp_path: Path) -> None:
    bad = VALID.replace(
        "{check: range, column: amount, min: 0}", "{check: range, column: amount, min: zero}"
    )
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, bad), env={})
    assert "contracts.orders.rules[0].range.min" in str(info.value)
    assert "'zero'" in str(info.value)


def test_unknown_source_reference_is_reported(tmp_path: Path) -> None:
    bad = VALID.replace("source: orders", "source: order")
    with pytest.raises(ConfigError, match="names 'order', which is not in 'sources'"):
        load_config(write(tmp_path, bad), env={})


def test_env_overrides_store_urls(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, VALID), env={"LOOPLINE_WAREHOUSE_URL": "postgresql://pg/db"})
    assert cfg.stores.warehouse_url == "postgresql://pg/db"


def test_secrets_come_from_the_environment(tmp_path: Path) -> None:
    text = (
        VALID
        + """
  api:
    source:
      type: http
      url: http://localhost/items
      auth: {type: bearer, token: "${API_TOKEN}"}
    destination: {table: items}
"""
    )
    cfg = load_config(write(tmp_path, text), env={"API_TOKEN": "s3cret"})
    source = cfg.job_source(cfg.ingest["api"])
    assert source.type == "http"
    assert source.auth is not None
    assert source.auth.token.get_secret_value() == "s3cret"  # type: ignore[union-attr]
    assert "s3cret" not in repr(source)


def test_missing_env_variable_names_the_variable_and_path(tmp_path: Path) -> None:
    text = VALID.replace("path: data/*.csv", "path: ${DATA_DIR}/*.csv")
    with pytest.raises(ConfigError, match="DATA_DIR is not set") as info:
        load_config(write(tmp_path, text), env={})
    assert "sources.orders.path" in str(info.value)


def test_missing_file_says_how_to_create_a_project(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="loopline init"):
        load_config(tmp_path, env={})


def test_training_jobs_and_tracking_load_with_env_override(tmp_path: Path) -> None:
    text = (
        VALID
        + """
train:
  churn:
    table: customers
    target: churned
    drop: [customer_id]
    candidates: [{name: logistic}, {name: lightgbm, params: {num_leaves: 15}}]
    validation: {cv: stratified, folds: 5, threshold: {strategy: target_recall, value: 0.8}}
"""
    )
    cfg = load_config(write(tmp_path, text), env={"LOOPLINE_TRACKING_URI": "http://mlflow:5000"})
    job = cfg.train["churn"]
    assert [c.name for c in job.candidates] == ["logistic", "lightgbm"]
    assert job.validation.threshold.value == 0.8
    assert cfg.tracking.uri == "http://mlflow:5000"


def test_a_training_job_needs_exactly_one_data_source(tmp_path: Path) -> None:
    text = VALID + "\ntrain:\n  bad: {table: a, file: b.csv, target: y}\n"
    with pytest.raises(ConfigError, match="exactly one of 'table', 'query', 'file'"):
        load_config(write(tmp_path, text), env={})
