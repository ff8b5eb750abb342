"""Reads CSV files into Arrow RecordBatches typed by the dataset spec, with dead letters.

Any file a user brings: local or gs:// (Beam's FileSystems), compressed
(.gz .bz2 .zst .deflate .xz, from the extension or --compression), comma,
semicolon, tab or pipe separated (the spec's dialect, detected when the spec
was inferred, or --delimiter), UTF-8 with or without BOM or --encoding, CRLF,
blank lines, quoted values with line breaks. Bad bytes, stray quotes and
malformed rows become dead letters naming the file and line; they never stop
the read and never take good rows with them.

    rows, dead = (p | ReadCsvBatches("gs://b/tx-*.csv.gz", spec)).values()     # tagged outputs
    python -m pipelines.train --input=export.csv --delimiter=';' --encoding=cp1252

The hot path never builds a Python object per row: a file is cut into byte
ranges at line boundaries (one 10 GB file is read by many workers; compressed
files and files with quoted line breaks are read whole), each range into chunks
of whole lines, each chunk parsed by pyarrow's C++ CSV reader into string
columns (`beam_ml.io.csv_lines`), and columns are typed and validated with
Arrow compute kernels. Globs are matched when the pipeline runs.

Output batches carry one list<...> column per feature and the label (the
layout tf.Transform's TensorAdapter reads), plus the key and `__line__`.
Numeric missing values are NaN and categorical ones "", so the transform graph
(not the reader) decides the defaults, identically for training and serving.
The READ counters hold `lines_in = rows_good + rows_dead` (a record whose
quoted value spans lines counts once) and `blank_lines` beside them.
"""
from __future__ import annotations

import csv as _csv
import io
import math
import re
from typing import Iterator, NamedTuple, Optional, Sequence, Union

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from beam_ml.errors import DEAD_TAG, DeadLetter, UserError
from beam_ml.io.batches import LINE_COLUMN, ChunkEmitter, ChunkResult, arrow_schema_for, as_list_array
from beam_ml.io.csv_lines import (DEFAULT_CHUNK_BYTES, CorruptData, Records, count_newlines, open_range,
                                  parse_records, read_chunks, read_header_info)
from beam_ml.io.dialect import Dialect, split_fields
from beam_ml.io.files import match_files, open_file, resolve_compression
from beam_ml.spec import NUMBER_RE, DatasetSpec, mask_value

__all__ = ["ReadCsvBatches", "parse_csv_chunk", "iter_chunks", "expand_input",
           "FileRange", "plan_ranges", "count_range_lines", "read_range", "read_csv_file"]

# One byte range per worker task: a 10 GB file makes 160 of them.
DEFAULT_RANGE_BYTES = 64 << 20


def expand_input(pattern: str) -> list[str]:
    """The files a path or glob names (any Beam filesystem); raises UserError naming the flag when none exist."""
    files = match_files(pattern)
    for path, size in files:
        if size == 0:
            raise UserError(f"--input: {path} is empty")
    return [path for path, _ in files]


def iter_chunks(path: str, chunk_bytes: int = DEFAULT_CHUNK_BYTES,
                dialect: Optional[Dialect] = None) -> Iterator[tuple[int, bytes]]:
    """Yields (first line number, bytes) chunks of a file's data lines, cut between records.

    Line numbers are 1-based and count the header as line 1, so the first data
    line is 2. Every chunk ends with a newline. The file is decompressed per
    `dialect.compression`.
    """
    dialect = dialect or Dialect()
    info = read_header_info(path, dialect)

    def whole_records(data: bytes, line: int, final: bool):
        lines = data.count(b"\n") + (0 if data.endswith(b"\n") else 1)
        if final or not dialect.multiline:
            return (line, data), lines
        a = np.frombuffer(data, np.uint8)
        nl = np.flatnonzero(a == 10)
        even = np.flatnonzero((np.searchsorted(np.flatnonzero(a == ord(dialect.quotechar)), nl) & 1) == 0)
        consumed = int(even[-1]) + 1 if even.size else 0
        return (line, data[:int(nl[consumed - 1]) + 1] if consumed else b""), consumed

    with open_file(path, dialect.compression) as f:
        f.seek(info.data_start)
        for line, chunk in read_chunks(f, info.first_line, whole_records, multiline=dialect.multiline,
                                       chunk_bytes=chunk_bytes, source=path):
            if chunk:
                yield line, chunk if chunk.endswith(b"\n") else chunk + b"\n"


def _wanted_columns(spec: DatasetSpec, with_label: bool) -> list[str]:
    return [c.name for c in spec.columns
            if c.role in ("numeric", "categorical", "key", "mask") or (c.role == "label" and with_label)]


def _check_columns(header: Sequence[str], wanted: Sequence[str], source: str, dialect: Dialect) -> None:
    missing = [w for w in wanted if w not in header]
    if missing:
        hint = ""
        if len(header) == 1:
            hint = (f" (its header is one column when split at {dialect.delimiter!r}: pass --delimiter "
                    f"if the file uses another separator)")
        raise UserError(f"--input: {source} lacks column(s) {', '.join(missing)} named by the spec{hint}")


def _masked_raw(text: str, header: Sequence[str], spec: DatasetSpec, dialect: Dialect) -> Optional[str]:
    """The line with PII columns masked, re-quoted; None when its fields do not line up with the header."""
    try:
        fields = split_fields(text, dialect)
    except _csv.Error:
        return None
    if len(fields) != len(header):
        return None
    masked = set(spec.mask_columns)
    out = io.StringIO()
    writer = _csv.writer(out, delimiter=dialect.delimiter, lineterminator="",
                         quotechar=dialect.quotechar or '"',
                         quoting=_csv.QUOTE_MINIMAL if dialect.quotechar else _csv.QUOTE_NONE, escapechar="\\")
    writer.writerow([mask_value(v) if h in masked and v not in spec.na_values else v
                     for h, v in zip(header, fields)])
    return out.getvalue()


def _table_raw(table: pa.Table, i: int, spec: DatasetSpec, dialect: Dialect) -> str:
    """Re-assembles row i from the parsed columns (PII masked) when the line itself cannot be used."""
    masked = set(spec.mask_columns)
    parts = []
    for name in table.column_names:
        v = table.column(name)[i].as_py()
        if name in masked:
            v = mask_value(v)
        parts.append("" if v is None else str(v))
    return dialect.delimiter.join(parts)


_CAST_ERROR = re.compile(r"Failed to parse string: '(.*)' as a scalar of type \w+", re.DOTALL)
_NUMBER = re.compile(NUMBER_RE)


def _to_float32(col: pa.Array) -> tuple[pa.Array, Optional[np.ndarray]]:
    """The column as float32 (null where missing or not a number), and a mask of the non-numbers (None: none).

    Arrow's cast rejects the whole column for one bad value and names it; a
    chunk usually holds few distinct bad values, so they are nulled one by
    one (a cast each) before falling back to checking every value by regex.
    """
    try:
        return pc.cast(col, pa.float32()), None
    except pa.ArrowInvalid as e:
        error = str(e)
    current, mask = col, None
    for _ in range(4):
        m = _CAST_ERROR.fullmatch(error)
        if not m or _NUMBER.match(m.group(1)):
            break  # an unexpected message, or a number with spaces around it (the regex path trims)
        hit = pc.fill_null(pc.equal(current, m.group(1)), False)
        hit_np = hit.to_numpy(zero_copy_only=False)
        if not hit_np.any():
            break
        mask = hit_np if mask is None else mask | hit_np
        current = pc.if_else(hit, pa.scalar(None, pa.string()), current)
        try:
            return pc.cast(current, pa.float32()), mask
        except pa.ArrowInvalid as e:
            error = str(e)
    ok = pc.fill_null(pc.match_substring_regex(col, NUMBER_RE), True).to_numpy(zero_copy_only=False)
    cleaned = pc.if_else(pa.array(ok), pc.utf8_trim_whitespace(col), None)
    return pc.cast(cleaned, pa.float32()), ~ok


def _typed(recs: Records, source: str, header: Sequence[str], spec: DatasetSpec, with_label: bool,
           dialect: Dialect) -> ChunkResult:
    """Types the string columns by the spec (Arrow kernels); rows with bad values become dead letters."""
    table = recs.table
    n = table.num_rows
    lines_arr = recs.lines
    dead = [DeadLetter(source, int(line), reason, raw) for line, reason, raw in recs.dead]

    bad = np.zeros(n, dtype=bool)
    reasons: dict[int, list[str]] = {}
    flat: dict[str, pa.Array] = {}  # one value per row; wrapped as list<...> once bad rows are out
    wanted = set(table.column_names)
    for c in spec.columns:
        if c.name not in wanted or c.role == "mask":
            continue
        col = table.column(c.name).combine_chunks() if n else pa.array([], pa.string())
        if c.role == "numeric":
            values, not_numbers = _to_float32(col)
            for i in np.flatnonzero(not_numbers) if not_numbers is not None else ():
                bad[i] = True
                reasons.setdefault(int(i), []).append(
                    f"column '{c.name}': expected a number, got {col[int(i)].as_py()!r}")
            flat[c.name] = pc.fill_null(values, np.float32("nan"))
        elif c.role == "categorical":
            flat[c.name] = pc.cast(pc.fill_null(col, ""), pa.binary())
        elif c.role == "label":
            known = pc.fill_null(pc.is_in(col, value_set=pa.array(spec.label_classes)), False)
            known_np = known.to_numpy(zero_copy_only=False)
            for i in np.flatnonzero(~known_np):
                v = col[int(i)].as_py()
                bad[i] = True
                reasons.setdefault(int(i), []).append(
                    f"column '{c.name}': missing label" if v is None else
                    f"column '{c.name}': unknown label {v!r}, expected one of {spec.label_classes}")
            flat[c.name] = pc.cast(pc.fill_null(col, ""), pa.binary())
        elif c.role == "key":
            flat[c.name] = pc.fill_null(col, "")
    flat[LINE_COLUMN] = pa.array(lines_arr, pa.int64())

    for i in sorted(reasons):
        line = int(lines_arr[i])
        text = recs.line_text(line)
        raw = _masked_raw(text, header, spec, dialect) if text is not None else None
        dead.append(DeadLetter(source, line, "; ".join(reasons[i]), raw or _table_raw(table, i, spec, dialect)))
    dead.sort(key=lambda d: d.position)
    if bad.any():
        keep = pa.array(~bad)
        flat = {k: pc.filter(v, keep) for k, v in flat.items()}
    schema = arrow_schema_for(spec, with_label)
    arrays = [flat[f.name] if pa.types.is_primitive(f.type) or pa.types.is_string(f.type) else
              as_list_array(flat[f.name]) for f in schema]
    batch = pa.RecordBatch.from_arrays(arrays, schema=schema)
    return ChunkResult(batch if batch.num_rows else None, dead, recs.records, recs.blank)


def parse_csv_chunk(chunk: bytes, first_line: int, source: str, header: Sequence[str],
                    spec: DatasetSpec, with_label: bool = True, dialect: Optional[Dialect] = None) -> ChunkResult:
    """Parses one chunk of CSV data lines into a typed RecordBatch plus dead letters.

    A record is dead when it has bytes invalid in the encoding, a stray quote,
    the wrong number of fields, a non-numeric value in a numeric column, or
    (with_label) a missing or unknown label. Blank lines are counted apart.

    Args:
      chunk: whole lines of CSV (no header), in the dialect's encoding.
      first_line: the file line number of the chunk's first line.
      source: the file name, for dead letters.
      header: the file's column names.
      spec: the dataset spec (column roles, NA tokens, label classes).
      with_label: validate and emit the label column (False for prediction input).
      dialect: how the chunk is written; default: comma-separated UTF-8 with
        '"' quotes (not the spec's: callers that build CSV text themselves
        rely on this default; file readers pass the spec's dialect).

    Returns:
      A ChunkResult; `batch` is None when no row is good.
    """
    dialect = dialect or Dialect()
    wanted = _wanted_columns(spec, with_label)
    _check_columns(header, wanted, source, dialect)
    recs = parse_records(chunk, first_line, header, dialect, spec.na_values, columns=wanted, final=True)
    return _typed(recs, source, header, spec, with_label, dialect)


class FileRange(NamedTuple):
    """The lines of one file that start in bytes [start, end) (end None: to the end of the file).

    A file is cut into ranges at arbitrary byte offsets; a line belongs to the
    range its first byte is in, so each line is read exactly once.
    """

    path: str
    compression: str
    index: int
    count: int
    start: int
    end: Optional[int]
    header: tuple
    first_line: int  # the line number of the file's first data line


def plan_ranges(path: str, size: int, dialect: Dialect, columns: Sequence[str] = (),
                range_bytes: int = DEFAULT_RANGE_BYTES) -> list[FileRange]:
    """Reads a file's header (checking it has `columns`) and cuts the file into byte ranges.

    Compressed files and files whose quoted values span lines are one range:
    a range starting mid-file could not find its first record.
    """
    info = read_header_info(path, dialect)
    _check_columns(info.names, columns, path, dialect)
    compression = resolve_compression(path, dialect.compression)
    data_bytes = max(0, size - info.data_start)
    splittable = compression == "uncompressed" and not dialect.multiline
    n = max(1, math.ceil(data_bytes / max(1, range_bytes))) if splittable else 1
    return [FileRange(path, compression, k, n, info.data_start + k * data_bytes // n,
                      info.data_start + (k + 1) * data_bytes // n if k < n - 1 else None,
                      tuple(info.names), info.first_line) for k in range(n)]


def count_range_lines(r: FileRange, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> int:
    """Line breaks in a range's bytes: the line numbers of the ranges after it."""
    return count_newlines(r.path, r.start, r.end, chunk_bytes)


def read_range(r: FileRange, lines_before: int, spec: DatasetSpec, dialect: Dialect, with_label: bool = True,
               chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> Iterator[ChunkResult]:
    """Parses the lines of one range chunk by chunk.

    Args:
      r: the range.
      lines_before: line breaks in the file's data before `r.start` (the sum
        of `count_range_lines` over the earlier ranges).
      spec, dialect, with_label, chunk_bytes: as for ReadCsvBatches.
    """
    opened = open_range(r.path, r.compression, r.start, at_line_start=r.index == 0)
    if opened is None:
        return
    f, prefix, line_start, crossed = opened
    # The line break skipped to reach the first whole line counts toward its number.
    first_line = r.first_line + lines_before + crossed
    end = None if r.end is None else r.end - line_start
    header = list(r.header)
    wanted = _wanted_columns(spec, with_label)

    def parse(data: bytes, line: int, final: bool):
        recs = parse_records(data, line, header, dialect, spec.na_values, columns=wanted, final=final)
        return _typed(recs, r.path, header, spec, with_label, dialect), recs.consumed_lines

    with f:
        try:
            yield from read_chunks(f, first_line, parse, multiline=dialect.multiline, end=end,
                                   chunk_bytes=chunk_bytes, prefix=prefix, source=r.path)
        except CorruptData as e:
            # A truncated or damaged compressed file: the rows before are kept, and
            # the unreadable rest is one dead letter (so it is counted, never silent).
            yield ChunkResult(None, [DeadLetter(r.path, e.line, f"cannot decompress the file from this line on "
                                                                f"({r.compression}): {e.reason}", "")], 1, 0)


def read_csv_file(path: str, spec: DatasetSpec, with_label: bool = True, dialect: Optional[Dialect] = None,
                  chunk_bytes: int = DEFAULT_CHUNK_BYTES,
                  range_bytes: int = DEFAULT_RANGE_BYTES) -> Iterator[ChunkResult]:
    """Reads one file in this process, range after range, exactly as ReadCsvBatches' workers do.

    For tests, tools and small files; `dialect` defaults to the spec's.
    """
    dialect = dialect or spec.dialect
    (path, size), = match_files(path)
    ranges = plan_ranges(path, size, dialect, _wanted_columns(spec, with_label), range_bytes)
    before = 0
    for r in ranges:
        yield from read_range(r, before, spec, dialect, with_label, chunk_bytes)
        if r.index < r.count - 1:
            before += count_range_lines(r, chunk_bytes)


class _MatchFilesDoFn(beam.DoFn):
    """Matches a path or glob when the pipeline runs (FileSystems.match: local, gs://, ...)."""

    def process(self, pattern: str):
        for path, size in match_files(pattern):
            if size:
                yield path, size


class _PlanRangesDoFn(beam.DoFn):
    def __init__(self, dialect: Dialect, columns: Sequence[str], range_bytes: int):
        self._dialect = dialect
        self._columns = list(columns)
        self._range_bytes = range_bytes

    def process(self, element):
        path, size = element
        yield from plan_ranges(path, size, self._dialect, self._columns, self._range_bytes)


class _CountLinesDoFn(beam.DoFn):
    """Counts the line breaks of every range but a file's last, keyed (path, range index)."""

    def __init__(self, chunk_bytes: int):
        self._chunk_bytes = chunk_bytes

    def process(self, r: FileRange):
        if r.index < r.count - 1:
            yield (r.path, r.index), count_range_lines(r, self._chunk_bytes)


class _ReadRangeDoFn(beam.DoFn):
    """Parses one range; good rows to main, dead rows tagged DEAD_TAG, counted by ChunkEmitter."""

    def __init__(self, spec: DatasetSpec, dialect: Dialect, with_label: bool, chunk_bytes: int, counted: bool):
        self._spec = spec
        self._dialect = dialect
        self._with_label = with_label
        self._chunk_bytes = chunk_bytes
        self._emitter = ChunkEmitter(counted)

    def process(self, r: FileRange, counts: dict):
        before = sum(counts[(r.path, j)] for j in range(r.index))
        for result in read_range(r, before, self._spec, self._dialect, self._with_label, self._chunk_bytes):
            yield from self._emitter.emit(result)


class ReadCsvBatches(beam.PTransform):
    """Reads CSV files into typed Arrow RecordBatches; malformed rows go to a dead-letter output.

    Returns a DoOutputsTuple: the main output is PCollection[pa.RecordBatch]
    (schema `arrow_schema_for(spec)`), `[DEAD_TAG]` is PCollection[DeadLetter].

    Args:
      file_pattern: a path or glob (or a list of them) on any Beam filesystem;
        each file's header must hold the spec's columns. Matched at run time.
      spec: the dataset spec; its `dialect` says how files are written.
      with_label: read and validate the label column (False for prediction input).
      chunk_bytes: bytes parsed at a time, which sets the RecordBatch size.
      delimiter: overrides the spec's delimiter (a character, or comma/semicolon/tab/pipe).
      encoding: overrides the spec's encoding.
      compression: overrides the spec's compression ('auto': from each file's extension).
      range_bytes: uncompressed files larger than this are read as several
        ranges in parallel.
      validate: check now that the pattern matches a file whose header has the
        spec's columns (a UserError otherwise); the files read are the ones
        matched when the pipeline runs.
      counted: count into the READ counters; False for a second read of the
        same files (see beam_ml.preprocess), so the accounting counts rows once.
    """

    def __init__(self, file_pattern: Union[str, Sequence[str]], spec: DatasetSpec, with_label: bool = True,
                 chunk_bytes: int = DEFAULT_CHUNK_BYTES, *, delimiter: Optional[str] = None,
                 encoding: Optional[str] = None, compression: Optional[str] = None,
                 range_bytes: int = DEFAULT_RANGE_BYTES, validate: bool = True, counted: bool = True):
        super().__init__()
        self._patterns = [file_pattern] if isinstance(file_pattern, str) else list(file_pattern)
        self._spec = spec
        self._dialect = spec.dialect.replace(delimiter=delimiter, encoding=encoding, compression=compression)
        self._with_label = with_label
        self._chunk_bytes = chunk_bytes
        self._range_bytes = max(int(range_bytes), 1)
        self._counted = counted
        if validate:
            for pattern in self._patterns:
                path = match_files(pattern)[0][0]
                info = read_header_info(path, self._dialect)
                _check_columns(info.names, _wanted_columns(spec, with_label), path, self._dialect)

    def expand(self, pbegin):
        ranges = (pbegin
                  | "ListPatterns" >> beam.Create(self._patterns)
                  | "MatchFiles" >> beam.ParDo(_MatchFilesDoFn())
                  | "SplitIntoRanges" >> beam.ParDo(_PlanRangesDoFn(
                      self._dialect, _wanted_columns(self._spec, self._with_label), self._range_bytes))
                  | "DistributeRanges" >> beam.Reshuffle())
        counts = ranges | "CountLines" >> beam.ParDo(_CountLinesDoFn(self._chunk_bytes))
        return ranges | "ParseChunks" >> beam.ParDo(
            _ReadRangeDoFn(self._spec, self._dialect, self._with_label, self._chunk_bytes, self._counted),
            beam.pvalue.AsDict(counts)).with_outputs(DEAD_TAG, main="rows")
