"""``loopline demo``: build the workspace, run every stage, write the reports.

Stages: ingest the five dirty sources (and write the ingestion report), stream ~20 s of
simulated sensor readings through the ``sensors`` pipeline, load the Telco
churn, Ames housing and MovieLens datasets, train the ``churn`` and ``housing`` jobs (each
writes its training report and registers a challenger), promote both challengers to
champion, then serve: train and promote the ``movies`` recommender, start ``loopline serve``
and send predictions, feedback, recommendations and click events (the ``ranking`` A/B test).
Later capabilities (monitoring) add their stages here.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loopline.config import LooplineConfig, load_config
from loopline.demo.api import ReviewsApi
from loopline.demo.config import DEMO_CONFIG
from loopline.demo.workspace import reviews, write_workspace
from loopline.errors import LooplineError
from loopline.ingest.ledger import RunRecord
from loopline.ingest.pipeline import IngestPipeline
from loopline.ingest.report import write_ingest_report

if TYPE_CHECKING:
    from loopline.demo.serving import ServeDemoResult
    from loopline.demo.streaming import StreamDemoResult
    from loopline.demo.training import Promotion
    from loopline.train.job import TrainResult

Progress = Callable[[str, dict[str, Any]], None]
"""``on_progress(event, payload)``: ``stage`` (payload ``text``) between stages, and every
training event of :class:`~loopline.train.job.TrainingJob` with the ``job`` added."""


@dataclass
class DemoResult:
    folder: Path
    runs: list[RunRecord]
    report: Path
    datasets: list[RunRecord] = field(default_factory=list)
    training: list[TrainResult] = field(default_factory=list)
    promotions: list[Promotion] = field(default_factory=list)
    stream: StreamDemoResult | None = None
    serving: ServeDemoResult | None = None


def run_demo(
    folder: Path, *, on_progress: Progress | None = None, stream_seconds: float = 20.0
) -> DemoResult:
    """Create (or refresh) the demo workspace in ``folder`` and run every stage."""

    def stage(text: str) -> None:
        if on_progress is not None:
            on_progress("stage", {"text": text})

    folder.mkdir(parents=True, exist_ok=True)
    write_workspace(folder)
    (folder / "loopline.yaml").write_text(DEMO_CONFIG, encoding="utf-8")
    stage("ingesting the demo sources")
    config, runs = _ingest(folder)
    report = write_ingest_report(config, runs, folder / "reports" / "ingest.html")
    result = DemoResult(folder=folder, runs=runs, report=report)
    from loopline.demo.streaming import run_stream_demo

    stage(f"streaming {stream_seconds:g} s of simulated sensor readings")
    result.stream = run_stream_demo(config, seconds=stream_seconds)
    from loopline.demo.training import load_datasets, promote_challengers, train_jobs

    stage("loading the Telco churn, Ames housing and MovieLens datasets")
    result.datasets = load_datasets(config)
    result.training = train_jobs(config, on_progress)
    stage("promoting the challengers")
    models = [r.model_name for r in result.training if r.model_name is not None]
    result.promotions = promote_challengers(config, models)
    from loopline.demo.serving import run_serve_demo

    stage("serving: recommender training, predictions, feedback and the ranking A/B test")
    result.serving = run_serve_demo(config)
    return result


def _ingest(folder: Path) -> tuple[LooplineConfig, list[RunRecord]]:
    runs: list[RunRecord] = []
    with ReviewsApi(reviews()) as api:
        env = {**os.environ, "LOOPLINE_DEMO_API": api.url.removesuffix("/reviews")}
        config = load_config(folder, env=env)
        for name in config.ingest:
            pipeline = IngestPipeline(config, name)
            try:
                runs.append(pipeline.run())
            except LooplineError:
                if pipeline.last_run is None:
                    raise
                runs.append(pipeline.last_run)
    return config, runs
