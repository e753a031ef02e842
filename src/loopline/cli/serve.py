"""``loopline serve`` (the HTTP server) and ``loopline api-key`` (a new API key)."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from loopline.cli.console import console, err_console, fail, print_json
from loopline.cli.project import project_config
from loopline.errors import LooplineError

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="loopline.yaml (default: ./loopline.yaml)."),
]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_LEVELS = ("debug", "info", "warning", "error")


def serve(
    config: ConfigOption = None,
    host: Annotated[str | None, typer.Option(help="Bind address (default: serve.host).")] = None,
    port: Annotated[
        int | None, typer.Option(min=0, max=65535, help="Port (default: serve.port).")
    ] = None,
    workers: Annotated[
        int | None, typer.Option(min=1, help="Worker processes (default: serve.workers).")
    ] = None,
    log_level: Annotated[
        str, typer.Option(help="debug, info, warning or error (JSON lines on stderr).")
    ] = "info",
) -> None:
    """Serve the configured models, recommender and experiments over HTTP until SIGTERM."""
    import uvicorn

    from loopline.serve.app import CONFIG_ENV, LOG_LEVEL_ENV, create_app
    from loopline.serve.http_logging import configure_logging

    if log_level.lower() not in _LEVELS:
        fail(f"--log-level must be one of {', '.join(_LEVELS)}, got {log_level!r}")
    try:
        cfg = project_config(config)
    except LooplineError as exc:
        fail(exc)
    level = getattr(logging, log_level.upper())
    configure_logging(level, cfg.serve.request_log.pii_fields)
    host = host or cfg.serve.host
    port = cfg.serve.port if port is None else port
    workers = workers or cfg.serve.workers
    options = {"host": host, "port": port, "log_config": None, "access_log": False}
    err_console.print(f"serving on http://{host}:{port} ({workers} worker(s)); docs at /docs")
    if workers == 1:
        uvicorn.run(create_app(cfg), **options)  # type: ignore[arg-type]
        return
    # Several processes: each builds its app from the environment, and their Prometheus
    # samples meet in one folder that /metrics merges (set before any worker imports it).
    metrics_dir = None
    if not os.environ.get(MULTIPROC_ENV):
        metrics_dir = tempfile.mkdtemp(prefix="loopline-metrics-")
        os.environ[MULTIPROC_ENV] = metrics_dir
    if config is not None:
        os.environ[CONFIG_ENV] = str(config.resolve())
    elif (Path.cwd() / "loopline.yaml").is_file():
        os.environ[CONFIG_ENV] = str(Path.cwd() / "loopline.yaml")
    os.environ[LOG_LEVEL_ENV] = log_level.lower()
    try:
        uvicorn.run(
            "loopline.serve.app:app_from_environment",
            factory=True,
            workers=workers,
            **options,  # type: ignore[arg-type]
        )
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def api_key(
    name: Annotated[str, typer.Argument(help="Who the key is for (shown in logs, metrics).")],
    rate_limit: Annotated[
        float | None, typer.Option(min=0.001, help="Requests per second allowed (default: none).")
    ] = None,
    burst: Annotated[
        int | None, typer.Option(min=1, help="Bucket size (default: 2x the rate limit).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Make a new random API key: print it once, and the loopline.yaml entry with its SHA-256."""
    import yaml

    from loopline.config.serving import ApiKeyConfig
    from loopline.serve.auth import key_digest, new_api_key

    key = new_api_key()
    try:
        spec = ApiKeyConfig(name=name, sha256=key_digest(key), rate_limit=rate_limit, burst=burst)
    except ValueError as exc:
        fail(f"invalid key settings: {exc}")
    entry = spec.model_dump(exclude_none=True)
    if as_json:
        print_json({"key": key, **entry})
        return
    console.print(f"API key for {name} (shown once, store it now):", highlight=False)
    typer.echo(key)
    console.print("\nadd to loopline.yaml (only the digest is stored):")
    typer.echo(yaml.safe_dump({"serve": {"auth": {"keys": [entry]}}}, sort_keys=False).rstrip())
    console.print(
        f"\nsend it as 'X-API-Key: {key[:6]}…' or 'Authorization: Bearer {key[:6]}…'",
        highlight=False,
    )
