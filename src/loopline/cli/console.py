"""How the CLI talks: one rich console, errors as one red line and exit code 1."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from loopline.errors import LooplineError

console = Console(stderr=False, highlight=False)
err_console = Console(stderr=True, highlight=False)


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )


def fail(exc: LooplineError | str) -> NoReturn:
    # Escaped: an error's field list "[table=t, url=...]" would otherwise read as markup.
    err_console.print(f"[bold red]error:[/] {escape(str(exc))}", markup=True, soft_wrap=True)
    raise typer.Exit(1)


def print_json(payload: Any) -> None:
    typer.echo(json.dumps(payload, indent=2, default=str))


@contextmanager
def row_progress(label: str, enabled: bool) -> Iterator[Callable[[int], None]]:
    """A live 'rows read' counter while a job runs (off for --json and non-terminals)."""
    if not enabled or not console.is_terminal:
        yield lambda n: None
        return
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(bar_width=None),
        TextColumn("{task.completed:,} rows"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task(label, total=None)
        yield lambda n: progress.advance(task, n)
