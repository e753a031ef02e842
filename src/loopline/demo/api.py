"""A small local JSON API for the demo: product reviews, paginated by page number.

>>> with ReviewsApi(reviews=[{"review_id": 1}]) as api:
...     api.url.startswith("http://127.0.0.1:")
True
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlparse


class ReviewsApi:
    """Serves ``GET /reviews?page=N&per_page=M`` → ``{"data": [...], "page": N}``."""

    def __init__(self, reviews: list[dict[str, Any]]) -> None:
        self.reviews = reviews
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, "start the API first"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/reviews"

    def __enter__(self) -> ReviewsApi:
        reviews = self.reviews

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                query = parse_qs(urlparse(self.path).query)
                page = int(query.get("page", ["1"])[0])
                size = int(query.get("per_page", ["50"])[0])
                body = json.dumps(
                    {"page": page, "data": reviews[(page - 1) * size : page * size]}
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
