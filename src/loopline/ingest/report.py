"""A self-contained HTML ingestion report: per job, rows, quarantine by rule, column profiles.

Charts are inline SVG, so the file opens offline and can be mailed around.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
import polars as pl
import pyarrow as pa

from loopline import lineage
from loopline.config import LooplineConfig
from loopline.errors import LooplineError
from loopline.ingest.ledger import RunRecord
from loopline.store.destination import QUARANTINE_TABLE
from loopline.store.factory import open_destination

PROFILE_ROWS = 100_000


@dataclass
class ColumnProfile:
    name: str
    dtype: str
    null_pct: float
    distinct: int
    stats: dict[str, str] = field(default_factory=dict)
    chart: str = ""


def _bars(labels: list[str], values: list[int], width: int = 220) -> str:
    """A small horizontal bar chart as inline SVG."""
    if not values:
        return ""
    top = max(values) or 1
    row = 14
    shown = [label if len(label) <= 28 else label[:27] + "…" for label in labels]
    left = 12 + 6 * max(len(label) for label in shown)  # ~6 px per 10 px glyph
    parts = [f'<svg width="{left + width + 60}" height="{row * len(values)}" role="img">']
    for i, (label, value) in enumerate(zip(shown, values, strict=True)):
        w = max(1, round(width * value / top))
        y = i * row
        parts.append(
            f'<text x="0" y="{y + 11}" font-size="10">{html.escape(label)}</text>'
            f'<rect x="{left}" y="{y + 2}" width="{w}" height="{row - 4}" fill="#4c78a8"/>'
            f'<text x="{left + w + 4}" y="{y + 11}" font-size="10">{value:,}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _histogram(series: pl.Series, bins: int = 12) -> str:
    values = series.drop_nulls().cast(pl.Float64)
    values = values.filter(values.is_finite())
    if values.is_empty():
        return ""
    lo, hi = float(values.min()), float(values.max())  # type: ignore[arg-type]
    if math.isclose(lo, hi):
        return _bars([f"{lo:.3g}"], [values.len()])
    step = (hi - lo) / bins
    idx = ((values - lo) / step).floor().clip(0, bins - 1).cast(pl.Int64)
    counts = idx.value_counts().sort(idx.name)
    by_bin = dict(zip(counts[idx.name].to_list(), counts["count"].to_list(), strict=True))
    labels = [f"{lo + i * step:.3g}" for i in range(bins)]
    return _bars(labels, [int(by_bin.get(i, 0)) for i in range(bins)])


def profile(df: pl.DataFrame) -> list[ColumnProfile]:
    """Column profiles of ``df`` (lineage columns skipped)."""
    out = []
    for name in df.columns:
        if lineage.is_lineage(name):
            continue
        s = df[name]
        prof = ColumnProfile(
            name=name,
            dtype=str(s.dtype),
            null_pct=100.0 * s.null_count() / max(1, s.len()),
            distinct=s.n_unique(),
        )
        if s.dtype.is_numeric():
            prof.stats = {
                k: f"{v:.4g}" if isinstance(v, float) else str(v)
                for k, v in (("min", s.min()), ("mean", s.mean()), ("max", s.max()))
            }
            prof.chart = _histogram(s)
        elif s.dtype in (pl.String, pl.Boolean, pl.Categorical):
            if prof.distinct > max(20, s.len() // 2):
                prof.stats = {"note": "mostly unique values"}
            else:
                top = s.drop_nulls().cast(pl.String).value_counts(sort=True).head(8)
                prof.chart = _bars(top[name].to_list(), top["count"].to_list())
        elif s.dtype.is_temporal():
            prof.stats = {"min": str(s.min()), "max": str(s.max())}
        out.append(prof)
    return out


TEMPLATE = jinja2.Template(
    """<!doctype html><html><head><meta charset="utf-8"><title>loopline ingestion report</title>
<style>body{font:14px system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;
margin:.5em 0 1.5em}td,th{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f4f4f4}.ok{color:#2a7}.bad{color:#c33}h2{margin-top:2em;border-bottom:1px solid #ccc}
</style></head><body><h1>loopline ingestion report</h1>
<p>project <b>{{ project }}</b>, generated {{ generated }}</p>
<table><tr><th>job</th><th>status</th><th>source</th><th>destination</th><th>read</th>
<th>written</th><th>quarantined</th><th>deduplicated</th></tr>
{% for j in jobs %}<tr><td><a href="#{{ j.run.job }}">{{ j.run.job }}</a></td>
<td class="{{ 'ok' if j.run.status == 'succeeded' else 'bad' }}">{{ j.run.status }}</td>
<td>{{ j.run.source }}</td><td>{{ j.run.destination }}</td>
<td>{{ "{:,}".format(j.run.rows_read) }}</td>
<td>{{ "{:,}".format(j.run.rows_written) }}</td><td>{{ "{:,}".format(j.run.rows_quarantined) }}</td>
<td>{{ "{:,}".format(j.run.rows_deduplicated) }}</td></tr>{% endfor %}</table>
{% for j in jobs %}<h2 id="{{ j.run.job }}">{{ j.run.job }}</h2>
<p>run {{ j.run.run_id }}{% if j.run.error %} —
<span class="bad">{{ j.run.error }}</span>{% endif %}</p>
{% if j.rules %}<h3>rows by rule</h3>{{ j.rules_chart|safe }}
<table><tr><th>rule</th><th>rows</th><th>action</th></tr>{% for r in j.rules %}
<tr><td>{{ r[0] }}</td><td>{{ "{:,}".format(r[1]) }}</td><td>{{ r[2] }}</td></tr>{% endfor %}
</table>{% endif %}
{% if j.samples %}<h3>quarantined rows (a few per rule)</h3>
<table><tr><th>rule</th><th>column</th><th>raw value</th><th>record</th></tr>
{% for r in j.samples %}<tr><td>{{ r[0] }}</td><td>{{ r[1] or "" }}</td>
<td><code>{{ r[2] if r[2] is not none else "null" }}</code></td>
<td><code>{{ r[3][:160] }}</code></td></tr>{% endfor %}</table>{% endif %}
{% if j.profiles %}<h3>columns ({{ "{:,}".format(j.table_rows) }} rows stored)</h3>
<table><tr><th>column</th><th>type</th><th>null %</th><th>distinct</th><th>stats</th>
<th>distribution</th></tr>{% for p in j.profiles %}<tr><td>{{ p.name }}</td><td>{{ p.dtype }}</td>
<td>{{ "%.1f"|format(p.null_pct) }}</td><td>{{ p.distinct }}</td>
<td>{% for k, v in p.stats.items() %}{{ k }}={{ v }}<br>{% endfor %}</td>
<td>{{ p.chart|safe }}</td></tr>{% endfor %}</table>{% elif j.note %}<p>{{ j.note }}</p>{% endif %}
{% endfor %}</body></html>""",
    autoescape=True,
)


def quarantine_samples(quarantine: pa.Table, run: RunRecord, per_rule: int = 3) -> list[Any]:
    """A few quarantined rows per rule of ``run`` (its rules, ingested while it ran)."""
    df = pl.from_arrow(quarantine)
    assert isinstance(df, pl.DataFrame)
    ended = run.ended_at or datetime.now(UTC)
    picked = (
        df.filter(
            pl.col("_rule").is_in(list(run.rule_failures))
            & pl.col(lineage.INGESTED_AT).is_between(run.started_at, ended)
        )
        .group_by("_rule", maintain_order=True)
        .head(per_rule)
        .sort("_rule")
    )
    return picked.select("_rule", "_column", "_raw_value", "_record").rows()


def write_ingest_report(config: LooplineConfig, runs: list[RunRecord], path: Path) -> Path:
    """Write the report for ``runs`` to ``path`` (folders created); returns the path."""
    jobs: list[dict[str, Any]] = []
    for run in runs:
        entry: dict[str, Any] = {
            "run": run,
            "profiles": [],
            "samples": [],
            "table_rows": 0,
            "note": "",
        }
        rules = [(k, v, "quarantined") for k, v in sorted(run.rule_failures.items())]
        rules += [(k, v, "warned") for k, v in sorted(run.warnings.items())]
        entry["rules"] = rules
        entry["rules_chart"] = _bars([r[0] for r in rules], [r[1] for r in rules])
        job = config.ingest.get(run.job)
        if job is not None:
            try:
                dest = open_destination(config.stores, job.destination, base_dir=config.project_dir)
                try:
                    df = pl.from_arrow(dest.read_table(job.destination.table))
                    if run.rule_failures:
                        entry["samples"] = quarantine_samples(
                            dest.read_table(QUARANTINE_TABLE), run
                        )
                finally:
                    dest.close()
                assert isinstance(df, pl.DataFrame)
                entry["table_rows"] = df.height
                entry["profiles"] = profile(df.head(PROFILE_ROWS))
            except LooplineError as exc:
                entry["note"] = f"table not readable: {exc}"
        jobs.append(entry)
    text = TEMPLATE.render(
        project=config.project,
        generated=f"{datetime.now(UTC):%Y-%m-%d %H:%M UTC}",
        jobs=jobs,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path
