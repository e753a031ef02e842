"""``loopline ui mlflow``: the MLflow UI on the project's tracking store."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Annotated
from urllib.parse import urlparse

import typer

from loopline.cli.console import console, fail
from loopline.cli.models import ConfigOption
from loopline.cli.project import project_config
from loopline.errors import LooplineError

ui = typer.Typer(name="ui", help="Web interfaces on the project's stores.", no_args_is_help=True)


def _mlflow_executable() -> list[str]:
    """The ``mlflow`` of this interpreter's environment (a venv need not be on PATH)."""
    beside = Path(sys.executable).parent / "mlflow"
    if beside.is_file():
        return [str(beside)]
    found = shutil.which("mlflow")
    return [found] if found else [sys.executable, "-m", "mlflow"]


@ui.command()
def mlflow(
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to serve on.")] = 5000,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    print_command: Annotated[
        bool, typer.Option("--print-command", help="Print the command instead of running it.")
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Run `mlflow ui` on the project's tracking store and artifacts (Ctrl-C stops it)."""
    from loopline.store.tracking import resolve_artifact_root, resolve_tracking_uri

    try:
        cfg = project_config(config)
        uri = resolve_tracking_uri(cfg.tracking.uri, cfg.project_dir)
        if urlparse(uri).scheme in ("http", "https"):
            console.print(
                f"the tracking store is an MLflow server: open [bold]{uri}[/] in a browser"
            )
            return
        artifacts = resolve_artifact_root(cfg.tracking.artifacts, cfg.project_dir)
    except LooplineError as exc:
        fail(exc)
    command = [
        *_mlflow_executable(),
        "ui",
        "--backend-store-uri",
        uri,
        "--default-artifact-root",
        artifacts,
        "--host",
        host,
        "--port",
        str(port),
        "--workers",  # one user on one machine: MLflow's default of 4 only slows start-up
        "1",
    ]
    if print_command:
        typer.echo(shlex.join(command))
        return
    console.print(f"MLflow UI on http://{host}:{port} (Ctrl-C stops it)")
    try:
        completed = subprocess.run(command, check=False)
    except FileNotFoundError as exc:
        fail(f"cannot run mlflow: {exc} (hint: pip install 'loopline[train]')")
    except KeyboardInterrupt:
        return
    if completed.returncode not in (0, -2, 130):
        raise typer.Exit(completed.returncode)
