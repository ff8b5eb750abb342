"""The Kafka record as pipelines see it, its event time, and what WriteToKafka accepts.

    record.key, record.value, record.topic, record.partition, record.offset, record.timestamp
    ts_ms, kind = record_timestamp(CREATE_TIME, record.timestamp, record.timestamp_type, now_ms)
    key, value = to_key_value((b"id-1", b'{"amount": 3}'))
"""
from typing import Any, Iterator, NamedTuple, Optional

import apache_beam as beam

__all__ = ["KafkaRecord", "to_key_value", "iter_key_values", "record_timestamp", "CREATE_TIME",
           "LOG_APPEND_TIME", "PROCESSING_TIME", "TIMESTAMP_POLICIES"]

# Where a record's event time comes from (Beam's Kafka IO offers the same three).
CREATE_TIME = "create_time"
LOG_APPEND_TIME = "log_append_time"
PROCESSING_TIME = "processing_time"
TIMESTAMP_POLICIES = (CREATE_TIME, LOG_APPEND_TIME, PROCESSING_TIME)

# Kafka's record-batch timestamp types (kafka-python's ConsumerRecord.timestamp_type).
_KAFKA_TYPES = {0: CREATE_TIME, 1: LOG_APPEND_TIME}


class KafkaRecord(NamedTuple):
    """One consumed Kafka record.

    Attributes:
      key: Record key, or None.
      value: Record value, or None for a tombstone.
      topic: Topic it was read from.
      partition: Partition it was read from.
      offset: Its offset in that partition.
      timestamp: Milliseconds since the epoch, chosen by the read's timestamp
        policy (see `record_timestamp`); also the element's event time.
      timestamp_type: What `timestamp` is: 'create_time', 'log_append_time'
        or 'processing_time' (the policy's choice, or the fallback for a
        record that lacks the timestamp the policy asks for).
    """
    key: Optional[bytes]
    value: Optional[bytes]
    topic: str
    partition: int
    offset: int
    timestamp: int
    timestamp_type: str = CREATE_TIME


# A schema'd, deterministic coder instead of pickling every record.
beam.coders.registry.register_coder(KafkaRecord, beam.coders.RowCoder)


def record_timestamp(policy: str, timestamp: Optional[int], timestamp_type: Optional[int],
                     now_ms: int) -> tuple[int, str]:
    """A record's event time under a timestamp policy, and what that time is.

    Args:
      policy: CREATE_TIME (the producer's timestamp), LOG_APPEND_TIME (the
        broker's), or PROCESSING_TIME (when it was read).
      timestamp: the record's timestamp in ms (-1 or None: none, e.g. an old
        message format).
      timestamp_type: kafka-python's type code: 0 create time, 1 log-append
        time, None/-1 none.
      now_ms: the read's wall clock in ms.

    Returns:
      (timestamp ms, kind). A record without the timestamp the policy asks
      for (no timestamp at all, or a create time on a topic configured for
      log-append time and vice versa) gets `now_ms` and kind
      PROCESSING_TIME: it is never dropped, and the kind says it fell back
      (ReadFromKafka also counts these as `timestamp_fallbacks`).

    Raises:
      ValueError: an unknown policy.
    """
    if policy == PROCESSING_TIME:
        return now_ms, PROCESSING_TIME
    if policy not in TIMESTAMP_POLICIES:
        raise ValueError(f"timestamp policy: expected one of {', '.join(TIMESTAMP_POLICIES)}, got {policy!r}")
    if timestamp is not None and timestamp >= 0 and _KAFKA_TYPES.get(timestamp_type) == policy:
        return int(timestamp), policy
    return now_ms, PROCESSING_TIME


def iter_key_values(element: Any) -> Iterator[tuple[Optional[bytes], Optional[bytes]]]:
    """The (key, value) pairs of a WriteToKafka element: one, or each of a list's.

    Args:
      element: what `to_key_value` accepts, or a list of those (a batch of
        messages, sent in order).

    Raises:
      TypeError: as `to_key_value`, for the element or any list item.
    """
    if isinstance(element, list):
        for item in element:
            yield to_key_value(item)
    else:
        yield to_key_value(element)


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
        "with beam_ml.formats.text first.")
