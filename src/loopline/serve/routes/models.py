"""``GET /v1/models``: the served models with their alias, version and inputs."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from loopline.serve.state import get_state

router = APIRouter(tags=["models"])


class ServedModel(BaseModel):
    name: str
    alias: str
    version: str | None = Field(description="The alias's version now served (none: loading).")
    loaded_at: Any = None
    task: str | None = None
    inputs: list[Any] = Field(default_factory=list, description="Input columns and types.")


class ServedModels(BaseModel):
    models: list[ServedModel]


@router.get("/v1/models", response_model=ServedModels, summary="Served models")
async def list_models(request: Request) -> Response:
    state = get_state(request)
    body = orjson.dumps({"models": state.models.served()}, default=str)
    return Response(body, media_type="application/json")
