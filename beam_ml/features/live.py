"""The live path: each poll's events scored with their key's point-in-time window features.

    fn = FeatureEventBatchesFn(spec, plan, state_id, value_format=fmt)  # replaces ParseEventBatchesFn
    parsed = polls | "ParseAndValidate" >> beam.ParDo(fn).with_outputs(DEAD_TAG, main="rows")

State is per worker process (`live_state`): one `KeyState` per key, fed in
the order records are read (a partition's offset order). The key must
therefore reach one process only: produce events keyed (Kafka message key)
by the statement's key column, so a key's events share a partition, and run
one worker process per partition set. On the local runner this is a per-bundle
step, so it streams (GroupByKey/timers would fire only when the read ends).
"""
from __future__ import annotations

import dataclasses
import threading
from typing import Any, Sequence, Union

import apache_beam as beam
from apache_beam.metrics import Metrics

from beam_ml.errors import DEAD_TAG, DeadLetter
from beam_ml.features.beam import NAMESPACE
from beam_ml.features.plan import FeaturePlan, event_time_ms
from beam_ml.features.point_in_time import LiveFeatures
from beam_ml.formats import RecordFormat
from beam_ml.inference.batches import RowBatch, parse_event_batch
from beam_ml.inference.events import EventParserFn, invalid_row
from beam_ml.records import raw_text, validate_record
from beam_ml.spec import DatasetSpec

__all__ = ["FeatureEventBatchesFn", "live_state", "spec_without_features"]

_STATES: dict[str, LiveFeatures] = {}
_LOCK = threading.Lock()


def live_state(state_id: str, plan: FeaturePlan) -> LiveFeatures:
    """The process's state for one run (DoFn instances come and go; the state must not)."""
    with _LOCK:
        state = _STATES.get(state_id)
        if state is None:
            state = _STATES[state_id] = LiveFeatures(plan)
        return state


def spec_without_features(spec: DatasetSpec, plan: FeaturePlan) -> DatasetSpec:
    """The spec events are checked against before their features exist."""
    names = set(plan.names)
    return dataclasses.replace(spec, columns=[c for c in spec.columns if c.name not in names])


def add_live_features(live: LiveFeatures, batch: RowBatch, spec: DatasetSpec, late_counter=None
                      ) -> tuple[RowBatch, list[DeadLetter]]:
    """Adds each row's features in place (in batch order); rows without a key or event time -> dead letters."""
    plan = live.plan
    names = plan.names
    refs, rows, dead = [], [], []
    for ref, row in zip(batch.refs, batch.rows):
        key, t = row.get(plan.key), event_time_ms(row.get(plan.event_time_column))
        if key is None or t is None:
            what = plan.key if key is None else plan.event_time_column
            dead.append(DeadLetter(ref.source, ref.position, f"{what}: missing or unreadable (needed by "
                                   "--features_sql)", raw_text(row, spec.mask_columns), stage="features"))
            continue
        features, late = live.score(key, t, plan.values_of(row))
        if late and late_counter is not None:
            late_counter.inc()
        row.update(zip(names, features))
        refs.append(ref)
        rows.append(row)
    return RowBatch(refs, rows), dead


class FeatureEventBatchesFn(EventParserFn):
    """list[KafkaRecord] -> parse, validate (without the feature columns), add window features -> RowBatch.

    Dead letters (DEAD_TAG): stage 'parse', 'validate' (before the event
    enters any window, as training's typing step), 'features' (no key or time).
    Counter `features/late_events`: events beyond GRACE PERIOD, scored with
    empty aggregates and kept out of the windows.
    """

    def __init__(self, spec: DatasetSpec, plan: FeaturePlan, state_id: str, id_field: str = "event_id",
                 value_format: Union[str, RecordFormat] = "json"):
        super().__init__(spec, id_field, value_format, validate=True)
        self._plan, self._state_id = plan, state_id
        self._check = spec_without_features(spec, plan)
        self._late = Metrics.counter(NAMESPACE, "late_events")

    def setup(self):
        self._live = live_state(self._state_id, self._plan)

    def process(self, records: Sequence[Any]):
        self._in.inc(len(records))
        batch, dead = parse_event_batch(records, self._spec, self._id_field, self._value_format, validate=False)
        refs, rows = [], []
        for ref, row in zip(batch.refs, batch.rows):
            reason = validate_record(row, self._check)
            if reason is None:
                refs.append(ref)
                rows.append(row)
            else:
                dead.append(invalid_row(ref, reason, row, self._spec))
        featured, no_key = add_live_features(self._live, RowBatch(refs, rows), self._spec, self._late)
        if featured.rows:
            yield featured
        for d in dead + no_key:
            yield beam.pvalue.TaggedOutput(DEAD_TAG, d)
