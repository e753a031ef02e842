"""``POST /v1/feedback``: the true outcome of an earlier prediction, for monitoring and A/B tests.

One label ``{"request_id": ..., "label": ...}`` or a batch ``{"feedback": [{...}, ...]}``
(at most ``serve.limits.max_rows`` items); each item may name its ``unit_id`` (else the
``X-User-Id`` header). The answer is 202: labels go to the request log's queue and reach
the ``serve_feedback`` table within ``request_log.flush_interval``. A request id the log
has not seen is stored all the same: feedback may come before the prediction's row is
flushed, from another server process, or for a request the log did not sample (then it is
sampled out too: a prediction and its feedback are sampled by the same request-id hash).
Example (not run here: needs a running server)::

    curl -s localhost:8000/v1/feedback -H 'X-API-Key: KEY' \\
      -d '{"request_id": "9f1c...", "label": "Yes"}'
    {"accepted": 1, "logged": true, "request_id": "..."}
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from loopline.errors import SignatureError
from loopline.serve.routes.error_responses import error_responses
from loopline.serve.state import get_state

router = APIRouter(tags=["feedback"])

MAX_ID = 128
"""Longest request id accepted (the ``serve_feedback.request_id`` column)."""
MAX_UNIT = 255


class FeedbackItem(BaseModel):
    """The observed label of one earlier prediction request."""

    model_config = ConfigDict(extra="forbid")

    request_id: str = Field(
        min_length=1, max_length=MAX_ID, description="The X-Request-ID of the prediction."
    )
    label: Any = Field(description="The observed outcome (e.g. the true class), not null.")
    unit_id: str | None = Field(
        None, max_length=MAX_UNIT, description="A/B unit (user id); else the X-User-Id header."
    )


class FeedbackRequest(BaseModel):
    """One item, or a batch under ``feedback``."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "oneOf": [{"required": ["request_id", "label"]}, {"required": ["feedback"]}],
            "example": {"request_id": "3b0c5d8e9a7f4c1e", "label": "Yes"},
        },
    )

    request_id: str | None = Field(None, min_length=1, max_length=MAX_ID)
    label: Any = None
    unit_id: str | None = Field(None, max_length=MAX_UNIT)
    feedback: list[FeedbackItem] | None = Field(None, min_length=1)


class FeedbackAccepted(BaseModel):
    accepted: int = Field(description="Labels taken.")
    logged: bool = Field(description="False: the request log is disabled; nothing is stored.")
    request_id: str = Field(description="This feedback request's own id.")


def _invalid(loc: list[str | int], msg: str, kind: str = "value_error") -> SignatureError:
    return SignatureError(msg, errors=[{"loc": ["body", *loc], "msg": msg, "type": kind}])


def _item(raw: Any, loc: list[str | int], header_unit: str | None) -> tuple[str, Any, str | None]:
    if not isinstance(raw, dict):
        raise _invalid(loc, "expected an object with 'request_id' and 'label'", "dict_type")
    extra = set(raw) - {"request_id", "label", "unit_id"}
    if extra:
        raise _invalid([*loc, sorted(extra)[0]], "extra field not permitted", "extra_forbidden")
    request_id, label, unit = raw.get("request_id"), raw.get("label"), raw.get("unit_id")
    if not isinstance(request_id, str) or not request_id or len(request_id) > MAX_ID:
        raise _invalid(
            [*loc, "request_id"],
            f"expected a request id of 1 to {MAX_ID} characters",
            "string_type",
        )
    if label is None:
        raise _invalid([*loc, "label"], "a label is required (not null)", "missing")
    if unit is not None and (
        isinstance(unit, bool) or not isinstance(unit, str | int) or len(str(unit)) > MAX_UNIT
    ):
        raise _invalid([*loc, "unit_id"], f"expected a string of at most {MAX_UNIT}", "string_type")
    return request_id, label, str(unit) if unit is not None else header_unit


def _items(payload: Any, max_items: int, header_unit: str | None) -> list[tuple[str, Any, Any]]:
    """The (request_id, label, unit) items of a body, or a 422 naming what is wrong."""
    if not isinstance(payload, dict):
        raise _invalid([], "expected a JSON object", "model_attributes_type")
    if "feedback" not in payload:
        return [_item(payload, [], header_unit)]
    if set(payload) - {"feedback"}:
        raise _invalid(
            [], "give either 'feedback' or one 'request_id' and 'label'", "extra_forbidden"
        )
    batch = payload["feedback"]
    if not isinstance(batch, list) or not batch:
        raise _invalid(["feedback"], "expected a non-empty list", "list_type")
    if len(batch) > max_items:
        raise _invalid(["feedback"], f"at most {max_items} items per request", "too_long")
    return [_item(raw, ["feedback", i], header_unit) for i, raw in enumerate(batch)]


@router.post(
    "/v1/feedback",
    summary="Send the observed label of a prediction",
    status_code=202,
    response_model=FeedbackAccepted,
    responses=error_responses(422, invalid="Malformed feedback."),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": FeedbackRequest.model_json_schema()}},
        }
    },
)
async def feedback(request: Request) -> Response:
    state = get_state(request)
    own_id: str = request.scope["state"]["request_id"]
    try:
        payload = orjson.loads(await request.body())
    except orjson.JSONDecodeError as exc:
        raise _invalid([], f"invalid JSON: {exc}", "json_invalid") from exc
    items = _items(payload, state.config.serve.limits.max_rows, request.headers.get("x-user-id"))
    log = state.request_log
    if log is not None:
        for request_id, label, unit in items:
            log.feedback(request_id=request_id, label=label, unit=unit)
    body = {"accepted": len(items), "logged": log is not None and log.enabled, "request_id": own_id}
    return Response(orjson.dumps(body), status_code=202, media_type="application/json")
