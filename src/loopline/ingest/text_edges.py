"""Which text columns hold no value with whitespace at either end, read off the raw bytes.

The ``null_tokens`` step matches a value once stripped (``' N/A '`` is a null token).
Stripping every value costs more than matching it; on a column where no value starts or
ends with whitespace, matching the raw value gives the same answer. This finds those
columns of an Arrow table from the UTF-8 bytes around each value's offsets (vectorised,
no copy): a first byte that may begin a whitespace character, or a last byte that may end
one, marks the column as padded. The test errs on the padded side only.

>>> import pyarrow as pa
>>> table = pa.table({"a": ["x", "", "y z"], "b": ["x ", "y", "z"], "c": ["é", "x", "y"]})
>>> sorted(unpadded_columns(table))
['a']
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

# First bytes of Unicode White_Space characters (plus U+001C-001F, which Python strips):
# ASCII ones, and the lead bytes of U+0085/U+00A0 (C2), U+1680 (E1), U+2000-205F (E2),
# U+3000 (E3).
_FIRST = np.zeros(256, dtype=bool)
_FIRST[[*range(0x09, 0x0E), *range(0x1C, 0x21), 0xC2, 0xE1, 0xE2, 0xE3]] = True
# Last bytes: ASCII whitespace, or any byte of a multi-byte character (checked as padded).
_LAST = np.zeros(256, dtype=bool)
_LAST[[*range(0x09, 0x0E), *range(0x1C, 0x21), *range(0x80, 0x100)]] = True


def unpadded_columns(table: pa.Table) -> frozenset[str]:
    """Names of ``table``'s string columns whose values never start or end with whitespace."""
    return frozenset(
        field.name
        for field, column in zip(table.schema, table.columns, strict=True)
        if (pa.types.is_string(field.type) or pa.types.is_large_string(field.type))
        and not any(_padded(chunk) for chunk in column.chunks)
    )


def _padded(array: Any) -> bool:
    if len(array) == 0:
        return False
    _, offsets_buffer, data_buffer = array.buffers()
    if data_buffer is None or data_buffer.size == 0:
        return False  # only empty strings (or nulls)
    width = np.int64 if pa.types.is_large_string(array.type) else np.int32
    end = array.offset + len(array) + 1
    offsets: Any = np.frombuffer(offsets_buffer, dtype=width)[array.offset : end]
    data: Any = np.frombuffer(data_buffer, dtype=np.uint8)
    # An empty value reads its neighbours' bytes (or, at the ends, the buffer's first or
    # last byte): a false alarm at worst, never a miss.
    first = np.take(data, offsets[:-1], mode="clip")
    last = np.take(data, offsets[1:] - 1, mode="clip")
    return bool(_FIRST[first].any() or _LAST[last].any())
