"""What wraps every request: request id, body size limit, timing, metrics, access log, errors.

:class:`ServeMiddleware` is one plain ASGI middleware (no ``BaseHTTPMiddleware``: it costs
far less CPU per request). It takes a sane incoming ``X-Request-ID`` or makes one, keeps it
in ``request.state.request_id`` and echoes it in every response; refuses bodies over the
limit with 413, from ``Content-Length`` at once or by counting the bytes of a chunked body;
answers an unhandled exception with a bare 500 (the traceback goes to the server log only);
and records each request in the metrics and the JSON access log.

:func:`install_error_handlers` maps loopline's errors to HTTP: ``SignatureError`` 422 (with
FastAPI's ``detail`` list), ``NotServedError`` 404 for a model that is not configured, else
503. Every error body is ``{"detail": ..., "request_id": ...}``.
"""

from __future__ import annotations

import logging
import os
import random
import re
import time
from collections.abc import Mapping
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from loopline.errors import NotServedError, ServeError, SignatureError
from loopline.serve.http_logging import access_log
from loopline.serve.metrics import ServeMetrics

__all__ = ["BodyTooLarge", "ServeMiddleware", "error_response", "install_error_handlers"]

log = logging.getLogger(__name__)

_SANE_ID = re.compile(rb"^[A-Za-z0-9._:\-]{1,128}$")
_JSON = (b"content-type", b"application/json")


class _RequestIds:
    """32 random hex digits per request, cheaply: one ``os.urandom`` seed per process (and
    again after a fork), then a fast PRNG. Ids must be unique, not secret, and ``urandom``
    per request costs far more than the rest of the middleware on some machines."""

    def __init__(self) -> None:
        self._rng = random.Random(os.urandom(16))
        os.register_at_fork(after_in_child=self._reseed)

    def _reseed(self) -> None:
        self._rng = random.Random(os.urandom(16))

    def __call__(self) -> str:
        return f"{self._rng.getrandbits(128):032x}"


new_request_id = _RequestIds()


class BodyTooLarge(HTTPException):
    """The request body passed ``serve.limits.max_body_bytes`` while it was read."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, detail=f"request body larger than {limit} bytes")


def request_id_of(request: Request) -> str | None:
    return getattr(request.state, "request_id", None)


def error_response(
    status: int, detail: Any, request_id: str | None, headers: Mapping[str, str] | None = None
) -> Response:
    """The JSON error body every error shares."""
    body = orjson.dumps({"detail": detail, "request_id": request_id}, default=str)
    return Response(body, status, headers=headers, media_type="application/json")


class ServeMiddleware:
    """Request id, body limit, metrics and access log around the whole app."""

    def __init__(self, app: ASGIApp, *, metrics: ServeMetrics, max_body_bytes: int) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        request_id: str | None = None
        length: int | None = None
        for name, value in scope["headers"]:
            if name == b"x-request-id" and _SANE_ID.match(value):
                request_id = value.decode()
            elif name == b"content-length":
                length = int(value) if value.isdigit() else None
        if request_id is None:
            request_id = new_request_id()
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        id_header = (b"x-request-id", request_id.encode())
        status = 500
        started = False
        limit = self.max_body_bytes
        received = 0

        async def receive_limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def send_with_id(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), id_header]
            await send(message)

        try:
            if length is not None and length > limit:
                await error_response(413, BodyTooLarge(limit).detail, request_id)(
                    scope, receive, send_with_id
                )
            else:
                await self.app(scope, receive_limited, send_with_id)
        except BodyTooLarge as exc:  # raised outside a route's exception handling
            if not started:
                await error_response(413, exc.detail, request_id)(scope, receive, send_with_id)
        except Exception:
            log.exception(
                "unhandled error in %s %s",
                scope["method"],
                scope["path"],
                extra={"request_id": request_id},
            )
            if not started:
                await error_response(500, "internal error", request_id)(
                    scope, receive, send_with_id
                )
        finally:
            self._record(scope, state, request_id, status, time.perf_counter() - start)

    def _record(
        self, scope: Scope, state: dict[str, Any], request_id: str, status: int, seconds: float
    ) -> None:
        route = scope.get("route")
        path = getattr(route, "path", None)
        if path is None:
            path = scope["path"] if "endpoint" in scope else "unmatched"
        self.metrics.request(path, scope["method"], status, seconds)
        if access_log.isEnabledFor(logging.INFO):
            caller = state.get("caller")
            access_log.info(
                "request",
                extra={
                    "request_id": request_id,
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": status,
                    "latency_ms": round(seconds * 1000, 3),
                    "caller": getattr(caller, "name", None),
                    "model": state.get("model"),
                    "version": state.get("version"),
                    "variant": state.get("variant"),
                },
            )


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return error_response(exc.status_code, exc.detail, request_id_of(request), exc.headers)


def _clean(errors: Any) -> list[dict[str, Any]]:
    """FastAPI-style ``detail`` entries without the offending input (it may hold PII)."""
    return [
        {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type"))}
        for e in errors
    ]


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    return error_response(422, _clean(exc.errors()), request_id_of(request))


async def _signature_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, SignatureError)
    return error_response(422, _clean(exc.errors), request_id_of(request))


def _not_served_status(request: Request, exc: NotServedError) -> int:
    status = exc.fields.get("status")
    if isinstance(status, int):
        return status
    served = {m.name for m in request.app.state.config.serve.models}
    model = exc.fields.get("model", request.path_params.get("name"))
    return 404 if model not in served else 503


def _say(exc: ServeError) -> str:
    """The message and the hint, without the structured fields (they are for the log)."""
    return f"{exc.message} ({exc.hint})" if exc.hint else exc.message


async def _not_served(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, NotServedError)
    return error_response(_not_served_status(request, exc), _say(exc), request_id_of(request))


async def _serve_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ServeError)
    status = exc.fields.get("status")  # a model failing on its rows says 500
    code = status if isinstance(status, int) else 400
    return error_response(code, _say(exc), request_id_of(request))


def install_error_handlers(app: FastAPI) -> None:
    """Map HTTP, validation and loopline serving errors to the shared JSON error body."""
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(SignatureError, _signature_error)
    app.add_exception_handler(NotServedError, _not_served)
    app.add_exception_handler(ServeError, _serve_error)
