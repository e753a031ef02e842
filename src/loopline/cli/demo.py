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
    from loopline.demo.serving import ServeDemoResult
    from loopline.demo.streaming import StreamDemoResult


def demo(
    folder: Annotated[Path, typer.Option("--dir", help="Demo workspace folder.")] = Path(
        "loopline-demo"
    ),
) -> None:
    """Run the whole loop on sample data: ingest, stream, train, promote, serve.

    Creates a demo workspace, ingests its five sources (ingestion report), streams ~20 s of
    simulated sensor readings, loads the Telco churn, Ames housing and MovieLens datasets,
    trains the churn and housing jobs with small demo budgets (a training report each),
    promotes both models to champion, trains the MovieLens recommender, and serves them:
    predictions, feedback, recommendations and an A/B test over HTTP.
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
    if result.serving is not None:
        _print_serving(result.serving)
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


def _print_serving(result: ServeDemoResult) -> None:
    console.print(
        f"\n[bold]serve[/] at {escape(result.url)} (loopline serve, API key, metrics and "
        f"request log on): {result.predictions} churn predictions from v"
        f"{escape(result.churn_version)} ({result.predicted_churn} predicted to churn), "
        f"latency p50 {result.latency_ms_p50:.1f} ms / p99 {result.latency_ms_p99:.1f} ms "
        f"over HTTP; {result.feedback} labels fed back, {result.feedback_accuracy:.0%} of the "
        "threshold labels right",
        soft_wrap=True,
    )
    rec = result.recommender
    ranking = Table(
        title=f"recommender {escape(rec.job)}: top-10 on {rec.split['users_evaluated']:,} "
        "held-out MovieLens users"
    )
    names = list(next(iter(rec.metrics.values()))) if rec.metrics else []
    ranking.add_column("strategy")
    for name in names:
        ranking.add_column(name, justify="right")
    for strategy, values in rec.metrics.items():
        label = f"{strategy} (baseline)" if strategy == "popular" else strategy
        ranking.add_row(escape(label), *(f"{values[n]:.4f}" for n in names))
    console.print(ranking)
    report = result.report
    ab = Table(
        title=f"A/B test {escape(report.experiment)}: {result.recommendation_requests} users "
        f"asked for 10 movies, {result.clicks} clicks on movies they rated later"
    )
    for col in ("variant", "users", "clicked", "rate", "lift", "p-value", "P(beat control)"):
        ab.add_column(col, justify="left" if col == "variant" else "right")
    for v in report.variants:
        ab.add_row(
            escape(v.variant),
            f"{v.units:,}",
            f"{v.conversions:,}",
            "-" if v.rate is None else f"{v.rate:.1%}",
            "-" if v.lift is None else f"{v.lift:+.0%}",
            "-" if v.p_value is None else f"{v.p_value:.3g}",
            "-" if v.prob_beat_control is None else f"{v.prob_beat_control:.3f}",
        )
    console.print(ab)
    for line in report.guidance:
        console.print(escape(line), soft_wrap=True)
