"""Read from and write to Kafka natively in Python (kafka-python), no Java.

Beam's own ``ReadFromKafka``/``WriteToKafka`` are Java cross-language
transforms that need an expansion service; these are plain Python transforms
that run on the DirectRunner and on Dataflow alike::

    records = (p | 'ReadFromKafka' >> ReadFromKafka(
                   'broker:9092', ['transactions'], group_id='scoring'))
    (predictions | 'WriteToKafka' >> WriteToKafka('broker:9092', 'predictions'))

Sample command line (a pipeline built on these)::

    python -m pipelines.stream_predict --bootstrap_servers=127.0.0.1:9092 \\
        --input_topic=transactions --output_topic=predictions --streaming

How reading works: an Impulse feeds a DoFn that lists the partitions of each
topic when the pipeline runs and picks each partition's start offset; each
partition then becomes one splittable-DoFn restriction, an `OffsetRange` over
its offsets, read with a consumer assigned to that one partition (no consumer
group membership, so no rebalancing and no 20 s group join). Unbounded reads
checkpoint every ~second (`defer_remainder`) and commit the consumed offsets
to `group_id` only in a bundle finalizer, i.e. after the runner has made the
bundle's output durable: at-least-once.
"""
import logging
import sys
import threading
import time
from typing import (Any, Callable, Iterable, Iterator, Mapping, NamedTuple,
                    Optional, Sequence, Union)

import apache_beam as beam
from apache_beam.io.restriction_trackers import (OffsetRange,
                                                 OffsetRestrictionTracker)
from apache_beam.io.watermark_estimators import ManualWatermarkEstimator
from apache_beam.transforms.core import (RestrictionProvider,
                                         WatermarkEstimatorProvider)
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import MIN_TIMESTAMP, Duration, Timestamp
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata

from beam_ml.io.kafka_config import KafkaClientConfig

__all__ = [
    "EARLIEST",
    "COMMITTED",
    "LATEST",
    "KafkaRecord",
    "ReadFromKafka",
    "WriteToKafka",
    "list_partitions",
    "next_watermark",
    "probe_log_end",
    "read_range",
    "resolve_start_offset",
    "to_key_value",
]

_LOGGER = logging.getLogger(__name__)

COMMITTED = "committed"
EARLIEST = "earliest"
LATEST = "latest"
_START_POLICIES = (COMMITTED, EARLIEST, LATEST)

# Kafka offsets are int64: this stop offset means "no end".
UNBOUNDED_STOP = sys.maxsize

StartPosition = Union[str, int]


class KafkaRecord(NamedTuple):
    """One consumed Kafka record.

    Attributes:
      key: Record key, or None.
      value: Record value, or None for a tombstone.
      topic: Topic it was read from.
      partition: Partition it was read from.
      offset: Its offset in that partition.
      timestamp: Milliseconds since the epoch (create or log-append time, as
        the topic is configured); also the element's event time.
    """
    key: Optional[bytes]
    value: Optional[bytes]
    topic: str
    partition: int
    offset: int
    timestamp: int


# A schema'd, deterministic coder instead of pickling every record.
beam.coders.registry.register_coder(KafkaRecord, beam.coders.RowCoder)


# --------------------------------------------------------------------------
# Pure offset, restriction and watermark logic.


def resolve_start_offset(start: StartPosition,
                         *,
                         beginning: int,
                         end: Optional[int] = None,
                         committed: Optional[int] = None,
                         time_offset: Optional[int] = None) -> int:
    """Picks the offset a partition's read starts at.

    Args:
      start: `COMMITTED` (the group's committed offset, falling back to the
        beginning when there is none), `EARLIEST`, `LATEST`, or a timestamp
        in ms since the epoch.
      beginning: First offset still in the log.
      end: One past the last offset in the log; required for `LATEST` and
        timestamps.
      committed: The consumer group's committed offset, if any.
      time_offset: For a timestamp start: the first offset whose record
        timestamp is at or after it, or None when no record is that recent.

    Returns:
      The first offset to read.
    """
    if start == COMMITTED:
        if committed is None or committed < beginning:
            # Nothing committed yet, or retention deleted what was: the
            # earliest record is the first that has not been processed.
            return beginning
        return committed if end is None else min(committed, end)
    if start == EARLIEST:
        return beginning
    if end is None:
        raise ValueError(f"start={start!r} needs the log end offset")
    if start == LATEST:
        return end
    if isinstance(start, int) and not isinstance(start, bool):
        return end if time_offset is None else max(beginning, time_offset)
    raise ValueError(f"unknown start {start!r}; expected one of "
                     f"{', '.join(_START_POLICIES)} or a timestamp in ms")


def read_range(start: int,
               end: Optional[int] = None,
               max_records: Optional[int] = None) -> OffsetRange:
    """The offsets one partition's read covers.

    Args:
      start: First offset to read.
      end: Snapshot end (exclusive) for bounded reads; None reads forever.
      max_records: Stop after this many offsets of the partition.

    Returns:
      `OffsetRange(start, stop)`; stop is `UNBOUNDED_STOP` for "no end".
    """
    stop = UNBOUNDED_STOP if end is None else max(start, end)
    if max_records is not None:
        stop = min(stop, start + max_records)
    return OffsetRange(start, stop)


def next_watermark(current: Optional[Timestamp],
                   record_timestamps_ms: Sequence[int] = (),
                   *,
                   now: Optional[float] = None,
                   idle_slack: float = 5.0) -> Timestamp:
    """A partition's watermark after one poll; it never goes back.

    Records move it to the newest record timestamp. An empty poll means the
    partition is (about) caught up, so it moves to `now - idle_slack`: an idle
    partition must not hold back windows fed by busy ones, and the slack
    leaves room for producers whose clocks lag ours.

    Args:
      current: The watermark so far (None: none yet).
      record_timestamps_ms: Timestamps of the records just read.
      now: Wall-clock seconds; the time of an empty poll (None: not idle).
      idle_slack: Seconds the idle watermark stays behind `now`.

    Returns:
      The new watermark.
    """
    watermark = MIN_TIMESTAMP if current is None else current
    valid = [ts for ts in record_timestamps_ms if ts >= 0]
    if valid:
        candidate = Timestamp.of(max(valid) / 1000.0)
    elif now is not None and not record_timestamps_ms:
        candidate = Timestamp.of(now - idle_slack)
    else:
        return watermark
    return max(watermark, candidate)


def to_key_value(element: Any) -> tuple[Optional[bytes], Optional[bytes]]:
    """Turns a WriteToKafka input element into a (key, value) pair.

    Args:
      element: ``value`` bytes, a ``(key, value)`` pair of bytes/None, or a
        `KafkaRecord` (its key and value are written).

    Returns:
      (key, value); either may be None (a None value is a tombstone).

    Raises:
      TypeError: For any other shape; the message shows what was given.
    """
    if isinstance(element, KafkaRecord):
        return element.key, element.value
    if isinstance(element, bytes):
        return None, element
    if isinstance(element, tuple) and len(element) == 2:
        key, value = element
        if ((key is None or isinstance(key, bytes)) and
                (value is None or isinstance(value, bytes))):
            return key, value
    shown = repr(element)
    shown = shown if len(shown) <= 80 else shown[:77] + "..."
    raise TypeError(
        "WriteToKafka expects value bytes or a (key bytes|None, value "
        f"bytes|None) pair; got {type(element).__name__}: {shown}. Encode "
        "with beam_ml.io.kafka_formats first.")


# --------------------------------------------------------------------------
# Broker queries used when a read starts (they need a live consumer).


def list_partitions(consumer: KafkaConsumer,
                    topics: Iterable[str],
                    timeout: float = 10.0) -> list[TopicPartition]:
    """Lists the partitions of `topics`, sorted.

    Args:
      consumer: Any consumer connected to the cluster.
      topics: Topic names.
      timeout: Seconds to keep asking while a topic shows no partitions
        (metadata of a just-created topic can lag).

    Returns:
      All their partitions.

    Raises:
      ValueError: A topic has no partitions (it does not exist, or this
        client may not see it) after `timeout`.
    """
    result = []
    deadline = time.monotonic() + timeout
    for topic in topics:
        while True:
            partitions = consumer.partitions_for_topic(topic)
            if partitions:
                break
            if time.monotonic() >= deadline:
                raise ValueError(
                    f"Kafka topic {topic!r} not found (no partitions visible "
                    f"after {timeout:.0f}s); create it first")
            time.sleep(0.2)
        result.extend(TopicPartition(topic, p) for p in sorted(partitions))
    return result


def _quiet_poll_ms(consumer: KafkaConsumer) -> int:
    # An empty poll only proves "no more records" if it outlasted the time the
    # broker may hold a fetch open waiting for data.
    return int(consumer.config["fetch_max_wait_ms"]) * 2 + 200


def probe_log_end(consumer: KafkaConsumer,
                  partitions: Sequence[TopicPartition],
                  timeout: float = 10.0) -> dict[TopicPartition, int]:
    """Finds one past the last offset of each partition, by reading.

    ListOffsets(latest) is not trusted alone: Tansu 0.6.0 answers with the
    base offset of the last record batch + 1, so records later in that batch
    would be cut off. Reading from the reported end until two polls come back
    empty (bounded by `timeout`) finds the real end on any broker; on Kafka it
    costs those two empty polls (under a second with the default settings).

    Args:
      consumer: A consumer; its assignment is replaced.
      partitions: Partitions to probe.
      timeout: Upper bound in seconds; a producer that never pauses only
        makes the snapshot end where the probe stopped.

    Returns:
      The end offset (exclusive) per partition.
    """
    if not partitions:
        return {}
    reported = consumer.end_offsets(list(partitions))
    consumer.assign(list(partitions))
    for tp in partitions:
        consumer.seek(tp, reported[tp])
    poll_ms = _quiet_poll_ms(consumer)
    deadline = time.monotonic() + timeout
    quiet = 0
    while quiet < 2 and time.monotonic() < deadline:
        batch = consumer.poll(timeout_ms=poll_ms, max_records=10000)
        quiet = 0 if any(batch.values()) else quiet + 1
    ends = {tp: max(reported[tp], consumer.position(tp)) for tp in partitions}
    beyond = {f"{tp.topic}/{tp.partition}": ends[tp] - reported[tp]
              for tp in partitions if ends[tp] > reported[tp]}
    if beyond:
        _LOGGER.info("Records past the reported end offsets (broker quirk): %s",
                     beyond)
    return ends


def _offset_for_time(consumer: KafkaConsumer, tp: TopicPartition,
                     timestamp_ms: int, end: int, timeout: float) -> Optional[int]:
    """The first offset of `tp` with a record timestamp >= `timestamp_ms`."""
    found = consumer.offsets_for_times({tp: timestamp_ms}).get(tp)
    if found is None or found.offset < 0:
        return None
    # Tansu answers at batch granularity (the batch's base offset, timestamp
    # -1, even for times past the last record), so read forward to the exact
    # record; on Kafka the first record read already qualifies.
    consumer.assign([tp])
    consumer.seek(tp, found.offset)
    deadline = time.monotonic() + timeout
    poll_ms = _quiet_poll_ms(consumer)
    while time.monotonic() < deadline:
        for record in consumer.poll(timeout_ms=poll_ms).get(tp, []):
            if record.timestamp >= timestamp_ms:
                return record.offset
        if consumer.position(tp) >= end:
            return None
    _LOGGER.warning(
        "Could not pin the first record of %s at or after %d ms within %.0fs; "
        "starting at offset %d, which may re-read some older records", tp,
        timestamp_ms, timeout, found.offset)
    return found.offset


# --------------------------------------------------------------------------
# The splittable read.


class _PartitionRead(NamedTuple):
    """What to read of one partition: the SDF's element."""
    topic: str
    partition: int
    start: int
    stop: int
    # Wall-clock second after which to stop (from max_read_time), or None.
    deadline: Optional[float]


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


class _ManualWatermarkProvider(WatermarkEstimatorProvider):
    # Beam's default providers start the estimator at None (which breaks
    # MonotonicWatermarkEstimator in 2.77); starting at MIN_TIMESTAMP means
    # the estimator always reports a real Timestamp.

    def initial_estimator_state(self, element, restriction):
        return MIN_TIMESTAMP

    def create_watermark_estimator(self, estimator_state):
        return ManualWatermarkEstimator(estimator_state or MIN_TIMESTAMP)


_RESTRICTIONS = _PartitionRestrictionProvider()
_WATERMARKS = _ManualWatermarkProvider()


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
    """Impulse -> one `_PartitionRead` per partition of the topics."""

    def __init__(self, config: KafkaClientConfig, topics: Sequence[str],
                 group_id: Optional[str], start: StartPosition, bounded: bool,
                 max_records: Optional[int], max_read_time: Optional[float],
                 consumer_config: Mapping[str, Any], metadata_timeout: float):
        self._config = config
        self._topics = list(topics)
        self._group_id = group_id
        self._start = start
        self._bounded = bounded
        self._max_records = max_records
        self._max_read_time = max_read_time
        self._consumer_config = dict(consumer_config)
        self._timeout = metadata_timeout
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
        needs_end = self._bounded or self._start not in (COMMITTED, EARLIEST)
        ends = (probe_log_end(consumer, partitions, self._timeout)
                if needs_end else {})
        for tp in partitions:
            committed = time_offset = None
            if self._start == COMMITTED and self._group_id:
                committed = consumer.committed(tp)
            elif isinstance(self._start, int):
                time_offset = _offset_for_time(consumer, tp, self._start,
                                               ends[tp], self._timeout)
            start = resolve_start_offset(
                self._start, beginning=beginnings[tp], end=ends.get(tp),
                committed=committed, time_offset=time_offset)
            offsets = read_range(start, ends[tp] if self._bounded else None,
                                 self._max_records)
            _LOGGER.info("Reading %s/%d offsets [%d, %s)", tp.topic,
                         tp.partition, offsets.start,
                         "end" if offsets.stop == UNBOUNDED_STOP
                         else offsets.stop)
            yield _PartitionRead(tp.topic, tp.partition, offsets.start,
                                 offsets.stop, deadline)


class _KafkaReadDoFn(beam.DoFn):
    """Reads one partition's `OffsetRange` (bounded output)."""

    def __init__(self, config: KafkaClientConfig, group_id: Optional[str],
                 commit_offsets: bool, consumer_config: Mapping[str, Any],
                 poll_timeout: float, checkpoint_interval: float,
                 idle_watermark_slack: float, stall_timeout: float):
        self._config = config
        self._group_id = group_id
        self._commit_offsets = commit_offsets
        self._consumer_config = dict(consumer_config)
        self._poll_timeout = poll_timeout
        self._checkpoint_interval = checkpoint_interval
        self._idle_slack = idle_watermark_slack
        self._stall_timeout = stall_timeout
        self._unbounded = False

    def setup(self):
        self._consumers: dict[TopicPartition, KafkaConsumer] = {}
        # Where each consumer will fetch next, so a resumed restriction that
        # continues where the last one stopped keeps the prefetched records.
        self._positions: dict[TopicPartition, int] = {}
        self._committed: dict[TopicPartition, int] = {}
        # Finalizers may run on another thread than process().
        self._lock = threading.Lock()

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
        while True:
            now = time.time()
            if element.deadline is not None and now >= element.deadline:
                # max_read_time is up: claiming past the end finishes the
                # restriction without a residual, so the pipeline can end.
                tracker.try_claim(offsets.stop)
                return
            timeout = self._poll_timeout
            if element.deadline is not None:
                timeout = max(0.0, min(timeout, element.deadline - now))
            with self._lock:
                records = consumer.poll(
                    timeout_ms=int(timeout * 1000)).get(tp, [])
                position = consumer.position(tp)
                self._positions[tp] = position
            for record in records:
                if record.offset < offsets.start:
                    # Only after an offset reset (auto_offset_reset); these
                    # offsets belong to restrictions that were read already.
                    continue
                if not tracker.try_claim(record.offset):
                    return  # reached the range's stop (snapshot/max_records)
                if progress is None:
                    progress = {"next_offset": record.offset + 1}
                    if self._commit_offsets:
                        bundle_finalizer.register(
                            lambda tp=tp, p=progress: self._commit(tp, p))
                progress["next_offset"] = record.offset + 1
                timestamp_ms = (record.timestamp if record.timestamp >= 0 else
                                int(now * 1000))
                yield TimestampedValue(
                    KafkaRecord(record.key, record.value, record.topic,
                                record.partition, record.offset, timestamp_ms),
                    timestamp_ms / 1000.0)
            if position >= offsets.stop:
                # Everything below the stop is consumed, even if its last
                # offsets were not records (transaction markers, compaction).
                tracker.try_claim(offsets.stop)
                return
            if records:
                last_progress = time.monotonic()
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


def _check_client_overrides(name: str, config: Optional[Mapping[str, Any]],
                            allowed: Iterable[str],
                            managed: Iterable[str]) -> dict[str, Any]:
    config = dict(config or {})
    unknown = sorted(set(config) - set(allowed))
    if unknown:
        raise ValueError(f"{name}: unknown kafka-python settings {unknown}")
    reserved = sorted(set(config) & set(managed))
    if reserved:
        raise ValueError(f"{name}: {reserved} are set by the transform; use "
                         "its arguments or client_config instead")
    return config


def _client_config(bootstrap_servers: Optional[str],
                   client_config: Optional[KafkaClientConfig]
                   ) -> KafkaClientConfig:
    config = (client_config or KafkaClientConfig()).with_overrides(
        bootstrap_servers=bootstrap_servers)
    return config.validate()


class ReadFromKafka(beam.PTransform):
    """Reads `KafkaRecord`s from Kafka topics, bounded or unbounded.

    Each record is emitted with its Kafka timestamp as event time. In
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
                 checkpoint_interval: float = 1.0,
                 idle_watermark_slack: float = 5.0,
                 metadata_timeout: float = 10.0,
                 stall_timeout: float = 60.0):
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
          max_records: Per-partition limit: each partition stops after this
            many offsets from its start, so up to P * max_records records come
            from P partitions (fewer if offsets have gaps, e.g. compaction).
            A partition that never gets this many records keeps the read open
            unless `max_read_time` is also set.
          max_read_time: Seconds after the read starts at which every
            partition stops, wherever it is. For local runs and tests.
          commit_offsets: Commit consumed offsets to `group_id` when bundles
            are finalized. Default: True when `group_id` is given.
          client_config: Security and connection settings (TLS, SASL).
          consumer_config: Extra kafka-python KafkaConsumer settings (e.g.
            ``max_partition_fetch_bytes``); not the ones this transform owns.
          poll_timeout: Seconds one poll waits for records.
          checkpoint_interval: Seconds an unbounded read of one partition runs
            before handing back to the runner (and committing).
          idle_watermark_slack: Seconds an idle partition's watermark lags
            wall time.
          metadata_timeout: Seconds to wait for topic metadata and offsets.
          stall_timeout: Bounded mode: seconds without progress before the
            read fails instead of waiting forever for offsets that are gone.
        """
        super().__init__()
        if isinstance(start, str) and start.isdigit():
            start = int(start)  # a timestamp given as a flag value
        self._topics = [topics] if isinstance(topics, str) else list(topics)
        if not self._topics or not all(
                isinstance(t, str) and t for t in self._topics):
            raise ValueError(f"topics: expected topic names, got {topics!r}")
        if start not in _START_POLICIES and not (
                isinstance(start, int) and not isinstance(start, bool) and
                start >= 0):
            raise ValueError(
                f"start: expected {', '.join(_START_POLICIES)} or a timestamp "
                f"in ms, got {start!r}")
        if max_records is not None and max_records <= 0:
            raise ValueError(f"max_records must be positive, got {max_records}")
        if max_read_time is not None and max_read_time <= 0:
            raise ValueError(
                f"max_read_time must be positive, got {max_read_time}")
        if commit_offsets and not group_id:
            raise ValueError("commit_offsets=True needs a group_id")
        self._config = _client_config(bootstrap_servers, client_config)
        self._group_id = group_id
        self._start = start
        self._bounded = bounded
        self._max_records = max_records
        self._max_read_time = max_read_time
        self._commit_offsets = (bool(group_id) if commit_offsets is None else
                                commit_offsets)
        self._consumer_config = _check_client_overrides(
            "consumer_config", consumer_config, KafkaConsumer.DEFAULT_CONFIG,
            ("group_id", "enable_auto_commit", "bootstrap_servers"))
        self._poll_timeout = poll_timeout
        self._checkpoint_interval = checkpoint_interval
        self._idle_slack = idle_watermark_slack
        self._metadata_timeout = metadata_timeout
        self._stall_timeout = stall_timeout

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection:
        read_fn = _UnboundedKafkaReadDoFn if not self._bounded else _KafkaReadDoFn
        return (
            pbegin
            | "Impulse" >> beam.Impulse()
            | "DiscoverPartitions" >> beam.ParDo(
                _DiscoverPartitionsDoFn(
                    self._config, self._topics, self._group_id, self._start,
                    self._bounded, self._max_records, self._max_read_time,
                    self._consumer_config, self._metadata_timeout))
            # Lets a runner spread the partitions over workers.
            | "DistributePartitions" >> beam.Reshuffle()
            | "ReadPartitions" >> beam.ParDo(
                read_fn(self._config, self._group_id, self._commit_offsets,
                        self._consumer_config, self._poll_timeout,
                        self._checkpoint_interval, self._idle_slack,
                        self._stall_timeout)).with_output_types(KafkaRecord))

    def display_data(self):
        return {
            "bootstrap_servers": self._config.bootstrap_servers,
            "topics": ",".join(self._topics),
            "group_id": self._group_id or "",
            "bounded": self._bounded,
        }


class _KafkaWriteDoFn(beam.DoFn):
    """Sends each element with one idempotent producer per DoFn instance."""

    def __init__(self, config: KafkaClientConfig, topic: Optional[str],
                 topic_fn: Optional[Callable[[Any], str]],
                 producer_config: Mapping[str, Any], flush_timeout: float):
        self._config = config
        self._topic = topic
        self._topic_fn = topic_fn
        self._producer_config = dict(producer_config)
        # The producer itself gives up on a record after delivery_timeout_ms
        # (kafka-python's default: 120 s); waiting longer for a flush cannot
        # bring an acknowledgement, only delay the bundle's failure.
        delivery_ms = self._producer_config.get("delivery_timeout_ms")
        self._flush_timeout = (flush_timeout if delivery_ms is None
                               else min(flush_timeout, delivery_ms / 1000.0 + 1.0))

    def setup(self):
        kwargs = dict(self._config.client_kwargs())
        # Idempotence (verified against Tansu 0.6.0 too) keeps producer
        # retries from duplicating records; acks='all' waits for replicas.
        kwargs.update(acks="all", enable_idempotence=True)
        kwargs.update(self._producer_config)
        try:
            self._producer = KafkaProducer(**kwargs)
        except KafkaError as e:
            raise RuntimeError(
                f"WriteToKafka: cannot connect to Kafka at "
                f"{self._config.bootstrap_servers}: {e}") from e
        self._error: Optional[BaseException] = None

    def start_bundle(self):
        self._pending = []

    def _on_error(self, exc: BaseException) -> None:
        # Runs on the producer's I/O thread; the first error fails the bundle.
        if self._error is None:
            self._error = exc

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise RuntimeError(f"WriteToKafka: a send failed: {error!r}") from error

    def process(self, element: Any) -> None:
        key, value = to_key_value(element)
        topic = self._topic_fn(element) if self._topic_fn else self._topic
        self._raise_if_failed()
        try:
            future = self._producer.send(topic, key=key, value=value)
        except KafkaError as e:
            raise RuntimeError(
                f"WriteToKafka: cannot send to topic {topic!r}: {e!r}") from e
        future.add_errback(self._on_error)
        self._pending.append(future)

    def finish_bundle(self):
        # The bundle only succeeds once every record is acknowledged; a failed
        # bundle is retried by the runner, so records may repeat, never vanish.
        try:
            self._producer.flush(timeout=self._flush_timeout)
        except KafkaError as e:
            # Unacknowledged at the deadline is a failed send, reported the same way.
            if self._error is None:
                self._error = e
        failed = next((f for f in self._pending if f.failed()), None)
        self._pending = []
        if failed is not None and self._error is None:
            self._error = failed.exception
        self._raise_if_failed()

    def teardown(self):
        producer = getattr(self, "_producer", None)
        if producer is not None:
            self._producer = None
            try:
                producer.close(timeout=5)
            except KafkaError as e:
                # close() flushes; records still unacknowledged here belong to a
                # bundle that already failed (finish_bundle raised), so raising
                # again would only replace that bundle's error with this one.
                _LOGGER.warning("WriteToKafka: producer closed with unacknowledged records: %r", e)


class WriteToKafka(beam.PTransform):
    """Writes elements to a Kafka topic, at least once.

    Elements are ``value`` bytes or ``(key, value)`` pairs (bytes or None);
    `KafkaRecord`s are accepted too. A bundle fails, and is retried by the
    runner, if any of its records is not acknowledged.
    """

    def __init__(self,
                 bootstrap_servers: Optional[str],
                 topic: Optional[str] = None,
                 *,
                 topic_fn: Optional[Callable[[Any], str]] = None,
                 client_config: Optional[KafkaClientConfig] = None,
                 producer_config: Optional[Mapping[str, Any]] = None,
                 flush_timeout: float = 120.0):
        """Configures the write; nothing connects until the pipeline runs.

        Args:
          bootstrap_servers: ``host:port[,host:port]``; may be None when
            `client_config` has it.
          topic: Destination topic (unless `topic_fn` is given).
          topic_fn: Picks each element's topic, e.g. for dead letters.
          client_config: Security and connection settings (TLS, SASL).
          producer_config: Extra kafka-python KafkaProducer settings, e.g.
            ``linger_ms``, ``compression_type``, or short
            ``bootstrap_timeout_ms``/``max_block_ms``/``request_timeout_ms``
            to fail fast.
          flush_timeout: Seconds `finish_bundle` waits for acknowledgements;
            capped at the producer's ``delivery_timeout_ms`` + 1 s when set.
            Records still unacknowledged then fail the bundle ("a send failed").
        """
        super().__init__()
        if (topic is None) == (topic_fn is None):
            raise ValueError("give exactly one of topic and topic_fn")
        if topic is not None and not isinstance(topic, str):
            raise ValueError(f"topic: expected a name, got {topic!r}")
        self._config = _client_config(bootstrap_servers, client_config)
        self._topic = topic
        self._topic_fn = topic_fn
        self._producer_config = _check_client_overrides(
            "producer_config", producer_config, KafkaProducer.DEFAULT_CONFIG,
            ("bootstrap_servers", "key_serializer", "value_serializer"))
        self._flush_timeout = flush_timeout

    def expand(self, pcoll: beam.PCollection) -> beam.PCollection:
        return pcoll | "SendToKafka" >> beam.ParDo(
            _KafkaWriteDoFn(self._config, self._topic, self._topic_fn,
                            self._producer_config, self._flush_timeout))

    def display_data(self):
        return {
            "bootstrap_servers": self._config.bootstrap_servers,
            "topic": self._topic or "(per element)",
        }
