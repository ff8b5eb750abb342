"""CSV bytes to string records, with exact file lines, whatever the bytes hold.

The columnar hot path hands whole chunks to pyarrow's C++ parser. Around it,
cheap byte-level checks (numpy over the chunk) find what that parser cannot be
trusted with, and only those lines get per-line Python work:

* bytes invalid in the file's encoding: the line is a dead record
  ("invalid UTF-8 at byte N") and never reaches the parser;
* a stray quote: pyarrow would swallow every following line into one value
  until the next quote. In files without quoted line breaks each line is a
  record, so a line that ends inside a quoted value is dead on its own and
  the next line parses normally;
* blank lines (also CRLF and whitespace-only ones) are counted, not parsed;
* quoted values with line breaks (`Dialect.multiline`): records are found by
  quote parity; a record the parser rejects, or a chunk whose structure the
  checks cannot vouch for, is re-read by Python's csv module record by record,
  recovering at the line after a stray quote.

Every outcome is checked against the line table (parsed + rejected records =
the non-blank records fed), so a line number is never guessed.

    recs = parse_records(chunk, first_line=2, header=names, dialect=Dialect(), na_values=["", "NA"])
    recs.table, recs.lines, recs.dead, recs.blank     # strings, their lines, rejected records, blank lines

Reading a file (or a byte range of one) chunk by chunk:

    info = read_header_info(path, dialect)
    with open_file(path, dialect.compression) as f:
        f.seek(info.data_start)
        for recs, _ in read_chunks(f, info.first_line, parse_fn, multiline=dialect.multiline): ...
"""
from __future__ import annotations

import codecs
import csv
import dataclasses
import functools
from typing import BinaryIO, Callable, Iterator, Optional, Sequence, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from beam_ml.errors import UserError
from beam_ml.io.dialect import Dialect, looks_like_swallowed_rows, parse_header, record_is_open
from beam_ml.io.files import open_file, read_block

__all__ = ["Records", "HeaderInfo", "CorruptData", "parse_records", "read_chunks", "read_header_info",
           "open_range", "count_newlines", "DEFAULT_CHUNK_BYTES", "MAX_RECORD_BYTES"]

DEFAULT_CHUNK_BYTES = 8 << 20
# A quoted value longer than this is taken for a stray quote (multiline files).
MAX_RECORD_BYTES = 1 << 20
# A "line" longer than this means the file is not a text CSV.
MAX_LINE_BYTES = 256 << 20

_HEAD_BLOCK = 1 << 16
_PARSE_BLOCK = 1 << 20
# Up to this many lines with non-ASCII bytes, a UTF-8 chunk is checked line by line.
_PER_LINE_DECODE_MAX = 2000
# Marks the end of the lines offered to Python's csv reader: found inside the
# record's last field, it means the record was still inside quotes there.
_EOF_MARK = "\x1e\x1fbeam_ml:eof\x1f\x1e"


def _unterminated(multiline: bool) -> str:
    if multiline:
        return (f"unterminated quoted field: a '\"' on this line opens a value that does not close "
                f"within {MAX_RECORD_BYTES >> 20} MiB or before the end of the file (a stray quote)")
    return ("unterminated quoted field: a '\"' on this line opens a value that does not close on this line "
            "(a stray quote; if the file has line breaks inside quoted values, set \"multiline\": true "
            "in the spec's dialect)")


@dataclasses.dataclass
class Records:
    """Records parsed from a chunk of CSV lines, as strings.

    Attributes:
      table: one string column per requested column, one row per record with
        the right number of fields; missing values (NA tokens) are null.
      lines: int64, the file line where each row starts.
      dead: (line, reason, raw text) of records rejected while parsing.
      blank: blank lines (empty, CRLF-only or whitespace-only): not records.
      consumed_lines: lines of the chunk consumed: all of them, except when
        a chunk that is not the last ends inside a quoted value (multiline).
    """

    table: pa.Table
    lines: np.ndarray
    dead: list[tuple[int, str, str]]
    blank: int
    consumed_lines: int
    _text: Optional["_Lines"] = dataclasses.field(default=None, repr=False)
    _first_line: int = 0

    @property
    def records(self) -> int:
        return self.table.num_rows + len(self.dead)

    def line_text(self, line: int) -> Optional[str]:
        """The text of a file line of this chunk (CR stripped), e.g. for a dead letter; None if not in it."""
        i = line - self._first_line
        if self._text is None or not 0 <= i < len(self._text):
            return None
        return self._text.text(i)


class CorruptData(Exception):
    """Compressed data that cannot be decompressed past a point (a truncated or damaged file).

    Attributes:
      line: the first line that could not be read.
      reason: what the decompressor said.
    """

    def __init__(self, line: int, reason: str):
        super().__init__(f"line {line}: {reason}")
        self.line = line
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class HeaderInfo:
    """A file's header: column names, where data starts (decompressed bytes) and its first line number."""

    names: list[str]
    data_start: int
    first_line: int


# ----------------------------------------------------------------- the parser
@dataclasses.dataclass
class _Ctx:
    header: list[str]
    columns: list[str]
    dialect: Dialect
    na_values: list[str]
    first_line: int


class _Lines:
    """The line table of a chunk that ends with a newline, computed on first use and shared."""

    def __init__(self, buf: bytes):
        self.buf = buf

    @functools.cached_property
    def a(self) -> np.ndarray:
        return np.frombuffer(self.buf, np.uint8)

    @functools.cached_property
    def nl(self) -> np.ndarray:
        return np.flatnonzero(self.a == 10)

    @functools.cached_property
    def starts(self) -> np.ndarray:
        return np.concatenate(([0], self.nl[:-1] + 1)).astype(np.int64)

    @functools.cached_property
    def blank(self) -> np.ndarray:
        length = self.nl - self.starts
        return (length == 0) | ((length == 1) & (self.a[np.minimum(self.starts, len(self.a) - 1)] == 13))

    def __len__(self) -> int:
        return len(self.nl)

    def text(self, i: int) -> str:
        return self.buf[self.starts[i]:self.nl[i]].rstrip(b"\r").decode("utf-8", "replace")

    def without(self, idxs: Sequence[int]) -> bytes:
        if not len(idxs):
            return self.buf
        parts, prev = [], 0
        for i in sorted(idxs):
            parts.append(self.buf[prev:self.starts[i]])
            prev = int(self.nl[i]) + 1
        parts.append(self.buf[prev:])
        return b"".join(parts)


def _empty_table(columns: Sequence[str]) -> pa.Table:
    return pa.table({c: pa.array([], pa.string()) for c in columns})


def _arrow_parse(buf: bytes, ctx: _Ctx, multiline: bool, columns: Optional[Sequence[str]] = None):
    """pyarrow's parse of `buf` as string columns, plus (record number, text, field count) of rejected rows."""
    columns = ctx.columns if columns is None else list(columns)
    invalid: list[tuple[Optional[int], str, int]] = []

    def on_invalid(row) -> str:
        invalid.append((row.number, row.text, row.actual_columns))
        return "skip"

    if not buf:
        return _empty_table(columns), invalid
    d = ctx.dialect
    table = pacsv.read_csv(
        pa.py_buffer(buf),
        # One thread: Beam runs many DoFn instances in parallel, and a single
        # thread is what makes pyarrow report each rejected row's record number.
        read_options=pacsv.ReadOptions(column_names=ctx.header, block_size=_PARSE_BLOCK,
                                       use_threads=False, encoding="utf8"),
        parse_options=pacsv.ParseOptions(delimiter=d.delimiter, quote_char=d.quotechar or False,
                                         double_quote=True, newlines_in_values=multiline,
                                         ignore_empty_lines=True, invalid_row_handler=on_invalid),
        convert_options=pacsv.ConvertOptions(column_types={h: pa.string() for h in ctx.header},
                                             include_columns=columns, null_values=ctx.na_values,
                                             strings_can_be_null=True, quoted_strings_can_be_null=True))
    return table, invalid


def _finish(table: pa.Table, invalid, rec_lines: np.ndarray, ctx: _Ctx, dead: list, blank: int,
            consumed: int, lines: _Lines, multi: Optional[np.ndarray] = None) -> Optional[Records]:
    """Maps the parser's output onto the records fed to it; None when they disagree."""
    n_fed = len(rec_lines)
    if table.num_rows + len(invalid) != n_fed:
        return None
    drop = []
    for number, text, actual in invalid:
        idx = None if number is None else number - 1
        if idx is None or not 0 <= idx < n_fed:
            return None
        drop.append(idx)
        if not text.strip():
            blank += 1  # a whitespace-only line: blank, not a record
        elif multi is not None and multi[idx]:
            return None  # a quoted value across lines made a bad record: maybe a stray quote; re-read
        else:
            dead.append((ctx.first_line + int(rec_lines[idx]),
                         f"wrong number of fields: expected {len(ctx.header)}, got {actual}", text))
    good = np.delete(rec_lines, drop) if drop else rec_lines
    if multi is not None:
        # Quote parity and the parser must agree on which rows span lines.
        expected = np.delete(multi, drop) if drop else multi
        spans = np.zeros(table.num_rows, dtype=bool)
        for col in table.columns:
            spans |= pc.fill_null(pc.match_substring(col, "\n"), False).to_numpy(zero_copy_only=False)
        if not np.array_equal(spans, expected):
            return None
        table = table.select(ctx.columns)
    dead.sort(key=lambda d: d[0])
    return Records(table, good.astype(np.int64) + ctx.first_line, dead, blank, consumed, lines, ctx.first_line)


def _parse_plain(lines: _Lines, ctx: _Ctx) -> Optional[Records]:
    """No quote and no bad byte in the chunk: every non-blank line is one record."""
    table, invalid = _arrow_parse(lines.buf, ctx, multiline=False)
    blank = int(lines.blank.sum())
    rec_lines = np.flatnonzero(~lines.blank) if blank else np.arange(len(lines), dtype=np.int64)
    return _finish(table, invalid, rec_lines, ctx, [], blank, len(lines), lines)


def _parse_lines(lines: _Lines, bad: dict, ctx: _Ctx) -> Optional[Records]:
    """Each line is one record: lines with bad bytes or an unclosed quote are dead before parsing."""
    removed = {i: reason_raw for i, reason_raw in bad.items()}
    q = ctx.dialect.quotechar
    if q:
        qpos = np.flatnonzero(lines.a == ord(q))
        if qpos.size:
            per_line = np.bincount(np.searchsorted(lines.nl, qpos), minlength=len(lines))
            # A line that ends inside quotes has an odd number of quote characters,
            # unless a quote in mid-field (literal there) evens it out: the check
            # after parsing catches those.
            for i in np.flatnonzero(per_line & 1):
                i = int(i)
                if i not in removed and record_is_open(lines.text(i), ctx.dialect):
                    removed[i] = (_unterminated(False), lines.text(i))
    keep = ~lines.blank
    for i in removed:
        keep[i] = False
    rec_lines = np.flatnonzero(keep)
    table, invalid = _arrow_parse(lines.without(list(removed)), ctx, multiline=False)
    dead = [(ctx.first_line + i, reason, raw) for i, (reason, raw) in removed.items()]
    return _finish(table, invalid, rec_lines, ctx, dead, int(lines.blank.sum()), len(lines), lines)


def _parse_multiline(lines: _Lines, final: bool, ctx: _Ctx) -> Optional[Records]:
    """Records found by quote parity (a line break inside quotes continues the record)."""
    buf = lines.buf
    qpos = np.flatnonzero(lines.a == ord(ctx.dialect.quotechar))
    parity = np.searchsorted(qpos, lines.nl) & 1
    ends = np.flatnonzero(parity == 0)
    consumed = int(ends[-1]) + 1 if ends.size else 0
    if consumed < len(lines):  # the chunk ends inside a quoted value
        tail = len(buf) - (int(lines.nl[consumed - 1]) + 1 if consumed else 0)
        if final or tail > MAX_RECORD_BYTES:
            return None  # a stray quote: the careful reader recovers from it
    if consumed == 0:
        return Records(_empty_table(ctx.columns), np.zeros(0, np.int64), [], 0, 0)
    ends = ends[ends < consumed]
    starts = np.concatenate(([0], ends[:-1] + 1))
    span = ends - starts + 1
    blank_rec = (span == 1) & lines.blank[starts]
    rec_lines = starts[~blank_rec]
    multi = span[~blank_rec] > 1
    body = buf if consumed == len(lines) else buf[:int(lines.nl[consumed - 1]) + 1]
    # Records whose quoted value spans lines: well-formed, or stray quotes that swallowed rows?
    ncols = len(ctx.header)
    for s0, e0 in zip(starts[span > 1], ends[span > 1]):
        if looks_like_swallowed_rows([lines.text(k) for k in range(int(s0), int(e0) + 1)], ncols, ctx.dialect):
            return None
    table, invalid = _arrow_parse(body, ctx, multiline=True, columns=ctx.header)
    return _finish(table, invalid, rec_lines, ctx, [], int(blank_rec.sum()), consumed, lines, multi=multi)


def _parse_careful(lines: _Lines, bad: dict, final: bool, ctx: _Ctx) -> Records:
    """Record by record with Python's csv module: exact lines, recovery after stray quotes."""
    buf = lines.buf
    d = ctx.dialect
    raw_lines = buf.split(b"\n")
    raw_lines.pop()  # buf ends with a newline
    n, ncols = len(raw_lines), len(ctx.header)
    fmt = d.csv_format

    def text(k: int) -> str:
        return raw_lines[k].rstrip(b"\r").decode("utf-8", "replace")

    rows, row_lines, dead, blank = [], [], [], 0
    consumed = n
    i = 0
    while i < n:
        if i in bad:
            dead.append((i, *bad[i]))
            i += 1
            continue
        if raw_lines[i] in (b"", b"\r"):
            blank += 1
            i += 1
            continue
        last, size, exhausted = i, 0, False

        def offer(start=i):
            # Lines for csv.reader; it pulls the next one only while inside quotes.
            nonlocal last, size, exhausted
            k = start
            while k < n and (k == start or (d.multiline and k not in bad and size <= MAX_RECORD_BYTES)):
                last, size = k, size + len(raw_lines[k]) + 1
                # The CR of a CRLF stays: inside a quoted value it is part of the value, as for pyarrow.
                yield raw_lines[k].decode("utf-8", "replace") + "\n"
                k += 1
            exhausted = k >= n
            yield _EOF_MARK

        try:
            fields = next(csv.reader(offer(), **fmt))
        except csv.Error as e:
            dead.append((i, f"malformed line: {e}", text(i)))
            i += 1
            continue
        if fields and _EOF_MARK in fields[-1]:  # still inside quotes where the offered lines ended
            if d.multiline and not final and exhausted and size <= MAX_RECORD_BYTES:
                consumed = i  # the value continues in the next chunk
                break
            dead.append((i, _unterminated(d.multiline), text(i)))
            i += 1
            continue
        swallowed = last > i and len(fields) == ncols and looks_like_swallowed_rows(
            [text(k) for k in range(i, last + 1)], ncols, d)
        if swallowed:
            dead.append((i, f"a quoted value opened on this line runs to line {ctx.first_line + last} over "
                            f"whole rows: a stray quote", text(i)))
            i += 1
            continue
        if len(fields) != ncols:
            if last > i:
                dead.append((i, f"a quoted value opened on this line runs to line {ctx.first_line + last} and "
                                f"makes a record of {len(fields)} fields (expected {ncols}): a stray quote",
                             text(i)))
            elif not text(i).strip():
                blank += 1
            else:
                dead.append((i, f"wrong number of fields: expected {ncols}, got {len(fields)}", text(i)))
            i += 1
            continue
        rows.append(fields)
        row_lines.append(i)
        i = last + 1
    na = set(ctx.na_values)
    idx = {h: k for k, h in enumerate(ctx.header)}
    table = pa.table({c: pa.array([None if r[idx[c]] in na else r[idx[c]] for r in rows], pa.string())
                      for c in ctx.columns})
    dead = [(ctx.first_line + i, reason, raw) for i, reason, raw in dead]
    return Records(table, np.asarray(row_lines, dtype=np.int64) + ctx.first_line, dead, blank, consumed,
                   lines, ctx.first_line)


def _bad_lines(lines: _Lines, encoding: str) -> tuple[bytes, dict]:
    """The chunk as UTF-8, and {line index: (reason, raw)} for lines with bytes invalid in `encoding`.

    Bad lines keep their place (decoded with replacement characters) so line
    indices stay put; the parsers never hand them to pyarrow. The chunk is
    decoded whole; only when that fails are the lines holding non-ASCII bytes
    (where any invalid sequence must be, the encoding being ASCII-compatible)
    decoded one by one.
    """
    data = lines.buf
    codec = codecs.lookup(encoding)
    if encoding == "utf-8" and data.isascii():
        return data, {}
    high_lines = None
    if encoding == "utf-8":
        # Few lines with non-ASCII bytes (the usual dirt): check just those lines.
        high_lines = np.unique(np.searchsorted(lines.nl, np.flatnonzero(lines.a >= 0x80)))
    if high_lines is None or len(high_lines) > _PER_LINE_DECODE_MAX:
        try:
            text = codec.decode(data)[0]
            return (data if encoding == "utf-8" else text.encode("utf-8")), {}
        except UnicodeDecodeError:
            pass
    label = "UTF-8" if encoding == "utf-8" else encoding
    hint = "; pass --encoding if the file is not UTF-8 (e.g. --encoding=cp1252)" if encoding == "utf-8" else ""
    nl = lines.nl
    bad = {}
    if high_lines is None:
        high_lines = np.unique(np.searchsorted(nl, np.flatnonzero(lines.a >= 0x80)))
    for li in high_lines:
        li = int(li)
        ls = int(nl[li - 1]) + 1 if li else 0
        le = int(nl[li]) if li < len(nl) else len(data)
        raw = data[ls:le]
        try:
            codec.decode(raw)
        except UnicodeDecodeError as e:
            bad[li] = (f"invalid {label} at byte {e.start + 1} (0x{raw[e.start]:02x}){hint}",
                       raw.rstrip(b"\r").decode(encoding, "backslashreplace"))
    if encoding == "utf-8":
        return data, bad
    return data.decode(encoding, "replace").encode("utf-8"), bad


def parse_records(data: bytes, first_line: int, header: Sequence[str], dialect: Dialect,
                  na_values: Sequence[str], columns: Optional[Sequence[str]] = None,
                  final: bool = True) -> Records:
    """Parses whole CSV lines (no header) into string columns, naming the line of every record.

    Args:
      data: whole lines in the file's encoding.
      first_line: the file line number of the first line of `data`.
      header: the file's column names.
      dialect: delimiter, quoting, encoding and whether quoted values span lines.
      na_values: cell texts read as null.
      columns: the columns to return (default: all).
      final: no more data follows; when False (multiline files), a quoted
        value still open at the end is left unconsumed for the next chunk.

    Returns:
      Records; `records + blank` lines are accounted for, up to `consumed_lines`.
    """
    ctx = _Ctx(list(header), list(header) if columns is None else list(columns), dialect,
               list(na_values), first_line)
    if not data:
        return Records(_empty_table(ctx.columns), np.zeros(0, np.int64), [], 0, 0)
    if not data.endswith(b"\n"):
        if not final:
            raise ValueError("a chunk that is not the last must end with a line break")
        data += b"\n"
    lines = _Lines(data)
    buf, bad = _bad_lines(lines, dialect.encoding)
    if buf is not data:
        lines = _Lines(buf)  # transcoded to UTF-8: same lines, other offsets
    has_quote = bool(dialect.quotechar) and dialect.quotechar.encode() in buf
    # pyarrow ends a record at a lone CR too; the line table only at LF.
    lone_cr = b"\r" in buf and buf.count(b"\r") != buf.count(b"\r\n")
    out = None
    if lone_cr:
        pass
    elif not bad and not has_quote:
        out = _parse_plain(lines, ctx)
    elif not dialect.multiline:
        out = _parse_lines(lines, bad, ctx)
    elif not bad:
        out = _parse_multiline(lines, final, ctx)
    if out is None:
        out = _parse_careful(lines, bad, final, ctx)
    return out


# ------------------------------------------------------------------- reading
T = TypeVar("T")


def read_chunks(f: BinaryIO, first_line: int, parse: Callable[[bytes, int, bool], tuple[T, int]], *,
                multiline: bool, end: Optional[int] = None, chunk_bytes: int = DEFAULT_CHUNK_BYTES,
                prefix: bytes = b"", source: str = "") -> Iterator[T]:
    """Reads whole lines from `f` in chunks and yields `parse`'s result for each.

    Args:
      f: a file positioned at the start of a line.
      first_line: that line's number in the file.
      parse: (chunk, first line, final) -> (result, lines consumed). It must
        consume every line when `final` is True.
      multiline: quoted values may span lines (the parser may leave a tail).
      end: read the lines that start before this many bytes from the start
        (a byte range of the file); None reads to the end of the file.
      chunk_bytes: bytes read at a time.
      prefix: bytes already read from `f` past its start.
      source: the file, for errors.

    Raises:
      CorruptData: compressed data cannot be read past line `line` (after the
        results for the lines before it were yielded).
    """
    line, pos, rest, eof = first_line, 0, prefix, False
    while end is None or pos < end:
        block, err = (b"", None) if eof else read_block(f, chunk_bytes)
        if err is not None:
            # Parse the whole lines decompressed before the damage; the rest is lost.
            data = rest + block
            cut = data.rfind(b"\n") + 1
            if cut:
                result, consumed = parse(data[:cut], line, True)
                yield result
                line += consumed
            raise CorruptData(line, f"{type(err).__name__}: {err}")
        eof = eof or not block
        data = rest + block if rest else block
        if not data:
            return
        final = eof
        if end is not None and len(data) >= end - pos:
            q = data.find(b"\n", end - pos - 1)  # the end of the last line starting in the range
            if q < 0 and not eof:
                rest = data
                continue
            take, final = (data if q < 0 else data[:q + 1]), True
        elif eof:
            take = data
        else:
            cut = data.rfind(b"\n")
            if cut < 0:
                if len(data) > MAX_LINE_BYTES:
                    raise UserError(f"--input: {source} line {line} is longer than {MAX_LINE_BYTES >> 20} MiB: "
                                    f"not a text CSV file?")
                rest = data
                continue
            take = data[:cut + 1]
        result, consumed = parse(take, line, final or not multiline)
        yield result
        total = take.count(b"\n") + (0 if take.endswith(b"\n") else 1)
        if consumed >= total:
            nbytes = len(take)
        else:
            nbytes = int(np.flatnonzero(np.frombuffer(take, np.uint8) == 10)[consumed - 1]) + 1 if consumed else 0
        line += consumed
        pos += nbytes
        rest = data[nbytes:]
        if final:
            return


def read_header_info(path: str, dialect: Dialect) -> HeaderInfo:
    """Reads and checks a file's header line (a BOM is skipped); raises UserError for empty files."""
    with open_file(path, dialect.compression) as f:
        buf = b""
        while b"\n" not in buf:
            block, err = read_block(f, _HEAD_BLOCK)
            if err is not None and b"\n" not in buf + block:
                raise UserError(f"--input: {path} cannot be decompressed ({err}); pass --compression if its "
                                f"extension is misleading")
            if not block:
                break
            buf += block
            if len(buf) > MAX_LINE_BYTES:
                raise UserError(f"--input: {path} has no line break in its first {MAX_LINE_BYTES >> 20} MiB: "
                                f"not a text CSV file?")
    cut = buf.find(b"\n")
    line = buf if cut < 0 else buf[:cut]
    text = line.decode(dialect.encoding, errors="replace").rstrip("\r")
    if text.startswith("\ufeff"):
        text = text[1:]
    if not text.strip():
        raise UserError(f"--input: {path} is empty (no header line)")
    return HeaderInfo(parse_header(text, dialect, path), len(buf) if cut < 0 else cut + 1, 2)


def open_range(path: str, compression: str, start: int, at_line_start: bool):
    """Opens `path` at the first line that starts at or after byte `start`.

    Returns:
      (file, prefix, line_start, crossed): `prefix` holds bytes already read
      past `line_start` (the byte offset of that line); `crossed` is 1 when a
      newline at or after `start` was skipped to get there (it counts toward
      the line number), else 0. None when no line starts at or after `start`.
    """
    f = open_file(path, compression)
    if at_line_start or start == 0:
        f.seek(start)
        return f, b"", start, 0
    f.seek(start - 1)
    skipped = 0
    while True:
        block = f.read(_HEAD_BLOCK)
        if not block:
            f.close()
            return None
        q = block.find(b"\n")
        if q >= 0:
            line_start = start - 1 + skipped + q + 1
            return f, block[q + 1:], line_start, 0 if (skipped == 0 and q == 0) else 1
        skipped += len(block)


def count_newlines(path: str, start: int, end: int, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> int:
    """Line breaks in bytes [start, end) of an uncompressed file."""
    with open_file(path, "uncompressed") as f:
        f.seek(start)
        left, n = end - start, 0
        while left > 0:
            block = f.read(min(chunk_bytes, left))
            if not block:
                break
            n += block.count(b"\n")
            left -= len(block)
    return n
