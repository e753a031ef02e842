"""A small, real JSON API on 127.0.0.1 (a free port, a background thread) for tests and demos.

    with ApiServer(make_items(25)) as api:
        httpx.get(api.url("/items")).json()     # the 25 items as a JSON array

Routes; every ``/items...`` route keeps only items with ``updated > since`` when ``?since=``
is given, and every page size defaults to 10:

    /items                       JSON array of all items
    /items/envelope              {"data": [...], "count": n}
    /items/pages?page=&per_page= {"data": [...]}                       (pages start at 1)
    /items/offset?offset=&limit= {"data": [...], "total": n}
    /items/cursor?cursor=&limit= {"data": [...], "next_cursor": "..." | null}
    /items/next?page=            {"results": [...], "next": "/items/next?page=2" | null}
                                 (``&absolute=1`` makes the next link an absolute URL)
    /items/link?page=            JSON array + ``Link: <...>; rel="next"`` while more remain
    /auth/bearer                 items; 401 unless ``Authorization: Bearer TOKEN``
    /auth/api-key-header         items; 401 unless header ``X-API-Key: API_KEY``
    /auth/api-key-query          items; 401 unless ``?api_key=API_KEY``
    /auth/basic                  items; 401 unless basic auth USERNAME / PASSWORD
    /always-500                  HTTP 500, every time
    /html                        200 with an HTML page (not JSON)
    anything else                404

``api.fail_next("/items", 503, 503)`` makes the next two requests to ``/items`` answer 503
before the route works again (``headers=`` adds headers such as ``Retry-After``).
Every request is logged in ``api.requests`` (path, query, ``time.monotonic()``).
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

TOKEN = "tok-3f9a-secret"
API_KEY = "key-77c1-secret"
USERNAME = "ann"
PASSWORD = "pw-9d2e-secret"
DEFAULT_PAGE_SIZE = 10


def make_items(count: int, start: int = 1) -> list[dict[str, Any]]:
    """Items ``id`` start..start+count-1, ``updated`` one hour apart (ISO text sorts in time)."""
    base = datetime(2024, 1, 1)
    return [
        {
            "id": i,
            "name": f"item-{i}",
            "updated": (base + timedelta(hours=i)).isoformat() + "Z",
            "price": {"amount": round(i * 1.5, 2), "currency": "EUR"},
        }
        for i in range(start, start + count)
    ]


@dataclass(frozen=True)
class Request:
    path: str
    query: dict[str, str]
    at: float


class ApiServer:
    """Serves ``items`` (a list the test may change between reads) on a free local port."""

    def __init__(self, items: list[dict[str, Any]]) -> None:
        self.items = items
        self.requests: list[Request] = []
        self._failures: dict[str, deque[tuple[int, dict[str, str]]]] = {}
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.api = self  # type: ignore[attr-defined]
        # A short poll interval keeps shutdown (and so each test's teardown) fast.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def fail_next(self, path: str, *statuses: int, headers: dict[str, str] | None = None) -> None:
        with self._lock:
            queue = self._failures.setdefault(path, deque())
            queue.extend((status, headers or {}) for status in statuses)

    def requests_to(self, path: str) -> list[Request]:
        return [r for r in self.requests if r.path == path]

    def __enter__(self) -> ApiServer:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    # -- request handling (called from server threads) ---------------------------------------

    def next_failure(self, path: str) -> tuple[int, dict[str, str]] | None:
        with self._lock:
            queue = self._failures.get(path)
            return queue.popleft() if queue else None

    def visible_items(self, query: dict[str, str]) -> list[dict[str, Any]]:
        since = query.get("since")
        return [item for item in self.items if since is None or item["updated"] > since]


class _Handler(BaseHTTPRequestHandler):
    server: ThreadingHTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        """Keep test output quiet."""

    def do_GET(self) -> None:
        api: ApiServer = self.server.api  # type: ignore[attr-defined]
        parts = urlsplit(self.path)
        path = parts.path
        query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
        api.requests.append(Request(path, query, time.monotonic()))

        failure = api.next_failure(path)
        if failure is not None:
            status, headers = failure
            self._send(status, {"error": f"canned failure {status}"}, headers)
        elif path == "/always-500":
            self._send(500, {"error": "internal error"})
        elif path == "/html":
            self._send_raw(200, b"<html><body>hello</body></html>", "text/html")
        elif path.startswith("/auth/"):
            if self._authorized(path, query):
                self._send(200, api.visible_items(query))
            else:
                self._send(401, {"error": "unauthorized"})
        elif path.startswith("/items"):
            self._items(path, query, api.visible_items(query))
        else:
            self._send(404, {"error": f"no route {path}"})

    def _items(self, path: str, query: dict[str, str], items: list[dict[str, Any]]) -> None:
        if path == "/items":
            self._send(200, items)
        elif path == "/items/envelope":
            self._send(200, {"data": items, "count": len(items)})
        elif path == "/items/pages":
            page, size = int(query.get("page", 1)), int(query.get("per_page", DEFAULT_PAGE_SIZE))
            self._send(200, {"data": items[(page - 1) * size : page * size]})
        elif path == "/items/offset":
            offset, limit = int(query.get("offset", 0)), int(query.get("limit", DEFAULT_PAGE_SIZE))
            self._send(200, {"data": items[offset : offset + limit], "total": len(items)})
        elif path == "/items/cursor":
            # The cursor is opaque to the client: here "o" + the offset of the next page.
            offset = int(query.get("cursor", "o0")[1:])
            limit = int(query.get("limit", DEFAULT_PAGE_SIZE))
            more = offset + limit < len(items)
            body = {"data": items[offset : offset + limit]}
            self._send(200, {**body, "next_cursor": f"o{offset + limit}" if more else None})
        elif path in ("/items/next", "/items/link"):
            page = int(query.get("page", 1))
            size = DEFAULT_PAGE_SIZE
            more = page * size < len(items)
            next_link = f"{path}?{urlencode({**query, 'page': page + 1})}" if more else None
            if next_link and (path == "/items/link" or query.get("absolute")):
                next_link = f"http://127.0.0.1:{self.server.server_address[1]}{next_link}"
            chunk = items[(page - 1) * size : page * size]
            if path == "/items/next":
                self._send(200, {"results": chunk, "next": next_link})
            else:
                headers = {"Link": f'<{next_link}>; rel="next"'} if next_link else {}
                self._send(200, chunk, headers)
        else:
            self._send(404, {"error": f"no route {path}"})

    def _authorized(self, path: str, query: dict[str, str]) -> bool:
        header = self.headers.get("Authorization", "")
        if path == "/auth/bearer":
            return header == f"Bearer {TOKEN}"
        if path == "/auth/api-key-header":
            return self.headers.get("X-API-Key") == API_KEY
        if path == "/auth/api-key-query":
            return query.get("api_key") == API_KEY
        if path == "/auth/basic":
            expected = base64.b64encode(f"{USERNAME}:{PASSWORD}".encode()).decode()
            return header == f"Basic {expected}"
        return False

    def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        self._send_raw(status, json.dumps(body).encode(), "application/json", headers)

    def _send_raw(
        self, status: int, payload: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)
