"""The RecordBatch layout every reader emits, and the read accounting they share.

Readers (CSV files, Kafka topics, BigQuery tables) all produce Arrow
RecordBatches in `arrow_schema_for(spec)`'s layout -- one list<...> column per
feature and the label (what tf.Transform's TensorAdapter reads), the key, and
`LINE_COLUMN` (the row's position in its source) -- plus DeadLetters tagged
`beam_ml.errors.DEAD_TAG`. `ChunkEmitter` counts both into the READ counters so
`lines_in = rows_good + rows_dead` holds for every reader; blank lines (not
records) are counted apart, in `blank_lines`.

    result = parse_csv_chunk(...)            # a ChunkResult
    yield from ChunkEmitter().emit(result)   # inside a DoFn
"""
from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import apache_beam as beam
import numpy as np
import pyarrow as pa

from beam_ml import metrics
from beam_ml.errors import DEAD_TAG, DeadLetter
from beam_ml.spec import ColumnSpec, DatasetSpec

__all__ = ["LINE_COLUMN", "arrow_schema_for", "as_list_array", "ChunkResult", "ChunkEmitter", "input_read_spec"]

LINE_COLUMN = "__line__"


def arrow_schema_for(spec: DatasetSpec, with_label: bool = True) -> pa.Schema:
    """The schema of the batches ReadCsvBatches emits (features, label, key, line)."""
    fields = []
    for c in spec.columns:
        if c.role == "numeric":
            fields.append(pa.field(c.name, pa.list_(pa.float32())))
        elif c.role == "categorical":
            fields.append(pa.field(c.name, pa.list_(pa.binary())))
        elif c.role == "label" and with_label:
            fields.append(pa.field(c.name, pa.list_(pa.binary())))
    if spec.key_column:
        fields.append(pa.field(spec.key_column, pa.string()))
    fields.append(pa.field(LINE_COLUMN, pa.int64()))
    return pa.schema(fields)


def as_list_array(values: pa.Array) -> pa.ListArray:
    """Wraps a flat array as a list array with one value per row (zero-copy values)."""
    offsets = pa.array(np.arange(len(values) + 1, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, values)


@dataclasses.dataclass
class ChunkResult:
    batch: Optional[pa.RecordBatch]
    dead: list[DeadLetter]
    lines: int  # records in the chunk (good + dead); blank lines excluded
    blank: int = 0  # blank lines skipped (empty, CRLF-only or whitespace-only)


class ChunkEmitter:
    """Counts a ChunkResult into the shared read counters and yields its outputs.

    Every reader (files, topics) reports `lines_in = rows_good + rows_dead` in
    the `beam_ml.metrics.READ` namespace (and `blank_lines`, not part of that
    sum), and emits good batches on the main output and dead letters tagged
    DEAD_TAG. Create it in a DoFn's __init__. A reader that reads the same
    rows a second time (so that a pipeline can stream instead of holding them)
    passes counted=False: only the first read counts.
    """

    def __init__(self, counted: bool = True):
        self._counted = counted
        self._lines = beam.metrics.Metrics.counter(metrics.READ, "lines_in")
        self._good = beam.metrics.Metrics.counter(metrics.READ, "rows_good")
        self._dead = beam.metrics.Metrics.counter(metrics.READ, "rows_dead")
        self._blank = beam.metrics.Metrics.counter(metrics.READ, "blank_lines")

    def emit(self, result: ChunkResult):
        if not self._counted:
            for d in result.dead:
                yield beam.pvalue.TaggedOutput(DEAD_TAG, d)
            if result.batch is not None:
                yield result.batch
            return
        self._lines.inc(result.lines)
        self._dead.inc(len(result.dead))
        if result.blank:
            self._blank.inc(result.blank)
        for d in result.dead:
            yield beam.pvalue.TaggedOutput(DEAD_TAG, d)
        if result.batch is not None:
            self._good.inc(result.batch.num_rows)
            yield result.batch


def input_read_spec(spec: DatasetSpec, header: Sequence[str]) -> DatasetSpec:
    """The spec to read prediction input with: the label, when present, as a plain string column.

    A 'categorical' role carries the label through the reader untouched (no
    check against label_classes), so rows with an unknown or missing label are
    still scored.
    """
    columns = []
    for c in spec.columns:
        if c.role == "label" and c.name in header:
            columns.append(ColumnSpec(c.name, "categorical", max_categories=1))
        elif c.role == "label" or (c.role in ("key", "mask") and c.name not in header):
            columns.append(ColumnSpec(c.name, "drop"))
        else:
            columns.append(c)
    return dataclasses.replace(spec, columns=columns)
