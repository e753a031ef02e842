"""Write the demo workspace: dirty CSV, JSON, XML files, a SQLite database, reviews data.

Every source has realistic faults — null tokens, bad e-mails, out-of-range numbers,
duplicates, mixed types, unit conversions — so the contracts have something to catch.
The data is seeded: the same workspace every time.
"""

from __future__ import annotations

import gzip
import json
import random
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

FIRST = ["Ana", "Björn", "Chloé", "Dário", "Eva", "Fátima", "Gus", "Hélène", "Ivan", "Jürgen"]
LAST = ["Silva", "Müller", "Durand", "Rossi", "Novák", "García", "Smith", "Øster"]
PLANS = ["basic", "plus", "pro"]
CATEGORIES = ["garden", "kitchen", "office", "toys"]
START = datetime(2025, 1, 1, tzinfo=UTC)


def _customers(rng: random.Random, n: int) -> str:
    lines = ["customer_id;name;email;signup_date;monthly_spend;plan"]
    for i in range(1, n + 1):
        name = f"{rng.choice(FIRST)} {rng.choice(LAST)}"
        email = f"{name.split()[0].lower()}.{i}@example.com"
        spend = f"{rng.uniform(5, 120):.2f}"
        plan = rng.choice(PLANS)
        date = (START + timedelta(days=rng.randrange(600))).date().isoformat()
        fault = rng.random()
        if fault < 0.04:
            email = "not-an-email"
        elif fault < 0.07:
            spend = rng.choice(["N/A", "??", "-"])
        elif fault < 0.09:
            spend = f"-{spend}"
        elif fault < 0.11:
            plan = rng.choice(["GOLD", " Pro ", "PLUS"])
        elif fault < 0.12:
            date = "31/02/2025"
        lines.append(f'{i};"{name}";  {email} ;{date};{spend};{plan}')
        if rng.random() < 0.02:
            lines.append(lines[-1])
    return "\n".join(lines) + "\n"


def _orders(rng: random.Random, n: int, customers: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for i in range(1, n + 1):
        amount: Any = round(rng.lognormvariate(3.5, 0.6), 2)
        if rng.random() < 0.03:
            amount = rng.choice(["??", "twelve", str(amount)])
        if rng.random() < 0.01:
            amount = 250_000.0
        rows.append(
            {
                "order_id": i,
                "customer_id": rng.randint(1, customers),
                "amount": amount,
                "currency": rng.choice(["EUR", "EUR", "EUR", "USD", "usd"]),
                "status": rng.choice(["paid", "paid", "shipped", "refunded", "lost?"]),
                "created_at": (START + timedelta(minutes=rng.randrange(900_000))).isoformat(),
                "shipping": {"city": rng.choice(["Lisbon", "Berlin", "Lyon"]), "zip": None},
            }
        )
    return rows


def _products_xml(rng: random.Random, n: int) -> str:
    parts = ['<?xml version="1.0" encoding="UTF-8"?>', "<catalog>"]
    for i in range(1, n + 1):
        weight = f"{rng.uniform(0.1, 40):.2f}" if rng.random() > 0.05 else "heavy"
        price = f"{rng.uniform(1, 300):.2f}"
        cat = rng.choice(CATEGORIES)
        parts.append(
            f'  <product sku="P{i:04d}"><name>{escape(rng.choice(LAST))} {cat} item</name>'
            f"<category>{cat}</category><price>{price}</price>"
            f"<weight_lb>{weight}</weight_lb></product>"
        )
    parts.append("</catalog>")
    return "\n".join(parts) + "\n"


def _payments_db(path: Path, rng: random.Random, n: int) -> None:
    path.unlink(missing_ok=True)
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE payments (payment_id INTEGER PRIMARY KEY, order_id INTEGER,"
            " amount REAL, method TEXT, paid_at TEXT)"
        )
        db.executemany(
            "INSERT INTO payments VALUES (?, ?, ?, ?, ?)",
            [
                (
                    i,
                    rng.randint(1, 3000),
                    round(rng.uniform(-5, 400), 2),
                    rng.choice(["card", "card", "paypal", "transfer", None]),
                    (START + timedelta(minutes=7 * i)).isoformat(),
                )
                for i in range(1, n + 1)
            ],
        )


def reviews(seed: int = 7, n: int = 420) -> list[dict[str, Any]]:
    """The records the demo's local reviews API serves."""
    rng = random.Random(seed)
    return [
        {
            "review_id": i,
            "sku": f"P{rng.randint(1, 400):04d}",
            "rating": rng.choice([1, 2, 3, 4, 4, 5, 5, 5, 0, 7]),
            "text": rng.choice(["great", "ok", "broke after a week", "", "N/A"]),
            "created_at": (START + timedelta(hours=i)).isoformat(),
        }
        for i in range(1, n + 1)
    ]


def write_workspace(folder: Path, *, seed: int = 7) -> Path:
    """Write the demo's data files under ``folder/data``; returns that folder."""
    rng = random.Random(seed)
    data = folder / "data"
    data.mkdir(parents=True, exist_ok=True)
    (data / "customers.csv").write_bytes(_customers(rng, 1200).encode("latin-1"))
    lines = "".join(json.dumps(row) + "\n" for row in _orders(rng, 3000, 1200))
    # mtime=0: the same bytes every time, so a re-run sees an already-ingested file.
    with gzip.GzipFile(data / "orders.ndjson.gz", "wb", mtime=0) as fh:
        fh.write(lines.encode("utf-8"))
    (data / "products.xml").write_text(_products_xml(rng, 400), encoding="utf-8")
    _payments_db(data / "shop.db", rng, 2500)
    return data
