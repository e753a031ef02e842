"""Naming in SQL: quoted identifiers, checked table names, staging tables, redacted URLs.

Shared by the warehouse engines (DuckDB, PostgreSQL) and whoever builds SQL against them.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from loopline.errors import StoreError

__all__ = ["check_table_name", "quote_ident", "redact_url", "staging_name"]


def quote_ident(name: str) -> str:
    """Quote an identifier for SQL: double quotes, embedded quotes doubled.

    >>> quote_ident('my "odd" table')
    '"my ""odd"" table"'
    """
    return '"' + name.replace('"', '""') + '"'


def check_table_name(table: str) -> str:
    """Return ``table`` if it can name a table, else raise :class:`StoreError`.

    >>> check_table_name("orders")
    'orders'
    """
    if not table or "\x00" in table:
        raise StoreError(
            "invalid table name",
            table=repr(table),
            hint="a table name must be non-empty and contain no NUL character",
        )
    return table


def staging_name(table: str) -> str:
    """The table a ``replace`` run writes into before :meth:`finish_replace` swaps it in."""
    return f"_stage_{table}"


def redact_url(url: str) -> str:
    """``url`` with its password replaced, safe for messages and logs.

    >>> redact_url("postgresql://bob:s3cret@db:5432/x")
    'postgresql://bob:***@db:5432/x'
    """
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))
