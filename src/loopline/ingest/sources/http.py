"""REST API source: JSON pages → Arrow chunks, with auth, retries and a rate limit.

`HttpSource` walks the pages of one endpoint (`http_pagination.PageWalker`), picks the
records out of each body with a JSONPath, flattens nested objects to ``a.b`` columns and
yields Arrow tables of ``batch_size`` records. Pages are fetched lazily, so memory stays
bounded by one page plus two chunks.

Usage (against a running API)::

    spec = HttpSourceConfig(type="http", url="https://api.example.com/orders",
                            pagination={"type": "cursor"}, records_path="$.data[*]")
    for chunk in HttpSource("orders", spec, base_dir=Path(".")).read(None):
        ...

Incremental reads send the stored high-water mark as a query parameter; the new mark goes
on the last chunk of a run only, because the run as a whole is the unit that commits.

>>> RateLimit(per_s=4).interval
0.25
"""

from __future__ import annotations

import email.utils
import logging
import random
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import httpx
import pyarrow as pa
import pyarrow.compute as pc

from loopline.config.sources import ApiKeyAuth, BasicAuth, BearerAuth, HttpSourceConfig
from loopline.errors import ConfigError, SourceError, TransientSourceError
from loopline.ingest.sources.base import Chunk
from loopline.ingest.sources.http_pagination import PageWalker, RecordPath, records_to_table

logger = logging.getLogger(__name__)

RETRYABLE_STATUS = frozenset({408, 429})
"""Besides every 5xx: request timeout and too many requests."""

SECRET_PARAMS = frozenset(
    {"access_token", "api_key", "apikey", "key", "password", "secret", "signature", "token"}
)
"""Query parameters never shown in errors and logs, besides the configured API key name."""


class RateLimit:
    """At most ``per_s`` calls a second, by spacing calls ``1 / per_s`` apart (monotonic).

    >>> limit = RateLimit(None)
    >>> limit.wait()  # no limit: returns at once
    """

    def __init__(self, per_s: float | None) -> None:
        self.interval = 1.0 / per_s if per_s else 0.0
        self._next = 0.0

    def wait(self) -> None:
        if not self.interval:
            return
        now = time.monotonic()
        if now < self._next:
            time.sleep(self._next - now)
            now = self._next
        self._next = now + self.interval


class _Redactor(logging.Filter):
    """Replaces secret values (plain and URL-encoded) by ``***`` in text and log records."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        forms = {form for s in secrets if s for form in (s, quote(s, safe=""), quote_plus(s))}
        self._forms = sorted(forms, key=len, reverse=True)

    def text(self, text: str) -> str:
        for form in self._forms:
            text = text.replace(form, "***")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = self.text(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


def _retry_after(response: httpx.Response) -> float | None:
    """Seconds asked for by a ``Retry-After`` header (delta seconds or an HTTP date)."""
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _hint_for(status: int) -> str:
    if status in (401, 403):
        return "check the credentials in the source's auth settings"
    if status == 404:
        return "check the source url"
    return "check the source's url, params and headers"


class HttpSource:
    """Reads a JSON REST endpoint page by page as Arrow chunks (the `Source` protocol)."""

    def __init__(self, name: str, spec: HttpSourceConfig, *, base_dir: Path) -> None:
        self.name = name
        self.spec = spec
        self.base_dir = base_dir
        try:
            url = httpx.URL(spec.url)
        except httpx.InvalidURL as exc:
            raise ConfigError(f"invalid url: {exc}", path="url", source=name) from exc
        if url.scheme not in ("http", "https") or not url.host:
            raise ConfigError(
                "the url must be an absolute http:// or https:// URL",
                path="url",
                source=name,
                hint="e.g. https://api.example.com/v1/orders",
            )
        self._url = url
        self._records = RecordPath(spec.records_path)
        self._walker = PageWalker(spec.pagination)
        self._rate = RateLimit(spec.rate_limit_per_s)
        self._random = random.Random()
        self._query_auth: tuple[str, str] | None = None
        self._secret_params = set(SECRET_PARAMS)
        secrets: list[str] = []
        auth = spec.auth
        if isinstance(auth, BearerAuth):
            secrets.append(auth.token.get_secret_value())
        elif isinstance(auth, BasicAuth):
            secrets.append(auth.password.get_secret_value())
        elif isinstance(auth, ApiKeyAuth):
            secrets.append(auth.value.get_secret_value())
            if auth.location == "query":
                self._query_auth = (auth.name, auth.value.get_secret_value())
                self._secret_params.add(auth.name.lower())
        if url.password:
            secrets.append(url.password)
        self._redactor = _Redactor(secrets)
        self.origin = f"http:{self._public(url.copy_with(query=None))}"

    def read(self, state: Mapping[str, Any] | None) -> Iterator[Chunk]:
        """Chunks of at most ``batch_size`` records; the last one carries the new state."""
        incremental = self.spec.incremental
        cursor_before = incremental.initial if incremental else None
        if incremental and state and state.get("cursor") is not None:
            cursor_before = state["cursor"]
        url = self._url.copy_merge_params(self.spec.params)
        if incremental and cursor_before is not None:
            url = url.copy_set_param(incremental.param, cursor_before)

        high = cursor_before
        pending: pa.Table | None = None
        index = 0
        with self._client() as client, self._redacted_httpx_logs():
            for table in self._tables(client, url):
                if pending is not None:
                    yield self._chunk(pending, cursor_before, index, state=None)
                    index += 1
                if incremental:
                    high = self._high_water(high, table, incremental.cursor_field)
                pending = table
        if pending is not None:
            new_state = {"cursor": high} if incremental else None
            yield self._chunk(pending, cursor_before, index, state=new_state)

    def _chunk(
        self, table: pa.Table, cursor_before: Any, index: int, *, state: dict[str, Any] | None
    ) -> Chunk:
        return Chunk(table, origin=self.origin, position=f"{cursor_before}:{index}", state=state)

    def _tables(self, client: httpx.Client, url: httpx.URL) -> Iterator[pa.Table]:
        size = self.spec.batch_size
        buffer: list[Any] = []

        def fetch(page_url: httpx.URL) -> tuple[httpx.Response, Any]:
            return self._fetch(client, page_url)

        for page in self._walker.pages(url, fetch, self._records):
            buffer.extend(page.records)
            while len(buffer) >= size:
                yield records_to_table(buffer[:size])
                del buffer[:size]
        if buffer:
            yield records_to_table(buffer)

    def _high_water(self, high: Any, table: pa.Table, field: str) -> Any:
        if field not in table.column_names:
            raise SourceError(
                f"incremental cursor field {field!r} is missing from the records",
                source=self.name,
                columns=", ".join(table.column_names[:20]),
                hint="set incremental.cursor_field to a field every record has (a.b if nested)",
            )
        try:
            top = pc.max(table[field]).as_py()
            return high if top is None else top if high is None or top > high else high
        except (pa.ArrowNotImplementedError, TypeError) as exc:
            raise SourceError(
                f"cannot take the maximum of incremental cursor field {field!r}",
                source=self.name,
                type=str(table.schema.field(field).type),
                stored=repr(high),
                hint="the cursor field must hold comparable scalars (numbers, ISO timestamps)",
            ) from exc

    def _client(self) -> httpx.Client:
        headers = {"Accept": "application/json", **self.spec.headers}
        auth = self.spec.auth
        basic: httpx.BasicAuth | None = None
        if isinstance(auth, BearerAuth):
            headers["Authorization"] = f"Bearer {auth.token.get_secret_value()}"
        elif isinstance(auth, ApiKeyAuth) and auth.location == "header":
            headers[auth.name] = auth.value.get_secret_value()
        elif isinstance(auth, BasicAuth):
            basic = httpx.BasicAuth(auth.username, auth.password.get_secret_value())
        return httpx.Client(
            headers=headers, auth=basic, timeout=self.spec.timeout_s, follow_redirects=True
        )

    @contextmanager
    def _redacted_httpx_logs(self) -> Iterator[None]:
        # httpx logs every request URL at INFO level, query string (and API key) included.
        httpx_logger = logging.getLogger("httpx")
        httpx_logger.addFilter(self._redactor)
        try:
            yield
        finally:
            httpx_logger.removeFilter(self._redactor)

    def _public(self, url: httpx.URL) -> str:
        """The URL as shown in errors, logs and origins: no credentials, no secret params."""
        url = url.copy_with(username=None, password=None) if url.userinfo else url
        for key in {k for k in url.params if k.lower() in self._secret_params}:
            url = url.copy_remove_param(key)
        return self._redactor.text(str(url))

    def _fetch(self, client: httpx.Client, url: httpx.URL) -> tuple[httpx.Response, Any]:
        """GET one page with retries; returns the response and its decoded JSON body."""
        shown = self._public(url)
        if self._query_auth is not None:
            url = url.copy_set_param(*self._query_auth)
        attempts = self.spec.retry.max_attempts
        for attempt in range(1, attempts + 1):
            self._rate.wait()
            logger.debug("GET %s (attempt %d of %d)", shown, attempt, attempts)
            wait: float | None = None
            try:
                response = client.get(url)
            except (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError) as exc:
                failure, status = f"{type(exc).__name__}: {exc}", None
                if attempt == attempts:
                    raise self._exhausted(shown, attempts, failure, status, body="") from exc
            except httpx.HTTPError as exc:
                raise SourceError(
                    f"GET {shown} failed: {type(exc).__name__}: {self._redactor.text(str(exc))}",
                    source=self.name,
                    url=shown,
                    hint="check the source url",
                ) from exc
            else:
                status = response.status_code
                if response.is_success:
                    return response, self._json(response, shown)
                if status not in RETRYABLE_STATUS and status < 500:
                    raise SourceError(
                        f"GET {shown} returned HTTP {status}",
                        source=self.name,
                        status=status,
                        url=shown,
                        body=self._snippet(response),
                        hint=_hint_for(status),
                    )
                failure = f"HTTP {status}"
                if attempt == attempts:
                    raise self._exhausted(shown, attempts, failure, status, self._snippet(response))
                wait = _retry_after(response)
            delay = self._backoff(attempt, wait)
            logger.warning(
                "GET %s: %s; retrying in %.2fs (attempt %d of %d)",
                shown,
                self._redactor.text(failure),
                delay,
                attempt,
                attempts,
            )
            time.sleep(delay)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        """Exponential backoff with full jitter; a server's Retry-After wins, both capped."""
        cap = self.spec.retry.backoff_max_s
        if retry_after is not None:
            return min(retry_after, cap)
        ceiling = min(cap, self.spec.retry.backoff_base_s * 2 ** (attempt - 1))
        return self._random.uniform(0.0, ceiling)

    def _exhausted(
        self, shown: str, attempts: int, failure: str, status: int | None, body: str
    ) -> TransientSourceError:
        connect = status is None
        return TransientSourceError(
            f"GET {shown} failed after {attempts} attempts: {self._redactor.text(failure)}",
            source=self.name,
            url=shown,
            attempts=attempts,
            status=status,
            body=body or None,
            hint=(
                "check that the API is reachable at this address and the url is right"
                if connect
                else "the API keeps failing; retry later or raise retry.max_attempts"
            ),
        )

    def _snippet(self, response: httpx.Response) -> str:
        return self._redactor.text(response.text[:200])

    def _json(self, response: httpx.Response, shown: str) -> Any:
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError as exc:
            raise SourceError(
                f"GET {shown} did not return JSON",
                source=self.name,
                url=shown,
                content_type=response.headers.get("Content-Type"),
                body=self._snippet(response),
                hint="point the source url at a JSON endpoint",
            ) from exc
