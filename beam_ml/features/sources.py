"""Training from a topic snapshot or a BigQuery table with --features_sql: the records as events, then the windows.

    events = events_schema_for_rows(sample_records)          # float64 where >= 98% of a sample are numbers
    source = FeatureTopicSource(kafka, "cards", spec, plan, events, fmt=fmt)   # the `source=` of build_preprocess
    source = FeatureTableSource(bigquery_input, spec, plan, events)

Arrival order: a topic's, the offset order within a partition (a key's
events are expected in one partition: produce keyed by the statement's key,
as stream_predict needs too); a table has none, so its rows are taken in
event-time order (no row is late; events at the same time never feed each
other, so ties need no order). The records are read as text (the readers'
own decoding and dead letters), typed as events, featured, then put in the
model's layout -- the steps a CSV file takes (`FeatureEventsSource`).
"""
from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import numpy as np
import pyarrow as pa

from beam_ml.features.csv_source import FeatureEventsSource
from beam_ml.features.plan import FeaturePlan, event_times_ms
from beam_ml.formats import cell_text
from beam_ml.io.batches import LINE_COLUMN
from beam_ml.io.kafka.topic_batches import ReadTopicSnapshot
from beam_ml.spec import DatasetSpec, _numeric_fraction

__all__ = ["FeatureTopicSource", "FeatureTableSource", "events_schema_for_rows", "rows_as_events"]


def events_schema_for_rows(rows: Sequence[Mapping[str, Any]], columns: Optional[Sequence[str]] = None) -> pa.Schema:
    """The `events` schema of decoded records (a topic's, a table's): as `events_schema_for_csv` types a file's
    columns, from the values' text; + __line__."""
    columns = list(columns or dict.fromkeys(k for r in rows for k in r))
    fields = []
    for name in columns:
        text = pa.array([None if r.get(name) is None else cell_text(r.get(name)) for r in rows], pa.string())
        fields.append(pa.field(name, pa.float64() if _numeric_fraction(text) >= 0.98 else pa.string()))
    return pa.schema(fields + [pa.field(LINE_COLUMN, pa.int64())])


def rows_as_events(rows: Sequence[Mapping[str, Any]], events_schema: pa.Schema) -> pa.Table:
    """Records typed by `events_schema` (a number that does not parse: NULL), in the given order, lines 0..n-1."""
    arrays = []
    for f in events_schema:
        if f.name == LINE_COLUMN:
            arrays.append(pa.array(np.arange(len(rows), dtype=np.int64)))
            continue
        text = [None if r.get(f.name) is None else cell_text(r.get(f.name)) for r in rows]
        if pa.types.is_floating(f.type):
            arrays.append(pa.array([_float(v) for v in text], pa.float64()))
        else:
            arrays.append(pa.array(text, pa.string()))
    return pa.Table.from_arrays(arrays, schema=events_schema)


def in_event_time_order(plan: FeaturePlan, table: pa.Table) -> pa.Table:
    """A table's rows in event-time order (a stable sort; unreadable times last), the order a table is read in."""
    times = event_times_ms(table.column(plan.event_time_column))
    order = sorted(range(len(times)), key=lambda i: (times[i] is None, times[i] or 0))
    return table.take(pa.array(order, pa.int64()))


def _float(text: Optional[str]) -> Optional[float]:
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None


class FeatureTopicSource(FeatureEventsSource):
    """Every partition of a topic, start to end at launch; arrival order = (partition, offset)."""

    order_column = LINE_COLUMN  # position_code(partition, offset)

    def __init__(self, kafka, topic: str, spec: DatasetSpec, plan: FeaturePlan, events_schema: pa.Schema,
                 fmt=None, with_label: bool = True):
        super().__init__(topic, spec, plan, events_schema, with_label)
        self._kafka, self._fmt = kafka, fmt

    def _read(self, pbegin, read_spec: DatasetSpec):
        return pbegin | "ReadTopicEvents" >> ReadTopicSnapshot(self._kafka, self._source, read_spec, fmt=self._fmt,
                                                               with_label=False)


class FeatureTableSource(FeatureEventsSource):
    """A BigQuery table or query (`beam_ml.jobs.bigquery.BigQueryInput`); arrival order = event time."""

    order_column = None

    def __init__(self, bigquery, spec: DatasetSpec, plan: FeaturePlan, events_schema: pa.Schema,
                 with_label: bool = True):
        super().__init__(bigquery.described, spec, plan, events_schema, with_label)
        self._bigquery = bigquery

    def _read(self, pbegin, read_spec: DatasetSpec):
        return pbegin | "ReadTableEvents" >> self._bigquery.source(read_spec, with_label=False)
