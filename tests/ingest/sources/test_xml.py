"""XML reader: record_path, attributes, nesting, batching, and no entity expansion."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import pytest

from loopline.config.sources import FileSourceConfig
from loopline.errors import SourceError
from loopline.ingest.sources import FileSource
from loopline.ingest.sources.base import Chunk

ORDERS = b"""<?xml version="1.0" encoding="UTF-8"?>
<shop>
  <meta><order id="ignored">not a record</order></meta>
  <orders>
    <order id="1" status="new">
      <sku>A-1</sku>
      <qty>2</qty>
      <customer vip="yes"><name>Ann</name></customer>
      <note/>
    </order>
    <order id="2">
      <sku>B-2</sku>
      <qty>1</qty>
      <customer><name>Bob</name></customer>
    </order>
  </orders>
</shop>
"""


def read_chunks(path: Path, record_path: str, **options: Any) -> list[Chunk]:
    spec = FileSourceConfig.model_validate(
        {"type": "file", "path": path.name, "xml": {"record_path": record_path}, **options}
    )
    return list(FileSource("xml", spec, base_dir=path.parent).read(None))


def read_rows(path: Path, record_path: str, **options: Any) -> list[dict[str, Any]]:
    chunks = read_chunks(path, record_path, **options)
    return [row for chunk in chunks for row in chunk.data.to_pylist()]


def test_records_at_record_path_with_attributes_and_nested_children(tmp_path: Path) -> None:
    path = tmp_path / "orders.xml"
    path.write_bytes(ORDERS)
    rows = read_rows(path, "shop/orders/order")
    assert rows == [
        {
            "@id": "1",
            "@status": "new",
            "sku": "A-1",
            "qty": "2",
            "customer.@vip": "yes",
            "customer.name": "Ann",
            "note": "",
        },
        {
            "@id": "2",
            "@status": None,
            "sku": "B-2",
            "qty": "1",
            "customer.@vip": None,
            "customer.name": "Bob",
            "note": None,
        },
    ]


def test_elements_with_the_record_name_elsewhere_are_not_records(tmp_path: Path) -> None:
    path = tmp_path / "orders.xml"
    path.write_bytes(ORDERS)
    ids = [row["@id"] for row in read_rows(path, "/shop/orders/order/")]
    assert ids == ["1", "2"]


def test_namespaces_are_matched_and_named_by_local_name(tmp_path: Path) -> None:
    path = tmp_path / "ns.xml"
    path.write_bytes(
        b'<f:feed xmlns:f="urn:feed" xmlns:x="urn:x">'
        b'<f:entry x:lang="en"><f:title>Hi</f:title></f:entry></f:feed>'
    )
    assert read_rows(path, "feed/entry") == [{"@lang": "en", "title": "Hi"}]


def test_repeated_children_become_a_list(tmp_path: Path) -> None:
    path = tmp_path / "tags.xml"
    path.write_bytes(b"<r><item><tag>a</tag><tag>b</tag></item></r>")
    assert read_rows(path, "r/item") == [{"tag": ["a", "b"]}]


def test_record_text_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "words.xml"
    path.write_bytes(b'<words><w lang="en"> hello </w><w>ciao</w></words>')
    assert read_rows(path, "words/w") == [
        {"#text": "hello", "@lang": "en"},
        {"#text": "ciao", "@lang": None},
    ]


def test_records_are_chunked_by_batch_size_with_gzip(tmp_path: Path) -> None:
    body = b"".join(b"<row><n>%d</n></row>" % i for i in range(95))
    path = tmp_path / "rows.xml.gz"
    path.write_bytes(gzip.compress(b"<rows>" + body + b"</rows>"))
    chunks = read_chunks(path, "rows/row", batch_size=10)
    assert [c.num_rows for c in chunks] == [10] * 9 + [5]
    assert [r["n"] for c in chunks for r in c.data.to_pylist()] == [str(i) for i in range(95)]


def test_no_matching_records_gives_one_empty_chunk(tmp_path: Path) -> None:
    path = tmp_path / "orders.xml"
    path.write_bytes(ORDERS)
    chunks = read_chunks(path, "shop/invoices/invoice")
    assert [c.num_rows for c in chunks] == [0]
    assert chunks[0].state is not None


def test_auto_format_xml_without_record_path_asks_for_it(tmp_path: Path) -> None:
    path = tmp_path / "orders.xml"
    path.write_bytes(ORDERS)
    spec = FileSourceConfig(type="file", path="orders.xml")
    with pytest.raises(SourceError, match="record_path"):
        list(FileSource("xml", spec, base_dir=tmp_path).read(None))


def test_entity_expansion_bomb_is_refused(tmp_path: Path) -> None:
    entities = "".join(
        f'<!ENTITY lol{i} "{("&lol" + str(i - 1) + ";") * 10}">' for i in range(1, 10)
    )
    doc = (
        f'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY lol0 "lol">{entities}]>'
        "<r><x><v>&lol9;</v></x></r>"
    )
    path = tmp_path / "bomb.xml"
    path.write_text(doc)
    with pytest.raises(SourceError) as info:
        read_rows(path, "r/x")
    assert info.value.fields["path"] == str(path)
    assert "bomb.xml" in str(info.value)


def test_external_entity_is_never_expanded(tmp_path: Path) -> None:
    doc = (
        '<?xml version="1.0"?><!DOCTYPE r [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
        "<r><x><v>&xxe;</v><w>ok</w></x></r>"
    )
    path = tmp_path / "xxe.xml"
    path.write_text(doc)
    with pytest.raises(SourceError, match="entities") as info:
        read_rows(path, "r/x")
    assert "root:" not in str(info.value)
    assert "xxe.xml" in str(info.value)
