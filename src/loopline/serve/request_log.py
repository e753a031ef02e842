"""The request log: predictions, feedback, events and A/B exposures, written in the background.

Every method is non-blocking: it puts one small tuple on a bounded queue and returns; a
writer thread drains the queue every ``flush_interval`` seconds (or sooner, once a batch is
full), masks PII fields, and inserts each table's rows with one ``executemany``. A full
queue drops the row and counts it (``dropped``): a slow database never slows a request.
:meth:`RequestLog.close` writes everything still queued.

Sampling (``sample_rate`` < 1) is decided by a hash of the request id, so a prediction and
its feedback are kept or dropped together; events by a hash of the user id (a user's events
are all kept or all dropped). Exposures are not sampled (the A/B report's denominators), and
are logged once per (experiment, unit) per process: an LRU set of the last
``EXPOSURE_MEMORY`` pairs remembers which were.

>>> import tempfile
>>> from pathlib import Path
>>> from loopline.config.serving import RequestLogConfig
>>> from loopline.store.metadata import MetadataStore
>>> store = MetadataStore("sqlite:///m.db", base_dir=Path(tempfile.mkdtemp()))
>>> rl = RequestLog(RequestLogConfig(pii_fields=["email"]), store)
>>> rl.start()
>>> rl.feedback(request_id="r1", label="Yes", unit="u1")
>>> rl.close()
>>> rl.written, rl.dropped
(1, 0)
>>> store.close()
"""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from loopline.config.serving import RequestLogConfig
from loopline.serve.experiments import Assignment
from loopline.serve.log_tables import (
    ab_exposures,
    ensure_tables,
    serve_events,
    serve_feedback,
    serve_requests,
)
from loopline.serve.pii import PiiMask
from loopline.store.metadata import MetadataStore

log = logging.getLogger(__name__)

EXPOSURE_MEMORY = 100_000
"""(experiment, unit) pairs remembered per process so an exposure is logged once."""
BATCH_ROWS = 2_000
"""Rows written in one transaction at most; a fuller queue is written in several."""
_SCALE = float(2**64)

_Item = tuple[str, tuple[Any, ...]]
"""(kind, raw fields): built on the request path, turned into a row by the writer."""


def sampled(key: str, rate: float) -> bool:
    """Whether ``key`` (request id, user id) falls in the sampled share ``rate``.

    >>> sampled("req-1", 1.0), sampled("req-1", 0.0)
    (True, False)
    >>> sum(sampled(f"req-{i}", 0.25) for i in range(10_000))
    2496
    """
    if rate >= 1.0:
        return True
    if rate <= 0.0:
        return False
    digest = hashlib.blake2b(key.encode(), digest_size=8, person=b"loopline-log").digest()
    return int.from_bytes(digest, "big") / _SCALE < rate


class RequestLog:
    """Logs serving traffic to the metadata database (see the module docstring).

    ``written`` and ``dropped`` count rows (for the server's metrics); ``failed`` counts
    rows lost because the database refused a batch (logged as a warning).
    """

    def __init__(self, config: RequestLogConfig, metadata: MetadataStore | None) -> None:
        self.config = config
        self.metadata = metadata
        self.enabled = config.enabled and metadata is not None
        self.written = 0
        self.dropped = 0
        self.failed = 0
        self._rate = config.sample_rate
        self._mask = PiiMask(config.pii_fields)
        self._queue: queue.Queue[_Item] = queue.Queue(maxsize=config.queue_size)
        self._seen: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._lock = threading.Lock()
        self._writing = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if self.enabled and metadata is not None:
            ensure_tables(metadata)

    def start(self) -> None:
        """Start the writer thread (idempotent; a disabled log starts nothing)."""
        if not self.enabled or (self._thread is not None and self._thread.is_alive()):
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="loopline-request-log", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop the writer after it has written every queued row."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._write_all()

    def flush(self) -> None:
        """Write every row queued so far before returning (from the calling thread)."""
        self._write_all()

    @property
    def pending(self) -> int:
        """Rows queued and not yet written."""
        return self._queue.qsize()

    # -- the request path: cheap, never blocks ----------------------------------------

    def prediction(
        self,
        *,
        request_id: str,
        model: str,
        version: str,
        rows: Any,
        prediction: Any,
        latency_ms: float,
        assignment: Assignment | None,
        shadow: bool = False,
        unit: str | None = None,
    ) -> None:
        """Log one scored request (``shadow``: a shadow challenger's answer, not served).

        ``rows`` are the request's input rows (PII fields masked before writing);
        ``prediction`` a :class:`~loopline.serve.loaded_model.Prediction` or a JSON-ready
        dict of outputs; ``unit`` the A/B unit id.
        """
        if not self.enabled or not sampled(request_id, self._rate):
            return
        raw = (request_id, time.time(), model, version, assignment, unit, shadow, rows)
        self._put(("request", (*raw, prediction, latency_ms)))

    def exposure(self, assignment: Assignment, unit: str, request_id: str) -> None:
        """Log that ``unit`` was served ``assignment``'s variant: once per process."""
        if not self.enabled:
            return
        key = (assignment.experiment, unit)
        with self._lock:
            if key in self._seen:
                self._seen.move_to_end(key)
                return
            self._seen[key] = None
            if len(self._seen) > EXPOSURE_MEMORY:
                self._seen.popitem(last=False)
        raw = (time.time(), assignment.experiment, assignment.variant, unit, request_id)
        self._put(("exposure", raw))

    def feedback(self, *, request_id: str, label: Any, unit: str | None) -> None:
        """Log a label for a request id (sampled with the request it belongs to)."""
        if not self.enabled or not sampled(request_id, self._rate):
            return
        self._put(("feedback", (request_id, time.time(), label, unit)))

    def event(
        self,
        *,
        user: str,
        item: str,
        event_type: str,
        timestamp: datetime,
        assignment: Assignment | None,
    ) -> None:
        """Log a recommender event with the user's experiment variant, if any."""
        if not self.enabled or not sampled(user, self._rate):
            return
        self._put(("event", (timestamp, user, item, event_type, assignment)))

    def _put(self, item: _Item) -> None:
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            with self._lock:
                self.dropped += 1

    # -- the writer thread ------------------------------------------------------------

    def _run(self) -> None:
        interval = self.config.flush_interval
        while not self._stop.wait(interval):
            self._write_all()

    def _write_all(self) -> None:
        # one writer at a time: flush() returns only after a batch the writer thread has
        # already taken off the queue is committed too
        with self._writing:
            while True:
                items = self._drain(BATCH_ROWS)
                if not items:
                    return
                self._write(items)

    def _drain(self, limit: int) -> list[_Item]:
        items: list[_Item] = []
        get = self._queue.get_nowait
        try:
            while len(items) < limit:
                items.append(get())
        except queue.Empty:
            pass
        return items

    def _write(self, items: list[_Item]) -> None:
        batches: dict[str, list[dict[str, Any]]] = {}
        for kind, raw in items:
            try:
                row = _BUILDERS[kind](self, raw)
            except (TypeError, ValueError, AttributeError) as exc:
                log.warning("request log: %s row not logged: %s", kind, exc)
                self.failed += 1
                continue
            batches.setdefault(kind, []).append(row)
        if not batches or self.metadata is None:
            return
        try:
            with self.metadata.engine.begin() as conn:
                for kind, rows in batches.items():
                    conn.execute(_TABLES[kind].insert(), rows)
        except sa.exc.SQLAlchemyError as exc:
            lost = sum(len(r) for r in batches.values())
            self.failed += lost
            log.warning("request log: %d row(s) not written: %s", lost, exc)
            return
        self.written += sum(len(r) for r in batches.values())

    def _request_row(self, raw: tuple[Any, ...]) -> dict[str, Any]:
        request_id, at, model, version, assignment, unit, shadow, rows, prediction, ms = raw
        return {
            "request_id": request_id,
            "time": _utc(at),
            "model": model,
            "version": str(version),
            "experiment": assignment.experiment if assignment else None,
            "variant": assignment.variant if assignment else None,
            "unit_id": unit,
            "shadow": bool(shadow),
            "inputs": self._mask.rows(rows),
            "outputs": _outputs(prediction),
            "latency_ms": float(ms),
        }

    def _exposure_row(self, raw: tuple[Any, ...]) -> dict[str, Any]:
        at, experiment, variant, unit, request_id = raw
        return {
            "time": _utc(at),
            "experiment": experiment,
            "variant": variant,
            "unit_id": unit,
            "request_id": request_id,
        }

    def _feedback_row(self, raw: tuple[Any, ...]) -> dict[str, Any]:
        request_id, at, label, unit = raw
        return {"request_id": request_id, "time": _utc(at), "label": label, "unit_id": unit}

    def _event_row(self, raw: tuple[Any, ...]) -> dict[str, Any]:
        timestamp, user, item, event_type, assignment = raw
        # UTC everywhere: SQLite keeps the wall-clock text, and the report compares times
        if timestamp.tzinfo is None:
            timestamp = timestamp.replace(tzinfo=UTC)
        else:
            timestamp = timestamp.astimezone(UTC)
        return {
            "time": timestamp,
            "user": user,
            "item": item,
            "event_type": event_type,
            "experiment": assignment.experiment if assignment else None,
            "variant": assignment.variant if assignment else None,
        }


_BUILDERS: dict[str, Callable[[RequestLog, tuple[Any, ...]], dict[str, Any]]] = {
    "request": RequestLog._request_row,
    "exposure": RequestLog._exposure_row,
    "feedback": RequestLog._feedback_row,
    "event": RequestLog._event_row,
}
_TABLES = {
    "request": serve_requests,
    "exposure": ab_exposures,
    "feedback": serve_feedback,
    "event": serve_events,
}
_OUTPUT_FIELDS = ("predictions", "probabilities", "labels", "threshold")


def _utc(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def _outputs(prediction: Any) -> Any:
    """The JSON-ready outputs of a Prediction (or a dict / list given as is)."""
    if prediction is None or isinstance(prediction, dict | list):
        return prediction
    return {f: getattr(prediction, f, None) for f in _OUTPUT_FIELDS}
