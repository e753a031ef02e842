"""``loopline demo``: build the workspace, run every stage, write the report.

Later capabilities (training, streaming, serving) add their stages here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from loopline.config import load_config
from loopline.demo.api import ReviewsApi
from loopline.demo.config import DEMO_CONFIG
from loopline.demo.workspace import reviews, write_workspace
from loopline.errors import LooplineError
from loopline.ingest.ledger import RunRecord
from loopline.ingest.pipeline import IngestPipeline
from loopline.ingest.report import write_ingest_report


@dataclass
class DemoResult:
    folder: Path
    runs: list[RunRecord]
    report: Path


def run_demo(folder: Path) -> DemoResult:
    """Create (or refresh) the demo workspace in ``folder`` and ingest every source."""
    folder.mkdir(parents=True, exist_ok=True)
    write_workspace(folder)
    (folder / "loopline.yaml").write_text(DEMO_CONFIG, encoding="utf-8")
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
    report = write_ingest_report(config, runs, folder / "reports" / "ingest.html")
    return DemoResult(folder=folder, runs=runs, report=report)
