"""``POST /v1/models/{name}/predict``: score one row or a batch with a served model.

The body is read as raw bytes and parsed with orjson (no pydantic model per request: the
request schema is declared for OpenAPI only), the A/B experiment picks the version, the
model host validates the rows against the signature and scores them (micro-batched), a
shadow challenger scores the same rows in the background, and the request log and metrics
record the answer. Example (not run here: needs a running server)::

    curl -s localhost:8000/v1/models/churn/predict -H 'X-API-Key: KEY' \\
      -d '{"row": {"tenure": 3, "charges": 80.5, "contract": "monthly", "seats": 2}}'
    {"request_id": "...", "model": "churn", "version": "1", "experiment": null,
     "variant": null, "predictions": ["Yes"], "probabilities": [{"No": 0.31, "Yes": 0.69}],
     "labels": ["Yes"], "threshold": 0.4}
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from loopline.errors import ServeError, SignatureError
from loopline.serve.routes.error_responses import error_responses
from loopline.serve.state import ServeState, get_state

log = logging.getLogger(__name__)

router = APIRouter(tags=["predict"])


class PredictRequest(BaseModel):
    """One row (``row``) or a batch (``rows``) of input fields, plus the A/B unit."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "oneOf": [{"required": ["row"]}, {"required": ["rows"]}],
            "example": {"row": {"tenure": 3, "charges": 80.5, "contract": "monthly", "seats": 2}},
        },
    )

    row: dict[str, Any] | None = Field(None, description="One row: input field -> value.")
    rows: list[dict[str, Any]] | None = Field(
        None, min_length=1, description="A batch of rows (at most serve.limits.max_rows)."
    )
    unit_id: str | None = Field(
        None,
        description="A/B unit (user id); else the X-User-Id header; else the request id.",
    )


class PredictResponse(BaseModel):
    request_id: str
    model: str
    version: str = Field(description="The model version that answered.")
    experiment: str | None = Field(description="The A/B experiment, if one assigned a variant.")
    variant: str | None
    predictions: list[Any] = Field(description="model.predict per row (class or value).")
    probabilities: list[dict[str, float]] | None = Field(
        description="Classifiers: class -> probability per row."
    )
    labels: list[Any] | None = Field(
        description="Binary: the positive class if its probability >= threshold, per row."
    )
    threshold: float | None


_ERRORS = error_responses(
    404,
    422,
    503,
    not_found="No such served model.",
    invalid="Rows do not match the model's signature.",
    unavailable="Model not loaded yet, or prediction timed out.",
)


def _invalid(loc: list[str | int], msg: str, kind: str = "value_error") -> SignatureError:
    return SignatureError(msg, errors=[{"loc": ["body", *loc], "msg": msg, "type": kind}])


def _rows(payload: Any, max_rows: int) -> tuple[list[dict[str, Any]], str | None]:
    """The request's rows and A/B unit, or a 422 naming what is wrong."""
    if not isinstance(payload, dict):
        raise _invalid([], "expected a JSON object with 'row' or 'rows'", "model_attributes_type")
    extra = set(payload) - {"row", "rows", "unit_id"}
    if extra:
        raise _invalid([sorted(extra)[0]], "extra field not permitted", "extra_forbidden")
    row, rows, unit = payload.get("row"), payload.get("rows"), payload.get("unit_id")
    if (row is None) == (rows is None):
        raise _invalid([], "give exactly one of 'row' or 'rows'", "missing")
    if row is not None:
        if not isinstance(row, dict):
            raise _invalid(["row"], "expected an object of input fields", "dict_type")
        rows = [row]
    elif not isinstance(rows, list) or not rows:
        raise _invalid(["rows"], "expected a non-empty list of rows", "list_type")
    elif len(rows) > max_rows:
        raise _invalid(["rows"], f"at most {max_rows} rows per request", "too_long")
    else:
        for i, item in enumerate(rows):
            if not isinstance(item, dict):
                raise _invalid(["rows", i], "expected an object of input fields", "dict_type")
    if unit is not None:
        if isinstance(unit, bool) or not isinstance(unit, str | int):
            raise _invalid(["unit_id"], "expected a string", "string_type")
        unit = str(unit)
    return rows, unit


@router.post(
    "/v1/models/{name}/predict",
    summary="Predict with a served model",
    response_model=PredictResponse,
    responses=_ERRORS,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": PredictRequest.model_json_schema()}},
        }
    },
)
async def predict(name: str, request: Request) -> Response:
    state = get_state(request)
    scope_state: dict[str, Any] = request.scope["state"]
    request_id: str = scope_state["request_id"]
    limits = state.config.serve.limits
    try:
        payload = orjson.loads(await request.body())
    except orjson.JSONDecodeError as exc:
        raise _invalid([], f"invalid JSON: {exc}", "json_invalid") from exc
    rows, unit = _rows(payload, limits.max_rows)
    if unit is None:
        unit = request.headers.get("x-user-id") or request_id
    started = time.perf_counter()
    experiments = state.experiments
    assignment = experiments.for_model(name, unit) if experiments is not None else None
    models = state.models
    try:
        ref: str | None = None  # None: the served alias's current version
        if assignment is not None:
            ref = assignment.version or assignment.alias
            if ref is not None:
                await models.prepare(name, ref)  # loads a variant off the event loop once
        parsed = models.parse(name, rows, version=ref)
        prediction = await models.predict(name, parsed, version=ref)
    except ServeError as exc:
        served = any(m.name == name for m in state.config.serve.models)
        state.metrics.error(name if served else "_unknown", type(exc).__name__)
        raise
    latency_ms = (time.perf_counter() - started) * 1000
    variant = assignment.variant if assignment is not None else None
    scope_state.update(model=name, version=prediction.version, variant=variant)
    shadow = experiments.shadow(name) if experiments is not None else None
    if shadow is not None:
        _spawn(state, _score_shadow(state, name, shadow, parsed, rows, request_id))
    request_log = state.request_log
    if request_log is not None:
        request_log.prediction(
            request_id=request_id,
            model=name,
            version=prediction.version,
            rows=rows,
            prediction=prediction,
            latency_ms=latency_ms,
            assignment=assignment,
            unit=unit,
        )
        if assignment is not None:
            request_log.exposure(assignment, unit, request_id)
    state.metrics.prediction(name, prediction.version, variant, rows=len(rows))
    body = {
        "request_id": request_id,
        "model": name,
        "version": prediction.version,
        "experiment": assignment.experiment if assignment is not None else None,
        "variant": variant,
        "predictions": prediction.predictions,
        "probabilities": prediction.probabilities,
        "labels": prediction.labels,
        "threshold": prediction.threshold,
    }
    return Response(
        orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY, default=str),
        media_type="application/json",
    )


def _spawn(state: ServeState, work: Any) -> None:
    """Run ``work`` after the response; keep a reference until it is done."""
    task = asyncio.get_running_loop().create_task(work)
    state.tasks.add(task)
    task.add_done_callback(state.tasks.discard)


async def _score_shadow(
    state: ServeState,
    name: str,
    ref: str,
    parsed: Any,
    rows: list[dict[str, Any]],
    request_id: str,
) -> None:
    """Score ``parsed`` with the shadow challenger ``ref`` and log it; never raises."""
    try:
        await state.models.prepare(name, ref)  # loads it off the event loop on first use
        started = time.perf_counter()
        prediction = await state.models.predict(name, parsed, version=ref)
    except Exception:  # a failing shadow must not touch the live path; logged and counted
        log.warning("shadow %s %s failed", name, ref, exc_info=True)
        state.metrics.shadow.labels(name, ref, "error").inc()
        return
    state.metrics.shadow.labels(name, prediction.version, "ok").inc()
    if state.request_log is not None:
        state.request_log.prediction(
            request_id=request_id,
            model=name,
            version=prediction.version,
            rows=rows,
            prediction=prediction,
            latency_ms=(time.perf_counter() - started) * 1000,
            assignment=None,
            shadow=True,
        )
