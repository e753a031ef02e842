"""The FastAPI app of ``loopline serve``: routes, access gate, middleware, lifespan.

:func:`create_app` builds the app from a :class:`~loopline.config.LooplineConfig`. Its
lifespan answers ``/health/live`` at once and loads in a background thread: the registry,
the metadata database, every served model (by alias), the recommender, the experiments and
the request log; ``/health/ready`` is 503 until that is done. Shutdown closes them all (the
request log is flushed). :func:`app_from_environment` is the import string uvicorn's workers
use (``loopline.serve.app:app_from_environment``, with ``--factory``). The app is a
:class:`~loopline.serve.fast_lane.ServeApp`: FastAPI with a short lane for the hot routes.

>>> from loopline.config import config_from_dict
>>> app = create_app(config_from_dict({"project": "shop"}))
>>> sorted(p for p in app.openapi()["paths"] if p.startswith(("/health", "/v1/models")))
['/health/live', '/health/ready', '/v1/models', '/v1/models/{name}/predict']
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp

from loopline.config import CONFIG_FILENAME, LooplineConfig, config_from_dict, load_config
from loopline.errors import LooplineError
from loopline.serve.alias_watch import freeze_heap
from loopline.serve.auth import AccessGate, caller
from loopline.serve.fast_lane import FastLane, ServeApp
from loopline.serve.http_logging import configure_logging
from loopline.serve.metrics import ServeMetrics
from loopline.serve.middleware import ServeMiddleware, install_error_handlers
from loopline.serve.routes import feedback, health, models, predict, recommend
from loopline.serve.state import ServeState

__all__ = ["CONFIG_ENV", "LOG_LEVEL_ENV", "app_from_environment", "create_app"]

log = logging.getLogger(__name__)

CONFIG_ENV = "LOOPLINE_SERVE_CONFIG"
"""The ``loopline.yaml`` that :func:`app_from_environment` serves (unset: ./loopline.yaml)."""
LOG_LEVEL_ENV = "LOOPLINE_SERVE_LOG_LEVEL"
"""Set: :func:`app_from_environment` logs JSON lines at this level (worker processes)."""

_SHUTDOWN_WAIT = 10.0
_LOADER_WAIT = 1.0  # a load still running at shutdown has served nothing: don't wait it out


def _routers() -> list[APIRouter]:
    return [
        health.router,
        models.router,
        predict.router,
        recommend.router,
        feedback.router,
    ]


def create_app(config: LooplineConfig) -> ServeApp:
    """The server for ``config.serve`` (models load when the app starts)."""
    from loopline import __version__

    serve = config.serve
    app = ServeApp(
        title="loopline",
        version=__version__,
        summary="Predictions, real-time recommendations, A/B tests and feedback.",
        lifespan=_lifespan,
        docs_url="/docs",
        redoc_url=None,
    )
    metrics = ServeMetrics()
    app.state.config = config
    app.state.metrics = metrics
    app.state.access = AccessGate(serve.auth)
    app.state.loopline = None
    app.state.load_error = None
    app.state.lifespans = 0
    install_error_handlers(app)
    gate = [Depends(caller)]
    for router in _routers():
        app.include_router(router, dependencies=gate)
    cors = serve.cors
    cors_options: dict[str, Any] = {
        "allow_origins": cors.allow_origins,
        "allow_methods": cors.allow_methods,
        "allow_headers": cors.allow_headers,
        "expose_headers": ["X-Request-ID", "Retry-After"],
    }
    if cors.allow_origins:
        app.add_middleware(CORSMiddleware, **cors_options)
    # added last, so outermost: the request id and the metrics cover CORS answers too
    limit = serve.limits.max_body_bytes
    app.add_middleware(ServeMiddleware, metrics=metrics, max_body_bytes=limit)

    def wrap(inner: ASGIApp) -> ASGIApp:  # the same middleware around the fast lane
        if cors.allow_origins:
            inner = CORSMiddleware(inner, **cors_options)
        return ServeMiddleware(inner, metrics=metrics, max_body_bytes=limit)

    app.fast_lane = FastLane(app, wrap)
    app.openapi = _openapi_with_security(app)  # type: ignore[method-assign]
    return app


def app_from_environment() -> ServeApp:
    """The app for ``$LOOPLINE_SERVE_CONFIG`` (else ./loopline.yaml, else the defaults):
    the factory each uvicorn worker process calls. ``$LOOPLINE_SERVE_LOG_LEVEL`` set: the
    worker logs JSON lines at that level (``loopline serve --workers N`` sets both)."""
    path = os.environ.get(CONFIG_ENV)
    if path or Path(CONFIG_FILENAME).is_file():
        config = load_config(path)
    else:
        config = config_from_dict({}, project_dir=Path.cwd())
    level = os.environ.get(LOG_LEVEL_ENV)
    if level:
        configure_logging(
            getattr(logging, level.upper(), logging.INFO), config.serve.request_log.pii_fields
        )
    return create_app(config)


def _openapi_with_security(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """FastAPI's schema plus the API key / bearer security schemes on guarded paths."""
    base = app.openapi
    auth = app.state.config.serve.auth

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = base()
        if auth.enabled:
            schemes = schema.setdefault("components", {}).setdefault("securitySchemes", {})
            schemes["ApiKey"] = {"type": "apiKey", "in": "header", "name": "X-API-Key"}
            schemes["Bearer"] = {"type": "http", "scheme": "bearer"}
            public = set(auth.public_paths)
            for path, operations in schema.get("paths", {}).items():
                if path not in public:
                    for operation in operations.values():
                        operation["security"] = [{"ApiKey": []}, {"Bearer": []}]
        app.openapi_schema = schema
        return schema

    return openapi


class _Startup:
    """The hand-over between the loading thread and shutdown: whoever comes second closes."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.closing = False  # shutdown began
        self.handed_over = False  # the loader finished before shutdown: shutdown closes

    def hand_over(self) -> bool:
        """The loader is done: ``True`` if shutdown will close, ``False`` if it must."""
        with self.lock:
            self.handed_over = not self.closing
            return self.handed_over

    def shut_down(self) -> None:
        with self.lock:
            self.closing = True


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Start once: a second lifespan on a running app (a second test client) shares it."""
    app.state.lifespans += 1
    try:
        if app.state.lifespans > 1:
            yield
        else:
            async with _run(app):
                yield
    finally:
        app.state.lifespans -= 1


@asynccontextmanager
async def _run(app: FastAPI) -> AsyncIterator[None]:
    startup = _Startup()
    loader = threading.Thread(
        target=_load, args=(app, startup), name="loopline-serve-load", daemon=True
    )
    loader.start()
    try:
        yield
    finally:
        startup.shut_down()
        await asyncio.to_thread(loader.join, _LOADER_WAIT)
        state: ServeState | None = app.state.loopline
        if not startup.handed_over:
            log.warning("serve: shut down while still loading; the loader closes when done")
        elif state is not None:
            if state.tasks:
                await asyncio.wait(list(state.tasks), timeout=_SHUTDOWN_WAIT)
            await asyncio.to_thread(_close, state)


def _open(config: LooplineConfig, metrics: ServeMetrics) -> ServeState:
    """Registry, metadata database, model host, experiments and request log (not loaded)."""
    from loopline.registry import ModelRegistry
    from loopline.serve.experiments import ExperimentRouter
    from loopline.serve.model_host import ModelHost
    from loopline.serve.request_log import RequestLog
    from loopline.store.metadata import MetadataStore
    from loopline.store.tracking import Tracker

    serve = config.serve
    experiment = config.tracking.experiment or config.project
    registry = ModelRegistry(
        Tracker(config.tracking, base_dir=config.project_dir, experiment=experiment)
    )
    metadata = MetadataStore(config.stores.metadata_url, base_dir=config.project_dir)
    host = ModelHost(
        registry,
        serve.models,
        poll_interval=serve.poll_interval,
        max_rows=serve.limits.max_rows,
        timeout=serve.limits.timeout,
        preload=_experiment_refs(config),
    )
    request_log = None
    if serve.request_log.enabled:
        request_log = RequestLog(serve.request_log, metadata)
        request_log.start()
    return ServeState(
        config=config,
        models=host,
        recommender=None,
        experiments=ExperimentRouter(serve.experiments, metadata),
        request_log=request_log,
        metrics=metrics,
        registry=registry,
        metadata=metadata,
    )


def _experiment_refs(config: LooplineConfig) -> list[tuple[str, str]]:
    """``(model, alias or version)`` of every experiment variant and shadow: loaded at start."""
    refs: list[tuple[str, str]] = []
    for experiment in config.serve.experiments.values():
        if experiment.model is None:
            continue
        targets = [v.version or v.alias for v in experiment.variants] + [experiment.shadow]
        refs += [(experiment.model, t) for t in targets if t is not None]
    return list(dict.fromkeys(refs))


def _load(app: FastAPI, startup: _Startup) -> None:
    """Open everything and load the models (the lifespan's background thread)."""
    config: LooplineConfig = app.state.config
    metrics: ServeMetrics = app.state.metrics
    try:
        state = _open(config, metrics)
    except Exception as exc:  # reported by /health/ready; the process stays up to say so
        log.exception("serve: start-up failed")
        app.state.load_error = _reason(exc)
        startup.hand_over()
        return
    app.state.loopline = state
    try:
        state.models.start()
        metrics.watch_models(state.models.served)
        recommender = config.serve.recommender
        if recommender is not None:
            from loopline.serve.recommend.online import OnlineRecommender

            assert state.registry is not None
            state.recommender = OnlineRecommender.open(
                recommender, state.registry, poll_interval=config.serve.poll_interval
            )
        gc.collect()  # start-up garbage first, then keep collections off the models
        freeze_heap()
        served = ", ".join(m.name for m in config.serve.models) or "no models"
        log.info("serve: ready (%s)", served)
    except Exception as exc:  # reported by /health/ready; the process stays up to say so
        log.exception("serve: loading failed")
        state.load_error = _reason(exc)
    finally:
        state.loaded.set()
        if not startup.hand_over():
            _close(state)  # shutdown came first and did not wait for us


def _reason(exc: Exception) -> str:
    """What ``/health/ready`` may say about a failure: loopline's own message, else nothing
    internal (the traceback is in the server log)."""
    return str(exc) if isinstance(exc, LooplineError) else "internal error (see the server log)"


def _close(state: ServeState) -> None:
    """Stop the model watchers, the recommender and the request log (flushed), in order."""
    closers: list[tuple[str, Callable[[], None]]] = [("models", state.models.close)]
    if state.recommender is not None:
        closers.append(("recommender", state.recommender.close))
    if state.request_log is not None:
        closers.append(("request log", state.request_log.close))
    if state.metadata is not None:
        closers.append(("metadata store", state.metadata.close))
    for what, close in closers:
        try:
            close()
        except Exception:  # one failing close must not keep the others open
            log.exception("serve: closing the %s failed", what)
