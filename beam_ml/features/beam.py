"""Point-in-time windowed features in a Beam pipeline: keyed, grouped per key, run in arrival order per key.

    out = events | "WindowFeatures" >> PointInTimeFeatures(plan, order_column="__line__", source=path)
    out["rows"]      # RecordBatches: the input's columns + one float64 column per aggregate
    out[DEAD_TAG]    # DeadLetters: a NULL key or an unreadable event time (stage 'features')

Work is spread by key (GroupByKey), so no worker sees more than its keys'
events; inside a key the events are sorted by arrival (`order_column`) and
scored by the same `KeyState` the live path uses.
"""
from __future__ import annotations

import json
from typing import Iterable, Optional

import apache_beam as beam
import pyarrow as pa
from apache_beam.metrics import Metrics

from beam_ml.errors import DEAD_TAG, DeadLetter
from beam_ml.features.plan import FeaturePlan, event_time_ms
from beam_ml.features.point_in_time import KeyState

__all__ = ["PointInTimeFeatures", "NAMESPACE", "feature_schema"]

NAMESPACE = "features"


def feature_schema(plan: FeaturePlan, schema: pa.Schema) -> pa.Schema:
    """The input's schema with one float64 column per aggregate appended."""
    return pa.schema(list(schema) + [pa.field(name, pa.float64()) for name in plan.names])


def _dead(row: dict, reason: str, source: str, order_column: str) -> DeadLetter:
    raw = json.dumps({k: v for k, v in row.items() if k != order_column}, default=str)
    return DeadLetter(source, row.get(order_column), reason, raw, stage="features")


class _KeyEventsFn(beam.DoFn):
    """RecordBatch -> (key, (order, event ms, values, row)); rows without a key or time dead-lettered."""

    def __init__(self, plan: FeaturePlan, order_column: str, source: str):
        self._plan, self._order, self._source = plan, order_column, source
        self._in = Metrics.counter(NAMESPACE, "rows_in")
        self._dead = Metrics.counter(NAMESPACE, "rows_dead")

    def process(self, batch: pa.RecordBatch) -> Iterable:
        plan = self._plan
        for row in batch.to_pylist():
            self._in.inc()
            key, t = row.get(plan.key), event_time_ms(row.get(plan.event_time_column))
            if key is None or t is None:
                self._dead.inc()
                what = plan.key if key is None else plan.event_time_column
                yield beam.pvalue.TaggedOutput(DEAD_TAG, _dead(
                    row, f"{what}: missing or unreadable (needed by --features_sql)", self._source, self._order))
                continue
            yield key, (row[self._order], t, plan.values_of(row), row)


def score_group(plan: FeaturePlan, events: Iterable[tuple]) -> Iterable[tuple[dict, bool]]:
    """One key's (order, time, values, row) events -> (row with the features added, late), in arrival order."""
    state = KeyState(plan)
    names = plan.names
    for _, t, values, row in sorted(events, key=lambda e: e[0]):
        features, late = state.score(t, values)
        row.update(zip(names, features))
        yield row, late


class _ScoreKeyFn(beam.DoFn):
    def __init__(self, plan: FeaturePlan):
        self._plan = plan
        self._late = Metrics.counter(NAMESPACE, "late_events")

    def process(self, element) -> Iterable[dict]:
        _, events = element
        for row, late in score_group(self._plan, events):
            if late:
                self._late.inc()
            yield row


class PointInTimeFeatures(beam.PTransform):
    """RecordBatches of events -> the same rows with the statement's features; 'rows' + DEAD_TAG.

    Args:
      plan: the parsed --features_sql.
      order_column: the arrival order within a key (a file's line, a topic's offset).
      schema: the input batches' schema (the output adds the feature columns).
      source: named in dead letters.
      batch_size: rows per output RecordBatch.
    """

    def __init__(self, plan: FeaturePlan, order_column: str, schema: pa.Schema, source: str = "",
                 batch_size: int = 8192):
        super().__init__()
        self._plan, self._order, self._schema, self._source = plan, order_column, schema, source
        self._batch_size = batch_size

    def expand(self, batches):
        keyed = batches | "KeyEvents" >> beam.ParDo(
            _KeyEventsFn(self._plan, self._order, self._source)).with_outputs(DEAD_TAG, main="events")
        schema = feature_schema(self._plan, self._schema)
        rows = (keyed["events"]
                | "GroupByKey" >> beam.GroupByKey()
                | "PointInTime" >> beam.ParDo(_ScoreKeyFn(self._plan))
                | "Batch" >> beam.BatchElements(min_batch_size=self._batch_size, max_batch_size=self._batch_size)
                | "ToArrow" >> beam.Map(lambda rows: pa.RecordBatch.from_pylist(rows, schema=schema)))
        return {"rows": rows, DEAD_TAG: keyed[DEAD_TAG]}
