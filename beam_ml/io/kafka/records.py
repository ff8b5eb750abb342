"""The Kafka record as pipelines see it, and what WriteToKafka accepts.

    record.key, record.value, record.topic, record.partition, record.offset, record.timestamp
    key, value = to_key_value((b"id-1", b'{"amount": 3}'))
"""
from typing import Any, NamedTuple, Optional

import apache_beam as beam

__all__ = ["KafkaRecord", "to_key_value"]


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
