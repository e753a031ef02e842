"""``loopline demo``: the whole loop on embedded defaults, on sample data."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from loopline.cli.console import console, fail
from loopline.cli.ingest import rules_table, summary_table
from loopline.errors import LooplineError


def demo(
    folder: Annotated[Path, typer.Option("--dir", help="Demo workspace folder.")] = Path(
        "loopline-demo"
    ),
) -> None:
    """Create a demo workspace with dirty sources, ingest them, and write the HTML report."""
    from loopline.demo.run import run_demo

    try:
        with console.status("ingesting the demo sources..."):
            result = run_demo(folder)
    except LooplineError as exc:
        fail(exc)
    console.print(summary_table(result.runs))
    by_rule = rules_table(result.runs)
    if by_rule is not None:
        console.print(by_rule)
    console.print(f"\nworkspace: {result.folder.resolve()}")
    console.print(f"report:    [bold]{result.report.resolve()}[/]")
    if any(r.status != "succeeded" for r in result.runs):
        raise typer.Exit(1)
