"""The ``loopline`` command: one typer app, one module per command group."""

from __future__ import annotations

from typing import Annotated

import typer

from loopline.cli.ab import ab
from loopline.cli.console import setup_logging
from loopline.cli.demo import demo
from loopline.cli.evaluate import evaluate
from loopline.cli.ingest import ingest
from loopline.cli.init import init
from loopline.cli.models import models
from loopline.cli.recommender import recommender
from loopline.cli.runs import runs
from loopline.cli.serve import api_key, serve
from loopline.cli.stream import stream
from loopline.cli.train import train
from loopline.cli.ui import ui

app = typer.Typer(
    name="loopline",
    help="loopline: the ML loop from raw data to a monitored model.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _root(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress.")] = False,
) -> None:
    """loopline: the ML loop from raw data to a monitored model."""
    setup_logging(verbose)


@app.command()
def version() -> None:
    """Print loopline's version."""
    from loopline import __version__

    typer.echo(__version__)


app.command()(init)
app.command()(ingest)
app.command()(runs)
app.command()(demo)
app.command()(train)
app.command()(evaluate)
app.add_typer(models)
app.add_typer(ui)
app.add_typer(stream)
app.add_typer(recommender)
app.add_typer(ab)
app.command()(serve)
app.command("api-key")(api_key)


def main() -> None:
    app()
