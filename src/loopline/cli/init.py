"""``loopline init DIR``: scaffold a working project."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from loopline.cli.console import console, fail
from loopline.errors import LooplineError
from loopline.scaffold import scaffold_project


def init(folder: Annotated[Path, typer.Argument(help="Project folder to create.")]) -> None:
    """Create loopline.yaml, a sample contract and sample data in FOLDER."""
    try:
        written = scaffold_project(folder)
    except LooplineError as exc:
        fail(exc)
    for path in written:
        console.print(f"wrote {path}")
    console.print(f"next: cd {folder} && loopline ingest --all")
