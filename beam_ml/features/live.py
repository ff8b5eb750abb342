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
import logging
import threading
import time
from typing import Any, Optional, Sequence, Union

import apache_beam as beam
from apache_beam.metrics import Metrics

from beam_ml.errors import DEAD_TAG, DeadLetter
from beam_ml.features.beam import NAMESPACE
from beam_ml.features.plan import FeaturePlan, event_time_ms
from beam_ml.features.point_in_time import LiveFeatures
from beam_ml.formats import RecordFormat
from beam_ml.inference.batches import RowBatch, parse_event_batch
from beam_ml.inference.events import EventParserFn, invalid_row
from beam_ml.io.kafka import list_partitions
from beam_ml.records import raw_text, validate_record
from beam_ml.spec import DatasetSpec

__all__ = ["FeatureEventBatchesFn", "live_state", "spec_without_features", "Rebuild"]

_LOGGER = logging.getLogger(__name__)

_STATES: dict[str, LiveFeatures] = {}
_LOCK = threading.RLock()


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


@dataclasses.dataclass(frozen=True)
class Rebuild:
    """Where a restarted run rebuilds its window state: the topic's records before the group's committed offsets.

    Attributes:
      client_config: the Kafka client config (a beam_ml.io.kafka.KafkaClientConfig).
      topic: the input topic.
      group_id: the consumer group whose committed offsets the run resumes from.
      timeout: seconds the re-read may take.
    """

    client_config: Any
    topic: str
    group_id: str
    timeout: float = 300.0


def rebuild_state(fn: "FeatureEventBatchesFn", rebuild: Rebuild) -> int:
    """Feeds every retained record before the group's committed offset of each partition through the state.

    Nothing is scored or written: the state is then what it was when the
    committed records had been scored, so the records after them (including
    at-least-once replays of in-flight ones) get the features they had.
    Returns the number of records replayed (0 on a first start: no commits).
    """
    from kafka import KafkaConsumer  # deferred: only a run with --group_id and a stored statement needs it

    kwargs = dict(rebuild.client_config.client_kwargs())
    consumer = KafkaConsumer(**kwargs, group_id=rebuild.group_id, enable_auto_commit=False,
                             allow_auto_create_topics=False, auto_offset_reset="earliest")
    replayed = 0
    try:
        tps = list_partitions(consumer, [rebuild.topic], rebuild.timeout)
        ends = {tp: consumer.committed(tp) for tp in tps}
        ends = {tp: end for tp, end in ends.items() if end}
        if not ends:
            return 0
        consumer.assign(list(ends))
        consumer.seek_to_beginning(*ends)
        deadline = time.monotonic() + rebuild.timeout
        todo = set(ends)
        while todo and time.monotonic() < deadline:
            for tp, records in consumer.poll(timeout_ms=200, max_records=1000).items():
                records = [r for r in records if r.offset < ends[tp]]
                if records:
                    replayed += len(records)
                    list(fn.score_records(records))
                if consumer.position(tp) >= ends[tp]:
                    todo.discard(tp)
                    consumer.pause(tp)
        if todo:
            _LOGGER.warning("--features_sql: the window state rebuild of %s stopped after %.0f s, before the "
                            "committed offsets of %d partition(s)", rebuild.topic, rebuild.timeout, len(todo))
        return replayed
    finally:
        consumer.close()


class FeatureEventBatchesFn(EventParserFn):
    """list[KafkaRecord] -> parse, validate (without the feature columns), add window features -> RowBatch.

    Dead letters (DEAD_TAG): stage 'parse', 'validate' (before the event
    enters any window, as training's typing step), 'features' (no key or time).
    Counter `features/late_events`: events beyond GRACE PERIOD, scored with
    empty aggregates and kept out of the windows.
    """

    def __init__(self, spec: DatasetSpec, plan: FeaturePlan, state_id: str, id_field: str = "event_id",
                 value_format: Union[str, RecordFormat] = "json", rebuild: Optional[Rebuild] = None):
        super().__init__(spec, id_field, value_format, validate=True)
        self._plan, self._state_id, self._rebuild = plan, state_id, rebuild
        self._check = spec_without_features(spec, plan)
        self._late = Metrics.counter(NAMESPACE, "late_events")

    def setup(self):
        with _LOCK:
            fresh = self._state_id not in _STATES
            self._live = live_state(self._state_id, self._plan)
            if fresh and self._rebuild is not None:  # once per process, before its first event
                n = rebuild_state(self, self._rebuild)
                _LOGGER.info("--features_sql: window state rebuilt from %d records of %s", n, self._rebuild.topic)

    def process(self, records: Sequence[Any]):
        self._in.inc(len(records))
        yield from self.score_records(records)

    def score_records(self, records: Sequence[Any]):
        """The records' RowBatch (features added) and dead letters (TaggedOutput), updating the state."""
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
