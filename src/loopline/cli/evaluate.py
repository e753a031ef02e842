"""``loopline evaluate MODEL --on TABLE``: the metrics of a registered version on a table."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import asdict
from typing import Annotated

import typer
from rich.table import Table

from loopline.cli.console import console, fail, print_json
from loopline.cli.models import ConfigOption, JsonOption, open_registry
from loopline.errors import LooplineError


def evaluate(
    model: Annotated[str, typer.Argument(help="Registered model name.")],
    on: Annotated[str, typer.Option("--on", help="Warehouse table to score on.")],
    alias: Annotated[
        str | None, typer.Option(help="Which version, by alias (default: champion).")
    ] = None,
    version: Annotated[int | None, typer.Option(min=1, help="Which version, by number.")] = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Score a registered model version on a warehouse table (every metric of its task).

    The target column, classes and decision threshold come from the version's tags; lineage
    columns are ignored and rows with a null target are dropped and counted.
    """
    from loopline.evaluate.scoring import read_scoring_table, score_registered
    from loopline.store.warehouse import open_warehouse

    if alias is not None and version is not None:
        fail("give --alias or --version, not both")
    try:
        cfg, registry = open_registry(config)
        warehouse = open_warehouse(cfg.stores.warehouse_url, base_dir=cfg.project_dir)
        try:
            frame = read_scoring_table(warehouse, on)
        finally:
            warehouse.close()
        status = nullcontext() if as_json else console.status(f"scoring {model} on {on}...")
        with status:
            result = score_registered(registry, model, version or alias or "champion", frame)
    except LooplineError as exc:
        fail(exc)
    if as_json:
        print_json(asdict(result) | {"table": on})
        return
    aliases = f" ({', '.join(result.aliases)})" if result.aliases else ""
    table = Table(title=f"{result.model} v{result.version}{aliases} on {on}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    ordered = sorted(result.metrics, key=lambda m: m != result.primary_metric)
    for metric in ordered:
        label = f"[bold]{metric}[/]" if metric == result.primary_metric else metric
        table.add_row(label, f"{result.metrics[metric]:.4f}")
    console.print(table)
    console.print(f"task:      {result.task}, target {result.target!r}")
    rows = f"rows:      {result.rows:,} scored"
    if result.dropped_null_target:
        rows += f", {result.dropped_null_target:,} dropped (null target)"
    console.print(rows)
    if result.threshold is not None:
        console.print(f"threshold: {result.threshold:g} (positive class {result.positive_class!r})")
