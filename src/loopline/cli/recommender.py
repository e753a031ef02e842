"""``loopline recommender train NAME``: train, evaluate and register a recommender.

Prints the ranking metrics of every strategy on the held-out interactions (the popularity
baseline beside ALS, co-visitation and their blend), how the interactions were split, the
MLflow run and the registered version. ``--json`` prints the same as one JSON object.
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer
from rich.markup import escape
from rich.table import Table

from loopline.cli.console import console, fail, print_json
from loopline.cli.project import project_config
from loopline.errors import ConfigError, LooplineError

if TYPE_CHECKING:
    from loopline.train.recommender.job import RecommenderResult

recommender = typer.Typer(
    name="recommender",
    help="Recommenders: train on interactions, evaluate by time, register.",
    no_args_is_help=True,
)


@recommender.callback()
def _group() -> None:
    """Recommenders: train on interactions, evaluate by time, register."""
    # A callback keeps `train` a sub-command even while it is the group's only one.


_STAGES = {
    "data": "splitting by time",
    "split": "fitting ALS and co-visitation",
    "fitted": "ranking the held-out users' items",
    "evaluated": "logging the MLflow run",
    "logged": "registering",
}


def metric_table(result: RecommenderResult) -> Table:
    """Strategies (rows, popularity first) by metric, the primary metric in bold."""
    split = result.split
    table = Table(
        title=f"{result.job}: top-{result.primary_metric.rsplit('_', 1)[-1]} on "
        f"{split['users_evaluated']:,} held-out users ({split['mode']} temporal split)"
    )
    table.add_column("strategy")
    metrics = list(next(iter(result.metrics.values())))
    for metric in metrics:
        label = f"[bold]{metric}[/]" if metric == result.primary_metric else metric
        table.add_column(label, justify="right")
    best = max(result.metrics, key=lambda s: result.metrics[s][result.primary_metric])
    for strategy, values in result.metrics.items():
        name = f"[green]{strategy} ★[/]" if strategy == best else strategy
        if strategy == "popular":
            name = f"{name} [dim](baseline)[/]"
        table.add_row(name, *(f"{values[m]:.4f}" for m in metrics))
    return table


def result_json(result: RecommenderResult) -> dict[str, Any]:
    """What ``--json`` prints."""
    return {
        "job": result.job,
        "primary_metric": result.primary_metric,
        "metrics": result.metrics,
        "split": result.split,
        "mlflow_run_id": result.mlflow_run_id,
        "model_name": result.model_name,
        "model_version": result.model_version,
        "duration_s": result.duration_s,
    }


def print_result(result: RecommenderResult) -> None:
    """Everything ``loopline recommender train`` prints after a run (not the JSON)."""
    console.print(metric_table(result))
    s = result.split
    console.print(
        f"split:      {s['train_interactions']:,} training / {s['test_interactions']:,} "
        f"held-out interactions; {s['users']:,} users x {s['items']:,} items in training; "
        f"{s['dropped_cold']:,} held-out interactions of unknown users or items not scored",
        soft_wrap=True,
    )
    console.print(f"mlflow run: {result.mlflow_run_id}")
    if result.model_name is not None:
        name = escape(result.model_name)
        console.print(
            f"registered: {name} v{result.model_version} (alias challenger; "
            f"promote with 'loopline models promote {name}')",
            soft_wrap=True,
        )
    console.print(f"[green]trained[/] {escape(result.job)} in {result.duration_s:.1f} s")


@recommender.command("train")
def train(
    name: Annotated[str, typer.Argument(help="A job name under 'recommenders' in loopline.yaml.")],
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="loopline.yaml (default: ./loopline.yaml)."),
    ] = None,
    split: Annotated[
        str | None,
        typer.Option(
            "--split",
            help="'global': hold out the latest interactions of everyone (one cutoff time); "
            "'user': each user's latest interactions (default: the job's 'split').",
        ),
    ] = None,
    dataset: Annotated[
        str | None,
        typer.Option(
            "--dataset",
            help="Load this packaged dataset (e.g. movielens) into the job's table first.",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Train ALS and co-visitation, rank held-out interactions beside popularity, register."""
    try:
        cfg = project_config(config)
        if split not in (None, "global", "user"):
            fail(ConfigError(f"--split must be 'global' or 'user', got {split!r}"))
        mode: Literal["global", "user"] | None = (
            None if split is None else "user" if split == "user" else "global"
        )
        from loopline.train.recommender.job import RecommenderJob

        live = not as_json and console.is_terminal
        with console.status("reading interactions") if live else nullcontext() as status:

            def progress(event: str, payload: dict[str, Any]) -> None:
                if status is not None and event in _STAGES:
                    status.update(_STAGES[event])

            job = RecommenderJob(cfg, name, split=mode, on_progress=progress)  # checks the name
            if dataset is not None:
                from loopline.datasets import load_into_warehouse

                table = job.spec.table
                load_into_warehouse(dataset, cfg, table=None if table == dataset else table)
            result = job.run()
    except LooplineError as exc:
        fail(exc)
    if as_json:
        print_json(result_json(result))
    else:
        print_result(result)
