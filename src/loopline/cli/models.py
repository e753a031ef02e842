"""``loopline models``: registered models, gated promotion, rollback and history."""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from loopline.cli.console import console, fail, print_json
from loopline.cli.project import project_config
from loopline.errors import LooplineError, PromotionRejected

if TYPE_CHECKING:
    from loopline.config import LooplineConfig
    from loopline.evaluate.scoring import VersionScorer
    from loopline.registry import Event, Gate, ModelRegistry

models = typer.Typer(
    name="models",
    help="Registered models: list, gated promotion, rollback, history.",
    no_args_is_help=True,
)

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="loopline.yaml (default: ./loopline.yaml)."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]
ActorOption = Annotated[str | None, typer.Option("--actor", help="Who does this (default: $USER).")]


def open_registry(config: Path | None) -> tuple[LooplineConfig, ModelRegistry]:
    """The project's configuration and the model registry of its tracking store."""
    from loopline.registry import ModelRegistry
    from loopline.store.tracking import Tracker

    cfg = project_config(config)
    experiment = cfg.tracking.experiment or cfg.project
    tracker = Tracker(cfg.tracking, base_dir=cfg.project_dir, experiment=experiment)
    return cfg, ModelRegistry(tracker)


def _actor(actor: str | None) -> str | None:
    return actor or os.environ.get("USER") or None


def _gate_scores(metrics: dict[str, float]) -> str:
    """``roc_auc 0.8123 vs 0.8201``: the gate metric of both versions, which
    :meth:`ModelRegistry.promote` records first."""
    if not metrics:
        return ""
    metric = next(iter(metrics)).split(".", 1)[-1]
    values = [v for k, v in metrics.items() if k.split(".", 1)[-1] == metric][:2]
    return f"{metric} " + " vs ".join(f"{value:.4f}" for value in values)


def _event_json(event: Event) -> dict[str, Any]:
    return asdict(event) | {"time": event.time.isoformat()}


@models.command("list")
def list_models(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Registered models: versions, champion, challenger and the last event."""
    try:
        _, registry = open_registry(config)
        rows = []
        for summary in registry.list_models():
            history = registry.history(summary.name)
            rows.append((summary, history[-1] if history else None))
    except LooplineError as exc:
        fail(exc)
    if as_json:
        print_json(
            [
                {
                    "name": s.name,
                    "versions": list(s.versions),
                    "champion": s.aliases.get("champion"),
                    "challenger": s.aliases.get("challenger"),
                    "aliases": s.aliases,
                    "last_event": _event_json(last) if last else None,
                }
                for s, last in rows
            ]
        )
        return
    table = Table(title=f"registered models ({len(rows)})")
    for col in ("name", "versions", "champion", "challenger", "last event"):
        table.add_column(col)
    for s, last in rows:
        event = (
            f"{last.action} v{last.to_version} {last.time:%Y-%m-%d %H:%M} by {escape(last.actor)}"
            if last
            else ""
        )
        table.add_row(
            s.name,
            str(len(s.versions)),
            s.aliases.get("champion", "-"),
            s.aliases.get("challenger", "-"),
            event,
        )
    console.print(table)


def scores_table(
    name: str, scorer: VersionScorer, gate: Gate, challenger: str, champion: str | None
) -> Table:
    """Challenger and champion scores side by side, the gate's metric first."""
    table = Table(title=f"{name}: challenger v{challenger} vs champion v{champion or '-'}")
    table.add_column("metric")
    table.add_column(f"challenger v{challenger}", justify="right")
    table.add_column(f"champion v{champion or '-'}", justify="right")
    ours = scorer.scores.get(challenger, {})
    theirs = scorer.scores.get(champion, {}) if champion else {}
    for metric in sorted(ours, key=lambda m: m != gate.metric):
        other = theirs.get(metric)
        label = f"[bold]{metric}[/]" if metric == gate.metric else metric
        table.add_row(label, f"{ours[metric]:.4f}", "-" if other is None else f"{other:.4f}")
    return table


@models.command()
def promote(
    name: Annotated[str, typer.Argument(help="Registered model name.")],
    metric: Annotated[
        str | None,
        typer.Option(help="Gate metric (default: the model's primary metric, e.g. roc_auc)."),
    ] = None,
    max_regression: Annotated[
        float,
        typer.Option(min=0.0, help="How much worse than the champion the challenger may be."),
    ] = 0.0,
    lower_is_better: Annotated[
        bool | None,
        typer.Option(
            "--lower-is-better/--higher-is-better",
            help="Direction of the metric (default: known from the metric).",
            show_default=False,
        ),
    ] = None,
    on: Annotated[
        str | None,
        typer.Option(
            "--on", help="Score both versions on this warehouse table (default: holdout tags)."
        ),
    ] = None,
    version: Annotated[
        str | None, typer.Option("--version", help="Promote this version, not the challenger.")
    ] = None,
    reason: Annotated[str, typer.Option(help="Why (kept in the history).")] = "",
    actor: ActorOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Move `champion` to the challenger if it passes the gate against the current champion."""
    from loopline.evaluate.scoring import (
        VersionScorer,
        promotion_gate,
        read_scoring_table,
        resolve_version,
    )
    from loopline.store.warehouse import open_warehouse

    try:
        cfg, registry = open_registry(config)
        candidate = resolve_version(registry, name, version or "challenger")
        champion = registry.champion(name)
        gate = promotion_gate(
            candidate,
            metric=metric,
            max_regression=max_regression,
            greater=None if lower_is_better is None else not lower_is_better,
        )
        frame = None
        if on is not None:
            warehouse = open_warehouse(cfg.stores.warehouse_url, base_dir=cfg.project_dir)
            try:
                frame = read_scoring_table(warehouse, on)
            finally:
                warehouse.close()
        scorer = VersionScorer(registry, frame)
        try:
            decision = registry.promote(
                name,
                gate=gate,
                evaluate=scorer,
                actor=_actor(actor),
                reason=reason,
                version=candidate.version,
            )
        except PromotionRejected as exc:
            old = champion.version if champion else None
            if as_json:
                print_json(_promotion_json(name, False, candidate.version, old, gate, on, scorer))
            else:
                console.print(scores_table(name, scorer, gate, candidate.version, old))
            fail(exc)
    except LooplineError as exc:
        fail(exc)
    payload = _promotion_json(
        name, True, decision.to_version, decision.from_version, gate, on, scorer
    )
    if as_json:
        print_json(payload)
        return
    console.print(scores_table(name, scorer, gate, decision.to_version, decision.from_version))
    source = f"table {on}" if on else "each version's logged holdout metrics"
    console.print(f"scored on {source}")
    console.print(
        f"[green]promoted[/] {name} v{decision.to_version} to champion "
        f"(was v{decision.from_version or '-'}; gate {gate.metric}, "
        f"max regression {gate.max_regression:g})"
    )


def _promotion_json(
    name: str,
    promoted: bool,
    challenger: str,
    champion: str | None,
    gate: Gate,
    on: str | None,
    scorer: VersionScorer,
) -> dict[str, Any]:
    return {
        "model": name,
        "promoted": promoted,
        "challenger": challenger,
        "champion": champion,
        "gate": asdict(gate),
        "scored_on": on or "holdout_metrics",
        "scores": scorer.scores,
    }


@models.command()
def rollback(
    name: Annotated[str, typer.Argument(help="Registered model name.")],
    reason: Annotated[str, typer.Option(help="Why (kept in the history).")],
    actor: ActorOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Move `champion` back to the previous champion."""
    try:
        _, registry = open_registry(config)
        event = registry.rollback(name, actor=_actor(actor), reason=reason)
    except LooplineError as exc:
        fail(exc)
    if as_json:
        print_json(_event_json(event))
        return
    console.print(
        f"[green]rolled back[/] {name}: champion v{event.from_version} → v{event.to_version}"
    )


@models.command()
def history(
    name: Annotated[str, typer.Argument(help="Registered model name.")],
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Who registered, promoted, rejected and rolled back what, when and why."""
    try:
        _, registry = open_registry(config)
        events = registry.history(name)
    except LooplineError as exc:
        fail(exc)
    if as_json:
        print_json([_event_json(e) for e in events])
        return
    table = Table(title=f"{name}: history ({len(events)} events)")
    for col in ("time", "actor", "action", "from → to", "reason", "gate (challenger vs champion)"):
        table.add_column(col)
    colours = {"promote": "green", "reject": "red", "rollback": "yellow"}
    for e in events:
        colour = colours.get(e.action, "default")
        table.add_row(
            f"{e.time:%Y-%m-%d %H:%M:%S}",
            escape(e.actor),
            f"[{colour}]{e.action}[/]",
            f"{e.from_version or '-'} → {e.to_version or '-'}",
            escape(e.reason),
            _gate_scores(e.metrics),
        )
    console.print(table)
