"""Build the source a spec describes.

>>> from pathlib import Path
>>> from loopline.config import FileSourceConfig
>>> open_source("orders", FileSourceConfig(type="file", path="x.csv"), base_dir=Path(".")).name
'orders'
"""

from __future__ import annotations

from pathlib import Path

from loopline.config import FileSourceConfig, HttpSourceConfig, SourceConfig, SqlSourceConfig
from loopline.ingest.sources.base import Source


def open_source(name: str, spec: SourceConfig, *, base_dir: Path) -> Source:
    """The :class:`Source` for ``spec``; imports each kind lazily (drivers are extras)."""
    if isinstance(spec, FileSourceConfig):
        from loopline.ingest.sources.files import FileSource

        return FileSource(name, spec, base_dir=base_dir)
    if isinstance(spec, SqlSourceConfig):
        from loopline.ingest.sources.sql import SqlSource

        return SqlSource(name, spec, base_dir=base_dir)
    if isinstance(spec, HttpSourceConfig):
        from loopline.ingest.sources.http import HttpSource

        return HttpSource(name, spec, base_dir=base_dir)
    raise TypeError(f"unknown source spec {type(spec).__name__}")
