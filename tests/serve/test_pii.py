"""mask_pii / PiiMask: which fields are masked, how, and what is left alone."""

from __future__ import annotations

import hashlib

from loopline.serve.pii import MASK, PiiMask, mask_pii, mask_rows


def test_listed_fields_are_masked_case_insensitively() -> None:
    row = {"Email": "a@b.c", "PHONE": "123", "tenure": 3}
    assert mask_pii(row, ["email", "phone"]) == {"Email": MASK, "PHONE": MASK, "tenure": 3}


def test_the_input_row_is_not_changed() -> None:
    row = {"email": "a@b.c"}
    masked = mask_pii(row, ["email"])
    assert row == {"email": "a@b.c"}
    assert masked is not row


def test_no_fields_copies_the_row() -> None:
    row = {"email": "a@b.c"}
    assert mask_pii(row, []) == row
    assert not PiiMask([])


def test_null_stays_null_and_nested_values_are_masked_whole() -> None:
    row = {"email": None, "address": {"street": "x", "city": "y"}, "tags": ["a"]}
    assert mask_pii(row, ["email", "address"]) == {"email": None, "address": MASK, "tags": ["a"]}


def test_a_salt_gives_a_stable_pseudonym() -> None:
    expected = "sha256:" + hashlib.sha256(b"pepper\x1fa@b.c").hexdigest()[:16]
    first = mask_pii({"email": "a@b.c"}, ["email"], salt="pepper")
    assert first == {"email": expected}
    assert mask_pii({"email": "a@b.c"}, ["email"], salt="pepper") == first
    assert mask_pii({"email": "a@b.c"}, ["email"], salt="other") != first
    assert mask_pii({"email": "x@y.z"}, ["email"], salt="pepper") != first


def test_rows_of_a_batch_one_row_and_anything_else() -> None:
    rows = [{"email": "x", "n": 1}, {"email": "y", "n": 2}, "not a row"]
    assert mask_rows(rows, ["email"]) == [
        {"email": MASK, "n": 1},
        {"email": MASK, "n": 2},
        "not a row",
    ]
    assert mask_rows({"email": "x"}, ["email"]) == {"email": MASK}
    assert mask_rows("text", ["email"]) == "text"
    assert mask_rows(rows, []) is rows  # nothing to mask: no copy on the request path
