"""``loopline runs``: the run ledger."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from loopline.cli.console import console, fail, print_json
from loopline.cli.project import project_config
from loopline.errors import LooplineError
from loopline.ingest.ledger import RunLedger
from loopline.store.metadata import MetadataStore


def runs(
    job: Annotated[str | None, typer.Option(help="Only runs of this job.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="How many runs, newest first.")] = 20,
    config: Annotated[Path | None, typer.Option("--config", "-c")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List ingest runs: counts, status and errors, newest first."""
    try:
        cfg = project_config(config)
        store = MetadataStore(cfg.stores.metadata_url, base_dir=cfg.project_dir)
        try:
            records = RunLedger(store).list(job=job, limit=limit)
        finally:
            store.close()
    except LooplineError as exc:
        fail(exc)
    if as_json:
        print_json([asdict(r) for r in records])
        return
    table = Table(title=f"ingest runs ({len(records)})")
    for col in ("run id", "job", "status", "started", "read", "written", "quarantined", "error"):
        table.add_column(col)
    for r in records:
        colour = {"succeeded": "green", "failed": "red"}.get(r.status, "yellow")
        table.add_row(
            r.run_id,
            r.job,
            f"[{colour}]{r.status}[/]",
            f"{r.started_at:%Y-%m-%d %H:%M:%S}",
            f"{r.rows_read:,}",
            f"{r.rows_written:,}",
            f"{r.rows_quarantined:,}",
            escape((r.error or "")[:80]),
        )
    console.print(table)
