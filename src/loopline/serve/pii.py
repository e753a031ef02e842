"""Masking of personal data before a request row is logged or written to the request log.

A field listed in ``serve.request_log.pii_fields`` is replaced by ``"***"`` (the default), or,
given a ``salt``, by ``"sha256:"`` and the first 16 hex digits of the salted SHA-256 of the
value: rows of one person can then still be grouped without keeping what they said. Field
names match case-insensitively; only top-level fields of a row are masked (nested objects
are masked whole when their key is listed). ``None`` stays ``None`` (nothing to hide).

>>> mask_pii({"email": "a@b.c", "Tenure": 3, "name": None}, ["EMAIL", "name"])
{'email': '***', 'Tenure': 3, 'name': None}
>>> mask_pii({"email": "a@b.c"}, ["email"], salt="s3cret")
{'email': 'sha256:74d86fd819e24462'}
>>> mask_rows([{"email": "x"}, {"email": "y"}], ["email"])
[{'email': '***'}, {'email': '***'}]
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

MASK = "***"
"""What a masked value reads as without a salt."""


class PiiMask:
    """A reusable mask for one list of field names (lower-cased once).

    >>> PiiMask(["ssn"])({"SSN": "123", "x": 1})
    {'SSN': '***', 'x': 1}
    >>> bool(PiiMask([]))
    False
    """

    __slots__ = ("fields", "salt")

    def __init__(self, fields: Iterable[str], *, salt: str | None = None) -> None:
        self.fields = frozenset(f.lower() for f in fields)
        self.salt = salt

    def __bool__(self) -> bool:
        return bool(self.fields)

    def __call__(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """A copy of ``row`` with the PII fields masked (``row`` itself is not changed)."""
        if not self.fields:
            return dict(row)
        return {
            key: self._mask(value) if key.lower() in self.fields else value
            for key, value in row.items()
        }

    def rows(self, rows: Any) -> Any:
        """``rows`` (a list of dicts, one dict, or anything else) with PII fields masked."""
        if not self.fields:
            return rows
        if isinstance(rows, Mapping):
            return self(rows)
        if isinstance(rows, list | tuple):
            return [self(r) if isinstance(r, Mapping) else r for r in rows]
        return rows

    def _mask(self, value: Any) -> Any:
        if value is None:
            return None
        if self.salt is None:
            return MASK
        digest = hashlib.sha256(f"{self.salt}\x1f{value}".encode()).hexdigest()
        return f"sha256:{digest[:16]}"


def mask_pii(
    row: Mapping[str, Any], fields: Iterable[str], *, salt: str | None = None
) -> dict[str, Any]:
    """A copy of ``row`` with ``fields`` masked (see the module docstring)."""
    return PiiMask(fields, salt=salt)(row)


def mask_rows(rows: Any, fields: Iterable[str], *, salt: str | None = None) -> Any:
    """Every row of ``rows`` (list of dicts or one dict) with ``fields`` masked."""
    return PiiMask(fields, salt=salt).rows(rows)
