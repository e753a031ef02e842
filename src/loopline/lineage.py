"""Lineage columns carried by every ingested row, and the batch id that names a chunk.

>>> batch_id("orders", "abc:0") == batch_id("orders", "abc:0")
True
"""

from __future__ import annotations

import hashlib

SOURCE = "_source"
BATCH_ID = "_batch_id"
INGESTED_AT = "_ingested_at"
COLUMNS = (SOURCE, BATCH_ID, INGESTED_AT)


def batch_id(job: str, position: str) -> str:
    """Deterministic id of a chunk: the same job reading the same input gives the same id."""
    return hashlib.sha256(f"{job}\x00{position}".encode()).hexdigest()[:24]


def is_lineage(column: str) -> bool:
    """Lineage and other loopline-internal columns start with an underscore."""
    return column.startswith("_")
