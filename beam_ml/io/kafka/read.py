"""ReadFromKafka: topics (every partition) as a bounded or unbounded PCollection of KafkaRecords.

    records = (p | 'ReadFromKafka' >> ReadFromKafka(
                   'broker:9092', ['transactions'], group_id='scoring'))
    polls = p | ReadFromKafka('broker:9092', 'transactions', batches=True)   # lists of KafkaRecords

How reading works: an Impulse feeds a DoFn that lists the partitions of each
topic when the pipeline runs and picks each partition's start offset; each
partition then becomes one splittable-DoFn restriction, an `OffsetRange` over
its offsets, read with a consumer assigned to that one partition (no consumer
group membership, so no rebalancing and no 20 s group join). Unbounded reads
checkpoint every ~2 seconds (`defer_remainder`) and commit the consumed offsets
to `group_id` only in a bundle finalizer, i.e. after the runner has made the
bundle's output durable: at-least-once.
"""
import logging
import threading
import time
from typing import Any, Iterator, List, Mapping, NamedTuple, Optional, Sequence, Union

import apache_beam as beam
from apache_beam.io.restriction_trackers import OffsetRange, OffsetRestrictionTracker
from apache_beam.transforms.core import RestrictionProvider
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Duration
from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata

from beam_ml.io.kafka.config import KafkaClientConfig, check_client_overrides, resolve_client_config
from beam_ml.io.kafka.budget import SharedRecordBudget, even_shares, split_budget
from beam_ml.io.kafka.offsets import (COMMITTED, EARLIEST, START_POLICIES, UNBOUNDED_STOP, StartPosition,
                                      list_partitions, next_watermark, offset_for_time, probe_log_end,
                                      resolve_start_offset)
from beam_ml.io.kafka.records import CREATE_TIME, TIMESTAMP_POLICIES, KafkaRecord, record_timestamp
from beam_ml.metrics import READ
from beam_ml.io.sdf import MinTimestampWatermarkProvider, keep_checkpoints_with_parallel_workers

__all__ = ["ReadFromKafka"]

_LOGGER = logging.getLogger(__name__)


class _PartitionRead(NamedTuple):
    """What to read of one partition: the SDF's element."""
    topic: str
    partition: int
    start: int
    stop: int
    # Wall-clock second after which to stop (from max_read_time), or None.
    deadline: Optional[float]
    # max_records beyond the partition's share of the backlog: records at or
    # after `live_from` are read only as `budget` grants them (see budget.py).
    live_from: Optional[int] = None
    budget: Optional[SharedRecordBudget] = None


class _PartitionTracker(OffsetRestrictionTracker):
    """An offset tracker that splits only to checkpoint.

    Offsets are committed per partition in bundle finalizers; if a runner split
    a partition's range in two, the later half could commit first and a
    restart would skip the unfinished earlier half. Parallelism is therefore
    one reader per partition, as with a consumer group.
    """

    def try_split(self, fraction_of_remainder):
        if fraction_of_remainder != 0:
            return None
        return super().try_split(0)

    def is_bounded(self):
        return self.current_restriction().stop != UNBOUNDED_STOP


class _PartitionRestrictionProvider(RestrictionProvider):

    def initial_restriction(self, element: _PartitionRead) -> OffsetRange:
        return OffsetRange(element.start, element.stop)

    def create_tracker(self, restriction: OffsetRange) -> _PartitionTracker:
        return _PartitionTracker(restriction)

    def restriction_size(self, element, restriction: OffsetRange) -> float:
        if restriction.stop == UNBOUNDED_STOP:
            # The backlog of a live partition is unknown; a constant keeps
            # runners from reading "2**63 offsets left" as a real size.
            return 1.0
        return float(restriction.size())


_RESTRICTIONS = _PartitionRestrictionProvider()
_WATERMARKS = MinTimestampWatermarkProvider()


def _consumer_kwargs(config: KafkaClientConfig, group_id: Optional[str],
                     extra: Mapping[str, Any]) -> dict[str, Any]:
    kwargs = dict(config.client_kwargs())
    kwargs.update(
        group_id=group_id,
        # Offsets are committed only by bundle finalizers, never on a timer.
        enable_auto_commit=False,
        # Reading must not create the topic it reads by accident.
        allow_auto_create_topics=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=100,
    )
    kwargs.update(extra)
    return kwargs


class _DiscoverPartitionsDoFn(beam.DoFn):
    """Impulse -> one `_PartitionRead` per partition of the topics (max_records split among them)."""

    def __init__(self, config: KafkaClientConfig, topics: Sequence[str],
                 group_id: Optional[str], start: StartPosition, bounded: bool,
                 max_records: Optional[int], max_read_time: Optional[float],
                 consumer_config: Mapping[str, Any], metadata_timeout: float,
                 shared_budget: bool):
        self._config = config
        self._topics = list(topics)
        self._group_id = group_id
        self._start = start
        self._bounded = bounded
        self._max_records = max_records
        self._max_read_time = max_read_time
        self._consumer_config = dict(consumer_config)
        self._timeout = metadata_timeout
        self._shared_budget = shared_budget
        self._consumer: Optional[KafkaConsumer] = None

    def setup(self):
        self._consumer = KafkaConsumer(**_consumer_kwargs(
            self._config, self._group_id, self._consumer_config))

    def teardown(self):
        if self._consumer is not None:
            self._consumer.close(autocommit=False)
            self._consumer = None

    def process(self, unused_impulse) -> Iterator[_PartitionRead]:
        deadline = (time.time() + self._max_read_time
                    if self._max_read_time is not None else None)
        consumer = self._consumer
        partitions = list_partitions(consumer, self._topics, self._timeout)
        beginnings = consumer.beginning_offsets(partitions)
        needs_end = (self._bounded or self._max_records is not None or
                     self._start not in (COMMITTED, EARLIEST))
        ends = (probe_log_end(consumer, partitions, self._timeout)
                if needs_end else {})
        starts = []
        for tp in partitions:
            committed = time_offset = None
            if self._start == COMMITTED and self._group_id:
                committed = consumer.committed(tp)
            elif isinstance(self._start, int):
                time_offset = offset_for_time(consumer, tp, self._start,
                                               ends[tp], self._timeout)
            starts.append(resolve_start_offset(
                self._start, beginning=beginnings[tp], end=ends.get(tp),
                committed=committed, time_offset=time_offset))
        stops = [ends[tp] if self._bounded else UNBOUNDED_STOP
                 for tp in partitions]
        live_from: list[Optional[int]] = [None] * len(partitions)
        budget = None
        if self._max_records is not None:
            backlogs = [max(0, ends[tp] - s) for tp, s in zip(partitions, starts)]
            shares = split_budget(self._max_records, backlogs)
            rest = 0 if self._bounded else self._max_records - sum(shares)
            if rest and self._shared_budget:
                budget = SharedRecordBudget.create(rest)
                live_from = [s + n for s, n in zip(starts, shares)]
            else:
                extra = even_shares(rest, len(partitions))
                stops = [s + n + x for s, n, x in zip(starts, shares, extra)]
            _LOGGER.info("max_records=%d: %s from the backlog, %d more as they "
                         "arrive%s", self._max_records, shares, rest,
                         "" if not rest else " (a shared counter)" if budget
                         else " (split evenly)")
        for tp, start, stop, live in zip(partitions, starts, stops, live_from):
            _LOGGER.info("Reading %s/%d offsets [%d, %s)", tp.topic,
                         tp.partition, start,
                         "end" if stop == UNBOUNDED_STOP else stop)
            yield _PartitionRead(tp.topic, tp.partition, start, stop, deadline,
                                 live, budget if live is not None else None)


class _KafkaReadDoFn(beam.DoFn):
    """Reads one partition's `OffsetRange` (bounded output)."""

    def __init__(self, config: KafkaClientConfig, group_id: Optional[str],
                 commit_offsets: bool, consumer_config: Mapping[str, Any],
                 poll_timeout: float, checkpoint_interval: float,
                 idle_watermark_slack: float, stall_timeout: float,
                 timestamp_policy: str = CREATE_TIME, batches: bool = False):
        self._config = config
        self._group_id = group_id
        self._commit_offsets = commit_offsets
        self._consumer_config = dict(consumer_config)
        self._poll_timeout = poll_timeout
        self._checkpoint_interval = checkpoint_interval
        self._idle_slack = idle_watermark_slack
        self._stall_timeout = stall_timeout
        self._timestamp_policy = timestamp_policy
        self._batches = batches
        self._unbounded = False
        self._fallbacks = beam.metrics.Metrics.counter(READ, "timestamp_fallbacks")

    def setup(self):
        self._consumers: dict[TopicPartition, KafkaConsumer] = {}
        # Where each consumer will fetch next, so a resumed restriction that
        # continues where the last one stopped keeps the prefetched records.
        self._positions: dict[TopicPartition, int] = {}
        self._committed: dict[TopicPartition, int] = {}
        # Finalizers may run on another thread than process().
        self._lock = threading.Lock()
        self._warned_fallback = False

    def teardown(self):
        for consumer in getattr(self, "_consumers", {}).values():
            consumer.close(autocommit=False)
        self._consumers = {}

    def _consumer_for(self, tp: TopicPartition) -> KafkaConsumer:
        consumer = self._consumers.get(tp)
        if consumer is None:
            consumer = KafkaConsumer(**_consumer_kwargs(
                self._config, self._group_id, self._consumer_config))
            consumer.assign([tp])
            self._consumers[tp] = consumer
        return consumer

    def _commit(self, tp: TopicPartition, progress: dict) -> None:
        offset = progress["next_offset"]
        with self._lock:
            if offset <= self._committed.get(tp, -1):
                return  # never move a group's offset backwards
            try:
                self._consumer_for(tp).commit(
                    {tp: OffsetAndMetadata(offset, "", -1)})
                self._committed[tp] = offset
            except KafkaError as e:
                # The output is already durable; a lost commit only means the
                # records are read again after a restart (at-least-once).
                _LOGGER.warning(
                    "Could not commit offset %d of %s/%d for group %r: %s",
                    offset, tp.topic, tp.partition, self._group_id, e)

    def process(
        self,
        element: _PartitionRead,
        bundle_finalizer=beam.DoFn.BundleFinalizerParam,
        tracker=beam.DoFn.RestrictionParam(_RESTRICTIONS),
        watermark_estimator=beam.DoFn.WatermarkEstimatorParam(_WATERMARKS),
    ) -> Iterator[TimestampedValue]:
        yield from self._read(element, bundle_finalizer, tracker,
                              watermark_estimator)

    def _to_records(self, polled: list, now_ms: int) -> list[KafkaRecord]:
        policy = self._timestamp_policy
        if policy == CREATE_TIME and all(
                r.timestamp_type == 0 and r.timestamp >= 0 for r in polled):
            # The usual case, without a call per record (this runs for every
            # record read): what record_timestamp would return for each.
            return [KafkaRecord(r.key, r.value, r.topic, r.partition, r.offset,
                                r.timestamp, CREATE_TIME) for r in polled]
        out = []
        fallbacks = 0
        for r in polled:
            ts, kind = record_timestamp(policy, r.timestamp, r.timestamp_type, now_ms)
            if kind != policy:
                fallbacks += 1
            out.append(KafkaRecord(r.key, r.value, r.topic, r.partition,
                                   r.offset, ts, kind))
        if fallbacks:
            # Never silent: counted, marked on the record, and logged once.
            self._fallbacks.inc(fallbacks)
            if not self._warned_fallback:
                self._warned_fallback = True
                _LOGGER.warning(
                    "timestamp_policy=%s: %d record(s) of %s/%d have no such "
                    "timestamp (first at offset %d, type %r); they carry the "
                    "processing time instead (timestamp_type="
                    "'processing_time', counter %s/timestamp_fallbacks)",
                    policy, fallbacks, polled[0].topic, polled[0].partition,
                    next(r.offset for r, o in zip(polled, out)
                         if o.timestamp_type != policy),
                    next(r.timestamp_type for r, o in zip(polled, out)
                         if o.timestamp_type != policy), READ)
        return out

    def _read(self, element, bundle_finalizer, tracker, watermark_estimator):
        offsets = tracker.current_restriction()
        if offsets.start >= offsets.stop:
            return
        tp = TopicPartition(element.topic, element.partition)
        with self._lock:
            consumer = self._consumer_for(tp)
            if self._positions.get(tp) != offsets.start:
                consumer.seek(tp, offsets.start)
        checkpoint_at = time.monotonic() + self._checkpoint_interval
        last_progress = time.monotonic()
        progress: Optional[dict] = None
        budget, live_from = element.budget, element.live_from
        position = offsets.start
        while True:
            now = time.time()
            if element.deadline is not None and now >= element.deadline:
                # max_read_time is up: claiming past the end finishes the
                # restriction without a residual, so the pipeline can end.
                tracker.try_claim(offsets.stop)
                return
            if budget is not None and position >= live_from and budget.left() == 0:
                # max_records reached (by any partition): done, no residual.
                tracker.try_claim(offsets.stop)
                return
            timeout = self._poll_timeout
            if element.deadline is not None:
                timeout = max(0.0, min(timeout, element.deadline - now))
            with self._lock:
                polled = consumer.poll(
                    timeout_ms=int(timeout * 1000)).get(tp, [])
                position = consumer.position(tp)
                self._positions[tp] = position
            # Offsets below the restriction only come after an offset reset
            # (auto_offset_reset): they belong to restrictions read already.
            polled = [r for r in polled
                      if offsets.start <= r.offset < offsets.stop]
            exhausted = False
            if budget is not None and polled and polled[-1].offset >= live_from:
                live = sum(1 for r in polled if r.offset >= live_from)
                granted = budget.take(live)
                if granted < live:
                    exhausted = True
                    polled = polled[:len(polled) - live + granted]
            if polled:
                # Claiming the last offset claims the poll's whole range.
                if not tracker.try_claim(polled[-1].offset):
                    return  # the runner checkpointed us meanwhile
                if progress is None:
                    progress = {"next_offset": polled[-1].offset + 1}
                    if self._commit_offsets:
                        bundle_finalizer.register(
                            lambda tp=tp, p=progress: self._commit(tp, p))
                progress["next_offset"] = polled[-1].offset + 1
                records = self._to_records(polled, int(now * 1000))
                if self._batches:
                    yield TimestampedValue(
                        records, min(r.timestamp for r in records) / 1000.0)
                else:
                    for record in records:
                        yield TimestampedValue(record, record.timestamp / 1000.0)
                last_progress = time.monotonic()
            else:
                records = []
            if exhausted:
                tracker.try_claim(offsets.stop)
                return
            if position >= offsets.stop:
                # Everything below the stop is consumed, even if its last
                # offsets were not records (transaction markers, compaction).
                tracker.try_claim(offsets.stop)
                return
            if self._unbounded:
                watermark_estimator.set_watermark(next_watermark(
                    watermark_estimator.current_watermark(),
                    [r.timestamp for r in records],
                    now=None if records else time.time(),
                    idle_slack=self._idle_slack))
                if not records or time.monotonic() >= checkpoint_at:
                    # Hand control back so other partitions and downstream
                    # steps run and this bundle's offsets get committed.
                    tracker.defer_remainder(Duration(seconds=0))
                    return
            elif time.monotonic() - last_progress > self._stall_timeout:
                raise RuntimeError(
                    f"Kafka {tp.topic}/{tp.partition}: no progress for "
                    f"{self._stall_timeout:.0f}s at offset {position}, "
                    f"reading up to {offsets.stop} (was the data deleted by "
                    "retention, or is the broker unreachable?)")


class _UnboundedKafkaReadDoFn(_KafkaReadDoFn):
    """Reads one partition's offsets without end (unbounded output)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._unbounded = True

    @beam.DoFn.unbounded_per_element()
    def process(
        self,
        element: _PartitionRead,
        bundle_finalizer=beam.DoFn.BundleFinalizerParam,
        tracker=beam.DoFn.RestrictionParam(_RESTRICTIONS),
        watermark_estimator=beam.DoFn.WatermarkEstimatorParam(_WATERMARKS),
    ) -> Iterator[TimestampedValue]:
        yield from self._read(element, bundle_finalizer, tracker,
                              watermark_estimator)


# Runners whose workers all run on this machine, so they can share a file.
_LOCAL_RUNNERS = (None, "", "DirectRunner", "SwitchingDirectRunner", "FnApiRunner",
                  "BundleBasedDirectRunner", "PrismRunner")


def _shares_a_file_system(pipeline: beam.Pipeline) -> bool:
    from apache_beam.options.pipeline_options import StandardOptions

    runner = pipeline.options.view_as(StandardOptions).runner if pipeline.options else None
    return runner in _LOCAL_RUNNERS


class ReadFromKafka(beam.PTransform):
    """Reads `KafkaRecord`s (or lists of them, one per poll) from Kafka topics, bounded or unbounded.

    Each record is emitted with its timestamp (per `timestamp_policy`) as event time. In
    unbounded mode each partition's watermark follows its record timestamps
    and, while the partition is idle, wall time minus `idle_watermark_slack`.

    Delivery is at-least-once: with a `group_id`, offsets are committed only
    after the runner finalizes the bundle that emitted the records, and a
    later read with ``start='committed'`` resumes there.
    """

    def __init__(self,
                 bootstrap_servers: Optional[str],
                 topics: Union[str, Sequence[str]],
                 *,
                 group_id: Optional[str] = None,
                 start: StartPosition = COMMITTED,
                 bounded: bool = False,
                 max_records: Optional[int] = None,
                 max_read_time: Optional[float] = None,
                 commit_offsets: Optional[bool] = None,
                 client_config: Optional[KafkaClientConfig] = None,
                 consumer_config: Optional[Mapping[str, Any]] = None,
                 poll_timeout: float = 0.5,
                 checkpoint_interval: float = 2.0,
                 idle_watermark_slack: float = 5.0,
                 metadata_timeout: float = 10.0,
                 stall_timeout: float = 60.0,
                 timestamp_policy: str = CREATE_TIME,
                 batches: bool = False):
        """Configures the read; nothing connects until the pipeline runs.

        Args:
          bootstrap_servers: ``host:port[,host:port]``; may be None when
            `client_config` has it.
          topics: A topic or a list of topics; every partition is read.
          group_id: Consumer group to resume from and commit offsets to. The
            group is never joined: partitions are assigned directly.
          start: Where each partition starts: ``'committed'`` (the group's
            offset, else the earliest), ``'earliest'``, ``'latest'``, or a
            timestamp in ms since the epoch, as an int or a digit string
            (the first record at or after it).
          bounded: Read a snapshot: each partition up to its end as found when
            the pipeline starts, then finish. For training from a topic.
          max_records: Read this many records in total over every partition
            (as Beam's ``max_num_records``), then finish. What the topic holds
            at launch is split over the partitions by backlog, so a topic that
            already has them ends the read as soon as they are read; records
            still to come are granted by a counter shared by the local
            runner's workers, or split evenly over the partitions on runners
            without a shared file system (see `beam_ml.io.kafka.budget`).
          max_read_time: Seconds after the read starts at which every
            partition stops, wherever it is. For local runs and tests.
          commit_offsets: Commit consumed offsets to `group_id` when bundles
            are finalized. Default: True when `group_id` is given.
          client_config: Security and connection settings (TLS, SASL).
          consumer_config: Extra kafka-python KafkaConsumer settings (e.g.
            ``max_partition_fetch_bytes``); not the ones this transform owns.
          poll_timeout: Seconds one poll waits for records.
          checkpoint_interval: Seconds an unbounded read of one partition runs
            before handing back to the runner (and committing). Each
            hand-back ends a bundle, which costs Beam's SDK worker up to
            0.2 s (its state sampler thread is joined at every bundle end).
          idle_watermark_slack: Seconds an idle partition's watermark lags
            wall time.
          metadata_timeout: Seconds to wait for topic metadata and offsets.
          stall_timeout: Bounded mode: seconds without progress before the
            read fails instead of waiting forever for offsets that are gone.
          timestamp_policy: Each record's event time: ``'create_time'`` (the
            producer's timestamp), ``'log_append_time'`` (the broker's, on
            topics configured for it) or ``'processing_time'`` (when read).
            A record without the timestamp asked for gets the processing
            time, says so in `KafkaRecord.timestamp_type` and is counted
            (``beam_ml.read/timestamp_fallbacks``); it is never dropped.
          batches: Emit one ``list`` of `KafkaRecord`s per poll of a
            partition (at most the consumer's ``max_poll_records``) instead
            of one element per record: downstream steps then pay their
            per-element cost once per poll. The records of a list share one
            partition and are in offset order; the element's event time is
            the earliest of theirs.
        """
        super().__init__()
        if isinstance(start, str) and start.isdigit():
            start = int(start)  # a timestamp given as a flag value
        self._topics = [topics] if isinstance(topics, str) else list(topics)
        if not self._topics or not all(
                isinstance(t, str) and t for t in self._topics):
            raise ValueError(f"topics: expected topic names, got {topics!r}")
        if start not in START_POLICIES and not (
                isinstance(start, int) and not isinstance(start, bool) and
                start >= 0):
            raise ValueError(
                f"start: expected {', '.join(START_POLICIES)} or a timestamp "
                f"in ms, got {start!r}")
        if max_records is not None and max_records <= 0:
            raise ValueError(f"max_records must be positive, got {max_records}")
        if max_read_time is not None and max_read_time <= 0:
            raise ValueError(
                f"max_read_time must be positive, got {max_read_time}")
        if timestamp_policy not in TIMESTAMP_POLICIES:
            raise ValueError(f"timestamp_policy: expected one of "
                             f"{', '.join(TIMESTAMP_POLICIES)}, got "
                             f"{timestamp_policy!r}")
        if commit_offsets and not group_id:
            raise ValueError("commit_offsets=True needs a group_id")
        self._config = resolve_client_config(bootstrap_servers, client_config)
        self._group_id = group_id
        self._start = start
        self._bounded = bounded
        self._max_records = max_records
        self._max_read_time = max_read_time
        self._commit_offsets = (bool(group_id) if commit_offsets is None else
                                commit_offsets)
        self._consumer_config = check_client_overrides(
            "consumer_config", consumer_config, KafkaConsumer.DEFAULT_CONFIG,
            ("group_id", "enable_auto_commit", "bootstrap_servers"))
        self._poll_timeout = poll_timeout
        self._checkpoint_interval = checkpoint_interval
        self._idle_slack = idle_watermark_slack
        self._metadata_timeout = metadata_timeout
        self._stall_timeout = stall_timeout
        self._timestamp_policy = timestamp_policy
        self._batches = batches

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection:
        read_fn = _UnboundedKafkaReadDoFn if not self._bounded else _KafkaReadDoFn
        # An unbounded read checkpoints every checkpoint_interval; the local
        # runner's parallel workers would drop those checkpoints (Beam 2.77).
        keep_checkpoints_with_parallel_workers(pbegin.pipeline.options)
        return (
            pbegin
            | "Impulse" >> beam.Impulse()
            | "DiscoverPartitions" >> beam.ParDo(
                _DiscoverPartitionsDoFn(
                    self._config, self._topics, self._group_id, self._start,
                    self._bounded, self._max_records, self._max_read_time,
                    self._consumer_config, self._metadata_timeout,
                    _shares_a_file_system(pbegin.pipeline)))
            # Lets a runner spread the partitions over workers.
            | "DistributePartitions" >> beam.Reshuffle()
            | "ReadPartitions" >> beam.ParDo(
                read_fn(self._config, self._group_id, self._commit_offsets,
                        self._consumer_config, self._poll_timeout,
                        self._checkpoint_interval, self._idle_slack,
                        self._stall_timeout, self._timestamp_policy,
                        self._batches)).with_output_types(
                            List[KafkaRecord] if self._batches else KafkaRecord))

    def display_data(self):
        return {
            "bootstrap_servers": self._config.bootstrap_servers,
            "topics": ",".join(self._topics),
            "group_id": self._group_id or "",
            "bounded": self._bounded,
            "timestamp_policy": self._timestamp_policy,
        }
