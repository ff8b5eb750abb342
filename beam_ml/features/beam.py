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
import pyarrow.compute as pc
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
    A chunk is (batch_id, int64 bytes of [row indices, arrival orders, event times], float64 bytes of the
    values (rows x aggregates, NaN for a missing value)) of one key's rows in the kept batch: plain bytes
    cross a shuffle without pickling (a numpy array would be pickled, ~7 us each).
    """
    key_column = batch.column(plan.key)
    times = event_times_ms(batch.column(plan.event_time_column))
    bad = [(i, plan.key if no_key else plan.event_time_column)
           for i, (no_key, t) in enumerate(zip(key_column.is_null().to_pylist(), times)) if no_key or t is None]
    if bad:
        keep = np.ones(batch.num_rows, dtype=bool)
        keep[[i for i, _ in bad]] = False
        batch = batch.filter(pa.array(keep))
        times = [t for t, ok in zip(times, keep.tolist()) if ok]
        key_column = batch.column(plan.key)
    reasons = [(i, f"{what}: missing or unreadable (needed by --features_sql)") for i, what in bad]
    if not batch.num_rows:
        return batch, [], reasons
    times = np.asarray(times, dtype=np.int64)
    orders = batch.column(order_column).to_numpy() if order_column else times
    values = plan.values_matrix(batch)
    encoded = pc.dictionary_encode(key_column)
    codes = encoded.indices.to_numpy()
    keys = encoded.dictionary.to_pylist()
    rows = np.argsort(codes, kind="stable")  # each key's rows together, in batch order
    starts = np.concatenate(([0], np.flatnonzero(np.diff(codes[rows])) + 1, [len(rows)]))
    chunks = []
    for a, b in zip(starts[:-1], starts[1:]):
        idx = rows[a:b]
        ints = np.stack((idx, orders[idx], times[idx])).astype(np.int64, copy=False)
        chunks.append((keys[codes[idx[0]]], (batch_id, ints.tobytes(), values[idx].tobytes())))
    return batch, chunks, reasons


def score_chunks(plan: FeaturePlan, chunks: Iterable[tuple]) -> tuple[list, int]:
    """One key's chunks -> ([(batch_id, (row indices, features: bytes as `with_features` reads them))] per chunk,
    late events), scored in arrival order: the order value, then the chunk's own row order (a stable sort)."""
    width = len(plan.names)
    decoded = [(batch_id, np.frombuffer(ints, dtype=np.int64).reshape(3, -1),
                np.frombuffer(floats, dtype=np.float64).reshape(-1, width)) for batch_id, ints, floats in chunks]
    orders = np.concatenate([ints[1] for _, ints, _ in decoded])
    times = np.concatenate([ints[2] for _, ints, _ in decoded]).tolist()
    values = np.concatenate([floats for _, _, floats in decoded])
    # NaN -> None (a missing value) where it matters: COUNT(*) never reads its (NaN) value
    missing = np.isnan(values) & np.array([a.column is not None for a in plan.aggregates])
    rows = values.tolist()
    for i in np.flatnonzero(missing.any(axis=1)).tolist():
        rows[i] = [None if m else v for v, m in zip(rows[i], missing[i].tolist())]
    state = KeyState(plan)
    score = state.score
    features = [None] * len(times)
    late_events = 0
    for i in np.argsort(orders, kind="stable").tolist():
        features[i], late = score(times[i], rows[i])
        late_events += late
    matrix = np.asarray(features, dtype=np.float64).reshape(len(times), width)
    out, start = [], 0
    for batch_id, ints, _ in decoded:
        n = ints.shape[1]
        out.append((batch_id, (ints[0].tobytes(), matrix[start:start + n].tobytes())))
        start += n
    return out, late_events


def with_features(plan: FeaturePlan, batch, scored: Iterable[tuple]) -> pa.RecordBatch:
    """A kept batch + its (row indices, features) pieces from `score_chunks` -> the batch with the feature columns."""
    width = len(plan.names)
    matrix = np.zeros((batch.num_rows, width), dtype=np.float64)
    for idx, features in scored:
        matrix[np.frombuffer(idx, dtype=np.int64)] = np.frombuffer(features, dtype=np.float64).reshape(-1, width)
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
        batch_id = int.from_bytes(os.urandom(8), "little") >> 1  # an int64: encoded as a varint, not pickled
        self._in.inc(batch.num_rows)
        kept, chunks, bad = split_batch(self._plan, batch, self._order, batch_id)
        for i, reason in bad:
            self._dead.inc()
            yield beam.pvalue.TaggedOutput(DEAD_TAG, _dead(batch, i, reason, self._source, self._order))
        if kept.num_rows:
            yield beam.pvalue.TaggedOutput(_ROWS, (batch_id, kept))
        yield from chunks


class _ScoreKeyFn(beam.DoFn):
    """(key, chunks) -> (batch id, (row indices, features)) per chunk."""

    def __init__(self, plan: FeaturePlan):
        self._plan = plan
        self._late = Metrics.counter(NAMESPACE, "late_events")

    def process(self, element) -> Iterable[tuple]:
        _, chunks = element
        out, late = score_chunks(self._plan, chunks)
        if late:
            self._late.inc(late)
        yield from out


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
        scored.extend(piece for _, piece in out)
    result = pa.Table.from_batches([with_features(plan, kept, scored)])
    if order_column is None:
        result = result.drop_columns([order])
    return result, bad

