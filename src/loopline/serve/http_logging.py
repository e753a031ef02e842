"""The server's logs as JSON lines: one per request (with its request id), plus errors.

:class:`JsonFormatter` turns a log record into one JSON object (``ts``, ``level``,
``logger``, ``msg`` and the request fields given as ``extra=``); a ``payload`` field (request
rows) has the configured PII fields masked first. :func:`configure_logging` installs it on the
root logger; ``loopline serve`` calls it and turns uvicorn's own access log off, because
:data:`access_log` writes one line per request instead.

>>> import logging
>>> formatter = JsonFormatter(pii_fields=["email"])
>>> record = logging.LogRecord("loopline.serve.access", logging.INFO, __file__, 1, "request",
...                            None, None)
>>> record.request_id, record.status = "r1", 200
>>> record.payload = [{"email": "a@b.c", "tenure": 3}]
>>> line = formatter.format(record)
>>> '"request_id":"r1"' in line, '"status":200' in line, '"email":"***"' in line
(True, True, True)
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import orjson

from loopline.serve.pii import PiiMask

__all__ = ["REQUEST_FIELDS", "JsonFormatter", "access_log", "configure_logging"]

access_log = logging.getLogger("loopline.serve.access")
"""One INFO line per answered request (fields in :data:`REQUEST_FIELDS`)."""

REQUEST_FIELDS = (
    "request_id",
    "method",
    "path",
    "status",
    "latency_ms",
    "caller",
    "model",
    "version",
    "variant",
    "payload",
)


class JsonFormatter(logging.Formatter):
    """One JSON object per record; request fields from ``extra=``, PII masked in payloads."""

    def __init__(self, pii_fields: Iterable[str] = ()) -> None:
        super().__init__()
        self._mask = PiiMask(pii_fields)

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for name in REQUEST_FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                entry[name] = value
        if "payload" in entry:
            entry["payload"] = self._mask.rows(entry["payload"])
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def configure_logging(level: int = logging.INFO, pii_fields: Iterable[str] = ()) -> None:
    """Log JSON lines to stderr from the root logger (the server's entry point calls this)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(pii_fields))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logging.getLogger("loopline").setLevel(level)
    for name in ("uvicorn", "uvicorn.error"):
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers.clear()
        uvicorn_logger.propagate = True
        uvicorn_logger.setLevel(level)
    logging.getLogger("uvicorn.access").disabled = True
