"""Training and batch prediction from CSV with --features_sql: events -> point-in-time features -> model layout.

    source = FeatureCsvSource(pattern, spec, plan, events_schema)   # the `source=` of build_preprocess
    sample = sample_with_features(plan, sample_events_table)        # spec inference over the same values

The arrival order of a CSV is its line order: a row's features are the
aggregates of the key's rows on earlier lines (and earlier event times) in
its window, exactly what stream_predict computes when the file is replayed
into a topic in line order.
"""
from __future__ import annotations

from typing import Iterable, Optional

import apache_beam as beam
import pyarrow as pa

from beam_ml.clean.cleaning import Cleaning
from beam_ml.clean.layout import CleanToLayoutFn, events_from_read_batch, raw_read_spec, to_model_layout
from beam_ml.clean.windows import RowsAndDead
from beam_ml.errors import DEAD_TAG, DeadLetter
from beam_ml.features.beam import PointInTimeFeatures, features_of_table
from beam_ml.features.plan import FeaturePlan
from beam_ml.io.batches import LINE_COLUMN
from beam_ml.io.csv import ReadCsvBatches
from beam_ml.spec import DatasetSpec

__all__ = ["FeatureCsvSource", "sample_with_features", "add_features"]


def add_features(plan: FeaturePlan, table: pa.Table) -> pa.Table:
    """Features of a small table of events in arrival (row) order, computed in-process (samples, tests).

    Rows without a key or a readable event time are left out (training dead-letters them).
    """
    return features_of_table(plan, table)[0]


def sample_with_features(plan: FeaturePlan, sample: pa.Table) -> pa.Table:
    """The inference sample with its features (the sample is the file's first rows: a prefix, so exact)."""
    return add_features(plan, sample)


class _EventsFn(beam.DoFn):
    """ReadCsvBatches batch (text) -> typed events batch; rows whose numbers do not parse dead-lettered."""

    def __init__(self, events_schema: pa.Schema, source: str):
        self._events, self._source = events_schema, source

    def process(self, batch: pa.RecordBatch) -> Iterable:
        events, bad = events_from_read_batch(batch, self._events)
        lines = batch.column(LINE_COLUMN)
        for i, reason in bad:
            yield beam.pvalue.TaggedOutput(DEAD_TAG, DeadLetter(self._source, int(lines[i].as_py()), reason, "",
                                                                stage="validate"))
        for b in events.to_batches():
            if b.num_rows:
                yield b


class _CleanEventsFn(CleanToLayoutFn):
    """--sql before the windows: a read batch -> the statement's output (its columns + the line), as a batch."""

    def clean(self, events: pa.Table, source: str = ""):
        table = yield from self.run_sql(events, source)
        if table is None or not table.num_rows:
            return None
        return table.combine_chunks().to_batches()[0]


class _LayoutFn(beam.DoFn):
    def __init__(self, spec: DatasetSpec, with_label: bool, source: str):
        self._spec, self._with_label, self._source = spec, with_label, source

    def process(self, batch: pa.RecordBatch) -> Iterable:
        table = pa.Table.from_batches([batch])
        out, bad = to_model_layout(table, self._spec, self._with_label)
        for i, reason in bad:
            yield beam.pvalue.TaggedOutput(DEAD_TAG, DeadLetter(
                self._source, int(table.column(LINE_COLUMN)[i].as_py()), reason, "", stage="validate"))
        if out.num_rows:
            yield out


class FeatureCsvSource(beam.PTransform):
    """CSV files as events, [cleaned by --sql,] + the statement's features (per key, in line order), in the model
    spec's layout.

    With `cleaning`, the statement runs first (its WHERE and projections) and
    the windows see only the rows and columns it outputs; `events_schema` is then
    the statement's own (`cleaning.statement.events_schema`).

    Returns {'rows': RecordBatches in `arrow_schema_for(spec, with_label)`, DEAD_TAG: DeadLetters}.
    """

    def __init__(self, pattern: str, spec: DatasetSpec, plan: FeaturePlan, events_schema: pa.Schema,
                 with_label: bool = True, counted: bool = True, chunk_bytes: Optional[int] = None,
                 cleaning: Optional[Cleaning] = None):
        super().__init__()
        self._pattern, self._spec, self._plan, self._events = pattern, spec, plan, events_schema
        self._with_label, self._counted, self._chunk_bytes = with_label, counted, chunk_bytes
        self._cleaning = cleaning

    def expand(self, pbegin):
        read_spec = raw_read_spec(self._events, self._spec.dialect, self._spec.na_values)
        kwargs = {"chunk_bytes": self._chunk_bytes} if self._chunk_bytes else {}
        read = pbegin | "ReadCsvEvents" >> ReadCsvBatches(self._pattern, read_spec, with_label=False,
                                                          validate=self._counted, counted=self._counted, **kwargs)
        if self._cleaning is not None:
            events = read["rows"] | "CleanWithSql" >> beam.ParDo(_CleanEventsFn(
                self._cleaning, self._spec, self._with_label, source=self._pattern,
                counted=self._counted)).with_outputs(DEAD_TAG, main="rows")
        else:
            events = read["rows"] | "TypeEvents" >> beam.ParDo(
                _EventsFn(self._events, self._pattern)).with_outputs(DEAD_TAG, main="rows")
        featured = events["rows"] | "WindowFeatures" >> PointInTimeFeatures(
            self._plan, LINE_COLUMN, source=self._pattern)
        layout = featured["rows"] | "ToModelLayout" >> beam.ParDo(
            _LayoutFn(self._spec, self._with_label, self._pattern)).with_outputs(DEAD_TAG, main="rows")
        dead = ((read[DEAD_TAG], events[DEAD_TAG], featured[DEAD_TAG], layout[DEAD_TAG])
                | "FlattenFeatureDead" >> beam.Flatten())
        return RowsAndDead(layout["rows"], dead)
