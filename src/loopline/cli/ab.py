"""``loopline ab``: A/B experiments of the server: report, stop (kill switch), start, list."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from loopline.cli.console import console, err_console, fail, print_json
from loopline.cli.project import project_config
from loopline.errors import ConfigError, LooplineError

if TYPE_CHECKING:
    from loopline.config import ExperimentConfig, LooplineConfig
    from loopline.serve.ab_report import AbReport
    from loopline.store.metadata import MetadataStore

ab = typer.Typer(
    name="ab",
    help="A/B experiments of the server: report, stop (kill switch), start, list.",
    no_args_is_help=True,
)

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="loopline.yaml (default: ./loopline.yaml)."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]
ExperimentArgument = Annotated[
    str, typer.Argument(help="Name under 'serve.experiments:' in loopline.yaml.")
]


def _experiment(cfg: LooplineConfig, name: str) -> ExperimentConfig:
    experiments = cfg.serve.experiments
    if name not in experiments:
        raise ConfigError(
            f"no experiment named {name!r}",
            known=", ".join(sorted(experiments)) or "none",
            hint="declare it under 'serve: experiments:' in loopline.yaml",
        )
    return experiments[name]


def _metadata(cfg: LooplineConfig) -> MetadataStore:
    from loopline.store.metadata import MetadataStore

    return MetadataStore(cfg.stores.metadata_url, base_dir=cfg.project_dir)


def _percent(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.2%}" if signed else f"{value:.2%}"


def _report_table(report: AbReport) -> Table:
    table = Table(
        title=f"{report.experiment} on {report.target}: {report.outcome} ({report.state})"
    )
    for col in ("variant", "units", "conversions", "rate", "lift"):
        table.add_column(col, justify="left" if col == "variant" else "right")
    table.add_column(f"{1 - report.alpha:.0%} CI of diff", justify="right")
    table.add_column("p-value", justify="right")
    table.add_column("P(beat control)", justify="right")
    for i, v in enumerate(report.variants):
        ci = (
            f"{v.ci_low:+.2%} .. {v.ci_high:+.2%}"
            if v.ci_low is not None and v.ci_high is not None
            else "-"
        )
        table.add_row(
            escape(v.variant) + (" (control)" if i == 0 and v.variant != "control" else ""),
            f"{v.units:,}",
            f"{v.conversions:,}",
            _percent(v.rate),
            _percent(v.lift, signed=True),
            ci,
            f"{v.p_value:.4f}" if v.p_value is not None else "-",
            f"{v.prob_beat_control:.3f}" if v.prob_beat_control is not None else "-",
        )
    return table


@ab.command("report")
def report(
    experiment: ExperimentArgument,
    config: ConfigOption = None,
    positive: Annotated[
        list[str] | None,
        typer.Option(
            "--positive",
            help="A feedback label that counts as a conversion (repeatable; "
            "default yes / true / 1 / positive).",
        ),
    ] = None,
    alpha: Annotated[float, typer.Option(help="Significance level of the tests.")] = 0.05,
    power: Annotated[float, typer.Option(help="Power for the sample-size guidance.")] = 0.8,
    lift: Annotated[
        float | None,
        typer.Option(help="Relative lift to size for (0.05 = +5%); default the observed one."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Per-variant units, conversions, rate, lift, p-value, P(beat control), sample size."""
    try:
        from loopline.serve.ab_report import POSITIVE_LABELS, ab_report

        cfg = project_config(config)
        spec = _experiment(cfg, experiment)
        store = _metadata(cfg)
        try:
            result = ab_report(
                store,
                experiment,
                spec,
                positive=positive or POSITIVE_LABELS,
                alpha=alpha,
                power=power,
                target_lift=lift,
            )
        finally:
            store.close()
    except LooplineError as exc:
        fail(exc)
    log_config = cfg.serve.request_log
    if not log_config.enabled:
        result.warnings.append("the request log is disabled (serve.request_log.enabled)")
    elif log_config.sample_rate < 1:
        result.warnings.append(
            f"serve.request_log.sample_rate is {log_config.sample_rate:g}: outcomes of "
            "requests and users sampled out are missing; keep 1.0 while an experiment runs"
        )
    if as_json:
        print_json(result.to_json())
        return
    console.print(_report_table(result))
    for line in result.guidance:
        console.print(escape(line))
    for line in result.warnings:
        err_console.print(f"[yellow]warning:[/] {escape(line)}")


def _set_state(experiment: str, config: Path | None, actor: str | None, enabled: bool) -> None:
    from loopline.serve.experiments import set_experiment_state

    cfg = project_config(config)
    spec = _experiment(cfg, experiment)
    if enabled and not spec.enabled:
        raise ConfigError(
            f"experiment {experiment!r} is disabled in loopline.yaml",
            hint="set 'enabled: true' under serve.experiments to run it",
        )
    store = _metadata(cfg)
    try:
        set_experiment_state(
            store, experiment, enabled=enabled, actor=actor or os.environ.get("USER")
        )
    finally:
        store.close()


ActorOption = Annotated[str | None, typer.Option("--actor", help="Who does this (default: $USER).")]


@ab.command("stop")
def stop(
    experiment: ExperimentArgument, config: ConfigOption = None, actor: ActorOption = None
) -> None:
    """Kill switch: every server stops assigning units within a second (served alias for all)."""
    try:
        _set_state(experiment, config, actor, enabled=False)
    except LooplineError as exc:
        fail(exc)
    console.print(f"stopped experiment {escape(experiment)}: everyone gets the default now")


@ab.command("start")
def start(
    experiment: ExperimentArgument, config: ConfigOption = None, actor: ActorOption = None
) -> None:
    """Undo `loopline ab stop`: the servers assign units to variants again (same assignments)."""
    try:
        _set_state(experiment, config, actor, enabled=True)
    except LooplineError as exc:
        fail(exc)
    console.print(f"started experiment {escape(experiment)}")


@ab.command("list")
def list_experiments(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Configured experiments: target, variants and weights, state."""
    try:
        from loopline.serve.experiments import stopped_experiments
        from loopline.serve.log_tables import ensure_tables

        cfg = project_config(config)
        store = _metadata(cfg)
        try:
            ensure_tables(store)
            stopped = stopped_experiments(store)
        finally:
            store.close()
    except LooplineError as exc:
        fail(exc)
    states = {
        name: "disabled" if not spec.enabled else "stopped" if name in stopped else "running"
        for name, spec in cfg.serve.experiments.items()
    }
    experiments = sorted(cfg.serve.experiments.items())
    if as_json:
        print_json(
            [
                {
                    "experiment": name,
                    "target": spec.model or "recommender",
                    "variants": {v.name: v.weight for v in spec.variants},
                    "shadow": spec.shadow,
                    "outcome": spec.outcome,
                    "state": states[name],
                }
                for name, spec in experiments
            ]
        )
        return
    if not experiments:
        err_console.print("no experiments")
        return
    table = Table("experiment", "target", "variants (weight)", "shadow", "outcome", "state")
    for name, spec in experiments:
        table.add_row(
            escape(name),
            escape(spec.model or "recommender"),
            escape(", ".join(f"{v.name} ({v.weight:g})" for v in spec.variants)),
            escape(spec.shadow or "-"),
            escape(spec.outcome),
            states[name],
        )
    console.print(table)
