"""Training and batch prediction from CSV with --features_sql: events [-> --sql] -> point-in-time features -> model
layout.

    source = FeatureCsvSource(pattern, spec, plan, events_schema)   # the `source=` of build_preprocess
    source = FeatureCsvSource(pattern, spec, plan, cleaning.statement.events_schema, cleaning=cleaning)  # --sql first
    sample = sample_with_features(plan, sample_events_table)        # spec inference over the same values

`FeatureEventsSource` is the shared part (typing or cleaning, the features,
the model layout); topics and tables read through it too (`sources.py`).

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

__all__ = ["FeatureEventsSource", "FeatureCsvSource", "sample_with_features", "add_features"]


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


class FeatureEventsSource(beam.PTransform):
    """Events read as text, [cleaned by --sql,] + the statement's features (per key, in arrival order), in the model
    spec's layout. Subclasses say how the text batches are read (`_read`) and what the arrival order is.

    With `cleaning`, the statement runs first (its WHERE and projections) and
    the windows see only the rows and columns it outputs; `events_schema` is then
    the statement's own (`cleaning.statement.events_schema`).

    Returns {'rows': RecordBatches in `arrow_schema_for(spec, with_label)`, DEAD_TAG: DeadLetters}.
    """

    # The arrival order within a key: a column of the read batches, or None for the event time
    # (a source without an order of its own: a table).
    order_column: Optional[str] = LINE_COLUMN

    def __init__(self, source: str, spec: DatasetSpec, plan: FeaturePlan, events_schema: pa.Schema,
                 with_label: bool = True, counted: bool = True, cleaning: Optional[Cleaning] = None):
        super().__init__()
        self._source, self._spec, self._plan, self._events = source, spec, plan, events_schema
        self._with_label, self._counted, self._cleaning = with_label, counted, cleaning

    def _read(self, pbegin, read_spec: DatasetSpec):
        """pbegin -> {'rows': batches of `read_spec` (every column text, no label check), DEAD_TAG: DeadLetters}."""
        raise NotImplementedError

    def expand(self, pbegin):
        read = self._read(pbegin, raw_read_spec(self._events, self._spec.dialect, self._spec.na_values))
        if self._cleaning is not None:
            events = read["rows"] | "CleanWithSql" >> beam.ParDo(_CleanEventsFn(
                self._cleaning, self._spec, self._with_label, source=self._source,
                counted=self._counted)).with_outputs(DEAD_TAG, main="rows")
        else:
            events = read["rows"] | "TypeEvents" >> beam.ParDo(
                _EventsFn(self._events, self._source)).with_outputs(DEAD_TAG, main="rows")
        featured = events["rows"] | "WindowFeatures" >> PointInTimeFeatures(
            self._plan, self.order_column, source=self._source)
        layout = featured["rows"] | "ToModelLayout" >> beam.ParDo(
            _LayoutFn(self._spec, self._with_label, self._source)).with_outputs(DEAD_TAG, main="rows")
        dead = ((read[DEAD_TAG], events[DEAD_TAG], featured[DEAD_TAG], layout[DEAD_TAG])
                | "FlattenFeatureDead" >> beam.Flatten())
        return RowsAndDead(layout["rows"], dead)


class FeatureCsvSource(FeatureEventsSource):
    """CSV files (arrival order: line order) as `FeatureEventsSource` events."""

    def __init__(self, pattern: str, spec: DatasetSpec, plan: FeaturePlan, events_schema: pa.Schema,
                 with_label: bool = True, counted: bool = True, chunk_bytes: Optional[int] = None,
                 cleaning: Optional[Cleaning] = None):
        super().__init__(pattern, spec, plan, events_schema, with_label, counted, cleaning)
        self._chunk_bytes = chunk_bytes

    def _read(self, pbegin, read_spec: DatasetSpec):
        kwargs = {"chunk_bytes": self._chunk_bytes} if self._chunk_bytes else {}
        return pbegin | "ReadCsvEvents" >> ReadCsvBatches(self._source, read_spec, with_label=False,
                                                          validate=self._counted, counted=self._counted, **kwargs)
