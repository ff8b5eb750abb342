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
from typing import Any, NamedTuple, Optional, Sequence, Union

import apache_beam as beam
from apache_beam.metrics import Metrics

from beam_ml.errors import DEAD_TAG, DeadLetter
from beam_ml.features.beam import NAMESPACE
from beam_ml.features.plan import FeaturePlan, event_time_ms, unusable_column
from beam_ml.features.point_in_time import LiveFeatures
from beam_ml.formats import RecordFormat
from beam_ml.inference.batches import RowBatch, parse_event_batch
from beam_ml.inference.events import EventParserFn, invalid_row
from beam_ml.io.kafka import list_partitions
from beam_ml.io.kafka.offsets import offset_for_time
from beam_ml.records import raw_text, validate_record
from beam_ml.spec import DatasetSpec

__all__ = ["FeatureEventBatchesFn", "live_state", "spec_without_features", "Rebuild", "Rebuilt", "rebuild_state",
           "rebuild_span_ms", "REBUILD_SKEW_MS"]

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
        what = unusable_column(key, plan.key, t, plan.event_time_column)
        if what is not None:
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


# How far record timestamps may run behind event order: the bounded rebuild reads this much further back.
REBUILD_SKEW_MS = 60_000


def rebuild_span_ms(window, grace_ms: int, skew_ms: int = REBUILD_SKEW_MS) -> int:
    """How far back in record time a restart re-reads: the window size (session: gap) + grace + a skew margin."""
    return (window.gap_ms if window.kind == "session" else window.size_ms) + grace_ms + skew_ms


@dataclasses.dataclass(frozen=True)
class Rebuild:
    """Where a restarted run rebuilds its window state: the topic's records before the group's committed offsets.

    Attributes:
      client_config: the Kafka client config (a beam_ml.io.kafka.KafkaClientConfig).
      topic: the input topic.
      group_id: the consumer group whose committed offsets the run resumes from.
      timeout: seconds the re-read may take.
      span_ms: re-read only the records whose timestamp is at most this much before the last committed record's
        (`rebuild_span_ms`; found with offsets_for_times); None: from each partition's first retained record.
    """

    client_config: Any
    topic: str
    group_id: str
    timeout: float = 300.0
    span_ms: Optional[int] = None


class Rebuilt(NamedTuple):
    """replayed: records fed through the state; skipped: committed records before the span, not re-read."""

    replayed: int
    skipped: int


def _rebuild_starts(consumer, ends: dict, first: dict, span_ms: Optional[int], deadline: float) -> dict:
    """Each partition's first offset to re-read (from its first retained one, `first`): the first whose
    timestamp >= (last committed record's - span)."""
    starts = dict(first)
    if span_ms is not None:
        for tp, end in ends.items():
            consumer.assign([tp])
            consumer.seek(tp, end - 1)
            last = None
            while last is None and time.monotonic() < deadline:
                for r in consumer.poll(timeout_ms=200, max_records=1).get(tp, []):
                    last = r.timestamp
            if last is None:  # not readable in time: re-read from the start
                continue
            found = offset_for_time(consumer, tp, last - span_ms, end, max(1.0, deadline - time.monotonic()))
            starts[tp] = max(starts[tp], min(found, end) if found is not None else end)
    consumer.assign(list(ends))
    return starts


def rebuild_state(fn: Any, rebuild: Rebuild) -> Rebuilt:
    """Feeds the retained records before the group's committed offset of each partition through `fn`'s state
    (`fn.score_records(records)`, its output dropped); with `span_ms`, only the last span of them by record time.

    Nothing is scored or written: the state is then what it was when the
    committed records had been processed, so the records after them (including
    at-least-once replays of in-flight ones) get what they had. The span covers
    every event a later event's windows can use when record timestamps follow
    event times (within the skew margin); a session longer than it loses its older part.
    """
    from kafka import KafkaConsumer  # deferred: only a run with --group_id and a statement needs it

    kwargs = dict(rebuild.client_config.client_kwargs())
    consumer = KafkaConsumer(**kwargs, group_id=rebuild.group_id, enable_auto_commit=False,
                             allow_auto_create_topics=False, auto_offset_reset="earliest")
    replayed = skipped = 0
    try:
        tps = list_partitions(consumer, [rebuild.topic], rebuild.timeout)
        ends = {tp: consumer.committed(tp) for tp in tps}
        ends = {tp: end for tp, end in ends.items() if end}
        if not ends:
            return Rebuilt(0, 0)
        deadline = time.monotonic() + rebuild.timeout
        first = consumer.beginning_offsets(list(ends))
        starts = _rebuild_starts(consumer, ends, first, rebuild.span_ms, deadline)
        todo = set()
        for tp, end in ends.items():
            skipped += starts[tp] - first[tp]
            if starts[tp] < end:
                consumer.seek(tp, starts[tp])
                todo.add(tp)
            else:
                consumer.pause(tp)
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
            _LOGGER.warning("window state rebuild of %s stopped after %.0f s, before the committed offsets of %d "
                            "partition(s)", rebuild.topic, rebuild.timeout, len(todo))
        _LOGGER.info("window state of %s rebuilt from %d records (%d older committed records not re-read)",
                     rebuild.topic, replayed, skipped)
        return Rebuilt(replayed, skipped)
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
        self._rebuilt = Metrics.counter(NAMESPACE, "rebuild_records")
        self._skipped = Metrics.counter(NAMESPACE, "rebuild_skipped")
        self._rebuild_counts: Optional[Rebuilt] = None

    def setup(self):
        with _LOCK:
            fresh = self._state_id not in _STATES
            self._live = live_state(self._state_id, self._plan)
            if fresh and self._rebuild is not None:  # once per process, before its first event
                self._rebuild_counts = rebuild_state(self, self._rebuild)

    def process(self, records: Sequence[Any]):
        if self._rebuild_counts is not None:  # counted here: a counter in setup() reaches no metrics container
            self._rebuilt.inc(self._rebuild_counts.replayed)
            self._skipped.inc(self._rebuild_counts.skipped)
            self._rebuild_counts = None
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
