"""Reads CSV files into Arrow RecordBatches typed by the dataset spec, with dead letters.

The hot path never builds a Python object per row: a file is cut into chunks
at line boundaries (so every chunk knows its first line number), each chunk is
parsed by pyarrow's C++ CSV reader into string columns, and columns are typed
and validated with Arrow compute kernels. Only a chunk that holds a malformed
row is walked line by line, to name the line of each bad row.

    rows, dead = (p | ReadCsvBatches('data/*.csv', spec)).values()   # tagged outputs

Output batches carry one list<...> column per feature and the label (the
layout tf.Transform's TensorAdapter reads), plus the key and `__line__`.
Numeric missing values are NaN and categorical ones "", so the transform graph
(not the reader) decides the defaults, identically for training and serving.
"""
from __future__ import annotations

import csv as _csv
import glob
import os
from typing import Iterator, Sequence

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from beam_ml.errors import DEAD_TAG, DeadLetter, UserError
from beam_ml.io.batches import LINE_COLUMN, ChunkEmitter, ChunkResult, arrow_schema_for, as_list_array
from beam_ml.spec import NUMBER_RE, DatasetSpec, mask_value, read_header

__all__ = ["ReadCsvBatches", "parse_csv_chunk", "iter_chunks", "expand_input"]

DEFAULT_CHUNK_BYTES = 8 << 20


def expand_input(pattern: str) -> list[str]:
    """Expands a path or glob into files; raises UserError naming the flag when none exist."""
    files = sorted(f for f in glob.glob(pattern) if os.path.isfile(f)) if any(ch in pattern for ch in "*?[") \
        else [pattern]
    if not files:
        raise UserError(f"--input: no file matches {pattern}")
    for f in files:
        if not os.path.exists(f):
            raise UserError(f"--input: file not found: {f}")
        if os.path.getsize(f) == 0:
            raise UserError(f"--input: {f} is empty")
    return files


def iter_chunks(path: str, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> Iterator[tuple[int, bytes]]:
    """Yields (first line number, bytes) chunks of a file's data lines, cut at newlines.

    Line numbers are 1-based and count the header as line 1, so the first data
    line is 2.
    """
    with open(path, "rb") as f:
        header = f.readline()
        if header.startswith(b"\xef\xbb\xbf"):
            header = header[3:]
        line = 2
        rest = b""
        while True:
            block = f.read(chunk_bytes)
            if not block:
                break
            data = rest + block
            cut = data.rfind(b"\n")
            if cut < 0:
                rest = data
                continue
            chunk, rest = data[: cut + 1], data[cut + 1:]
            yield line, chunk
            line += chunk.count(b"\n")
        if rest:
            yield line, rest if rest.endswith(b"\n") else rest + b"\n"


def _line_texts(chunk: bytes) -> list[str]:
    lines = chunk.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return [ln.rstrip(b"\r").decode("utf-8", errors="replace") for ln in lines]


def _field_count(text: str) -> int:
    return len(next(_csv.reader([text]), []))


def _raw_row(table: pa.Table, i: int, spec: DatasetSpec) -> str:
    """Re-assembles row i as CSV text, masking PII columns."""
    masked = set(spec.mask_columns)
    parts = []
    for name in table.column_names:
        v = table.column(name)[i].as_py()
        if name in masked:
            v = mask_value(v)
        parts.append("" if v is None else str(v))
    return ",".join(parts)


def parse_csv_chunk(chunk: bytes, first_line: int, source: str, header: Sequence[str],
                    spec: DatasetSpec, with_label: bool = True) -> ChunkResult:
    """Parses one chunk of CSV data lines into a typed RecordBatch plus dead letters.

    A row is dead when it has the wrong number of fields, a non-numeric value in
    a numeric column, or (with_label) a missing or unknown label.

    Args:
      chunk: whole lines of CSV (no header).
      first_line: the file line number of the chunk's first line.
      source: the file name, for dead letters.
      header: the file's column names.
      spec: the dataset spec (column roles, NA tokens, label classes).
      with_label: validate and emit the label column (False for prediction input).

    Returns:
      A ChunkResult; `batch` is None when no row is good.
    """
    invalid: list[str] = []

    def on_invalid(row) -> str:
        invalid.append(row.text)
        return "skip"

    wanted = [c.name for c in spec.columns
              if c.role in ("numeric", "categorical", "key", "mask") or (c.role == "label" and with_label)]
    missing = [w for w in wanted if w not in header]
    if missing:
        raise UserError(f"--input: {source} lacks column(s) {', '.join(missing)} named by the spec")
    table = pacsv.read_csv(
        pa.py_buffer(chunk),
        read_options=pacsv.ReadOptions(column_names=list(header), block_size=1 << 20, encoding="utf8"),
        parse_options=pacsv.ParseOptions(invalid_row_handler=on_invalid),
        convert_options=pacsv.ConvertOptions(
            column_types={h: pa.string() for h in header}, null_values=list(spec.na_values),
            strings_can_be_null=True, quoted_strings_can_be_null=True))
    n = table.num_rows

    # Line numbers of the parsed rows. Fast path: no blank and no malformed line,
    # so row i is line first_line + i.
    line_texts = None
    if invalid or b"\n\n" in chunk or b"\n\r\n" in chunk or chunk.startswith((b"\n", b"\r\n")):
        line_texts = _line_texts(chunk)
        row_lines, dead_lines, j = [], [], 0
        for idx, text in enumerate(line_texts):
            if not text.strip():
                continue  # pyarrow skips blank lines; they are not records
            if j < len(invalid) and text == invalid[j]:
                dead_lines.append(first_line + idx)
                j += 1
            else:
                row_lines.append(first_line + idx)
        lines_arr = np.asarray(row_lines, dtype=np.int64)
        n_lines = len(row_lines) + len(dead_lines)
    else:
        lines_arr = np.arange(first_line, first_line + n, dtype=np.int64)
        dead_lines = []
        n_lines = n
    if len(lines_arr) != n:  # the line walk disagrees with the parser: never guess a line number
        lines_arr = np.full(n, -1, dtype=np.int64)

    if len(dead_lines) != len(invalid):
        dead_lines = [None] * len(invalid)
    dead = [DeadLetter(source, ln, f"wrong number of fields: expected {len(header)}, got {_field_count(text)}",
                       text) for ln, text in zip(dead_lines, invalid)]

    bad = np.zeros(n, dtype=bool)
    reasons: dict[int, list[str]] = {}
    columns: dict[str, pa.Array] = {}
    for c in spec.columns:
        if c.name not in wanted or c.role == "mask":
            continue
        col = table.column(c.name).combine_chunks() if n else pa.array([], pa.string())
        if c.role == "numeric":
            try:
                values = pc.cast(col, pa.float32())
            except pa.ArrowInvalid:
                ok = pc.fill_null(pc.match_substring_regex(col, NUMBER_RE), True).to_numpy(zero_copy_only=False)
                for i in np.flatnonzero(~ok):
                    bad[i] = True
                    reasons.setdefault(int(i), []).append(
                        f"column '{c.name}': expected a number, got {col[int(i)].as_py()!r}")
                cleaned = pc.if_else(pa.array(ok), pc.utf8_trim_whitespace(col), None)
                values = pc.cast(cleaned, pa.float32())
            columns[c.name] = as_list_array(pc.fill_null(values, np.float32("nan")))
        elif c.role == "categorical":
            columns[c.name] = as_list_array(pc.cast(pc.fill_null(col, ""), pa.binary()))
        elif c.role == "label":
            known = pc.fill_null(pc.is_in(col, value_set=pa.array(spec.label_classes)), False)
            known_np = known.to_numpy(zero_copy_only=False)
            for i in np.flatnonzero(~known_np):
                v = col[int(i)].as_py()
                bad[i] = True
                reasons.setdefault(int(i), []).append(
                    f"column '{c.name}': missing label" if v is None else
                    f"column '{c.name}': unknown label {v!r}, expected one of {spec.label_classes}")
            columns[c.name] = as_list_array(pc.cast(pc.fill_null(col, ""), pa.binary()))
        elif c.role == "key":
            columns[c.name] = pc.fill_null(col, "")
    columns[LINE_COLUMN] = pa.array(lines_arr)

    for i in sorted(reasons):
        dead.append(DeadLetter(source, int(lines_arr[i]) if n else None, "; ".join(reasons[i]),
                               _raw_row(table, i, spec)))
    names = [f.name for f in arrow_schema_for(spec, with_label)]
    batch = pa.RecordBatch.from_arrays([columns[k] for k in names], names=names)
    if bad.any():
        batch = batch.filter(pa.array(~bad))
    return ChunkResult(batch if batch.num_rows else None, dead, n_lines)


class _ReadCsvFileDoFn(beam.DoFn):
    """Reads one CSV file chunk by chunk; good rows to main, dead rows tagged DEAD_TAG."""

    def __init__(self, spec: DatasetSpec, with_label: bool, chunk_bytes: int):
        self._spec = spec
        self._with_label = with_label
        self._chunk_bytes = chunk_bytes
        self._emitter = ChunkEmitter()

    def process(self, path: str):
        header = read_header(path)
        for first_line, chunk in iter_chunks(path, self._chunk_bytes):
            yield from self._emitter.emit(
                parse_csv_chunk(chunk, first_line, path, header, self._spec, self._with_label))


class ReadCsvBatches(beam.PTransform):
    """Reads CSV files into typed Arrow RecordBatches; malformed rows go to a dead-letter output.

    Returns a DoOutputsTuple: the main output is PCollection[pa.RecordBatch]
    (schema `arrow_schema_for(spec)`), `[DEAD_TAG]` is PCollection[DeadLetter].

    Args:
      file_pattern: a path or glob; each file's header must hold the spec's columns.
      spec: the dataset spec.
      with_label: read and validate the label column (False for prediction input).
      chunk_bytes: bytes parsed at a time, which sets the RecordBatch size.
    """

    def __init__(self, file_pattern: str, spec: DatasetSpec, with_label: bool = True,
                 chunk_bytes: int = DEFAULT_CHUNK_BYTES):
        super().__init__()
        self._files = expand_input(file_pattern)
        self._spec = spec
        self._with_label = with_label
        self._chunk_bytes = chunk_bytes

    def expand(self, pbegin):
        return (pbegin
                | "ListFiles" >> beam.Create(self._files)
                | "ParseChunks" >> beam.ParDo(_ReadCsvFileDoFn(self._spec, self._with_label, self._chunk_bytes))
                .with_outputs(DEAD_TAG, main="rows"))
