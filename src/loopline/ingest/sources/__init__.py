"""Sources: each reads bounded chunks of Arrow data with resumable state."""

from loopline.ingest.sources.files import FileSource

__all__ = [
    "FileSource",
]
