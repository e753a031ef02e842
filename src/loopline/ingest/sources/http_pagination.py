"""Walking the pages of a JSON REST endpoint, and turning their records into Arrow.

`PageWalker` knows the six pagination styles of `loopline.config.sources.Pagination`
and asks a ``fetch`` callable for each page, so pages come lazily and at most one response
body is held at a time. Records are picked out of a body with a JSONPath (`RecordPath`)
and become Arrow tables of flat ``a.b`` columns (`records_to_table`).

>>> RecordPath("$.data[*]").select({"data": [{"id": 1}, {"id": 2}]})
[{'id': 1}, {'id': 2}]
>>> RecordPath("$.results").select({"results": [{"id": 1}]})
[{'id': 1}]
>>> records_to_table([{"id": 1, "price": {"amount": 2.5}}, {"id": "x"}]).to_pylist()
[{'id': '1', 'price.amount': 2.5}, {'id': '"x"', 'price.amount': None}]
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pyarrow as pa
from jsonpath_ng.exceptions import JSONPathError
from jsonpath_ng.ext.parser import parse as parse_jsonpath

from loopline.config.sources import Pagination
from loopline.errors import ConfigError, SourceError

logger = logging.getLogger(__name__)

_JSON_FALLBACK = (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OverflowError)


def flatten_record(record: Any, prefix: str = "") -> dict[str, Any]:
    """One JSON object as flat ``a.b`` keys; a non-object record becomes ``{"value": ...}``.

    >>> flatten_record({"id": 1, "user": {"name": "Ann", "geo": {"lat": 1.5}}, "tags": []})
    {'id': 1, 'user.name': 'Ann', 'user.geo.lat': 1.5, 'tags': []}
    """
    if not isinstance(record, dict):
        return {"value": record}
    flat: dict[str, Any] = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            if value:
                flat.update(flatten_record(value, f"{name}."))
            else:
                flat[name] = None
        else:
            flat[name] = value
    return flat


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    return type(value).__name__


def _column(values: list[Any]) -> pa.Array:
    """An Arrow column; values of mixed JSON types become JSON text so nothing is lost."""
    if len({_kind(value) for value in values if value is not None}) <= 1:
        try:
            return pa.array(values)
        except _JSON_FALLBACK:
            pass  # e.g. lists of mixed items or ints past 64 bits: JSON text below
    return pa.array(
        [None if value is None else json.dumps(value) for value in values], type=pa.string()
    )


def records_to_table(records: list[Any]) -> pa.Table:
    """JSON records as a table of flattened columns (`flatten_record`), in first-seen order."""
    flat = [flatten_record(record) for record in records]
    keys = dict.fromkeys(key for record in flat for key in record)
    return pa.table({key: _column([record.get(key) for record in flat]) for key in keys})


def compile_jsonpath(expression: str, *, field: str) -> Any:
    """A parsed JSONPath; a malformed one is a `ConfigError` naming the config ``field``."""
    try:
        return parse_jsonpath(expression)
    except JSONPathError as exc:
        raise ConfigError(
            f"invalid JSONPath {expression!r}: {exc}",
            path=field,
            hint="use JSONPath such as '$', '$.data[*]' or '$.results'",
        ) from exc


class RecordPath:
    """Selects the records of a response body: one matched list gives its items.

    >>> RecordPath("$").select([{"id": 1}, {"id": 2}])
    [{'id': 1}, {'id': 2}]
    >>> RecordPath("$.missing").select({"data": []})
    []
    """

    def __init__(self, expression: str, *, field: str = "records_path") -> None:
        self.expression = expression
        self._path = compile_jsonpath(expression, field=field)

    def select(self, body: Any) -> list[Any]:
        if body is None:
            return []
        matches = [match.value for match in self._path.find(body)]
        if len(matches) == 1 and isinstance(matches[0], list):
            return list(matches[0])
        return [value for value in matches if value is not None]


def first_value(path: Any, body: Any) -> Any:
    """The value of the first JSONPath match in ``body``, or ``None`` when nothing matches."""
    if body is None:
        return None
    matches = path.find(body)
    return matches[0].value if matches else None


@dataclass(frozen=True)
class Page:
    """One fetched page: the records in it, the decoded body and the response."""

    records: list[Any]
    body: Any
    response: httpx.Response


Fetch = Callable[[httpx.URL], tuple[httpx.Response, Any]]
"""Requests one URL and returns the response with its decoded JSON body."""


class PageWalker:
    """Yields the pages of an endpoint in order, following one pagination style.

    ``page_number`` and ``offset`` stop on an empty page or one shorter than ``page_size``;
    ``cursor``, ``next_link`` and ``link_header`` stop when the API gives no next page.
    ``max_pages`` caps every style.
    """

    def __init__(self, spec: Pagination) -> None:
        self.spec = spec
        self._cursor_path = compile_jsonpath(spec.cursor_path, field="pagination.cursor_path")
        self._next_path = compile_jsonpath(spec.next_path, field="pagination.next_path")

    def pages(self, url: httpx.URL, fetch: Fetch, records: RecordPath) -> Iterator[Page]:
        """Pages starting at ``url`` (which already carries the base query parameters)."""
        walk = {
            "none": self._single,
            "page_number": self._numbered,
            "offset": self._numbered,
            "cursor": self._cursor,
            "next_link": self._linked,
            "link_header": self._linked,
        }[self.spec.type]
        limit = self.spec.max_pages
        for count, page in enumerate(walk(url, fetch, records), start=1):
            yield page
            if limit is not None and count >= limit:
                logger.debug("stopping after max_pages=%d pages", limit)
                return

    def _get(self, url: httpx.URL, fetch: Fetch, records: RecordPath) -> Page:
        response, body = fetch(url)
        return Page(records.select(body), body, response)

    def _single(self, url: httpx.URL, fetch: Fetch, records: RecordPath) -> Iterator[Page]:
        yield self._get(url, fetch, records)

    def _numbered(self, url: httpx.URL, fetch: Fetch, records: RecordPath) -> Iterator[Page]:
        spec = self.spec
        by_page = spec.type == "page_number"
        position = spec.start if by_page else 0
        while True:
            if by_page:
                page_url = url.copy_set_param(spec.page_param, position)
                if spec.size_param is not None:
                    page_url = page_url.copy_set_param(spec.size_param, spec.page_size)
            else:
                page_url = url.copy_set_param(spec.offset_param, position).copy_set_param(
                    spec.limit_param, spec.page_size
                )
            page = self._get(page_url, fetch, records)
            if not page.records:
                return
            yield page
            if len(page.records) < spec.page_size:
                return
            position += 1 if by_page else len(page.records)

    def _cursor(self, url: httpx.URL, fetch: Fetch, records: RecordPath) -> Iterator[Page]:
        page_url = url
        seen: set[str] = set()
        while True:
            page = self._get(page_url, fetch, records)
            yield page
            cursor = first_value(self._cursor_path, page.body)
            if cursor is None or cursor == "":
                return
            if str(cursor) in seen:
                raise _loop_error(f"cursor {str(cursor)[:100]!r}", self.spec.cursor_path)
            seen.add(str(cursor))
            page_url = url.copy_set_param(self.spec.cursor_param, cursor)

    def _linked(self, url: httpx.URL, fetch: Fetch, records: RecordPath) -> Iterator[Page]:
        page_url = url
        seen = {str(url)}
        while True:
            page = self._get(page_url, fetch, records)
            yield page
            if self.spec.type == "link_header":
                link = page.response.links.get("next", {}).get("url")
            else:
                link = first_value(self._next_path, page.body)
            if not link:
                return
            # Relative links resolve against the URL that answered (redirects included).
            page_url = page.response.url.join(str(link))
            if str(page_url) in seen:
                raise _loop_error("next link", self.spec.next_path)
            seen.add(str(page_url))


def _loop_error(kind: str, path: str) -> SourceError:
    return SourceError(
        f"the API returned the same {kind} twice; pagination would never end",
        hint=f"check pagination.type and the JSONPath {path!r} of the next page",
    )
