"""Source specifications: files, SQL databases and REST APIs.

>>> FileSourceConfig(type="file", path="data/*.csv").format
'auto'
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CsvOptions(_Spec):
    """CSV dialect; every field left ``None`` is detected from a sample of the file."""

    delimiter: str | None = None
    quote_char: str | None = None
    header: bool | None = None
    encoding: str | None = None


class JsonOptions(_Spec):
    """JSON layout: ``auto`` tells an array from NDJSON by the first byte."""

    layout: Literal["auto", "array", "ndjson"] = "auto"
    flatten: bool = Field(True, description="Flatten nested objects to a.b columns; else structs.")
    records_path: str | None = Field(
        None, description="ijson prefix of the records inside a document, e.g. 'data.item'."
    )


class XmlOptions(_Spec):
    """XML records are the elements at ``record_path`` (slash-separated, from the root)."""

    record_path: str = Field(..., description="e.g. 'orders/order'")


class FileSourceConfig(_Spec):
    """Local files: a path, a glob or a folder; ``.gz`` and ``.zst`` are decompressed."""

    type: Literal["file"]
    path: str
    format: Literal["auto", "csv", "json", "xml", "parquet"] = "auto"
    csv: CsvOptions = Field(default_factory=CsvOptions)
    json_options: JsonOptions = Field(default_factory=JsonOptions, alias="json")
    xml: XmlOptions | None = None
    incremental: bool = Field(
        True, description="Skip files already ingested (same path, size and content hash)."
    )
    batch_size: int = Field(65_536, gt=0)


class SqlSourceConfig(_Spec):
    """Any SQLAlchemy URL; either a ``table`` or a ``query``; optional incremental cursor."""

    type: Literal["sql"]
    url: SecretStr
    table: str | None = None
    query: str | None = None
    cursor_column: str | None = Field(
        None, description="Incremental by this column's high-water mark."
    )
    initial_cursor: Any = None
    chunk_size: int = Field(50_000, gt=0)


class BearerAuth(_Spec):
    type: Literal["bearer"]
    token: SecretStr


class ApiKeyAuth(_Spec):
    type: Literal["api_key"]
    name: str = "X-API-Key"
    value: SecretStr
    location: Literal["header", "query"] = Field("header", alias="in")


class BasicAuth(_Spec):
    type: Literal["basic"]
    username: str
    password: SecretStr


HttpAuth = Annotated[BearerAuth | ApiKeyAuth | BasicAuth, Field(discriminator="type")]


class Pagination(_Spec):
    """How to walk pages.

    ``none``; ``page_number`` (``page_param``, ``size_param``, ``page_size``, ``start``);
    ``offset`` (``offset_param``, ``limit_param``, ``page_size``); ``cursor`` (the next cursor is
    read at ``cursor_path`` and sent as ``cursor_param``); ``next_link`` (the next URL is read at
    ``next_path``); ``link_header`` (RFC 8288 ``rel="next"``).
    """

    type: Literal["none", "page_number", "offset", "cursor", "next_link", "link_header"] = "none"
    page_param: str = "page"
    size_param: str | None = "per_page"
    offset_param: str = "offset"
    limit_param: str = "limit"
    page_size: int = Field(100, gt=0)
    start: int = 1
    cursor_param: str = "cursor"
    cursor_path: str = "$.next_cursor"
    next_path: str = "$.next"
    max_pages: int | None = Field(None, gt=0)


class HttpIncremental(_Spec):
    """Send the stored high-water mark of ``cursor_field`` as query parameter ``param``."""

    param: str
    cursor_field: str
    initial: Any = None


class RetryPolicy(_Spec):
    max_attempts: int = Field(5, ge=1)
    backoff_base_s: float = Field(0.5, gt=0)
    backoff_max_s: float = Field(30.0, gt=0)


class HttpSourceConfig(_Spec):
    """A JSON REST endpoint."""

    type: Literal["http"]
    url: str
    params: dict[str, Any] = Field(default_factory=dict)
    headers: dict[str, str] = Field(default_factory=dict)
    auth: HttpAuth | None = None
    pagination: Pagination = Field(default_factory=Pagination)
    records_path: str = Field("$", description="JSONPath of the records in a response body.")
    incremental: HttpIncremental | None = None
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    rate_limit_per_s: float | None = Field(None, gt=0)
    timeout_s: float = Field(30.0, gt=0)
    batch_size: int = Field(10_000, gt=0)


SourceConfig = Annotated[
    FileSourceConfig | SqlSourceConfig | HttpSourceConfig, Field(discriminator="type")
]
