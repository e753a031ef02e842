"""XML reader: the elements at ``record_path`` become rows, streamed with bounded memory.

Each record element becomes one row of strings: its attributes as ``@name``, each child
element's text under the child's name, a nested child's content as ``child.sub`` and
``child.@attr``, the record's own text (if any) as ``#text``. An empty element gives
``''``, a missing one null; a child that repeats gives a list (a string column of JSON
lists once it mixes with single values). Names are local names: namespaces are dropped,
and ``record_path`` matches local names from the root (``orders/order``).

Entities are never expanded: a document whose DTD declares entities is refused (entity
expansion bombs, external entities such as ``file:///etc/passwd``), no DTD or network
resource is loaded, and libxml2's size limits stay on (``huge_tree=False``).

>>> import pyarrow as pa
>>> from loopline.config.sources import XmlOptions
>>> doc = b'<orders><order id="1"><sku>A</sku></order><order id="2"><sku/></order></orders>'
>>> tables = read_xml(lambda: pa.BufferReader(doc), XmlOptions(record_path="orders/order"),
...                   path="o.xml")
>>> [t.to_pylist() for t in tables]
[[{'@id': '1', 'sku': 'A'}, {'@id': '2', 'sku': ''}]]
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
from lxml import etree

from loopline.config.sources import XmlOptions
from loopline.errors import SourceError
from loopline.ingest.sources.json import records_to_table

Opener = Callable[[], Any]
"""Opens a fresh binary stream of the (decompressed) file."""

_HEAD_BYTES = 4096


def read_xml(
    open_stream: Opener,
    options: XmlOptions,
    *,
    path: Path | str,
    batch_size: int = 65_536,
) -> Iterator[pa.Table]:
    """Stream tables of at most ``batch_size`` records; nothing for a blank file."""
    with open_stream() as raw:
        if not raw.read(_HEAD_BYTES).strip():
            return
    parts = [p for p in options.record_path.strip("/").split("/") if p]
    if not parts:
        raise SourceError(
            "xml.record_path is empty", path=str(path), hint="e.g. record_path: orders/order"
        )
    rows: list[dict[str, Any]] = []
    with open_stream() as raw:
        for record in _record_elements(raw, parts, path):
            rows.append(_record(record))
            _release(record)
            if len(rows) == batch_size:
                yield records_to_table(rows, flatten=False, path=path)
                rows = []
    if rows:
        yield records_to_table(rows, flatten=False, path=path)


def _record_elements(raw: Any, parts: list[str], path: Path | str) -> Iterator[Any]:
    events = etree.iterparse(
        raw,
        events=("end",),
        tag=f"{{*}}{parts[-1]}",
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        huge_tree=False,
        remove_comments=True,
        remove_pis=True,
    )
    checked = False
    for _, element in events:
        if not checked:
            _refuse_entities(element, path)
            checked = True
        if _path_of(element) == parts:
            yield element


def _refuse_entities(element: Any, path: Path | str) -> None:
    dtd = element.getroottree().docinfo.internalDTD
    if dtd is not None and any(True for _ in dtd.iterentities()):
        raise SourceError(
            "the XML document declares entities; loopline does not expand them "
            "(protection against entity-expansion bombs and external entities)",
            path=str(path),
            hint="export the XML without a DTD that declares entities",
        )


def _path_of(element: Any) -> list[str]:
    names: list[str] = []
    while element is not None:
        names.append(etree.QName(element).localname)
        element = element.getparent()
    return names[::-1]


def _record(element: Any) -> dict[str, Any]:
    row: dict[str, Any] = {}
    text = (element.text or "").strip()
    if text:
        row["#text"] = text
    _content(element, "", row)
    return row


def _content(element: Any, prefix: str, row: dict[str, Any]) -> None:
    for name, value in element.attrib.items():
        _put(row, f"{prefix}@{etree.QName(name).localname}", value)
    for child in element:
        if not isinstance(child.tag, str):
            continue  # entity references and the like: never expanded
        name = f"{prefix}{etree.QName(child).localname}"
        if len(child) or child.attrib:
            _content(child, f"{name}.", row)
            text = (child.text or "").strip()
            if text:
                _put(row, name, text)
        else:
            _put(row, name, child.text or "")


def _put(row: dict[str, Any], name: str, value: str) -> None:
    if name not in row:
        row[name] = value
    elif isinstance(row[name], list):
        row[name].append(value)
    else:
        row[name] = [row[name], value]


def _release(element: Any) -> None:
    """Free a parsed record and the siblings before it, so memory stays bounded."""
    element.clear(keep_tail=True)
    parent = element.getparent()
    if parent is not None:
        while element.getprevious() is not None:
            del parent[0]
