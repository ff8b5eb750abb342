"""Pure offset, restriction and watermark logic, and the broker queries a read starts with.

    start = resolve_start_offset(COMMITTED, beginning=0, end=120, committed=97)   # -> 97
    offsets = read_range(start, end=None, max_records=1000)                      # OffsetRange(97, 1097)
    ends = probe_log_end(consumer, partitions)                                    # the real log ends
"""
import logging
import sys
import time
from typing import Iterable, Optional, Sequence, Union

from apache_beam.io.restriction_trackers import OffsetRange
from apache_beam.utils.timestamp import MIN_TIMESTAMP, Timestamp
from kafka import KafkaConsumer, TopicPartition

__all__ = [
    "COMMITTED",
    "EARLIEST",
    "LATEST",
    "START_POLICIES",
    "UNBOUNDED_STOP",
    "StartPosition",
    "resolve_start_offset",
    "read_range",
    "next_watermark",
    "list_partitions",
    "quiet_poll_ms",
    "probe_log_end",
    "offset_for_time",
]

_LOGGER = logging.getLogger(__name__)

COMMITTED = "committed"
EARLIEST = "earliest"
LATEST = "latest"
START_POLICIES = (COMMITTED, EARLIEST, LATEST)

# Kafka offsets are int64: this stop offset means "no end".
UNBOUNDED_STOP = sys.maxsize

StartPosition = Union[str, int]


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
                     f"{', '.join(START_POLICIES)} or a timestamp in ms")


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


def quiet_poll_ms(consumer: KafkaConsumer) -> int:
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
    poll_ms = quiet_poll_ms(consumer)
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


def offset_for_time(consumer: KafkaConsumer, tp: TopicPartition,
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
    poll_ms = quiet_poll_ms(consumer)
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
