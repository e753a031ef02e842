"""``loopline train JOB``: run a training job from loopline.yaml and print what it found.

Shown, in order: live progress (a line per candidate, its trials then its folds), the
feature roles, the candidate comparison (cross-validated mean ± std, corrected t-test
against the best), the holdout metrics, the decision threshold, the MLflow run, the
registered version and the HTML report. ``--json`` prints the same as one JSON object.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from loopline.cli.console import console, fail, print_json
from loopline.cli.project import project_config
from loopline.errors import ConfigError, LooplineError

if TYPE_CHECKING:
    from loopline.train.job import TrainResult

#: Metrics shown beside the primary one in the comparison, per task (first three not primary).
KEY_METRICS: dict[str, tuple[str, ...]] = {
    "binary": ("roc_auc", "pr_auc", "f1", "log_loss"),
    "multiclass": ("f1_macro", "accuracy", "balanced_accuracy", "log_loss"),
    "regression": ("rmse", "mae", "r2", "rmsle"),
}
#: Columns listed per role group in the roles summary before "+N more".
ROLE_COLUMNS_SHOWN = 8


class TrainProgress:
    """Live progress of training runs: a line per candidate, one for the current stage.

    A callable for :class:`~loopline.train.job.TrainingJob`'s ``on_progress``; a payload
    with a ``job`` key (the demo trains several jobs) prefixes the candidate lines. Off
    (every call a no-op) when ``enabled`` is false or the console is not a terminal.

    Example::

        with TrainProgress(enabled=not as_json) as progress:
            TrainingJob(config, "churn", on_progress=progress).run()
    """

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled and console.is_terminal
        self._progress: Progress | None = None
        self._stage: TaskID | None = None
        self._tasks: dict[str, TaskID] = {}
        self._trials: dict[str, int] = defaultdict(int)

    def __enter__(self) -> TrainProgress:
        if self.enabled:
            self._progress = Progress(
                SpinnerColumn(),
                TextColumn("[bold]{task.description}"),
                BarColumn(bar_width=24),
                TextColumn("{task.fields[detail]}"),
                TimeElapsedColumn(),
                console=console,
                transient=True,
            )
            self._progress.start()
            self._stage = self._progress.add_task("", total=None, detail="")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def stage(self, text: str) -> None:
        """Show ``text`` on the stage line (what runs now, outside the candidates)."""
        if self._progress is not None and self._stage is not None:
            self._progress.update(self._stage, description=escape(text))

    def __call__(self, event: str, payload: dict[str, Any]) -> None:
        if self._progress is None:
            return
        job = payload.get("job")
        key = f"{job} · {payload.get('candidate')}" if job else str(payload.get("candidate"))
        handler = getattr(self, f"_on_{event}", None)
        if handler is not None:
            handler(self._progress, key, payload)

    def _on_stage(self, progress: Progress, key: str, p: dict[str, Any]) -> None:
        self.stage(str(p["text"]))

    def _on_data(self, progress: Progress, key: str, p: dict[str, Any]) -> None:
        self.stage(f"{p.get('job') or 'training'}: {p['rows']:,} rows from {p['source']}")

    def _on_candidate(self, progress: Progress, key: str, p: dict[str, Any]) -> None:
        self.stage(f"{p.get('job') or 'training'}: candidate {p['index'] + 1}/{p['total']}")
        self._tasks[key] = progress.add_task(escape(key), total=None, detail="searching")

    def _on_trial(self, progress: Progress, key: str, p: dict[str, Any]) -> None:
        task = self._tasks.get(key)
        if task is None:
            return
        self._trials[key] += 1
        progress.update(task, detail=f"search: {self._trials[key]}/{p['n_trials']} trials")

    def _on_fold(self, progress: Progress, key: str, p: dict[str, Any]) -> None:
        task = self._tasks.get(key)
        if task is not None and p["fold"] >= 0:
            detail = f"cv: fold {p['fold'] + 1}/{p['folds']} ({self._trials[key]} trials)"
            progress.update(task, total=p["folds"], completed=p["fold"], detail=detail)

    def _on_candidate_done(self, progress: Progress, key: str, p: dict[str, Any]) -> None:
        task = self._tasks.get(key)
        if task is not None:
            total = next(t.total for t in progress.tasks if t.id == task) or 1
            detail = f"{p['metric']} {mean_std(p['mean'], p['std'])}"
            progress.update(task, total=total, completed=total, detail=detail)

    def _on_best(self, progress: Progress, key: str, p: dict[str, Any]) -> None:
        self.stage(f"{p.get('job') or 'training'}: refit {p['candidate']}, holdout, explain")

    def _on_holdout(self, progress: Progress, key: str, p: dict[str, Any]) -> None:
        self.stage(f"{p.get('job') or 'training'}: explanations (permutation importance)")

    def _on_logged(self, progress: Progress, key: str, p: dict[str, Any]) -> None:
        self.stage(f"{p.get('job') or 'training'}: registering, writing the report")


def number(value: float) -> str:
    """A metric for a table: 4 decimals, or whole numbers with separators from 1,000 on.

    >>> number(0.84771), number(25453.116), number(-1234.5)
    ('0.8477', '25,453', '-1,234')
    """
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4f}"


def mean_std(mean: float, std: float) -> str:
    """``mean ±std``, both at the scale of the mean (compact: four fit in 80 columns).

    >>> mean_std(0.84771, 0.0088), mean_std(15379.26, 601.7)
    ('0.8477 ±0.0088', '15,379 ±602')
    """
    if abs(mean) >= 1000:
        return f"{mean:,.0f} ±{std:,.0f}"
    return f"{mean:.4f} ±{std:.4f}"


def roles_table(result: TrainResult) -> Table:
    """The feature roles, grouped by role and reason (one row per group, columns listed)."""
    groups: dict[tuple[str, str], list[str]] = defaultdict(list)
    for column, role, reason in result.report_data.roles:
        groups[(role, reason)].append(column)
    order = {"numeric": 0, "categorical": 1, "datetime": 2, "text": 3, "dropped": 4}
    table = Table(title=f"feature roles ({len(result.report_data.roles)} columns)")
    for col in ("role", "n", "reason", "columns"):
        table.add_column(col, justify="right" if col == "n" else "left")
    for (role, reason), columns in sorted(groups.items(), key=lambda g: order.get(g[0][0], 9)):
        shown = ", ".join(columns[:ROLE_COLUMNS_SHOWN])
        if len(columns) > ROLE_COLUMNS_SHOWN:
            shown += f", … (+{len(columns) - ROLE_COLUMNS_SHOWN})"
        colour = "dim" if role == "dropped" else "default"
        table.add_row(f"[{colour}]{role}[/]", str(len(columns)), escape(reason), escape(shown))
    return table


def key_metrics(result: TrainResult, others: int = 3) -> list[str]:
    """The primary metric and up to ``others`` more of the task, as far as computed."""
    computed = result.cv_summary[result.best]
    rest = [m for m in KEY_METRICS.get(result.task, ()) if m != result.primary_metric]
    return [result.primary_metric, *[m for m in rest if m in computed][:others]]


def cv_table(result: TrainResult) -> Table:
    """The candidates side by side: CV mean ± std, best first, p-value against the best."""
    # Three more metrics where the console is wide enough, else two (80 columns, piped).
    metrics = key_metrics(result, others=3 if console.width >= 100 else 2)
    folds = len(result.report_data.candidates[0].cv.folds)
    table = Table(title=f"{result.job}: {folds}-fold cross-validation ({result.task})")
    table.add_column("candidate", no_wrap=True)  # names whole; a narrow console wraps "± std"
    for metric in metrics:
        label = f"[bold]{metric}[/]" if metric == result.primary_metric else metric
        table.add_column(label, justify="right")
    table.add_column("p vs best", justify="right", no_wrap=True)
    for row in result.report_data.comparison:
        summary = result.cv_summary[row.model]
        cells = [mean_std(*summary[m]) if m in summary else "-" for m in metrics]
        name = f"[green]{escape(row.model)} ★[/]" if row.is_best else escape(row.model)
        table.add_row(name, *cells, "-" if row.is_best else f"{row.p_value:.3f}")
    return table


def holdout_table(result: TrainResult) -> Table:
    """The best model's metrics on the holdout rows, the primary metric first."""
    rd = result.report_data
    table = Table(title=f"holdout: {rd.n_test:,} rows")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for metric in sorted(result.holdout_metrics, key=lambda m: m != result.primary_metric):
        label = f"[bold]{metric}[/]" if metric == result.primary_metric else metric
        table.add_row(label, number(result.holdout_metrics[metric]))
    return table


def result_json(result: TrainResult) -> dict[str, Any]:
    """What ``--json`` prints for a run."""
    return {
        "job": result.job,
        "task": result.task,
        "primary_metric": result.primary_metric,
        "best": result.best,
        "cv_summary": {
            name: {m: {"mean": mean, "std": std} for m, (mean, std) in metrics.items()}
            for name, metrics in result.cv_summary.items()
        },
        "comparison": [
            {"candidate": r.model, "mean": r.mean, "std": r.std, "p_value": r.p_value}
            for r in result.report_data.comparison
        ],
        "holdout_metrics": result.holdout_metrics,
        "threshold": result.threshold,
        "mlflow_run_id": result.mlflow_run_id,
        "model_name": result.model_name,
        "model_version": result.model_version,
        "report_path": None if result.report_path is None else str(result.report_path),
        "duration_s": result.duration_s,
    }


def print_result(result: TrainResult) -> None:
    """Everything ``loopline train`` prints after a run (not the JSON)."""
    console.print(roles_table(result))
    console.print(cv_table(result))
    console.print(holdout_table(result))
    lines = []
    if result.threshold is not None:
        lines.append(f"threshold:  {result.threshold:.4f} (chosen on out-of-fold predictions)")
    lines.append(f"mlflow run: {result.mlflow_run_id}")
    if result.model_name is not None:
        name = escape(result.model_name)
        lines.append(
            f"registered: {name} v{result.model_version} (alias challenger; "
            f"promote with 'loopline models promote {name}')"
        )
    if result.report_path is not None:
        lines.append(f"report:     [bold]{escape(str(result.report_path.resolve()))}[/]")
    lines.append(f"[green]trained[/] {escape(result.job)} in {result.duration_s:.1f} s")
    for line in lines:  # soft-wrapped: a path stays one line that a terminal can click
        console.print(line, soft_wrap=True)


def train(
    job: Annotated[str, typer.Argument(help="A job name under 'train' in loopline.yaml.")],
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="loopline.yaml (default: ./loopline.yaml)."),
    ] = None,
    ray_address: Annotated[
        str | None,
        typer.Option(
            "--ray-address",
            help="Run the search trials on Ray: 'local', 'auto' or 'ray://HOST:10001' "
            "(overrides search.ray_address).",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Train, cross-validate, compare, track and register the models of a training job."""
    try:
        cfg = project_config(config)
        if job not in cfg.train:
            jobs = ", ".join(sorted(cfg.train)) or "none"
            fail(
                ConfigError(
                    f"no training job named {job!r} (jobs: {jobs})",
                    path=f"train.{job}",
                    hint="give a job declared under 'train:' in loopline.yaml",
                )
            )
        spec = cfg.train[job]
        if ray_address is not None:
            search = spec.search.model_copy(update={"ray_address": ray_address})
            spec = spec.model_copy(update={"search": search})
        from loopline.train.job import TrainingJob

        with TrainProgress(enabled=not as_json) as progress:
            result = TrainingJob(cfg, job, spec, on_progress=progress).run()
    except LooplineError as exc:
        fail(exc)
    if as_json:
        print_json(result_json(result))
    else:
        print_result(result)
