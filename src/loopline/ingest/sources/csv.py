"""CSV reader: detects the dialect and encoding, then streams every column as a string.

Detection looks at the first 64 KiB: the encoding (UTF-8 first, else charset-normalizer),
the delimiter and quote character (``csv.Sniffer`` over ``, ; \\t |``) and whether the first
row is a header (``Sniffer.has_header``, else a first row of distinct, non-empty,
non-numeric values counts as one). Every field set in ``CsvOptions`` overrides detection.
Values stay strings and ``''`` stays ``''``: typing and null tokens are the contract's job.
Without a header, columns are named ``column_1`` .. ``column_N``; duplicate or empty header
names get a ``_2`` suffix or a positional name.

``column_types`` asks for some columns parsed by pyarrow as they are read (float64,
timestamp, date: what a contract declares), with ``null_values`` as nulls there. A column
holding a value that does not parse (or a float that is not finite) is read again as text
from the start of the file, so its raw values reach the contract's type checks: typed
parsing is only a shortcut for columns that are clean.

Given a :class:`RejectLog`, a row with too many or too few fields is skipped and logged
(line, raw text, ``expected 3 fields, got 4``) instead of failing the file; a file where
most of the first rows fail that way raises, as its delimiter or quote is surely wrong.
Without a log such a row is an error.

>>> import io, pyarrow as pa
>>> from loopline.config.sources import CsvOptions
>>> data = b"id;name\\n1;\\"Zo\\xc3\\xab\\"\\n2;\\n"
>>> batches = read_csv(lambda: pa.BufferReader(data), CsvOptions(), path="x.csv")
>>> pa.Table.from_batches(list(batches)).to_pylist()
[{'id': '1', 'name': 'Zoë'}, {'id': '2', 'name': ''}]
"""

from __future__ import annotations

import codecs
import csv
import io
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv

from loopline.config.sources import CsvOptions
from loopline.errors import SourceError
from loopline.ingest.sources.csv_invalid_rows import InvalidRowHandler, line_breaks
from loopline.ingest.sources.csv_typed import RetypeColumn, TypedColumns
from loopline.ingest.sources.rejects import MostlyInvalidCheck, RejectLog

Opener = Callable[[], Any]
"""Opens a fresh binary stream of the (decompressed) file."""

SAMPLE_BYTES = 64 * 1024
_SNIFF_CHARS = 32 * 1024
_DELIMITERS = ",;\t|"
_FIRST_BLOCK = 1 << 20
_MAX_BLOCK = 1 << 30
_WESTERN = "cp1252"
_UTF8_NAMES = {"utf8", "utf-8", "utf_8", "utf-8-sig", "utf_8_sig", "ascii", "us-ascii"}


@dataclass(frozen=True)
class Dialect:
    """What detection (or the options) decided for one file."""

    encoding: str
    delimiter: str
    quote_char: str
    header: bool
    columns: list[str]
    blank_lines: int = 0
    """Empty lines before the first row (pyarrow's ``skip_rows`` counts them)."""


def read_csv(
    open_stream: Opener,
    options: CsvOptions,
    *,
    path: Path | str,
    batch_size: int = 65_536,
    default_delimiter: str = ",",
    rejects: RejectLog | None = None,
    column_types: Mapping[str, pa.DataType] | None = None,
    null_values: Sequence[str] = (),
) -> Iterator[pa.RecordBatch]:
    """Stream record batches of string columns; nothing for an empty (or blank) file.

    A header-only file (or one whose rows all went to ``rejects``) yields one empty batch
    so the columns are known. ``batch_size`` is a hint: blocks are cut by bytes, the caller
    re-slices rows. Rejects reach ``rejects`` once the rows before them are yielded.
    ``column_types`` / ``null_values``: columns parsed typed while they parse cleanly (see
    the module docstring); a column that falls back changes type from the batch where it
    failed on (earlier batches keep the typed column).
    """
    del batch_size  # pyarrow cuts by bytes; FileSource re-slices into rows
    with open_stream() as stream:
        sample = stream.read(SAMPLE_BYTES)
    if not sample.strip():
        return
    dialect = detect_dialect(
        sample, options, complete=len(sample) < SAMPLE_BYTES, default_delimiter=default_delimiter
    )
    typed = TypedColumns(
        {c: t for c, t in (column_types or {}).items() if c in dialect.columns}, list(null_values)
    )
    _untype_failing(sample, dialect, typed, complete=len(sample) < SAMPLE_BYTES)
    yield from _stream(open_stream, dialect, path, rejects, typed)


def detect_dialect(
    sample: bytes, options: CsvOptions, *, complete: bool, default_delimiter: str = ","
) -> Dialect:
    """Encoding, delimiter, quote char, header and column names from a sample's bytes."""
    encoding = options.encoding or detect_encoding(sample, complete=complete)
    text = _decode_sample(sample, encoding, complete=complete)
    lines = text.splitlines(keepends=True)
    if not complete and len(lines) > 1:
        lines = lines[:-1]  # the last line may be cut mid-way
    sniff_text = "".join(lines)[:_SNIFF_CHARS]
    sniffed = _sniff(sniff_text)
    delimiter = options.delimiter or (sniffed.delimiter if sniffed else default_delimiter)
    quote_char = options.quote_char or (sniffed.quotechar if sniffed else None) or '"'
    rows = csv.reader(io.StringIO(sniff_text), delimiter=delimiter, quotechar=quote_char)
    first = next((row for row in rows if row), [""])  # pyarrow skips blank lines too
    header = options.header
    if header is None:
        header = _has_header(sniff_text, first)
    columns = _unique_names(first) if header else _positional_names(len(first))
    lead = sniff_text[: len(sniff_text) - len(sniff_text.lstrip("\r\n"))]
    blank_lines = len(lead.replace("\r\n", "\n"))  # only line breaks: one per line
    return Dialect(encoding, delimiter, quote_char, header, columns, blank_lines)


def detect_encoding(sample: bytes, *, complete: bool) -> str:
    """``utf-8`` / ``utf-8-sig`` when the sample decodes as such, else charset-normalizer's.

    >>> detect_encoding("café".encode("utf-8"), complete=True)
    'utf-8'
    """
    if sample.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    try:
        codecs.getincrementaldecoder("utf-8")().decode(sample, final=complete)
        return "utf-8"
    except UnicodeDecodeError:
        pass
    import charset_normalizer  # only for files that are not UTF-8: ~6 ms of start-up saved

    matches = charset_normalizer.from_bytes(sample)
    best = matches.best()
    if best is None:
        raise SourceError(
            "cannot detect the text encoding: the file looks binary, not CSV",
            hint="check the file, or set csv.encoding",
        )
    # charset-normalizer's best() may rank a less coherent code page first (cp1250 over
    # cp1252 for Western names: 'è' became 'č'): take the most coherent of the calmest, and
    # among equals prefer the Western one.
    calm = [m for m in matches if m.chaos == best.chaos]
    top = max(m.coherence for m in calm)
    leaders = [m for m in calm if m.coherence == top]
    for match in leaders:
        if _WESTERN in match.could_be_from_charset:
            return _WESTERN
    return str(leaders[0].encoding)


def _decode_sample(sample: bytes, encoding: str, *, complete: bool) -> str:
    if b"\x00" in sample and not _is_wide(encoding):
        raise SourceError(
            "the file contains NUL bytes: it looks binary, not CSV text",
            hint="check the file, or set format and csv.encoding",
        )
    try:
        decoder = codecs.getincrementaldecoder(encoding)(errors="replace")
    except LookupError as exc:
        raise SourceError(
            f"unknown encoding {encoding!r}", hint="use a Python codec name, e.g. 'latin-1'"
        ) from exc
    return decoder.decode(sample, final=complete)


def _is_wide(encoding: str) -> bool:
    return encoding.lower().replace("-", "_").startswith(("utf_16", "utf_32"))


def _sniff(text: str) -> Any:
    try:
        return csv.Sniffer().sniff(text, delimiters=_DELIMITERS)
    except csv.Error:
        return None


def _has_header(text: str, first: list[str]) -> bool:
    try:
        if csv.Sniffer().has_header(text):
            return True
    except csv.Error:
        pass
    values = [v.strip() for v in first]
    return all(v and not _is_number(v) for v in values) and len(set(values)) == len(values)


def _is_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def _positional_names(count: int) -> list[str]:
    return [f"column_{i}" for i in range(1, count + 1)]


def _unique_names(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out: list[str] = []
    for i, raw in enumerate(names, start=1):
        name = raw.strip() or f"column_{i}"
        if name in seen:
            seen[name] += 1
            name = f"{name}_{seen[name]}"
        seen.setdefault(name, 1)
        out.append(name)
    return out


class _QuoteCounter:
    """Counts quote bytes as pyarrow reads, to tell an unterminated quote at EOF."""

    def __init__(self, stream: Any, quote: bytes) -> None:
        self._stream = stream
        self._quote = quote
        self.count = 0
        self.closed = False

    def read(self, size: int = -1) -> bytes:
        data: bytes = self._stream.read(size)
        if len(self._quote) == 1 and len(data) > 4096:  # numpy counts ~3x faster
            byte = np.frombuffer(data, dtype=np.uint8)
            self.count += int(np.count_nonzero(byte == self._quote[0]))
        else:
            self.count += data.count(self._quote)
        return data


def _stream(
    open_stream: Opener,
    dialect: Dialect,
    path: Path | str,
    rejects: RejectLog | None,
    typed: TypedColumns,
) -> Iterator[pa.RecordBatch]:
    block = _FIRST_BLOCK
    emitted = 0
    first_record = dialect.blank_lines + (1 if dialect.header else 0) + 1
    handler = None if rejects is None else InvalidRowHandler(rejects, first_record=first_record)
    check = _mostly_invalid_check(dialect, path)
    while True:
        skip = emitted
        if handler is not None:
            handler.restart()
        try:
            with open_stream() as raw:
                quote = _quote_byte(dialect)
                counter = _QuoteCounter(raw, quote or b"")
                options = _pyarrow_options(dialect, block, handler, typed)
                reader = pa_csv.open_csv(counter, **options)
                for batch in reader:
                    if (column := typed.non_finite(batch)) is not None:
                        raise RetypeColumn(column)
                    batch = typed.finish(batch)
                    if skip >= batch.num_rows:
                        skip -= batch.num_rows
                        continue
                    if skip:
                        batch, skip = batch.slice(skip), 0
                    emitted += batch.num_rows
                    if handler is not None:
                        # No quote read yet: no quoted line break either, nothing to count.
                        quoted = counter.count or quote is None
                        handler.advance(line_breaks(batch) if quoted else _zeros(batch))
                        check.update(valid=emitted, rejected=handler.rejected)
                    yield batch
                if emitted == 0:
                    yield typed.finish(pa.RecordBatch.from_pylist([], schema=reader.schema))
            if quote and counter.count % 2 and _ends_inside_quotes(open_stream, dialect):
                raise SourceError(
                    "unterminated quoted field at the end of the file (truncated file?)",
                    path=str(path),
                    hint="check that the file was copied completely",
                )
            if handler is not None:
                handler.finish()
                check.update(valid=emitted, rejected=handler.rejected, final=True)
            return
        except RetypeColumn as retype:
            del typed.types[retype.column]  # read it as text from the start
            continue
        except pa.ArrowInvalid as exc:
            text = str(exc)
            if typed.failed_column(text, dialect.columns):
                continue  # that column is read as text from the start of the file
            if "straddl" in text and block < _MAX_BLOCK:
                # A row bigger than a block: read again with bigger blocks, skip rows sent.
                block *= 8
                continue
            if "invalid UTF8" in text:
                raise _encoding_error(open_stream, dialect, path) from exc
            raise
        except UnicodeDecodeError as exc:
            raise _encoding_error(open_stream, dialect, path) from exc


def _untype_failing(
    sample: bytes, dialect: Dialect, typed: TypedColumns, *, complete: bool
) -> None:
    """Read as text from the start the typed columns the sample already shows failing.

    The reader would find them out in its first block and open the file again; parsing the
    sample's whole lines saves that second start (and its read-ahead buffers). Any other
    trouble in the sample (a bad row, a cut quoted value) is left to the reader.
    """
    if not typed.types or _is_wide(dialect.encoding):
        return
    if not complete:
        sample = sample[: sample.rfind(b"\n") + 1]  # whole lines only
    while typed.types:
        options = _pyarrow_options(dialect, _FIRST_BLOCK, None, typed)
        try:
            table = pa_csv.read_csv(pa.BufferReader(sample), **options)
        except pa.ArrowInvalid as exc:
            if typed.failed_column(str(exc), dialect.columns):
                continue
            return
        except (pa.ArrowException, UnicodeError, LookupError):
            return  # the reader meets it again and says what is wrong
        column = next(filter(None, map(typed.non_finite, table.to_batches())), None)
        if column is None:
            return
        del typed.types[column]


def _mostly_invalid_check(dialect: Dialect, path: Path | str) -> MostlyInvalidCheck:
    first = "header" if dialect.header else "first row"
    return MostlyInvalidCheck(
        f"they do not have the {len(dialect.columns)} fields of the {first} "
        f"(delimiter {dialect.delimiter!r}, quote {dialect.quote_char!r})",
        path=str(path),
        hint="the delimiter or quote character is wrong for this file: set csv.delimiter / "
        "csv.quote_char (and csv.header if the first line is not the header)",
    )


def _zeros(batch: pa.RecordBatch) -> Any:
    return np.zeros(batch.num_rows, dtype=np.int64)


def _pyarrow_options(
    dialect: Dialect, block: int, handler: InvalidRowHandler | None, typed: TypedColumns
) -> dict[str, Any]:
    encoding = "utf8" if dialect.encoding.lower() in _UTF8_NAMES else dialect.encoding
    return {
        "read_options": pa_csv.ReadOptions(
            use_threads=False,
            block_size=block,
            column_names=dialect.columns,
            skip_rows=dialect.blank_lines + (1 if dialect.header else 0),
            encoding=encoding,
        ),
        "parse_options": pa_csv.ParseOptions(
            delimiter=dialect.delimiter,
            quote_char=dialect.quote_char,
            newlines_in_values=True,
            invalid_row_handler=handler,
        ),
        # Null values apply to typed columns only: text columns never hold nulls.
        "convert_options": pa_csv.ConvertOptions(
            column_types={c: typed.parse_type(c) for c in dialect.columns},
            strings_can_be_null=False,
            quoted_strings_can_be_null=bool(typed.types),
            null_values=typed.null_values if typed.types else [],
        ),
    }


def _quote_byte(dialect: Dialect) -> bytes | None:
    """The quote as one byte, or ``None`` where bytes are not ASCII-compatible (UTF-16)."""
    if _is_wide(dialect.encoding):
        return None
    try:
        quote = dialect.quote_char.encode(dialect.encoding)
    except (UnicodeEncodeError, LookupError):
        return None
    return quote if len(quote) == 1 else None


_EOF_SENTINEL = "\x00loopline-end-of-file\x00"


def _ends_inside_quotes(open_stream: Opener, dialect: Dialect) -> bool:
    """An odd quote count may be a stray quote in an unquoted field: parse to be sure.

    A sentinel row appended after the data stays a row of its own unless the data ends
    inside a quoted field, which swallows it.
    """
    with open_stream() as raw:
        text = io.TextIOWrapper(
            io.BufferedReader(raw), encoding=dialect.encoding, errors="replace", newline=""
        )
        rows = csv.reader(
            _chain(text),
            delimiter=dialect.delimiter,
            quotechar=dialect.quote_char,
        )
        last: list[str] = []
        try:
            for last in rows:  # noqa: B007
                pass
        except csv.Error:
            return False  # cannot tell (e.g. a field over csv's size limit): trust pyarrow
    return last != [_EOF_SENTINEL]


def _chain(lines: Iterator[str]) -> Iterator[str]:
    yield from lines
    yield "\n"
    yield _EOF_SENTINEL


def _encoding_error(open_stream: Opener, dialect: Dialect, path: Path | str) -> SourceError:
    offset = _undecodable_offset(open_stream, dialect.encoding)
    where = f" at byte offset {offset}" if offset is not None else ""
    return SourceError(
        f"the file is not valid {dialect.encoding}{where}",
        path=str(path),
        offset=offset,
        encoding=dialect.encoding,
        hint="set csv.encoding to the file's encoding (e.g. 'latin-1'), "
        "or leave it unset to detect it",
    )


def _undecodable_offset(open_stream: Opener, encoding: str) -> int | None:
    """Byte offset of the first byte that ``encoding`` cannot decode (streamed)."""
    decoder = codecs.getincrementaldecoder(encoding)()
    consumed = 0
    with open_stream() as raw:
        while True:
            block: bytes = raw.read(1 << 20)
            pending = len(decoder.getstate()[0])
            try:
                decoder.decode(block, final=not block)
            except UnicodeDecodeError as exc:
                return consumed - pending + exc.start
            if not block:
                return None
            consumed += len(block)
