"""``loopline ui mlflow``: the MLflow UI command on the project's own store."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from loopline.cli.app import app

pytest.importorskip("mlflow")

runner = CliRunner()


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LOOPLINE_TRACKING_URI", raising=False)
    return tmp_path


def test_print_command_points_mlflow_at_the_resolved_store_and_artifacts(project: Path) -> None:
    (project / "loopline.yaml").write_text(
        "project: shop\ntracking:\n  uri: sqlite:///runs/mlflow.db\n  artifacts: runs/artifacts\n"
    )
    result = runner.invoke(app, ["ui", "mlflow", "--print-command", "--port", "5123"])
    assert result.exit_code == 0, result.output
    command = shlex.split(result.stdout)
    assert command[0].endswith("mlflow")
    options = dict(zip(command[2::2], command[3::2], strict=True))
    assert command[1] == "ui"
    assert options["--backend-store-uri"] == f"sqlite:///{(project / 'runs/mlflow.db').resolve()}"
    assert options["--default-artifact-root"] == (project / "runs/artifacts").resolve().as_uri()
    assert (options["--port"], options["--host"]) == ("5123", "127.0.0.1")


def test_every_option_of_the_command_exists_in_the_installed_mlflow(project: Path) -> None:
    result = runner.invoke(app, ["ui", "mlflow", "--print-command"])
    assert result.exit_code == 0, result.output
    command = shlex.split(result.stdout)
    help_text = subprocess.run(
        [*command[:2], "--help"], capture_output=True, text=True, check=True, timeout=120
    ).stdout
    for option in command[2::2]:
        assert option in help_text, option


def test_a_tracking_server_is_opened_in_the_browser_not_started(project: Path) -> None:
    (project / "loopline.yaml").write_text("tracking:\n  uri: https://mlflow.example.com\n")
    result = runner.invoke(app, ["ui", "mlflow", "--print-command"])
    assert result.exit_code == 0, result.output
    assert "open https://mlflow.example.com" in result.stdout
    assert "--backend-store-uri" not in result.stdout


def test_an_unsupported_tracking_uri_is_one_red_line(project: Path) -> None:
    (project / "loopline.yaml").write_text("tracking:\n  uri: ftp://host/mlflow\n")
    result = runner.invoke(app, ["ui", "mlflow"])
    assert result.exit_code == 1
    assert "unsupported MLflow tracking URI" in result.stderr
    assert "Traceback" not in result.output
