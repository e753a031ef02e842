"""Prometheus metrics: counters and histograms per app, served versions, multiprocess mode."""

from __future__ import annotations

import subprocess
import sys
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from loopline.config import config_from_dict
from loopline.serve.app import create_app
from loopline.serve.metrics import ServeMetrics

with warnings.catch_warnings():
    # starlette asks for httpx2 (not installed); the client works the same with httpx
    warnings.simplefilter("ignore", UserWarning)
    from fastapi.testclient import TestClient


def text(metrics: ServeMetrics) -> str:
    body, content_type = metrics.exposition()
    assert content_type.startswith("text/plain")
    return body.decode()


def test_each_instance_has_its_own_registry() -> None:
    first, second = ServeMetrics(), ServeMetrics()
    first.request("/v1/models", "GET", 200, 0.01)
    assert 'route="/v1/models"' in text(first)
    assert 'route="/v1/models"' not in text(second)


def test_requests_latency_predictions_errors() -> None:
    m = ServeMetrics()
    m.request("/v1/models/{name}/predict", "POST", 200, 0.003)
    m.request("/v1/models/{name}/predict", "POST", 422, 0.001)
    m.prediction("churn", "2", "b", rows=5)
    m.prediction("churn", "1", None, rows=1)
    m.error("churn", "SignatureError")
    out = text(m)
    assert (
        'loopline_http_requests_total{method="POST",route="/v1/models/{name}/predict",'
        'status="422"} 1.0'
    ) in out
    assert (
        'loopline_http_request_duration_seconds_bucket{le="0.005",'
        'route="/v1/models/{name}/predict"} 2.0'
    ) in out
    assert 'loopline_predictions_total{model="churn",variant="b",version="2"} 1.0' in out
    assert 'loopline_predictions_total{model="churn",variant="",version="1"} 1.0' in out
    assert 'loopline_rows_scored_total{model="churn"} 6.0' in out
    assert 'loopline_prediction_errors_total{error="SignatureError",model="churn"} 1.0' in out


def test_served_versions_and_swaps_are_read_at_scrape_time() -> None:
    served: list[dict[str, Any]] = [
        {"name": "churn", "alias": "champion", "version": "1", "loaded_at": datetime.now(UTC)},
        {"name": "other", "alias": "champion", "version": None},
    ]
    m = ServeMetrics()
    m.watch_models(lambda: served)
    first = text(m)
    assert 'loopline_model_version{alias="champion",model="churn"} 1.0' in first
    assert 'model="other"' not in first
    assert 'loopline_model_loaded_timestamp_seconds{model="churn",version="1"}' in first
    served[0] = served[0] | {"version": "2"}
    second = text(m)
    assert 'loopline_model_version{alias="champion",model="churn"} 2.0' in second
    assert 'loopline_model_swaps_total{model="churn"} 1.0' in second


def test_multiprocess_mode_merges_the_workers(tmp_path: Path) -> None:
    script = """
from loopline.serve.metrics import ServeMetrics
a, b = ServeMetrics(), ServeMetrics()
assert a.multiprocess
a.request("/health/live", "GET", 200, 0.001)
b.request("/health/live", "GET", 200, 0.001)
body, _ = a.exposition()
print(body.decode())
"""
    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    ).stdout
    assert 'loopline_http_requests_total{method="GET",route="/health/live",status="200"} 2.0' in out
    assert list(tmp_path.glob("counter_*.db"))


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    cfg = config_from_dict({"project": "shop"}, project_dir=tmp_path_factory.mktemp("metrics"))
    with TestClient(create_app(cfg)) as client:
        yield client


def test_metrics_endpoint_counts_requests_by_route_template(client: TestClient) -> None:
    client.get("/health/live")
    client.get("/health/live")
    client.post("/v1/models/anything/predict", json={"row": {}})
    client.get("/no/such/path")
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    out = response.text
    assert 'loopline_http_requests_total{method="GET",route="/health/live",status="200"} 2.0' in out
    assert 'route="/v1/models/{name}/predict"' in out
    assert 'route="/v1/models/anything/predict"' not in out  # templates, not raw paths
    assert 'route="unmatched",status="404"' in out
    assert "loopline_http_request_duration_seconds_bucket" in out
