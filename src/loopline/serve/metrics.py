"""Prometheus metrics of the server: requests, latency, predictions, errors, served versions.

Each app owns a :class:`ServeMetrics` with its own ``CollectorRegistry`` (two apps in one
process never share counters). With several uvicorn workers, ``PROMETHEUS_MULTIPROC_DIR``
must name an empty folder *before* ``prometheus_client`` is imported (``loopline serve``
sets it); every worker then writes its samples there and ``GET /metrics`` merges them.

>>> m = ServeMetrics()
>>> m.request("/v1/models", "GET", 200, 0.004)
>>> m.prediction("churn", "2", "b", rows=3)
>>> text = m.exposition()[0].decode()
>>> 'loopline_http_requests_total{method="GET",route="/v1/models",status="200"} 1.0' in text
True
>>> 'loopline_rows_scored_total{model="churn"} 3.0' in text
True
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

__all__ = ["CONTENT_TYPE_LATEST", "ServeMetrics"]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class _ServedModels(Collector):
    """Scrape-time view of the served models: current version and when it was loaded,
    plus a count of the swaps this process has seen (a changed version between scrapes)."""

    def __init__(self, served: Callable[[], Sequence[dict[str, Any]]]) -> None:
        self._served = served
        self._seen: dict[str, str] = {}
        self._swaps: dict[str, int] = {}
        self._lock = threading.Lock()

    def collect(self) -> Iterator[Any]:
        version = GaugeMetricFamily(
            "loopline_model_version",
            "Version currently served for each model (the alias's target).",
            labels=["model", "alias"],
        )
        loaded = GaugeMetricFamily(
            "loopline_model_loaded_timestamp_seconds",
            "When the served version was loaded (Unix time).",
            labels=["model", "version"],
        )
        swaps = CounterMetricFamily(
            "loopline_model_swaps",
            "Times the served version of a model changed (seen at scrape time).",
            labels=["model"],
        )
        with self._lock:
            for entry in self._served():
                name, current = str(entry.get("name")), entry.get("version")
                if current is None:
                    continue
                current = str(current)
                if current.isdigit():  # a non-numeric version has no gauge value
                    version.add_metric([name, str(entry.get("alias", ""))], float(current))
                stamp = _timestamp(entry.get("loaded_at"))
                if stamp is not None:
                    loaded.add_metric([name, current], stamp)
                previous = self._seen.get(name)
                if previous is not None and previous != current:
                    self._swaps[name] = self._swaps.get(name, 0) + 1
                self._seen[name] = current
            for name, count in self._swaps.items():
                swaps.add_metric([name], count)
        yield from (version, loaded, swaps)


def _timestamp(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    stamp = getattr(value, "timestamp", None)
    return float(stamp()) if callable(stamp) else None


class ServeMetrics:
    """The server's counters and histograms, registered on one ``CollectorRegistry``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self.multiprocess = bool(os.environ.get(MULTIPROC_ENV))
        self._served_collector: _ServedModels | None = None
        r = self.registry
        self.requests = Counter(
            "loopline_http_requests",
            "HTTP requests by route template, method and status code.",
            ["route", "method", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "loopline_http_request_duration_seconds",
            "Time from the request's first byte to the response's last, by route template.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.predictions = Counter(
            "loopline_predictions",
            "Prediction requests answered, by model, version and A/B variant ('' if none).",
            ["model", "version", "variant"],
            registry=r,
        )
        self.rows = Counter("loopline_rows_scored", "Rows scored, by model.", ["model"], registry=r)
        self.errors = Counter(
            "loopline_prediction_errors",
            "Failed prediction requests, by model and error kind.",
            ["model", "error"],
            registry=r,
        )
        self.shadow = Counter(
            "loopline_shadow_predictions",
            "Shadow (challenger) scorings, by model, version and outcome (ok / error).",
            ["model", "version", "outcome"],
            registry=r,
        )
        # label values -> their children (bounded: route templates, status codes, versions)
        self._request_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self._prediction_children: dict[tuple[str, str, str], tuple[Any, Any]] = {}

    def request(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one answered request and observe its latency."""
        key = (route, method, status)
        children = self._request_children.get(key)
        if children is None:  # labels() checks and locks: once per label set, not per request
            counter = self.requests.labels(route, method, str(status))
            children = (counter, self.latency.labels(route))
            self._request_children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def prediction(self, model: str, version: str, variant: str | None, *, rows: int) -> None:
        """Count one answered prediction request of ``rows`` rows."""
        key = (model, version, variant or "")
        children = self._prediction_children.get(key)
        if children is None:
            children = (self.predictions.labels(*key), self.rows.labels(model))
            self._prediction_children[key] = children
        children[0].inc()
        children[1].inc(rows)

    def error(self, model: str, error: str) -> None:
        self.errors.labels(model, error).inc()

    def watch_models(self, served: Callable[[], Sequence[dict[str, Any]]]) -> None:
        """Report the served versions (``ModelHost.served``) at every scrape."""
        if self._served_collector is not None and not self.multiprocess:
            self.registry.unregister(self._served_collector)
        self._served_collector = _ServedModels(served)
        if not self.multiprocess:
            self.registry.register(self._served_collector)

    def exposition(self) -> tuple[bytes, str]:
        """The Prometheus text of every metric (merged over the workers in multiprocess mode)
        and its content type."""
        if not self.multiprocess:
            return generate_latest(self.registry), CONTENT_TYPE_LATEST
        from prometheus_client import multiprocess

        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
        extra: Iterable[Collector] = [self._served_collector] if self._served_collector else []
        for collector in extra:  # this worker's view of the served models
            merged.register(collector)
        return generate_latest(merged), CONTENT_TYPE_LATEST
