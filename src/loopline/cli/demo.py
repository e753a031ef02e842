"""``loopline demo``: the whole loop on embedded defaults, on sample data."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from loopline.cli.console import console, fail
from loopline.cli.ingest import rules_table, summary_table
from loopline.cli.train import TrainProgress, cv_table, number
from loopline.errors import LooplineError

if TYPE_CHECKING:
    from loopline.demo.run import DemoResult
    from loopline.demo.streaming import StreamDemoResult


def demo(
    folder: Annotated[Path, typer.Option("--dir", help="Demo workspace folder.")] = Path(
        "loopline-demo"
    ),
) -> None:
    """Ingest dirty sample sources, train and register a churn and a housing model.

    Creates a demo workspace, ingests its five sources (ingestion report), loads the Telco
    churn and Ames housing datasets, trains both jobs of its loopline.yaml with small demo
    budgets (a training report each), and promotes both models to champion.
    """
    from loopline.demo.run import run_demo

    try:
        with TrainProgress() as progress:
            result = run_demo(folder, on_progress=progress)
    except LooplineError as exc:
        fail(exc)
    console.print(summary_table(result.runs))
    by_rule = rules_table(result.runs)
    if by_rule is not None:
        console.print(by_rule)
    if result.stream is not None:
        _print_stream(result.stream)
    _print_training(result)
    console.print(f"\nworkspace: {escape(str(result.folder.resolve()))}", soft_wrap=True)
    for label, path in _labelled_reports(result):
        console.print(
            f"report:    [bold]{escape(str(path.resolve()))}[/] ({label})", soft_wrap=True
        )
    if any(r.status != "succeeded" for r in [*result.runs, *result.datasets]):
        raise typer.Exit(1)


def _print_stream(result: StreamDemoResult) -> None:
    sent, seen = result.published, result.status
    console.print(
        f"\n[bold]stream[/] over {escape(result.transport)}: published {sent.total:,} "
        f"({sent.valid:,} valid, {sent.duplicates:,} duplicates, {sent.malformed:,} malformed, "
        f"{sent.late:,} late, {sent.out_of_order:,} out of order); stored {seen.stored:,}, "
        f"dropped {seen.duplicates:,} duplicates, quarantined {seen.invalid:,}, "
        f"late {seen.late_dropped:,} dropped + {seen.late_updated:,} updating their window, "
        f"{seen.windows:,} windows, {seen.anomalies:,} anomalies, {seen.alerts:,} alerts",
        soft_wrap=True,
    )
    if not result.windows.is_empty():
        windows = Table(title="newest 10-second temperature windows (°C)")
        for col in result.windows.columns:
            windows.add_column(col, justify="left" if col == result.windows.columns[0] else "right")
        for row in result.windows.iter_rows():
            windows.add_row(*(f"{v:.2f}" if isinstance(v, float) else escape(str(v)) for v in row))
        console.print(windows)
    detection = Table(
        title=f"anomaly detection vs the simulator's ground truth ({sent.anomalies} injected)"
    )
    for col in ("detector", "metrics", "flagged", "precision", "episodes found", "recall"):
        detection.add_column(col, justify="left" if col in ("detector", "metrics") else "right")
    for score in result.scores:
        detection.add_row(
            escape(score.detector),
            ", ".join(score.metrics),
            f"{score.flagged:,}",
            f"{score.precision:.2f}",
            f"{score.episodes_found}/{score.episodes}",
            f"{score.recall:.2f}",
        )
    console.print(detection)
    console.print(
        "(recall: injected spike and level-shift episodes with a flagged reading; precision: "
        "flagged readings on an injected anomaly or just after one ends; a sensor stuck inside "
        "its normal range is not a point anomaly)"
    )


def _print_training(result: DemoResult) -> None:
    datasets = Table(title="datasets loaded for training")
    for col in ("job", "status", "read", "written"):
        datasets.add_column(col, justify="left" if col in ("job", "status") else "right")
    for run in result.datasets:
        colour = "green" if run.status == "succeeded" else "red"
        datasets.add_row(
            escape(run.job),
            f"[{colour}]{run.status}[/]",
            f"{run.rows_read:,}",
            f"{run.rows_written:,}",
        )
    console.print(datasets)
    for trained in result.training:
        console.print(cv_table(trained))
        primary = trained.primary_metric
        line = (
            f"{escape(trained.job)}: best [bold]{escape(trained.best)}[/], holdout {primary} "
            f"{number(trained.holdout_metrics[primary])}"
        )
        if trained.threshold is not None:
            line += f", threshold {trained.threshold:.3f}"
        if trained.model_name is not None:
            line += f"; registered {escape(trained.model_name)} v{trained.model_version}"
        console.print(line, soft_wrap=True)
    for promotion in result.promotions:
        colour = "green" if promotion.promoted else "yellow"
        verdict = "promoted" if promotion.promoted else "not promoted:"
        console.print(f"[{colour}]{verdict}[/] {escape(promotion.message)}", soft_wrap=True)


def _labelled_reports(result: DemoResult) -> list[tuple[str, Path]]:
    reports = [("ingestion", result.report)]
    reports += [(f"training: {r.job}", r.report_path) for r in result.training if r.report_path]
    return reports
