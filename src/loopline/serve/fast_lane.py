"""The hot routes without FastAPI's router, dependency injection and inner middlewares.

Predictions, recommendations and events are nearly all of a busy server's requests. FastAPI
spends about a third of each one's CPU before and after the endpoint: matching the route
through the included routers, solving dependencies, and its error, telemetry and exit-stack
middlewares. :class:`ServeApp` (the app :func:`~loopline.serve.app.create_app` returns) sends
these requests down a short lane instead: the same :class:`ServeMiddleware` (request id, body
limit, metrics, access log) and CORS settings, the same access gate (the ``caller``
dependency), the same endpoint functions and the same exception handlers. Everything else,
``/docs`` and the OpenAPI schema included, goes through FastAPI as before, so both paths
answer the same bytes; the routes stay declared on FastAPI for the schema.

>>> from loopline.config import config_from_dict
>>> from loopline.serve.app import create_app
>>> app = create_app(config_from_dict({"project": "shop"}))
>>> app.fast_lane.paths
['/v1/events', '/v1/models/{name}/predict', '/v1/recommendations/{user}']
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.routing import APIRoute
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from loopline.errors import SignatureError
from loopline.serve.auth import caller
from loopline.serve.routes import predict, recommend

if TYPE_CHECKING:
    from re import Pattern

__all__ = ["FastLane", "ServeApp"]

Endpoint = Callable[[Request, Mapping[str, str]], Awaitable[Response]]
Handler = Callable[[Request, Any], Response | Awaitable[Response]]


class ServeApp(FastAPI):
    """FastAPI with a :class:`FastLane` in front of the hot routes (set by ``create_app``)."""

    fast_lane: FastLane | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        lane = self.fast_lane
        if lane is not None and scope["type"] == "http" and lane.match(scope):
            scope["app"] = self
            await lane.stack(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)


async def _predict(request: Request, params: Mapping[str, str]) -> Response:
    return await predict.predict(params["name"], request)


async def _recommendations(request: Request, params: Mapping[str, str]) -> Response:
    query = request.query_params
    k = _positive_int(query.get("k"), "k")
    return await recommend.get_recommendations(
        params["user"], request, k=k, exclude=query.get("exclude")
    )


async def _events(request: Request, params: Mapping[str, str]) -> Response:
    return await recommend.post_events(request)


_ENDPOINTS: dict[Callable[..., Any], Endpoint] = {
    predict.predict: _predict,
    recommend.get_recommendations: _recommendations,
    recommend.post_events: _events,
}
"""FastAPI endpoint -> how the lane calls it (path parameters and query parsed here)."""


def _positive_int(raw: str | None, name: str) -> int | None:
    """A query parameter declared ``int >= 1`` on the FastAPI route, as FastAPI checks it."""
    if raw is None:
        return None
    try:
        value = int(raw)
    except ValueError:
        msg = "Input should be a valid integer, unable to parse string as an integer"
        raise _query_error(name, msg, "int_parsing") from None
    if value < 1:
        raise _query_error(name, "Input should be greater than or equal to 1", "greater_than_equal")
    return value


def _query_error(name: str, msg: str, kind: str) -> SignatureError:
    return SignatureError(msg, errors=[{"loc": ["query", name], "msg": msg, "type": kind}])


@dataclass(frozen=True)
class _Hot:
    method: str
    regex: Pattern[str]
    route: APIRoute
    call: Endpoint


class FastLane:
    """Match a hot route (:meth:`match`) and answer it (:attr:`stack`, an ASGI app).

    ``wrap`` puts the app's outer middleware (request id, metrics, CORS) around the lane,
    the same that FastAPI's own middleware stack puts around its router.
    """

    def __init__(self, app: FastAPI, wrap: Callable[[ASGIApp], ASGIApp]) -> None:
        self._app = app
        self._routes = [
            _Hot(method, route.path_regex, route, _ENDPOINTS[route.endpoint])
            for router in (predict.router, recommend.router)  # included without a prefix
            for route in router.routes
            if isinstance(route, APIRoute) and route.endpoint in _ENDPOINTS
            for method in route.methods or ()
        ]
        self.stack = wrap(self._answer)

    @property
    def paths(self) -> list[str]:
        return sorted({hot.route.path for hot in self._routes})

    def match(self, scope: Scope) -> bool:
        """A hot route for this request? Then its route, endpoint and path parameters are in
        ``scope`` (as FastAPI's router puts them there)."""
        method, path = scope["method"], scope["path"]
        for hot in self._routes:
            if hot.method == method and (found := hot.regex.match(path)) is not None:
                scope["route"] = hot.route
                scope["endpoint"] = hot.route.endpoint
                scope["path_params"] = found.groupdict()
                scope["loopline.hot"] = hot
                return True
        return False

    async def _answer(self, scope: Scope, receive: Receive, send: Send) -> None:
        hot: _Hot = scope["loopline.hot"]
        request = Request(scope, receive)
        try:
            await caller(request)  # the routers' dependency: 401 / 403 / 429
            response = await hot.call(request, scope["path_params"])
        except Exception as exc:
            handler = self._handler(exc)
            if handler is None:
                raise  # ServeMiddleware answers a bare 500 and logs it
            answer = handler(request, exc)
            response = await answer if inspect.isawaitable(answer) else answer
        await response(scope, receive, send)

    def _handler(self, exc: Exception) -> Handler | None:
        """The app's exception handler for ``exc`` (nearest class first), as Starlette's."""
        handlers = self._app.exception_handlers
        for cls in type(exc).__mro__:
            handler = handlers.get(cls)
            if handler is not None:
                return handler
        return None
