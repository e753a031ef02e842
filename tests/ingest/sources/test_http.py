"""HttpSource against a real JSON API served on 127.0.0.1 (tests/ingest/sources/api_server.py)."""

from __future__ import annotations

import email.utils
import itertools
import json
import logging
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from tests.ingest.sources.api_server import (
    API_KEY,
    PASSWORD,
    TOKEN,
    USERNAME,
    ApiServer,
    make_items,
)

from loopline.config.sources import HttpSourceConfig
from loopline.errors import ConfigError, SourceError, TransientSourceError
from loopline.ingest.sources.base import Chunk, Source
from loopline.ingest.sources.http import HttpSource

FAST_RETRY = {"max_attempts": 3, "backoff_base_s": 0.001, "backoff_max_s": 0.01}


@pytest.fixture
def api() -> Iterator[ApiServer]:
    with ApiServer(make_items(25)) as server:
        yield server


def make_source(url: str, **spec: Any) -> HttpSource:
    config = HttpSourceConfig.model_validate({"type": "http", "url": url, **spec})
    return HttpSource("items", config, base_dir=Path("."))


def read_all(source: HttpSource, state: dict[str, Any] | None = None) -> list[Chunk]:
    return list(source.read(state))


def ids(chunks: list[Chunk]) -> list[int]:
    return [i for chunk in chunks for i in chunk.data.column("id").to_pylist()]


def test_http_source_satisfies_the_source_protocol(api: ApiServer) -> None:
    assert isinstance(make_source(api.url("/items")), Source)


@pytest.mark.parametrize(
    ("path", "pagination", "records_path"),
    [
        ("/items/pages", {"type": "page_number", "page_size": 10}, "$.data"),
        ("/items/offset", {"type": "offset", "page_size": 10}, "$.data[*]"),
        ("/items/cursor", {"type": "cursor", "cursor_path": "$.next_cursor"}, "$.data"),
        ("/items/next", {"type": "next_link"}, "$.results"),
        ("/items/next?absolute=1", {"type": "next_link"}, "$.results"),
        ("/items/link", {"type": "link_header"}, "$"),
    ],
    ids=["page_number", "offset", "cursor", "next_link", "next_link_absolute", "link_header"],
)
def test_every_pagination_type_reads_all_records_in_order_exactly_once(
    api: ApiServer, path: str, pagination: dict[str, Any], records_path: str
) -> None:
    source = make_source(api.url(path), pagination=pagination, records_path=records_path)

    chunks = read_all(source)

    assert ids(chunks) == list(range(1, 26))
    assert len(api.requests) == 3  # 10 + 10 + 5: a short page is the last one


def test_page_number_stops_on_an_empty_page(api: ApiServer) -> None:
    api.items = make_items(20)
    source = make_source(
        api.url("/items/pages"),
        pagination={"type": "page_number", "page_size": 10},
        records_path="$.data",
    )

    assert ids(read_all(source)) == list(range(1, 21))
    assert [r.query["page"] for r in api.requests] == ["1", "2", "3"]
    assert api.requests[-1].query["per_page"] == "10"


def test_max_pages_caps_the_pages_read(api: ApiServer) -> None:
    source = make_source(
        api.url("/items/pages"),
        pagination={"type": "page_number", "page_size": 10, "max_pages": 2},
        records_path="$.data",
    )

    assert ids(read_all(source)) == list(range(1, 21))
    assert len(api.requests) == 2


def test_chunks_hold_at_most_batch_size_records(api: ApiServer) -> None:
    source = make_source(api.url("/items"), batch_size=10)

    chunks = read_all(source)

    assert [c.num_rows for c in chunks] == [10, 10, 5]
    assert [c.position for c in chunks] == ["None:0", "None:1", "None:2"]
    assert {c.origin for c in chunks} == {f"http:{api.url('/items')}"}
    assert all(c.state is None for c in chunks)


def test_pages_are_fetched_lazily(api: ApiServer) -> None:
    api.items = make_items(50)
    source = make_source(
        api.url("/items/pages"),
        pagination={"type": "page_number", "page_size": 10},
        records_path="$.data",
        batch_size=10,
    )

    chunks = source.read(None)
    first = next(chunks)

    assert first.data.column("id").to_pylist() == list(range(1, 11))
    assert len(api.requests) == 2  # the first page, and the second to know the first isn't last
    assert ids([first, *chunks]) == list(range(1, 51))


@pytest.mark.parametrize(
    ("path", "good", "bad"),
    [
        (
            "/auth/bearer",
            {"type": "bearer", "token": TOKEN},
            {"type": "bearer", "token": "wrong-token"},
        ),
        (
            "/auth/api-key-header",
            {"type": "api_key", "name": "X-API-Key", "value": API_KEY},
            {"type": "api_key", "name": "X-API-Key", "value": "wrong-key"},
        ),
        (
            "/auth/api-key-query",
            {"type": "api_key", "name": "api_key", "value": API_KEY, "in": "query"},
            {"type": "api_key", "name": "api_key", "value": "wrong-key", "in": "query"},
        ),
        (
            "/auth/basic",
            {"type": "basic", "username": USERNAME, "password": PASSWORD},
            {"type": "basic", "username": USERNAME, "password": "wrong-password"},
        ),
    ],
    ids=["bearer", "api_key_header", "api_key_query", "basic"],
)
def test_auth_right_credentials_read_and_wrong_ones_fail_without_leaking(
    api: ApiServer, path: str, good: dict[str, Any], bad: dict[str, Any]
) -> None:
    assert ids(read_all(make_source(api.url(path), auth=good))) == list(range(1, 26))

    with pytest.raises(SourceError) as failed:
        read_all(make_source(api.url(path), auth=bad, retry=FAST_RETRY))

    assert not isinstance(failed.value, TransientSourceError)
    assert failed.value.fields["status"] == 401
    assert "wrong-" not in str(failed.value)
    assert len(api.requests) == 2  # 401 is not retried


def test_query_api_key_stays_out_of_logs_errors_and_origin(
    api: ApiServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    auth = {"type": "api_key", "name": "api_key", "value": API_KEY, "in": "query"}
    api.fail_next("/auth/api-key-query", 503, 404)
    source = make_source(api.url("/auth/api-key-query"), auth=auth, retry=FAST_RETRY)

    with pytest.raises(SourceError) as failed:
        read_all(source)

    assert api.requests[0].query["api_key"] == API_KEY  # the key was sent
    assert "HTTP Request" in caplog.text  # httpx logged the request URL ...
    assert API_KEY not in caplog.text  # ... without the key
    assert API_KEY not in str(failed.value)
    assert API_KEY not in source.origin


def test_retry_after_is_capped_by_backoff_max(api: ApiServer) -> None:
    api.fail_next("/items", 429, headers={"Retry-After": "30"})
    source = make_source(api.url("/items"), retry={**FAST_RETRY, "backoff_max_s": 0.05})

    assert ids(read_all(source)) == list(range(1, 26))
    assert api.requests[1].at - api.requests[0].at < 1


def test_retry_after_as_an_http_date_is_honoured(api: ApiServer) -> None:
    when = email.utils.formatdate(time.time() + 2, usegmt=True)  # whole seconds: waits 1-2 s
    api.fail_next("/items", 503, headers={"Retry-After": when})
    source = make_source(api.url("/items"), retry={**FAST_RETRY, "backoff_max_s": 5})

    assert ids(read_all(source)) == list(range(1, 26))
    assert api.requests[1].at - api.requests[0].at >= 0.5


def test_429_with_retry_after_waits_then_succeeds(api: ApiServer) -> None:
    api.fail_next("/items", 429, headers={"Retry-After": "1"})
    source = make_source(api.url("/items"), retry={**FAST_RETRY, "backoff_max_s": 5})

    start = time.monotonic()
    assert ids(read_all(source)) == list(range(1, 26))

    times = [r.at for r in api.requests]
    assert len(times) == 2
    assert times[1] - times[0] >= 0.95
    assert time.monotonic() - start >= 0.95


def test_503_twice_then_success(api: ApiServer) -> None:
    api.fail_next("/items", 503, 503)

    assert ids(read_all(make_source(api.url("/items"), retry=FAST_RETRY))) == list(range(1, 26))
    assert len(api.requests) == 3


def test_500_forever_fails_after_max_attempts(api: ApiServer) -> None:
    source = make_source(api.url("/always-500"), retry=FAST_RETRY)

    with pytest.raises(TransientSourceError) as failed:
        read_all(source)

    assert failed.value.fields["attempts"] == 3
    assert failed.value.fields["status"] == 500
    assert "after 3 attempts" in str(failed.value)
    assert len(api.requests) == 3


def test_404_fails_at_once_with_status_url_and_body(api: ApiServer) -> None:
    source = make_source(api.url("/nowhere?x=1"), retry=FAST_RETRY)

    with pytest.raises(SourceError) as failed:
        read_all(source)

    error = failed.value
    assert not isinstance(error, TransientSourceError)
    assert error.fields["status"] == 404
    assert error.fields["url"] == api.url("/nowhere?x=1")
    assert "no route /nowhere" in error.fields["body"]
    assert error.hint is not None
    assert len(api.requests) == 1


def test_non_json_body_is_a_source_error(api: ApiServer) -> None:
    with pytest.raises(SourceError, match="did not return JSON") as failed:
        read_all(make_source(api.url("/html")))

    assert failed.value.fields["content_type"] == "text/html"
    assert "<html>" in failed.value.fields["body"]


def test_connection_refused_is_a_clear_transient_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    source = make_source(f"http://127.0.0.1:{port}/items", retry={**FAST_RETRY, "max_attempts": 2})

    with pytest.raises(TransientSourceError, match="ConnectError") as failed:
        read_all(source)

    assert failed.value.fields["attempts"] == 2
    assert failed.value.hint is not None
    assert "reachable" in failed.value.hint


def test_rate_limit_spaces_requests(api: ApiServer) -> None:
    source = make_source(
        api.url("/items/pages"),
        pagination={"type": "page_number", "page_size": 5},
        records_path="$.data",
        rate_limit_per_s=5,
    )

    assert ids(read_all(source)) == list(range(1, 26))

    times = [r.at for r in api.requests]
    assert len(times) == 6  # five full pages, then an empty one
    assert times[-1] - times[0] >= 0.95
    assert min(b - a for a, b in itertools.pairwise(times)) >= 0.19


def test_incremental_second_run_fetches_only_newer_records(api: ApiServer) -> None:
    source = make_source(
        api.url("/items/pages"),
        pagination={"type": "page_number", "page_size": 10},
        records_path="$.data",
        incremental={"param": "since", "cursor_field": "updated"},
        batch_size=10,
    )

    first = read_all(source)
    assert ids(first) == list(range(1, 26))
    assert [c.state for c in first[:-1]] == [None, None]
    state = first[-1].state
    assert state == {"cursor": make_items(1, start=25)[0]["updated"]}
    assert "since" not in api.requests[0].query

    api.items.extend(make_items(3, start=26))
    api.requests.clear()
    second = read_all(source, state)

    assert ids(second) == [26, 27, 28]
    assert {r.query["since"] for r in api.requests} == {state["cursor"]}
    assert second[-1].state == {"cursor": make_items(1, start=28)[0]["updated"]}
    assert [c.position for c in second] == [f"{state['cursor']}:0"]
    # The same input read again gives the same positions (stable batch ids).
    assert [c.position for c in read_all(source, state)] == [f"{state['cursor']}:0"]


def test_incremental_with_nothing_new_yields_no_chunk(api: ApiServer) -> None:
    source = make_source(
        api.url("/items"),
        incremental={"param": "since", "cursor_field": "updated", "initial": "2099-01-01"},
    )

    assert read_all(source) == []
    assert api.requests[0].query["since"] == "2099-01-01"


def test_incremental_cursor_field_missing_is_a_source_error(api: ApiServer) -> None:
    source = make_source(api.url("/items"), incremental={"param": "since", "cursor_field": "nope"})

    with pytest.raises(SourceError, match="'nope' is missing"):
        read_all(source)


@pytest.mark.parametrize(
    ("records_path", "expected_ids"),
    [("$.data[*]", list(range(1, 26))), ("$.data", list(range(1, 26))), ("$.data[0]", [1])],
)
def test_records_path_selects_the_records(
    api: ApiServer, records_path: str, expected_ids: list[int]
) -> None:
    source = make_source(api.url("/items/envelope"), records_path=records_path)

    assert ids(read_all(source)) == expected_ids


def test_root_records_path_on_an_object_gives_one_record(api: ApiServer) -> None:
    api.items = make_items(2)

    (chunk,) = read_all(make_source(api.url("/items/envelope"), records_path="$"))

    assert chunk.data.column("count").to_pylist() == [2]


def test_invalid_records_path_is_a_config_error(api: ApiServer) -> None:
    with pytest.raises(ConfigError) as failed:
        make_source(api.url("/items"), records_path="$.[")

    assert failed.value.fields["path"] == "records_path"


def test_nested_objects_flatten_to_dotted_columns(api: ApiServer) -> None:
    api.items = [
        {"id": 1, "user": {"name": "Ann", "geo": {"lat": 1.5}}, "tags": ["a", "b"]},
        {"id": 2, "user": {"name": "Bob"}, "tags": []},
    ]

    (chunk,) = read_all(make_source(api.url("/items")))

    assert chunk.data.column_names == ["id", "user.name", "user.geo.lat", "tags"]
    assert chunk.data.column("user.geo.lat").to_pylist() == [1.5, None]
    assert chunk.data.schema.field("tags").type == pa.list_(pa.string())


def test_mixed_types_for_one_key_become_json_text(api: ApiServer) -> None:
    api.items = [
        {"id": 1, "value": 10, "flag": True},
        {"id": 2, "value": "ten", "flag": 1},
        {"id": 3, "value": {"n": 10}, "flag": None},
        {"id": 4, "value": [1, "x"]},
    ]

    (chunk,) = read_all(make_source(api.url("/items")))

    table = chunk.data
    assert table.schema.field("id").type == pa.int64()
    assert table.schema.field("value").type == pa.string()
    assert [json.loads(v) if v else v for v in table.column("value").to_pylist()] == [
        10,
        "ten",
        None,
        [1, "x"],
    ]
    assert table.column("value.n").to_pylist() == [None, None, 10, None]
    assert table.column("flag").to_pylist() == ["true", "1", None, None]


def test_incremental_cursor_of_another_type_than_the_state_is_a_source_error(
    api: ApiServer,
) -> None:
    source = make_source(api.url("/items"), incremental={"param": "since", "cursor_field": "id"})

    with pytest.raises(SourceError, match="maximum of incremental cursor field 'id'"):
        read_all(source, {"cursor": "2024-01-01"})
