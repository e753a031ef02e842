import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from loopline.cli.app import app


def report_paths(output: str) -> dict[str, Path]:
    """``report:    PATH (LABEL)`` lines of the demo's output, by label."""
    return {
        label: Path(path) for path, label in re.findall(r"^report:\s+(\S+) \((.+)\)$", output, re.M)
    }


def champions(config: Path) -> dict[str, str | None]:
    listed = CliRunner().invoke(app, ["models", "list", "--json", "--config", str(config)])
    assert listed.exit_code == 0, listed.output
    return {m["name"]: m["champion"] for m in json.loads(listed.stdout)}


@pytest.mark.slow
def test_demo_ingests_trains_registers_and_writes_the_reports(tmp_path: Path) -> None:
    folder = tmp_path / "demo"
    result = CliRunner().invoke(app, ["demo", "--dir", str(folder)])
    assert result.exit_code == 0, result.output
    report = folder / "reports" / "ingest.html"
    html = report.read_text()
    for job in ("customers", "orders", "products", "payments", "reviews"):
        assert f'id="{job}"' in html
        assert job in result.output
    assert "<svg" in html
    assert "http" not in html.split("<body>")[0]  # no external assets: opens offline

    # Training: both datasets loaded in full, both jobs' CV tables, a report each.
    assert "dataset_telco_churn" in result.output
    assert "7,043" in result.output
    assert "dataset_ames" in result.output
    assert "2,930" in result.output
    assert "churn: 5-fold cross-validation (binary)" in result.output
    assert "housing: 5-fold cross-validation (regression)" in result.output
    reports = report_paths(result.output)
    assert reports["ingestion"] == report.resolve()
    for job in ("churn", "housing"):
        trained = reports[f"training: {job}"]
        assert trained.is_file()
        assert trained.name.startswith(f"train-{job}-")
        assert "<svg" in trained.read_text()
    assert champions(folder / "loopline.yaml") == {"churn": "1", "housing": "1", "movies": "1"}

    # Serving: every prediction answered by the champion, most threshold labels right, the
    # recommender beat popularity offline, and the A/B test saw both arms over HTTP.
    served = re.search(
        r"(\d+) churn predictions\s+from\s+v1\s+\((\d+) predicted to churn\).*?"
        r"(\d+) labels fed back, (\d+)% of the\s+threshold labels right",
        result.output,
        re.S,
    )
    assert served is not None, result.output
    assert served.group(1) == served.group(3) == "200"
    assert 0 < int(served.group(2)) < 200
    assert int(served.group(4)) > 60
    ab = re.search(r"│ popular\s*│\s*([\d,]+) │.*?│ blend\s*│\s*([\d,]+) │", result.output, re.S)
    assert ab is not None, result.output
    assert int(ab.group(1)) + int(ab.group(2)) == 671

    # Streaming: every valid reading published was stored exactly once (duplicates and
    # malformed payloads published too), windows were emitted and the detectors were judged.
    sent = re.search(r"published ([\d,]+) \(([\d,]+) valid.*?; stored ([\d,]+),", result.output)
    assert sent is not None, result.output
    assert sent.group(2) == sent.group(3)
    assert "newest 10-second temperature windows" in result.output
    assert "anomaly detection vs the simulator's ground truth" in result.output

    # A second run is idempotent for ingestion (incremental sources skip what they have,
    # merges upsert, the datasets are not read again); the retrained models (same seed,
    # same scores) pass the gate against the first champions and replace them.
    again = CliRunner().invoke(app, ["demo", "--dir", str(folder)])
    assert again.exit_code == 0, again.output
    assert re.search(r"dataset_telco_churn\s*│\s*succeeded\s*│\s*0 │", again.output)
    assert "promoted churn v2 → champion (was 1" in again.output
    assert champions(folder / "loopline.yaml") == {"churn": "2", "housing": "2", "movies": "2"}
