"""Batch decoding of device payloads: good / bad splits, flattening, times, ids, msgpack."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import msgpack
import numpy as np
import polars as pl
import pytest

from loopline.errors import DecodeError
from loopline.stream import decode as decode_module
from loopline.stream.decode import REJECTS_SCHEMA, decode_batch, payload_id
from loopline.stream.transport import Delivery

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
EPOCH = int(T0.timestamp())


def deliveries(*payloads: bytes | dict[str, Any]) -> list[Delivery]:
    return [
        Delivery(
            p if isinstance(p, bytes) else json.dumps(p).encode(),
            topic=f"sensors/s1/d{i}",
            received_ns=1_000 + i,
        )
        for i, p in enumerate(payloads)
    ]


def decode(items: list[Delivery], fmt: str = "json") -> Any:
    return decode_batch(items, fmt=fmt, id_field="msg_id", device_field="device", time_field="ts")  # type: ignore[arg-type]


def reading(i: int = 0, **extra: Any) -> dict[str, Any]:
    return {"msg_id": f"m{i}", "device": "d1", "ts": EPOCH + i, "temperature": 20.5 + i} | extra


def test_good_batch_has_the_pipeline_columns_and_types() -> None:
    out = decode(deliveries(reading(0), reading(1)))
    assert out.frame.columns[:3] == ["msg_id", "device", "ts"]
    assert out.frame.columns[-3:] == ["_topic", "_received_ns", "_pos"]
    assert out.frame.schema["ts"] == pl.Datetime("us", "UTC")
    assert out.frame.schema["_pos"] == pl.UInt32
    assert out.frame.schema["_received_ns"] == pl.Int64
    assert out.frame["ts"].to_list() == [T0, T0.replace(second=1)]
    assert out.frame["_topic"].to_list() == ["sensors/s1/d0", "sensors/s1/d1"]
    assert out.frame["_received_ns"].to_list() == [1000, 1001]
    assert out.rejects.height == 0
    assert out.rejects.schema == pl.Schema(REJECTS_SCHEMA)


def test_bad_payloads_are_rejected_by_the_first_rule_they_break_at_their_position() -> None:
    items = deliveries(
        reading(0),
        b'{"msg_id": "m1", "device": "d1", "ts": 17',  # truncated
        b"\xff\xfe not utf-8",
        b"[1, 2, 3]",
        b"42",
        b"null",
        {"msg_id": "m6", "ts": EPOCH},  # no device
        {"msg_id": "m7", "device": None, "ts": EPOCH},  # null device
        {"msg_id": "m8", "device": "d1"},  # no time
        {"msg_id": "m9", "device": "d1", "ts": "yesterday"},
        {"msg_id": "m10", "device": "d1", "ts": True},
        b"",
        {"msg_id": "m12", "ts": "soon"},  # device is checked before time
        reading(13),
    )
    out = decode(items)
    assert out.frame["_pos"].to_list() == [0, 13]
    assert out.frame["msg_id"].to_list() == ["m0", "m13"]
    assert out.rejects.select("_pos", "_rule", "_column").rows() == [
        (1, "decode:json", None),
        (2, "decode:json", None),
        (3, "decode:not_object", None),
        (4, "decode:not_object", None),
        (5, "decode:not_object", None),
        (6, "decode:missing_field:device", "device"),
        (7, "decode:missing_field:device", "device"),
        (8, "decode:missing_field:ts", "ts"),
        (9, "decode:time", "ts"),
        (10, "decode:time", "ts"),
        (11, "decode:json", None),
        (12, "decode:missing_field:device", "device"),
    ]
    assert out.rejects["_topic"][0] == "sensors/s1/d1"
    assert out.rejects["_raw_value"][0] == '{"msg_id": "m1", "device": "d1", "ts": 17'
    assert out.rejects["_raw_value"][1] == "\ufffd\ufffd not utf-8"
    assert out.rejects["_record"].to_list() == out.rejects["_raw_value"].to_list()


def test_bad_payloads_that_look_like_objects_are_found_too() -> None:
    items = deliveries(
        reading(0),
        b'{"device": {"id": "d1"}',  # truncated after a nested object: still {...}
        b'{"device": "d1", "ts": 1} {"device": "d2", "ts": 2}',
        b'{"device": "d1", "ts": NaN}',
        b'{"device": "d1", "ts": 1714564800, "x": 1e999}',
        reading(5),
    )
    out = decode(items)
    assert out.frame["msg_id"].to_list() == ["m0", "m5"]
    assert out.rejects.select("_pos", "_rule").rows() == [
        (1, "decode:json"),
        (2, "decode:json"),
        (3, "decode:json"),
        (4, "decode:json"),
    ]


def test_rejected_payload_text_is_cut_at_1000_characters() -> None:
    out = decode(deliveries(b'{"device": "' + b"x" * 5000))
    assert out.rejects["_rule"].to_list() == ["decode:json"]
    assert len(out.rejects["_raw_value"][0]) == 1000


def test_mixed_kinds_of_value_become_text_instead_of_failing_the_batch() -> None:
    out = decode(deliveries(reading(0, status=1), reading(1, status=True), b"[]"))
    assert out.frame["status"].to_list() == ["1", "true"]
    assert out.rejects["_rule"].to_list() == ["decode:not_object"]


def test_integers_stay_int64_and_a_fraction_makes_the_column_float64() -> None:
    ints = decode(deliveries(reading(0, level=3), reading(1, level=4))).frame
    mixed = decode(deliveries(reading(0, level=3), reading(1, level=4.5))).frame
    assert ints.schema["level"] == pl.Int64
    assert mixed.schema["level"] == pl.Float64
    assert mixed["level"].to_list() == [3.0, 4.5]


def test_nested_objects_are_flattened_one_level() -> None:
    payload = reading(0, loc={"lat": 52.5, "lon": 13.4, "meta": {"floor": 3}}, tags=["a"])
    out = decode(deliveries(payload, reading(1, loc=None)))
    frame = out.frame
    assert {"loc_lat", "loc_lon", "loc_meta", "tags"} <= set(frame.columns)
    assert "loc" not in frame.columns
    assert frame["loc_lat"].to_list() == [52.5, None]
    assert frame["loc_meta"].to_list() == ['{"floor":3}', None]
    assert frame["tags"].to_list() == [["a"], None]


def test_a_top_level_field_keeps_its_name_over_a_flattened_one() -> None:
    out = decode(deliveries(reading(0, a={"b": 1}, a_b=2)))
    assert out.frame["a_b"].to_list() == [2]
    assert out.frame["a_b_"].to_list() == [1]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (EPOCH, T0),
        (EPOCH + 0.25, T0.replace(microsecond=250_000)),
        (EPOCH * 1000 + 250, T0.replace(microsecond=250_000)),
        (EPOCH * 1_000_000 + 7, T0.replace(microsecond=7)),
        (float(EPOCH * 1000), T0),
        ("2024-05-01T12:00:00Z", T0),
        ("2024-05-01T14:00:00.5+02:00", T0.replace(microsecond=500_000)),
        ("2024-05-01 12:00:00", T0),
        ("2024-05-01T12:00:00", T0),
        (str(EPOCH), T0),
    ],
)
def test_time_formats(value: Any, expected: datetime) -> None:
    out = decode(deliveries({"device": "d1", "ts": value}))
    assert out.rejects.height == 0
    assert out.frame["ts"].to_list() == [expected]


def test_float_epochs_convert_exactly_as_the_polars_expression_does() -> None:
    # seconds, ms and us; exact halves of a microsecond (rounded to even), out of range,
    # NaN, infinities and nulls
    rng = np.random.default_rng(0)
    halves = np.round(rng.uniform(-1e12, 1e12, 500)) / 1e6 + 0.5e-6
    edge = [0.5e-6, -0.5e-6, 1.5e-6, 2.5e-6, np.nan, np.inf, -np.inf, 9.3e18, 8.99e18, 1e11, 1e14]
    values = np.concatenate(
        [
            rng.uniform(-2e9, 2e9, 500),
            rng.uniform(1e11, 1e13, 200),
            rng.uniform(1e14, 1e17, 200),
            halves,
            edge,
            rng.uniform(-1e19, 1e19, 100),
        ]
    )
    series = pl.Series("ts", [None if i % 97 == 0 else float(v) for i, v in enumerate(values)])
    fast = decode_module.event_times(series)
    assert fast.equals(decode_module._epoch_to_time(series, integer=False), check_names=True)
    assert fast.null_count() > 10


def test_iso_strings_with_and_without_offsets_mix_in_one_batch() -> None:
    out = decode(
        deliveries(
            {"device": "d1", "ts": "2024-05-01T12:00:00"},
            {"device": "d1", "ts": "2024-05-01T13:00:00+01:00"},
            {"device": "d1", "ts": EPOCH},
        )
    )
    assert out.frame["ts"].to_list() == [T0, T0, T0]  # the number became text: still a time
    assert out.rejects["_rule"].to_list() == []
    mixed = decode(deliveries({"device": "d1", "ts": EPOCH}, {"device": "d1", "ts": "x"}))
    assert mixed.frame["ts"].to_list() == [T0]
    assert mixed.rejects["_rule"].to_list() == ["decode:time"]


def test_ids_come_from_the_payload_hash_when_absent() -> None:
    same = b'{"device": "d1", "ts": 1714564800, "t": 1}'
    out = decode(deliveries(same, same, {"device": "d1", "ts": EPOCH, "msg_id": ""}, reading(3)))
    ids = out.frame["msg_id"].to_list()
    assert ids[0] == ids[1] == payload_id(same)
    assert len(ids[0]) == 24
    assert ids[2] != ids[0]
    assert len(ids[2]) == 24
    assert ids[3] == "m3"
    numeric = decode(deliveries({"msg_id": 7, "device": 12, "ts": EPOCH})).frame
    assert numeric.row(0)[:2] == ("7", "12")
    nested = decode(deliveries({"msg_id": [7], "device": ["d1"], "ts": EPOCH})).frame
    assert nested.row(0)[:2] == ("[7]", '["d1"]')


def test_line_breaks_inside_payloads_do_not_shift_rows() -> None:
    pretty = json.dumps(reading(0), indent=2).encode().replace(b"\n", b"\r\n")
    out = decode(deliveries(pretty, reading(1), b'{"device":\n"d1", "ts":', reading(3)))
    assert out.frame["msg_id"].to_list() == ["m0", "m1", "m3"]
    assert out.frame["_pos"].to_list() == [0, 1, 3]
    assert out.rejects.select("_pos", "_rule").rows() == [(2, "decode:json")]


def test_msgpack_round_trip_and_rejects() -> None:
    good = msgpack.packb(reading(0, loc={"lat": 1.5}))
    stamped = msgpack.packb(
        {"device": "d2", "ts": msgpack.Timestamp.from_datetime(T0), "v": 1}, datetime=False
    )
    out = decode(
        deliveries(good, b"\xc1", msgpack.packb([1, 2]), stamped, msgpack.packb({"ts": 1})),
        fmt="msgpack",
    )
    assert out.frame.select("msg_id", "device", "ts", "loc_lat").row(0) == ("m0", "d1", T0, 1.5)
    assert out.frame.filter(pl.col("device") == "d2")["ts"].to_list() == [T0]
    assert out.rejects.select("_pos", "_rule").rows() == [
        (1, "decode:msgpack"),
        (2, "decode:not_object"),
        (4, "decode:missing_field:device"),
    ]


def test_empty_batch_gives_empty_frames_with_the_columns() -> None:
    out = decode([])
    assert out.frame.height == 0
    assert out.rejects.height == 0
    assert out.frame.schema["ts"] == pl.Datetime("us", "UTC")
    assert out.frame.columns == ["msg_id", "device", "ts", "_topic", "_received_ns", "_pos"]
    assert decode([], fmt="msgpack").frame.columns == out.frame.columns


def test_all_bad_batch_gives_an_empty_frame_with_the_columns() -> None:
    out = decode(deliveries(b"nope", b"[]"))
    assert out.frame.height == 0
    assert out.frame.columns == ["msg_id", "device", "ts", "_topic", "_received_ns", "_pos"]
    assert out.rejects["_rule"].to_list() == ["decode:json", "decode:not_object"]


def test_unknown_format_is_an_error() -> None:
    with pytest.raises(DecodeError, match="unknown payload format"):
        decode(deliveries(reading(0)), fmt="xml")
