"""Liveness, readiness and Prometheus metrics: ``/health/live``, ``/health/ready``, ``/metrics``.

``/health/live`` answers as soon as the process serves HTTP; ``/health/ready`` is 503 until
every configured model (and the recommender, if any) is loaded, so a load balancer sends
traffic only to replicas that can answer it.
"""

from __future__ import annotations

from typing import Any, Literal

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel

from loopline.serve.middleware import error_response, request_id_of

router = APIRouter(tags=["health"])


class Live(BaseModel):
    status: Literal["ok"]


class Ready(BaseModel):
    status: Literal["ready"]
    models: list[dict[str, Any]]


class NotReady(BaseModel):
    detail: str
    request_id: str | None


@router.get("/health/live", response_model=Live, summary="The process is up")
async def live() -> Response:
    return Response(b'{"status":"ok"}', media_type="application/json")


@router.get(
    "/health/ready",
    response_model=Ready,
    summary="Every model is loaded",
    responses={503: {"model": NotReady, "description": "Still loading, or loading failed."}},
)
async def ready(request: Request) -> Response:
    state = getattr(request.app.state, "loopline", None)
    if state is None:
        error = request.app.state.load_error
        detail = f"start-up failed: {error}" if error else "starting"
        return error_response(503, detail, request_id_of(request))
    if not state.ready:
        detail = f"loading failed: {state.load_error}" if state.load_error else "loading models"
        return error_response(503, detail, request_id_of(request))
    body = orjson.dumps({"status": "ready", "models": state.models.served()}, default=str)
    return Response(body, media_type="application/json")


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
async def metrics(request: Request) -> Response:
    body, content_type = request.app.state.metrics.exposition()
    return Response(body, media_type=content_type)
