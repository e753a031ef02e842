"""``loopline ingest``: run jobs from loopline.yaml, or load one file quickly."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
import yaml
from rich.markup import escape
from rich.table import Table

from loopline.cli.console import console, fail, print_json, row_progress
from loopline.cli.project import project_config
from loopline.config import (
    CONFIG_FILENAME,
    ContractConfig,
    DestinationConfig,
    FileSourceConfig,
    IngestJobConfig,
    LooplineConfig,
)
from loopline.config.sources import XmlOptions
from loopline.errors import ConfigError, LooplineError
from loopline.ingest.ledger import RunRecord
from loopline.ingest.pipeline import IngestPipeline


def _quick_job(
    path: str, table: str, contract: Path | None, record_path: str | None
) -> IngestJobConfig:
    spec = None
    if contract is not None:
        try:
            spec = ContractConfig.model_validate(yaml.safe_load(contract.read_text()) or {})
        except (OSError, yaml.YAMLError, ValueError) as exc:
            raise ConfigError(f"cannot use contract {contract}: {exc}") from exc
    return IngestJobConfig(
        source=FileSourceConfig(
            type="file",
            path=path,
            incremental=False,
            xml=XmlOptions(record_path=record_path) if record_path else None,
        ),
        contract=spec,
        destination=DestinationConfig(table=table),
    )


def summary_table(runs: list[RunRecord]) -> Table:
    table = Table(title="ingest summary")
    for col in ("job", "status", "read", "written", "quarantined", "deduplicated"):
        table.add_column(col, justify="left" if col in ("job", "status") else "right")
    for run in runs:
        colour = "green" if run.status == "succeeded" else "red"
        table.add_row(
            escape(run.job),
            f"[{colour}]{run.status}[/]",
            f"{run.rows_read:,}",
            f"{run.rows_written:,}",
            f"{run.rows_quarantined:,}",
            f"{run.rows_deduplicated:,}",
        )
    return table


def rules_table(runs: list[RunRecord]) -> Table | None:
    rows = [
        (run.job, rule, count, kind)
        for run in runs
        for kind, counts in (("quarantined", run.rule_failures), ("warned", run.warnings))
        for rule, count in sorted(counts.items())
    ]
    if not rows:
        return None
    table = Table(title="rows by rule")
    for col in ("job", "rule", "rows", "action"):
        table.add_column(col, justify="right" if col == "rows" else "left")
    for job, rule, count, kind in rows:
        table.add_row(escape(job), escape(rule), f"{count:,}", kind)
    return table


def ingest(
    target: Annotated[
        str | None,
        typer.Argument(help="A job name from loopline.yaml, or a file / glob with --into."),
    ] = None,
    all_jobs: Annotated[
        bool, typer.Option("--all", help="Run every job in loopline.yaml.")
    ] = False,
    into: Annotated[
        str | None, typer.Option(help="Quick path: load TARGET file(s) into this table.")
    ] = None,
    contract: Annotated[
        Path | None, typer.Option(help="Quick path: a contract YAML file.", exists=True)
    ] = None,
    record_path: Annotated[
        str | None,
        typer.Option("--record-path", help="Quick path, XML: the record elements (rows/row)."),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="loopline.yaml (default: ./loopline.yaml)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print run records as JSON.")] = False,
) -> None:
    """Ingest data: validate against contracts, cleanse, quarantine bad rows, store."""
    try:
        cfg = project_config(config)
        if into is not None:
            if target is None:
                fail("--into needs a file, glob or folder to load")
            jobs = [(into, _quick_job(target, into, contract, record_path))]
        elif all_jobs:
            jobs = [(name, job) for name, job in cfg.ingest.items()]
            if not jobs:
                fail(f"no jobs under 'ingest' in {cfg.project_dir / CONFIG_FILENAME}")
        elif target is not None:
            if target not in cfg.ingest:
                fail(
                    ConfigError(
                        f"no ingest job named '{target}'",
                        hint="give a job from loopline.yaml, or a file with --into TABLE "
                        f"(jobs: {', '.join(sorted(cfg.ingest)) or 'none'})",
                    )
                )
            jobs = [(target, cfg.ingest[target])]
        else:
            fail("say what to ingest: a job name, --all, or PATH --into TABLE")
        runs, failed = _run_jobs(cfg, jobs, as_json)
    except LooplineError as exc:
        fail(exc)
    if as_json:
        print_json([asdict(run) for run in runs])
    else:
        console.print(summary_table(runs))
        by_rule = rules_table(runs)
        if by_rule is not None:
            console.print(by_rule)
        for run in runs:
            if run.error:
                console.print(f"[red]{escape(run.job)}:[/] {escape(run.error)}")
    if failed:
        raise typer.Exit(1)


def _run_jobs(
    cfg: LooplineConfig, jobs: list[tuple[str, IngestJobConfig]], as_json: bool
) -> tuple[list[RunRecord], bool]:
    runs: list[RunRecord] = []
    failed = False
    for name, job in jobs:
        with row_progress(f"ingest {name}", enabled=not as_json) as advance:
            pipeline = IngestPipeline(cfg, name, job, on_chunk=advance)
            try:
                runs.append(pipeline.run())
            except LooplineError:
                failed = True
                if pipeline.last_run is not None:
                    runs.append(pipeline.last_run)
    return runs, failed
