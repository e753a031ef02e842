"""Send the same requests down the fast lane and through FastAPI: the answers must match."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

from starlette.types import Receive, Scope, Send

from loopline.serve.fast_lane import ServeApp

with warnings.catch_warnings():
    # starlette asks for httpx2 (not installed); the client works the same with httpx
    warnings.simplefilter("ignore", UserWarning)
    from fastapi.testclient import TestClient

Call = Callable[[TestClient, dict[str, str]], Any]
"""One request: ``call(client, headers)`` returns the httpx response."""


def _answers(client: TestClient, calls: list[Call]) -> list[tuple[int, str | None, Any]]:
    out = []
    for n, call in enumerate(calls):
        response = call(client, {"X-Request-ID": f"lane-check-{n}"})
        assert response.headers["x-request-id"] == f"lane-check-{n}"
        out.append((response.status_code, response.headers.get("content-type"), response.json()))
    return out


def assert_lane_matches_fastapi(client: TestClient, calls: list[Call]) -> None:
    """Every call takes the lane, and FastAPI's own route answers it the same."""
    app = client.app
    assert isinstance(app, ServeApp)
    assert app.fast_lane is not None
    lane = app.fast_lane
    stack, taken = lane.stack, []

    async def counted(scope: Scope, receive: Receive, send: Send) -> None:
        taken.append(scope["path"])
        await stack(scope, receive, send)

    lane.stack = counted
    try:
        fast = _answers(client, calls)
    finally:
        lane.stack = stack
    assert len(taken) == len(calls)
    app.fast_lane = None
    try:
        slow = _answers(client, calls)
    finally:
        app.fast_lane = lane
    for a, b in zip(fast, slow, strict=True):
        assert a == b, f"fast lane: {a}\nFastAPI:   {b}"
