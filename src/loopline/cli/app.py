"""The ``loopline`` command: one typer app, one module per command group."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="loopline",
    help="loopline: the ML loop from raw data to a monitored model.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """loopline: the ML loop from raw data to a monitored model."""


@app.command()
def version() -> None:
    """Print loopline's version."""
    from loopline import __version__

    typer.echo(__version__)


def main() -> None:
    app()
