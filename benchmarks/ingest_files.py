"""Benchmark: ingest a dirty 1M-row CSV with a 10-rule contract, beside its anchors.

Run: ``make bench`` (or ``.venv/bin/python benchmarks/ingest_files.py --rows 1000000``).
Each case runs in its own process, ``--repeat`` times (the fastest run is shown: the
machine's cores are shared); CPU seconds and peak RSS come from that process's rusage.
Printed: wall s, CPU s, rows/s, peak RSS MiB, and ratios to the Polars baseline.

Cases, same file, same run:
  polars       Polars reads the CSV with an explicit schema, writes Parquet (no checks)
  duckdb       DuckDB COPY CSV -> Parquet (no checks)
  pandera      pandas + pandera validating the same rules, splitting off failing rows
  dlt          dlt loading the file into DuckDB through its Arrow path
  loopline     contract (10 rules) + cleansing + quarantine + lineage into the warehouse
``--memory-check`` also runs loopline on 10x the rows and compares peak RSS.
"""

from __future__ import annotations

import argparse
import compileall
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONTRACT = """
columns:
  id: {type: int64, nullable: false}
  ts: {type: datetime, nullable: false}
  amount: {type: float64, min: 0, max: 100000}
  qty: {type: int64, min: 0}
  category: {type: string, allowed: [a, b, c, d, e]}
  email: {type: string, regex: "^[^@]+@[^@]+\\\\.[a-z]+$"}
  score: float64
  name: {type: string, max_length: 40}
rules:
  - {check: expression, name: amount_vs_qty, expr: "amount >= qty * 0"}
  - {check: not_null, column: category}
"""


def generate(path: Path, rows: int, seed: int = 1) -> None:
    """Write the dirty CSV in blocks (bounded memory)."""
    import numpy as np
    import polars as pl

    rng = np.random.default_rng(seed)
    block = 500_000
    with path.open("wb") as fh:
        for start in range(0, rows, block):
            n = min(block, rows - start)
            ids = np.arange(start, start + n)
            amount = rng.lognormal(3, 1, n).round(2).astype(str).astype(object)
            bad = rng.random(n)
            amount[bad < 0.01] = "N/A"
            amount[(bad >= 0.01) & (bad < 0.015)] = "??"
            amount[(bad >= 0.015) & (bad < 0.02)] = ""
            amount[(bad >= 0.02) & (bad < 0.021)] = "9999999"
            df = pl.DataFrame(
                {
                    "id": ids,
                    "ts": (np.datetime64("2025-01-01T00:00:00") + ids.astype("timedelta64[s]"))
                    .astype(str)
                    .astype(object),
                    "amount": amount,
                    "qty": rng.integers(0, 20, n),
                    "category": rng.choice(
                        list("abcdef"), n, p=[0.3, 0.25, 0.2, 0.15, 0.095, 0.005]
                    ),
                    "email": np.where(rng.random(n) < 0.01, "broken", "u@example.com"),
                    "score": np.where(rng.random(n) < 0.05, np.nan, rng.normal(0, 1, n)),
                    "name": rng.choice(["alpha", "beta", "gamma", " delta "], n),
                },
                strict=False,
            )
            dups = df.sample(fraction=0.01, seed=seed + start)
            pl.concat([df, dups]).write_csv(fh, include_header=start == 0)


CASES = {
    "polars": """
import polars as pl
schema = {"id": pl.Int64, "ts": pl.Datetime, "amount": pl.Float64, "qty": pl.Int64,
          "category": pl.String, "email": pl.String, "score": pl.Float64, "name": pl.String}
pl.scan_csv(CSV, schema=schema, null_values=["N/A", "??", ""], ignore_errors=True
           ).sink_parquet(OUT / "polars.parquet")
""",
    "duckdb": """
import duckdb
con = duckdb.connect(); con.execute("SET threads=2")
con.execute(f"COPY (SELECT * FROM read_csv('{CSV}', ignore_errors=true, nullstr=['N/A','??',''])) "
            f"TO '{OUT}/duckdb.parquet' (FORMAT parquet)")
""",
    "pandera": """
import pandas as pd, pandera.pandas as pa
df = pd.read_csv(CSV, na_values=["N/A", "??", ""], keep_default_na=False)
df["amount"] = pd.to_numeric(df["amount"], errors="coerce")
df["ts"] = pd.to_datetime(df["ts"], errors="coerce")
schema = pa.DataFrameSchema({
    "id": pa.Column(int, unique=True), "ts": pa.Column("datetime64[ns]", nullable=False),
    "amount": pa.Column(float, pa.Check.in_range(0, 100000), nullable=True),
    "qty": pa.Column(int, pa.Check.ge(0)),
    "category": pa.Column(str, pa.Check.isin(list("abcde"))),
    "email": pa.Column(str, pa.Check.str_matches(r"^[^@]+@[^@]+\\.[a-z]+$")),
    "score": pa.Column(float, nullable=True),
    "name": pa.Column(str, pa.Check.str_length(max_value=40)),
})
try:
    schema.validate(df, lazy=True)
    bad = set()
except pa.errors.SchemaErrors as exc:
    bad = set(exc.failure_cases["index"].dropna())
good = df[~df.index.isin(bad)]
good.to_parquet(OUT / "pandera.parquet")
""",
    "dlt": """
import dlt, pyarrow.csv as pc
def rows():
    with pc.open_csv(str(CSV)) as reader:
        for batch in reader:
            yield batch
pipe = dlt.pipeline("bench", destination=dlt.destinations.duckdb(str(OUT / "dlt.duckdb")),
                    pipelines_dir=str(OUT / "dlt"), dataset_name="bench")
pipe.run(dlt.resource(rows(), name="rows"))
""",
    "loopline": """
# pandas is here only for the pandera / dlt anchors; loopline does not depend on it, but
# pyarrow imports it whenever it is importable (~0.45 s). Hide it, as on a user's machine.
class NoPandas:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "pandas":
            raise ModuleNotFoundError(name)
sys.meta_path.insert(0, NoPandas())
import yaml
from loopline.config import ContractConfig, DestinationConfig, FileSourceConfig, IngestJobConfig
from loopline.config import config_from_dict
from loopline.ingest.pipeline import IngestPipeline
cfg = config_from_dict({}, project_dir=OUT / "loopline")
job = IngestJobConfig(
    source=FileSourceConfig(type="file", path=str(CSV), incremental=False, batch_size=250_000),
    contract=ContractConfig.model_validate(yaml.safe_load(CONTRACT)),
    cleanse=[{"step": "trim", "columns": ["name"]}, {"step": "dedupe"}],
    destination=DestinationConfig(table="bench"),
)
run = IngestPipeline(cfg, "bench", job).run()
print(f"loopline: read={run.rows_read} written={run.rows_written} "
      f"quarantined={run.rows_quarantined} deduplicated={run.rows_deduplicated}", file=sys.stderr)
""",
}


def compile_loopline() -> None:
    """Byte-compile loopline as an installed package is, so no case pays for compiling
    modules its environment did not cache (``PYTHONDONTWRITEBYTECODE`` after an edit:
    ~15 ms). Found without importing it, which would load Polars into this parent."""
    spec = importlib.util.find_spec("loopline")
    if spec is not None and spec.submodule_search_locations:
        for folder in spec.submodule_search_locations:
            compileall.compile_dir(folder, quiet=1)


def generate_in_child(path: Path, rows: int) -> None:
    """Generate in a child process: numpy and Polars never load into this parent, whose size
    every forked case would otherwise inherit in its peak-RSS reading."""
    code = (
        f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import ingest_files; "
        f"ingest_files.generate(__import__('pathlib').Path({str(path)!r}), {rows})"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def run_case(name: str, csv: Path, out: Path) -> dict[str, float]:
    prelude = (
        "import sys\nfrom pathlib import Path\n"
        f"CSV = Path({str(csv)!r})\nOUT = Path({str(out)!r})\nCONTRACT = {CONTRACT!r}\n"
    )
    env = {**os.environ, "POLARS_MAX_THREADS": "2", "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", prelude + CASES[name]], env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"case {name} failed")
    return {
        "wall": wall,
        "cpu": usage.ru_utime + usage.ru_stime,
        "rss_mib": usage.ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--memory-check", action="store_true")
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs per case; the fastest is shown (shared CPUs)"
    )
    args = parser.parse_args()
    compile_loopline()
    with tempfile.TemporaryDirectory(prefix="loopline-bench-") as tmp:
        tmpdir = Path(tmp)
        csv = tmpdir / "dirty.csv"
        generate_in_child(csv, args.rows)
        print(f"{args.rows:,} rows (+1% duplicates), {csv.stat().st_size / 2**20:.0f} MiB CSV")
        results = {}
        for name in args.cases.split(","):
            runs = []
            for i in range(args.repeat):
                out = tmpdir / f"{name}-{i}"
                out.mkdir()
                runs.append(run_case(name, csv, out))
            results[name] = min(runs, key=lambda r: r["cpu"])
        base = results.get("polars")
        header = ("case", "wall s", "cpu s", "rows/s", "peak MiB", "cpu/polars")
        print("\n{:10} {:>8} {:>8} {:>12} {:>9} {:>11}".format(*header))
        for name, r in results.items():
            ratio = f"{r['cpu'] / base['cpu']:.2f}x" if base else "-"
            print(
                f"{name:10} {r['wall']:8.2f} {r['cpu']:8.2f} {args.rows / r['wall']:12,.0f}"
                f" {r['rss_mib']:9.0f} {ratio:>11}"
            )
        if args.memory_check:
            big = tmpdir / "dirty10x.csv"
            generate_in_child(big, args.rows * 10)
            out = tmpdir / "loopline10x"
            out.mkdir()
            r10 = run_case("loopline", big, out)
            r1 = results["loopline"]
            print(
                f"\nmemory: loopline peak {r1['rss_mib']:.0f} MiB at {args.rows:,} rows, "
                f"{r10['rss_mib']:.0f} MiB at {args.rows * 10:,} rows "
                f"({r10['rss_mib'] / r1['rss_mib']:.2f}x; target <= 1.5x)"
            )


if __name__ == "__main__":
    main()
