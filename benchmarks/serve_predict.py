"""Benchmark: single-row churn predictions over HTTP, loopline serve beside its anchors.

Run: ``.venv/bin/python benchmarks/serve_predict.py`` (``--models trained,light``,
``--seconds 10``, ``--concurrency 1,32``, ``--generator python``, ``--skip mlflow``).
Load comes from ``wrk`` when it is on PATH (``apt-get install wrk``), else from the Python
generator of ``serve_load.py``; both keep N HTTP/1.1 connections busy (closed loop).

Project: a temporary folder. ``trained``: the churn model trained by loopline's own
training job on IBM Telco churn (``telco_churn``, 7,043 rows, loaded through
``load_into_warehouse``) with one candidate (logistic regression, no search, 2-fold CV),
registered and promoted to ``champion`` like the demo does: a 19-column pipeline (impute,
scale, one-hot with infrequent categories, FunctionTransformers) whose ``predict_proba``
costs ~9-12 ms of CPU per single-row call on this machine (scikit-learn 1.9 validates
each of the ten pandas string columns on its own). ``light`` (``--models trained,light``):
a plain scikit-learn pipeline (median impute + scale, one-hot, logistic regression) on the
same columns, logged with ``Tracker.log_model(signature_from=...)`` and registered as
``churn_light`` with the same tags; on this stack it costs about as much per row.

Servers, one after another (never two under load at once), each pinned to CPU 1 with one
BLAS / OpenMP thread, the load generator pinned to CPU 0 (``--no-pin``: no pinning):
  mlflow    ``mlflow models serve -m models:/NAME@champion --env-manager local`` (uvicorn,
            1 worker), body ``{"dataframe_records": [row]}``
  bare      ``serve_bare_app.py``: FastAPI + uvicorn, one async route that only calls
            ``model.predict_proba(pd.DataFrame([row]))`` (no validation, auth or logging)
  loopline  ``loopline serve`` (1 worker, JSON logs at info) with an API key, /metrics and
            the request log on (sample rate 1.0, into the project's metadata DB), body
            ``{"row": row}``; where the CLI has no ``serve`` command yet, a child of this
            script does what it does (uvicorn on ``create_app``, the same logging)
Requests cycle through 64 different Telco rows. Per server and concurrency: a 2 s warm-up,
then ``--seconds`` of load: requests/s, p50 / p99 latency, errors, and the server's CPU
time per request (user + system of the server's process tree, from /proc, over the
measured window, divided by the requests answered).

Targets (issue 5, at concurrency 32): loopline ≥ 5x MLflow's requests/s, loopline CPU per
request ≤ 1.5x the bare app's, loopline p99 ≤ 50 ms. The machine has 2 cores shared with
everything else running on it: numbers are noisy, compare ratios from the same run.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from serve_load import (
    LoadSpec,
    RequestTemplate,
    ServerRun,
    format_result,
    format_server,
    free_port,
    load_server,
    one_core_estimate,
    pick_generator,
    server,
)

HERE = Path(__file__).resolve()
LOOPLINE = Path(sys.executable).with_name("loopline")
API_KEY = "bench-secret-key"
SERVERS = ("mlflow", "bare", "loopline")
TARGETS = {"throughput_x_mlflow": 5.0, "cpu_x_bare": 1.5, "p99_ms": 50.0}
MODELS = {"trained": "churn", "light": "churn_light"}

BASE_CONFIG: dict[str, Any] = {
    "project": "serve-bench",
    "stores": {
        "metadata_url": "sqlite:///.loopline/metadata.db",
        "warehouse_url": "duckdb:///.loopline/warehouse.duckdb",
    },
    "train": {
        "churn": {
            "table": "telco_churn",
            "target": "churn",
            "drop": ["rownames"],
            "candidates": [{"name": "logistic"}],
            "search": {"method": "none"},
            "validation": {"cv": "stratified", "folds": 2},
            "register_as": "churn",
        }
    },
}


# -- the project -------------------------------------------------------------------------------


def write_config(folder: Path, serve: dict[str, Any] | None = None) -> None:
    config = dict(BASE_CONFIG)
    if serve is not None:
        config["serve"] = serve
    (folder / "loopline.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def train_churn(folder: Path) -> float:
    """loopline's training job on Telco churn, registered and promoted; its wall seconds."""
    from loopline.config import load_config
    from loopline.datasets import load_into_warehouse
    from loopline.demo.training import promote_challengers
    from loopline.train.job import TrainingJob

    began = time.perf_counter()
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    config = load_config(folder)
    load_into_warehouse("telco_churn", config)
    result = TrainingJob(config, "churn").run()
    promotions = promote_challengers(config, [result.model_name or "churn"])
    if not any(p.promoted for p in promotions):
        raise SystemExit(f"the trained churn model was not promoted: {promotions}")
    return time.perf_counter() - began


def log_light(folder: Path) -> float:
    """A small scikit-learn pipeline on the same columns, logged, registered, champion."""
    from sklearn.compose import ColumnTransformer, make_column_selector
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline, make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    from loopline.config import load_config
    from loopline.datasets import load_frame
    from loopline.evaluate.model_tags import ModelTags
    from loopline.registry import ModelRegistry
    from loopline.store.tracking import Tracker

    began = time.perf_counter()
    config = load_config(folder)
    frame = load_frame("telco_churn")
    X, y = frame.drop(columns=["rownames", "churn"]), frame["churn"]
    pre = ColumnTransformer(
        [
            (
                "numeric",
                make_pipeline(SimpleImputer(strategy="median"), StandardScaler()),
                make_column_selector(dtype_include="number"),
            ),
            (
                "categorical",
                OneHotEncoder(handle_unknown="ignore"),
                make_column_selector(dtype_exclude="number"),
            ),
        ]
    )
    model = Pipeline([("preprocess", pre), ("model", LogisticRegression(max_iter=2000))])
    model.fit(X, y)
    tracker = Tracker(config.tracking, base_dir=folder, experiment=config.project)
    registry = ModelRegistry(tracker)
    sample = X.head(50)
    with tracker.start_run("churn-light") as run:
        uri = run.log_model(
            model, signature_from=(sample, model.predict(sample)), input_example=sample.head(5)
        )
    name = MODELS["light"]
    info = registry.register(name, uri, run_id=run.run_id)
    tags = ModelTags(
        target="churn",
        task="binary",
        primary_metric="roc_auc",
        threshold=0.5,
        positive_class="Yes",
        classes=["No", "Yes"],
        holdout_metrics={},
    ).to_tags()
    for tag, value in tags.items():
        tracker.client.set_model_version_tag(name, info.version, tag, value)
    tracker.client.set_registered_model_alias(name, "champion", info.version)
    return time.perf_counter() - began


def request_rows(n: int = 64) -> list[dict[str, Any]]:
    """``n`` Telco rows (no missing values) as JSON-ready dicts, the features only."""
    from loopline.datasets import load_frame

    frame = load_frame("telco_churn").drop(columns=["rownames", "churn"]).dropna()
    rows = json.loads(frame.sample(n, random_state=7).to_json(orient="records"))
    return list(rows)


# -- the servers --------------------------------------------------------------------------------


def tracking_env(folder: Path) -> dict[str, str]:
    uri = f"sqlite:///{folder / '.loopline' / 'mlflow.db'}"
    return {"MLFLOW_TRACKING_URI": uri, "MLFLOW_REGISTRY_URI": uri}


def loopline_command(port: int) -> list[str]:
    """``loopline serve`` (1 worker) when the CLI has it, else uvicorn on ``create_app``
    in a child of this script (what ``loopline serve`` runs, with 1 worker)."""
    probe = subprocess.run(
        [str(LOOPLINE), "serve", "--help"], capture_output=True, text=True, check=False
    )
    if probe.returncode != 0:
        return [sys.executable, str(HERE), "_loopline", "--port", str(port)]
    command = [str(LOOPLINE), "serve"]  # the port and 1 worker are in loopline.yaml too
    if "--port" in probe.stdout:
        command += ["--port", str(port)]
    if "--workers" in probe.stdout:
        command += ["--workers", "1"]
    return command


def loopline_available() -> str | None:
    """None when ``loopline.serve.app.create_app`` imports, else why not."""
    probe = subprocess.run(
        [sys.executable, "-c", "from loopline.serve.app import create_app"],
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode == 0:
        return None
    lines = probe.stderr.strip().splitlines()
    return lines[-1] if lines else "import failed"


@contextlib.contextmanager
def start(kind: str, model: str, folder: Path, cpu: int | None) -> Iterator[tuple[int, LoadSpec]]:
    """Start server ``kind`` serving ``model``; yield its pid and a load spec (no requests)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = tracking_env(folder)
    log = folder / f"{kind}-{model}.log"
    if kind == "mlflow":
        command = [
            str(Path(sys.executable).with_name("mlflow")),
            "models",
            "serve",
            "-m",
            f"models:/{model}@champion",
            "--env-manager",
            "local",
            "--port",
            str(port),
            "--workers",
            "1",
        ]
        ready = f"{url}/ping"
    elif kind == "bare":
        bare = HERE.with_name("serve_bare_app.py")
        command = [sys.executable, str(bare), f"models:/{model}@champion", "--port", str(port)]
        ready = f"{url}/health"
    else:
        digest = hashlib.sha256(API_KEY.encode()).hexdigest()
        serve = {
            "port": port,
            "workers": 1,
            "models": [{"name": model}],
            "auth": {"keys": [{"name": "bench", "sha256": digest}]},
            "request_log": {"enabled": True, "sample_rate": 1.0},
        }
        write_config(folder, serve)
        command = loopline_command(port)
        ready = f"{url}/health/ready"
    with server(command, ready, cwd=folder, env=env, cpu=cpu, log=log) as pid:
        yield pid, LoadSpec(url=url, requests=[])


def templates(kind: str, model: str, rows: list[dict[str, Any]]) -> list[RequestTemplate]:
    json_type = {"Content-Type": "application/json"}
    if kind == "mlflow":
        return [
            RequestTemplate(
                "POST", "/invocations", json_type, json.dumps({"dataframe_records": [r]})
            )
            for r in rows
        ]
    if kind == "bare":
        return [RequestTemplate("POST", "/predict", json_type, json.dumps(r)) for r in rows]
    headers = json_type | {"X-API-Key": API_KEY}
    path = f"/v1/models/{model}/predict"
    return [RequestTemplate("POST", path, headers, json.dumps({"row": r})) for r in rows]


def check_answer(spec: LoadSpec) -> None:
    """One request by hand: the server answers 200 with a body (not an error page)."""
    import urllib.request

    first = spec.requests[0]
    request = urllib.request.Request(
        spec.url + first.path, data=first.body.encode(), headers=first.headers, method="POST"
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        body = response.read()
    if response.status != 200 or not body:
        raise RuntimeError(f"{spec.url}{first.path} answered {response.status}: {body[:200]!r}")


# -- measuring ------------------------------------------------------------------------------------


def measure_server(
    kind: str,
    model: str,
    folder: Path,
    rows: list[dict[str, Any]],
    args: argparse.Namespace,
) -> dict[int, ServerRun]:
    runs: dict[int, ServerRun] = {}
    with start(kind, model, folder, args.server_cpu) as (pid, spec):
        spec.requests = templates(kind, model, rows)
        check_answer(spec)
        for concurrency in args.concurrency:
            spec.concurrency = concurrency
            spec.duration = args.seconds
            tries = [
                load_server(
                    pid,
                    spec,
                    warmup=args.warmup if i == 0 else 0.0,
                    generator=args.generator,
                    cpu=args.client_cpu,
                )
                for i in range(args.repeat)
            ]
            runs[concurrency] = max(tries, key=lambda run: run.load.rps)
            print(
                f"  {kind:9} c={concurrency:<3} {format_result(runs[concurrency].load)}"
                f"\n{'':14}{format_server(runs[concurrency])}",
                flush=True,
            )
    return runs


def print_table(model: str, results: dict[str, dict[int, ServerRun]], top: int) -> None:
    print(f"\n{model}")
    print(
        f"{'server':14}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'CPU ms/req':>12}{'errors':>8}"
        f"{'busy':>7}{'wait':>7}"
    )
    for kind, runs in results.items():
        for concurrency, run in runs.items():
            r = run.load
            print(
                f"{kind + ' c=' + str(concurrency):14}{r.rps:9,.0f}{r.p50_ms:9.2f}{r.p99_ms:9.2f}"
                f"{run.cpu_ms_per_request:12.2f}{r.errors:8}{run.cpu_share:7.2f}{run.wait_share:7.2f}"
            )
    print("  (busy: server CPU s per s of load; wait: s per s its threads waited for a CPU)")
    loopline = results.get("loopline", {})
    for concurrency, run in loopline.items():
        mlflow = results.get("mlflow", {}).get(concurrency)
        bare = results.get("bare", {}).get(concurrency)
        parts = []
        if mlflow is not None and mlflow.load.rps:
            parts.append(f"throughput {run.load.rps / mlflow.load.rps:.2f}x MLflow")
        if bare is not None and bare.load.rps:
            parts.append(f"{run.load.rps / bare.load.rps:.2f}x bare")
        if bare is not None and bare.cpu_ms_per_request:
            parts.append(f"CPU/req {run.cpu_ms_per_request / bare.cpu_ms_per_request:.2f}x bare")
        if mlflow is not None and mlflow.cpu_ms_per_request:
            parts.append(f"{run.cpu_ms_per_request / mlflow.cpu_ms_per_request:.2f}x MLflow")
        print(f"  loopline c={concurrency}: " + ", ".join(parts))
        print(f"    {one_core_estimate(run)}")
    top_run = loopline.get(top)
    if top_run is None:
        return
    checks = []
    mlflow = results.get("mlflow", {}).get(top)
    if mlflow is not None and mlflow.load.rps:
        ratio = top_run.load.rps / mlflow.load.rps
        checks.append(("throughput / MLflow", ratio, ">=", TARGETS["throughput_x_mlflow"], "x"))
    bare = results.get("bare", {}).get(top)
    if bare is not None and bare.cpu_ms_per_request:
        ratio = top_run.cpu_ms_per_request / bare.cpu_ms_per_request
        checks.append(("CPU per request / bare", ratio, "<=", TARGETS["cpu_x_bare"], "x"))
    checks.append(("p99 latency", top_run.load.p99_ms, "<=", TARGETS["p99_ms"], " ms"))
    checks.append(("errors", float(top_run.load.errors), "<=", 0.0, ""))
    for name, value, op, bound, unit in checks:
        passed = value >= bound if op == ">=" else value <= bound
        print(
            f"  {'PASS' if passed else 'FAIL'}  loopline {name} at c={top}: "
            f"{value:.2f}{unit} (target {op} {bound:g}{unit})"
        )


def child_loopline(args: argparse.Namespace) -> None:
    """What ``loopline serve`` does with 1 worker (for a tree whose CLI lacks ``serve``):
    JSON logs at info on stderr, uvicorn on ``create_app``, no uvicorn access log."""
    import uvicorn

    from loopline.config import load_config
    from loopline.serve.app import create_app
    from loopline.serve.http_logging import configure_logging

    config = load_config(Path.cwd())
    configure_logging(logging.INFO, config.serve.request_log.pii_fields)
    uvicorn.run(
        create_app(config),
        host="127.0.0.1",
        port=args.port,
        log_config=None,
        access_log=False,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="trained", help="trained, light or both")
    parser.add_argument("--servers", default=",".join(SERVERS))
    parser.add_argument("--concurrency", default="1,32")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument(
        "--repeat", type=int, default=1, help="loads per case; the fastest is kept (shared CPUs)"
    )
    parser.add_argument("--generator", choices=["auto", "wrk", "python"], default="auto")
    parser.add_argument("--no-pin", action="store_true", help="do not pin servers / generator")
    parser.add_argument("--keep", type=Path, default=None, help="use / keep this project folder")
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    if len(sys.argv) > 1 and sys.argv[1] == "_loopline":
        sys.argv.pop(1)
        child_loopline(parser.parse_args())
        return
    args = parser.parse_args()
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    pinned = not args.no_pin and len(cpus) >= 2
    args.server_cpu, args.client_cpu = (cpus[-1], cpus[0]) if pinned else (None, None)
    for var, value in {
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    }.items():
        os.environ.setdefault(var, value)
    with contextlib.ExitStack() as stack:
        if args.keep is not None:
            folder = args.keep.resolve()
            folder.mkdir(parents=True, exist_ok=True)
        else:
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="serve-bench-")))
        run(args, folder)


def run(args: argparse.Namespace, folder: Path) -> None:
    generator = pick_generator(args.generator)
    print(
        f"serve benchmark: {os.cpu_count()} CPUs, load generator {generator}"
        f"{' (wrk: ' + str(shutil.which('wrk')) + ')' if generator == 'wrk' else ''}, "
        f"server on CPU {args.server_cpu}, generator on CPU {args.client_cpu}, "
        f"{args.seconds:g} s per load after {args.warmup:g} s warm-up, project {folder}",
        flush=True,
    )
    write_config(folder)
    models = [m for m in args.models.split(",") if m]
    servers = [s for s in args.servers.split(",") if s]
    registered = folder / ".loopline" / "mlflow.db"
    if "trained" in models and not (folder / ".loopline" / "trained.done").exists():
        print(f"training churn (loopline job, logistic, no search): {train_churn(folder):.1f} s")
        (folder / ".loopline" / "trained.done").touch()
    if "light" in models and not (folder / ".loopline" / "light.done").exists():
        print(f"logging churn_light (scikit-learn pipeline): {log_light(folder):.1f} s")
        (folder / ".loopline" / "light.done").touch()
    assert registered.exists()
    rows = request_rows()
    if "loopline" in servers and (why := loopline_available()) is not None:
        print(f"  loopline: SKIPPED, loopline.serve.app.create_app is missing ({why})")
        servers.remove("loopline")
    elif "loopline" in servers:
        how = loopline_command(0)
        shown = "loopline serve" if how[1] == "serve" else "uvicorn on create_app (no CLI yet)"
        print(f"loopline runs as: {shown}, 1 worker")
    top = max(args.concurrency)
    for key in models:
        model = MODELS[key]
        print(f"\n{key} model ({model}):", flush=True)
        results: dict[str, dict[int, ServerRun]] = {}
        for kind in servers:
            try:
                results[kind] = measure_server(kind, model, folder, rows, args)
            except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
                log = folder / f"{kind}-{model}.log"
                tail = log.read_text()[-1500:] if log.exists() else ""
                print(f"  {kind}: FAILED ({exc})\n{tail}", flush=True)
        print_table(model, results, top)


if __name__ == "__main__":
    main()
