"""The error answers every ``/v1`` route documents in OpenAPI: one body shape, own wording.

>>> sorted(error_responses(404, 422, not_found="No such served model."))
[401, 403, 404, 413, 422, 429]
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


class ErrorBody(BaseModel):
    """Every error answer: what went wrong (a 422 lists each offending field) and the id."""

    detail: Any
    request_id: str | None


_COMMON = {
    401: "Missing credentials.",
    403: "Invalid API key or token.",
    413: "Body larger than serve.limits.max_body_bytes.",
    429: "Rate limit exceeded (see Retry-After).",
}


def error_responses(
    *statuses: int,
    not_found: str = "Not found.",
    invalid: str = "Invalid request.",
    unavailable: str = "Not loaded yet.",
) -> dict[int | str, dict[str, Any]]:
    """FastAPI ``responses=`` for auth, body size and rate limits plus ``statuses``
    (404, 422, 503) with the route's own descriptions."""
    own = {404: not_found, 422: invalid, 503: unavailable}
    described = {**_COMMON, **{status: own[status] for status in statuses}}
    return {
        status: {"model": ErrorBody, "description": described[status]}
        for status in sorted(described)
    }
