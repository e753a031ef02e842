"""``POST /v1/events`` and ``GET /v1/recommendations/{user}``: the real-time recommender.

An event updates the user's live history, the co-visitation counts and the trending
scores at once (see :mod:`loopline.serve.recommend.online`), so the user's very next
recommendation reflects it. A recommender experiment (``serve.experiments`` with no
``model``) picks the strategy per user and logs the exposure. Example (not run here: needs a
running server)::

    curl -s localhost:8000/v1/events -H 'X-API-Key: KEY' \\
      -d '{"user": "42", "item": "318", "type": "view"}'
    {"accepted": 1, "request_id": "..."}
    curl -s 'localhost:8000/v1/recommendations/42?k=3&exclude=296' -H 'X-API-Key: KEY'
    {"user": "42", "items": [{"item": "593", "score": 0.91, "reason": "covisit"}, ...],
     "strategy": "blend", "experiment": null, "variant": null, "version": "3",
     "request_id": "..."}
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from loopline.config.serving import Strategy
from loopline.errors import NotServedError, SignatureError
from loopline.serve.routes.error_responses import error_responses
from loopline.serve.state import ServeState, get_state

if TYPE_CHECKING:  # the model's arrays load with the recommender, not with the routes
    from loopline.serve.recommend.online import OnlineRecommender

__all__ = ["router"]

log = logging.getLogger(__name__)

router = APIRouter(tags=["recommend"])

MAX_ID_LENGTH = 255
"""Longest user or item id accepted."""
MAX_EXCLUDE = 1000
"""Most ids in ``exclude``."""


_EVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["user", "item", "type"],
    "additionalProperties": False,
    "properties": {
        "user": {"type": "string", "minLength": 1, "maxLength": MAX_ID_LENGTH},
        "item": {"type": "string", "minLength": 1, "maxLength": MAX_ID_LENGTH},
        "type": {"type": "string", "description": "A key of serve.recommender.event_weights."},
        "timestamp": {
            "description": "ISO 8601 or seconds since the epoch; default: when received.",
            "oneOf": [{"type": "string", "format": "date-time"}, {"type": "number"}],
        },
    },
}
_EVENTS_SCHEMA: dict[str, Any] = {
    "oneOf": [
        _EVENT_SCHEMA,
        {
            "type": "object",
            "required": ["events"],
            "additionalProperties": False,
            "properties": {"events": {"type": "array", "minItems": 1, "items": _EVENT_SCHEMA}},
        },
    ]
}


class EventsAccepted(BaseModel):
    accepted: int
    request_id: str


class RecommendedItem(BaseModel):
    item: str
    score: float
    reason: str = Field(description="The part that contributed most: als, covisit, ...")


class Recommendations(BaseModel):
    user: str
    items: list[RecommendedItem]
    strategy: Strategy
    experiment: str | None
    variant: str | None
    version: str | None = Field(description="The recommender model version that answered.")
    request_id: str


_ERRORS = error_responses(
    404,
    422,
    503,
    not_found="No recommender is configured.",
    invalid="Invalid event or query.",
    unavailable="The recommender is not loaded yet.",
)


def _recommender(state: ServeState) -> OnlineRecommender:
    """The loaded recommender; 404 when none is configured, 503 while it loads."""
    if state.recommender is not None:
        return state.recommender
    configured = state.config.serve.recommender
    if configured is None:
        raise NotServedError(
            "no recommender is served",
            status=404,
            hint="configure serve.recommender in loopline.yaml",
        )
    raise NotServedError(
        f"the recommender {configured.model!r} is not loaded",
        model=configured.model,
        status=503,
        hint="see /health/ready",
    )


def _invalid(loc: list[str | int], msg: str, kind: str = "value_error") -> SignatureError:
    return SignatureError(msg, errors=[{"loc": loc, "msg": msg, "type": kind}])


def _text(value: Any, loc: list[str | int]) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise _invalid(loc, "expected a string", "string_type")
    text = str(value)
    if not 0 < len(text) <= MAX_ID_LENGTH:
        raise _invalid(loc, f"expected 1 to {MAX_ID_LENGTH} characters", "string_too_long")
    return text


def _timestamp(value: Any, loc: list[str | int]) -> datetime | None:
    if value is None:
        return None
    try:
        if isinstance(value, bool):
            raise TypeError("a boolean is not a time")
        if isinstance(value, int | float):
            return datetime.fromtimestamp(float(value), UTC)
        if isinstance(value, str):
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
            return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
        raise TypeError(f"not a time: {type(value).__name__}")
    except (TypeError, ValueError, OverflowError, OSError) as exc:
        msg = f"expected ISO 8601 or epoch seconds ({exc})"
        raise _invalid(loc, msg, "datetime_parsing") from exc


def _events(payload: Any, types: dict[str, float], max_rows: int) -> list[tuple[Any, ...]]:
    """``(user, item, type, timestamp)`` of each event of the body, or a 422."""
    if isinstance(payload, dict) and "events" in payload:
        extra = set(payload) - {"events"}
        if extra:
            raise _invalid(
                ["body", sorted(extra)[0]], "extra field not permitted", "extra_forbidden"
            )
        raw = payload["events"]
        base: list[str | int] = ["body", "events"]
        if not isinstance(raw, list) or not raw:
            raise _invalid(base, "expected a non-empty list of events", "list_type")
        if len(raw) > max_rows:
            raise _invalid(base, f"at most {max_rows} events per request", "too_long")
        located: list[tuple[Any, list[str | int]]] = [
            (event, [*base, i]) for i, event in enumerate(raw)
        ]
    else:
        located = [(payload, ["body"])]
    events = []
    for event, loc in located:
        if not isinstance(event, dict):
            raise _invalid(loc, "expected an object with user, item and type", "dict_type")
        extra = set(event) - {"user", "item", "type", "timestamp"}
        if extra:
            raise _invalid([*loc, sorted(extra)[0]], "extra field not permitted", "extra_forbidden")
        for name in ("user", "item", "type"):
            if name not in event:
                raise _invalid([*loc, name], "field required", "missing")
        kind = event["type"]
        if kind not in types:
            raise _invalid(
                [*loc, "type"], f"unknown event type; expected one of {sorted(types)}", "enum"
            )
        events.append(
            (
                _text(event["user"], [*loc, "user"]),
                _text(event["item"], [*loc, "item"]),
                kind,
                _timestamp(event.get("timestamp"), [*loc, "timestamp"]),
            )
        )
    return events


@router.post(
    "/v1/events",
    summary="Record recommender events (the next recommendation reflects them)",
    status_code=202,
    response_model=EventsAccepted,
    responses=_ERRORS,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": _EVENTS_SCHEMA,
                    "example": {"user": "42", "item": "318", "type": "view"},
                }
            },
        }
    },
)
async def post_events(request: Request) -> Response:
    state = get_state(request)
    recommender = _recommender(state)
    request_id: str = request.scope["state"]["request_id"]
    try:
        payload = orjson.loads(await request.body())
    except orjson.JSONDecodeError as exc:
        raise _invalid(["body"], f"invalid JSON: {exc}", "json_invalid") from exc
    events = _events(payload, recommender.config.event_weights, state.config.serve.limits.max_rows)
    for user, item, kind, timestamp in events:
        await recommender.arecord(user, item, kind, timestamp)
    request_log, experiments = state.request_log, state.experiments
    if request_log is not None:
        now = datetime.now(UTC)
        for user, item, kind, timestamp in events:
            assignment = experiments.for_recommender(user) if experiments is not None else None
            request_log.event(
                user=user,
                item=item,
                event_type=kind,
                timestamp=timestamp or now,
                assignment=assignment,
            )
    body = {"accepted": len(events), "request_id": request_id}
    return Response(orjson.dumps(body), status_code=202, media_type="application/json")


@router.get(
    "/v1/recommendations/{user}",
    summary="Recommend items for a user",
    response_model=Recommendations,
    responses=_ERRORS,
)
async def get_recommendations(
    user: str,
    request: Request,
    k: int | None = Query(None, ge=1, description="How many items (default_k .. max_k)."),
    exclude: str | None = Query(None, description="Comma-separated item ids to leave out."),
) -> Response:
    state = get_state(request)
    recommender = _recommender(state)
    scope_state: dict[str, Any] = request.scope["state"]
    request_id: str = scope_state["request_id"]
    config = recommender.config
    if len(user) > MAX_ID_LENGTH:
        raise _invalid(["path", "user"], f"at most {MAX_ID_LENGTH} characters", "string_too_long")
    k = config.default_k if k is None else k
    if k > config.max_k:
        raise _invalid(["query", "k"], f"at most {config.max_k}", "less_than_equal")
    excluded = [x for x in (p.strip() for p in (exclude or "").split(",")) if x]
    if len(excluded) > MAX_EXCLUDE:
        raise _invalid(["query", "exclude"], f"at most {MAX_EXCLUDE} ids", "too_long")
    experiments = state.experiments
    assignment = experiments.for_recommender(user) if experiments is not None else None
    strategy: Strategy = "blend"
    if assignment is not None and assignment.strategy is not None:
        strategy = assignment.strategy  # type: ignore[assignment]
    items = await recommender.arecommend(user, k, exclude=excluded, strategy=strategy)
    variant = assignment.variant if assignment is not None else None
    scope_state.update(model=config.model, version=recommender.version, variant=variant)
    if assignment is not None and state.request_log is not None:
        state.request_log.exposure(assignment, user, request_id)
    body = {
        "user": user,
        "items": items,
        "strategy": strategy,
        "experiment": assignment.experiment if assignment is not None else None,
        "variant": variant,
        "version": recommender.version,
        "request_id": request_id,
    }
    return Response(orjson.dumps(body), media_type="application/json")
