"""Shared fixtures: real service URLs with one isolated schema / database per test."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from urllib.parse import urlparse

import pytest
import sqlalchemy as sa

SERVICE_URLS = {
    "postgres": "postgresql+psycopg://postgres@127.0.0.1:5432/test",
    "mariadb": "mysql+pymysql://root@127.0.0.1:3306/test",
    "redis": "redis://127.0.0.1:6379/0",
    "rabbitmq": "amqp://guest:guest@127.0.0.1:5672/",
    "mqtt": "mqtt://127.0.0.1:1883",
    "nats": "nats://127.0.0.1:4222",
}


def service_url(service: str) -> str:
    """The URL of a real service: ``LOOPLINE_TEST_<SERVICE>_URL`` or the standard port.

    Unreachable: fails under CI=true (CI must have it), skips with the reason elsewhere.
    """
    url = os.environ.get(f"LOOPLINE_TEST_{service.upper()}_URL", SERVICE_URLS[service])
    parsed = urlparse(url)
    host, port = parsed.hostname or "127.0.0.1", parsed.port
    try:
        with socket.create_connection((host, port or 0), timeout=2):
            pass
    except OSError as exc:
        reason = f"{service} is not reachable at {host}:{port} ({exc}); see shared/services.md"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return url


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a fresh schema, dropped after the test."""
    base = service_url("postgres")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(base)
    with engine.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in base else "?"
    yield f"{base}{sep}options=-csearch_path%3D{schema}"
    with engine.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
    engine.dispose()


@pytest.fixture
def mariadb_url() -> Iterator[str]:
    """A MariaDB URL on a fresh database, dropped after the test."""
    base = service_url("mariadb")
    name = f"t_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(base)
    with engine.begin() as conn:
        conn.execute(sa.text(f"CREATE DATABASE `{name}`"))
    yield base.rsplit("/", 1)[0] + f"/{name}"
    with engine.begin() as conn:
        conn.execute(sa.text(f"DROP DATABASE `{name}`"))
    engine.dispose()
