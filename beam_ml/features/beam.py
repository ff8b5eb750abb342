"""Point-in-time windowed features in a Beam pipeline: keyed, grouped per key, run in arrival order per key.

    out = events | "WindowFeatures" >> PointInTimeFeatures(plan, order_column="__line__", schema=schema)
    out["rows"]      # RecordBatches: the input's columns + one float64 column per aggregate
    out[DEAD_TAG]    # DeadLetters: a NULL key or an unreadable event time (stage 'features')

Only what the windows need crosses the per-key shuffle: for each key and
input batch one compact chunk (batch id, row indices, arrival order, event
times, aggregated values). Each key's chunks are merged, sorted by arrival and
scored by the same `KeyState` the live path uses; the feature values go back
to their batch (a second, small shuffle by batch id) and are added to it as
Arrow columns by row index. The rows themselves never become Python dicts.
"""
from __future__ import annotations

import json
import os
from typing import Iterable, Optional

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.metrics import Metrics

from beam_ml.errors import DEAD_TAG, DeadLetter
from beam_ml.features.plan import FeaturePlan, event_times_ms
from beam_ml.features.point_in_time import KeyState
from beam_ml.io.batches import LINE_COLUMN

__all__ = ["PointInTimeFeatures", "NAMESPACE", "feature_schema", "split_batch", "score_chunks", "with_features",
           "features_of_table"]

NAMESPACE = "features"
_ROWS = "rows"


def feature_schema(plan: FeaturePlan, schema: pa.Schema) -> pa.Schema:
    """The input's schema with one float64 column per aggregate appended."""
    return pa.schema(list(schema) + [pa.field(name, pa.float64()) for name in plan.names])


def split_batch(plan: FeaturePlan, batch, order_column: Optional[str], batch_id) -> tuple:
    """One batch of events -> (the batch's rows with a key and an event time, [(key, chunk)], [(row index, reason)]).

    `order_column` gives the arrival order; None: the event time is the arrival order (a table's rows).

    A chunk is (batch_id, row indices, arrival orders, event times, values) of
    one key's rows in the kept batch, as plain lists (cheap to shuffle).
    """
    keys = batch.column(plan.key).to_pylist()
    times = event_times_ms(batch.column(plan.event_time_column))
    bad = [(i, plan.key if k is None else plan.event_time_column)
           for i, (k, t) in enumerate(zip(keys, times)) if k is None or t is None]
    if bad:
        keep = np.ones(batch.num_rows, dtype=bool)
        keep[[i for i, _ in bad]] = False
        batch = batch.filter(pa.array(keep))
        keys = [k for k, ok in zip(keys, keep.tolist()) if ok]
        times = [t for t, ok in zip(times, keep.tolist()) if ok]
    orders = batch.column(order_column).to_pylist() if order_column else times
    values = plan.values_of_batch(batch)
    groups: dict = {}
    for i, k in enumerate(keys):
        idx = groups.get(k)
        if idx is None:
            groups[k] = [i]
        else:
            idx.append(i)
    chunks = [(k, (batch_id, idx, [orders[i] for i in idx], [times[i] for i in idx], [values[i] for i in idx]))
              for k, idx in groups.items()]
    reasons = [(i, f"{what}: missing or unreadable (needed by --features_sql)") for i, what in bad]
    return batch, chunks, reasons


def score_chunks(plan: FeaturePlan, chunks: Iterable[tuple]) -> tuple[dict, int]:
    """One key's chunks -> ({batch_id: (row indices, flat feature values)}, late events), scored in arrival order.

    Arrival order is the order value, then the batch's own row order (a stable sort).
    """
    events = []
    for batch_id, idx, orders, times, values in chunks:
        events.extend(zip(orders, times, values, [batch_id] * len(idx), idx))
    events.sort(key=lambda e: e[0])
    state = KeyState(plan)
    out: dict = {}
    late_events = 0
    for _, t, values, batch_id, i in events:
        features, late = state.score(t, values)
        late_events += late
        slot = out.get(batch_id)
        if slot is None:
            slot = out[batch_id] = ([], [])
        slot[0].append(i)
        slot[1].extend(features)
    return out, late_events


def with_features(plan: FeaturePlan, batch, scored: Iterable[tuple]) -> pa.RecordBatch:
    """A kept batch + its (row indices, flat feature values) pieces -> the batch with the feature columns."""
    width = len(plan.names)
    matrix = np.zeros((batch.num_rows, width), dtype=np.float64)
    for idx, flat in scored:
        matrix[np.asarray(idx, dtype=np.int64)] = np.asarray(flat, dtype=np.float64).reshape(-1, width)
    arrays = list(batch.columns) + [pa.array(matrix[:, j]) for j in range(width)]
    return pa.RecordBatch.from_arrays(arrays, schema=feature_schema(plan, batch.schema))


def _dead(batch, i: int, reason: str, source: str, order_column: Optional[str]) -> DeadLetter:
    row = batch.slice(i, 1).to_pylist()[0]
    position = order_column or LINE_COLUMN
    raw = json.dumps({k: v for k, v in row.items() if k != position}, default=str)
    return DeadLetter(source, row.get(position), reason, raw, stage="features")


class _SplitFn(beam.DoFn):
    """RecordBatch -> (key, chunk) per key; 'rows': (batch id, kept batch); dead letters for rows without key/time."""

    def __init__(self, plan: FeaturePlan, order_column: str, source: str):
        self._plan, self._order, self._source = plan, order_column, source
        self._in = Metrics.counter(NAMESPACE, "rows_in")
        self._dead = Metrics.counter(NAMESPACE, "rows_dead")

    def process(self, batch: pa.RecordBatch) -> Iterable:
        if not batch.num_rows:
            return
        # Random, not derived from the rows: batches of several files may share line numbers. A retried
        # bundle draws a new id for both outputs of the batch together, so they still meet.
        batch_id = int.from_bytes(os.urandom(8), "little")
        self._in.inc(batch.num_rows)
        kept, chunks, bad = split_batch(self._plan, batch, self._order, batch_id)
        for i, reason in bad:
            self._dead.inc()
            yield beam.pvalue.TaggedOutput(DEAD_TAG, _dead(batch, i, reason, self._source, self._order))
        if kept.num_rows:
            yield beam.pvalue.TaggedOutput(_ROWS, (batch_id, kept))
        yield from chunks


class _ScoreKeyFn(beam.DoFn):
    """(key, chunks) -> (batch id, (row indices, flat features)) per batch the key has rows in."""

    def __init__(self, plan: FeaturePlan):
        self._plan = plan
        self._late = Metrics.counter(NAMESPACE, "late_events")

    def process(self, element) -> Iterable[tuple]:
        _, chunks = element
        out, late = score_chunks(self._plan, chunks)
        if late:
            self._late.inc(late)
        yield from out.items()


class _JoinFn(beam.DoFn):
    def __init__(self, plan: FeaturePlan):
        self._plan = plan

    def process(self, element) -> Iterable[pa.RecordBatch]:
        _, joined = element
        for batch in joined[_ROWS]:
            yield with_features(self._plan, batch, joined["features"])


class PointInTimeFeatures(beam.PTransform):
    """RecordBatches of events -> the same rows with the statement's features; 'rows' + DEAD_TAG.

    Args:
      plan: the parsed --features_sql.
      order_column: the arrival order within a key (a file's line, a topic's partition+offset); None: the event
        time (rows without an order of their own, a table's: no event is late, and as events at one time never feed
        each other, ties need no order).
      schema: the input batches' schema (the output adds the feature columns); kept for callers.
      source: named in dead letters.
    """

    def __init__(self, plan: FeaturePlan, order_column: Optional[str], schema: Optional[pa.Schema] = None, source: str = ""):
        super().__init__()
        self._plan, self._order, self._schema, self._source = plan, order_column, schema, source

    def expand(self, batches):
        split = batches | "KeyEvents" >> beam.ParDo(
            _SplitFn(self._plan, self._order, self._source)).with_outputs(DEAD_TAG, _ROWS, main="chunks")
        scored = (split["chunks"]
                  | "GroupByKey" >> beam.GroupByKey()
                  | "PointInTime" >> beam.ParDo(_ScoreKeyFn(self._plan)))
        rows = ({_ROWS: split[_ROWS], "features": scored}
                | "JoinByBatch" >> beam.CoGroupByKey()
                | "AddColumns" >> beam.ParDo(_JoinFn(self._plan)))
        return {"rows": rows, DEAD_TAG: split[DEAD_TAG]}


def features_of_table(plan: FeaturePlan, table: pa.Table, order_column: Optional[str] = None) -> tuple:
    """In-process (samples, tests): events in arrival order (`order_column`, else row order) -> (rows with a key and
    an event time + their features, [(row, reason)] of the rows left out)."""
    if not table.num_rows:
        return pa.Table.from_batches([], schema=feature_schema(plan, table.schema)), []
    batch = table.combine_chunks().to_batches()[0]
    order = order_column or "__order__"
    if order_column is None:
        batch = batch.append_column(order, pa.array(np.arange(batch.num_rows, dtype=np.int64)))
    kept, chunks, bad = split_batch(plan, batch, order, 0)
    scored = []
    for _, chunk in chunks:
        out, _ = score_chunks(plan, [chunk])
        scored.extend(out.values())
    result = pa.Table.from_batches([with_features(plan, kept, scored)])
    if order_column is None:
        result = result.drop_columns([order])
    return result, bad

