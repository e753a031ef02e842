"""``loopline init``: a small working project folder to start from.

>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp()) / "shop"
>>> sorted(p.name for p in scaffold_project(d))
['customers.csv', 'customers.yaml', 'loopline.yaml']
"""

from __future__ import annotations

from pathlib import Path

from loopline.errors import ConfigError

CONFIG = """\
# loopline project: see docs/configuration.md for every field.
project: {name}

stores:                      # embedded defaults; LOOPLINE_*_URL environment variables override
  metadata_url: sqlite:///.loopline/metadata.db
  warehouse_url: duckdb:///.loopline/warehouse.duckdb
  lake_url: .loopline/lake

sources:
  customers:
    type: file
    path: data/*.csv          # a file, a glob or a folder; .gz / .zst work too
    incremental: true         # files already ingested (path + size + hash) are skipped

contracts:
  customers:
    columns:
      customer_id: {{type: int64, nullable: false, unique: true}}
      email: {{type: string, regex: "^[^@\\\\s]+@[^@\\\\s]+\\\\.[a-z]+$"}}
      signup_date: date
      monthly_spend: {{type: float64, min: 0}}
      plan: {{type: string, allowed: [basic, plus, pro]}}

ingest:
  customers:
    source: customers
    contract: customers
    cleanse:
      - {{step: trim}}
      - {{step: case, columns: [email, plan], to: lower}}
      - {{step: dedupe, key: [customer_id]}}
    destination: {{table: customers, mode: merge, key: [customer_id]}}
"""

SAMPLE = """\
customer_id,email,signup_date,monthly_spend,plan
1,ana@example.com,2024-01-05,29.5,basic
2, BEN@EXAMPLE.COM ,2024-02-11,49,plus
3,not-an-email,2024-03-02,19.9,basic
4,dee@example.com,N/A,-5,pro
5,eve@example.com,2024-05-20,??,gold
"""


def scaffold_project(folder: Path) -> list[Path]:
    """Write loopline.yaml, a contract file and a sample CSV into ``folder``; returns them.

    Refuses to overwrite an existing loopline.yaml.
    """
    config = folder / "loopline.yaml"
    if config.exists():
        raise ConfigError(f"{config} already exists", hint="choose an empty folder")
    (folder / "data").mkdir(parents=True, exist_ok=True)
    (folder / "contracts").mkdir(exist_ok=True)
    config.write_text(CONFIG.format(name=folder.resolve().name), encoding="utf-8")
    sample = folder / "data" / "customers.csv"
    sample.write_text(SAMPLE, encoding="utf-8")
    contract = folder / "contracts" / "customers.yaml"
    contract.write_text(
        "# the same contract as in loopline.yaml, for: loopline ingest FILE --into T --contract\n"
        + "columns:\n  customer_id: {type: int64, nullable: false}\n  monthly_spend: float64\n",
        encoding="utf-8",
    )
    return [config, sample, contract]
