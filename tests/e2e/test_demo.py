from pathlib import Path

from typer.testing import CliRunner

from loopline.cli.app import app


def test_demo_ingests_every_source_and_writes_the_report(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["demo", "--dir", str(tmp_path / "demo")])
    assert result.exit_code == 0, result.output
    report = tmp_path / "demo" / "reports" / "ingest.html"
    html = report.read_text()
    for job in ("customers", "orders", "products", "payments", "reviews"):
        assert f'id="{job}"' in html
        assert job in result.output
    assert "<svg" in html
    assert "http" not in html.split("<body>")[0]  # no external assets: opens offline
    # A second run is idempotent: incremental sources skip what they have, merges upsert.
    again = CliRunner().invoke(app, ["demo", "--dir", str(tmp_path / "demo")])
    assert again.exit_code == 0, again.output
