"""Kafka events (any `beam_ml.formats` record format) → typed Arrow RecordBatches, for training from a topic.

    rows, dead = (records | KafkaJsonToBatches(spec)).values()      # or KafkaJsonToBatches(spec, fmt=avro_format)

Events are decoded, validated against the spec (every feature field present, values of
the right type), then written as CSV lines and parsed by the very function that
reads CSV files (`beam_ml.io.csv.parse_csv_chunk`), so a topic and a file give
identical batches, missing-value handling and dead-letter reasons. A dead letter
names the topic/partition and offset it came from.

    sample_topic(config, "transactions", 20000)  # a bounded sample (decoded records) for spec inference
"""
from __future__ import annotations

import csv
import io
import time
from collections import defaultdict
from typing import Any, Optional, Sequence

import apache_beam as beam
import numpy as np
import pyarrow as pa

from beam_ml.errors import DeadLetter
from beam_ml.errors import DEAD_TAG
from beam_ml.formats import JsonFormat, RecordFormat, cell_text
from beam_ml.io.batches import LINE_COLUMN, ChunkEmitter, ChunkResult
from beam_ml.io.csv import parse_csv_chunk
from beam_ml.io.kafka.offsets import list_partitions
from beam_ml.io.kafka.read import ReadFromKafka
from beam_ml.records import validate_record
from beam_ml.spec import DatasetSpec

__all__ = ["KafkaJsonToBatches", "ReadTopicSnapshot", "records_to_chunk", "sample_topic", "position_code"]


def position_code(partition: int, offset: int) -> int:
    """A row identity for the split hash: stable for a (partition, offset)."""
    return (int(partition) << 40) | int(offset)


def records_to_chunk(events: Sequence[tuple[int, Optional[bytes]]], source: str, partition: int,
                     spec: DatasetSpec, with_label: bool = True, fmt: Optional[RecordFormat] = None) -> ChunkResult:
    """Parses (offset, value) events of one partition into a typed batch + dead letters.

    Args:
      events: (offset, value bytes) pairs from one topic-partition.
      source: "topic/partition", for dead letters.
      partition: the partition number (part of each row's identity).
      spec: the dataset spec.
      with_label: require and validate the label field.
      fmt: the values' record format (default JSON).

    Returns:
      A ChunkResult whose `__line__` column holds `position_code(partition, offset)`.
    """
    dead, offsets = [], []
    header = spec.column_names
    numeric = [c.role == "numeric" for c in spec.columns]  # booleans as 1/0 there, as spec inference saw them
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    fmt = fmt or JsonFormat()
    for offset, value in events:
        try:
            record = fmt.decode(value)
        except ValueError as e:
            dead.append(DeadLetter(source, offset, str(e), fmt.raw_text(value)))
            continue
        reason = validate_record(record, spec)
        if reason is None and with_label and record.get(spec.label) is None:
            reason = f"missing field '{spec.label}'"
        if reason:
            dead.append(DeadLetter(source, offset, reason, fmt.raw_text(value)))
            continue
        writer.writerow([cell_text(record.get(name), num) for name, num in zip(header, numeric)])
        offsets.append(offset)
    if not offsets:
        return ChunkResult(None, dead, len(events))
    result = parse_csv_chunk(buf.getvalue().encode("utf-8"), 0, source, header, spec, with_label)
    offs = np.asarray(offsets, dtype=np.int64)
    for d in result.dead:  # line index → the event's offset
        dead.append(DeadLetter(d.source, int(offs[d.position]) if d.position is not None else None,
                               d.reason, d.raw, d.stage))
    batch = result.batch
    if batch is not None:
        idx = batch.schema.get_field_index(LINE_COLUMN)
        codes = (np.int64(partition) << np.int64(40)) | offs[batch.column(LINE_COLUMN).to_numpy()]
        batch = batch.set_column(idx, LINE_COLUMN, pa.array(codes))
    return ChunkResult(batch, dead, len(events))


class _KafkaJsonToBatchesDoFn(beam.DoFn):
    def __init__(self, spec: DatasetSpec, with_label: bool, fmt: Optional[RecordFormat]):
        self._spec = spec
        self._with_label = with_label
        self._fmt = fmt
        self._emitter = ChunkEmitter()

    def process(self, records: Sequence[Any]):
        by_partition: dict[tuple[str, int], list] = defaultdict(list)
        for r in records:
            by_partition[(r.topic, r.partition)].append((r.offset, r.value))
        for (topic, partition), events in by_partition.items():
            yield from self._emitter.emit(
                records_to_chunk(events, f"{topic}/{partition}", partition, self._spec, self._with_label, self._fmt))


class KafkaJsonToBatches(beam.PTransform):
    """PCollection[KafkaRecord] → RecordBatches (main 'rows') and DeadLetters (DEAD_TAG)."""

    def __init__(self, spec: DatasetSpec, with_label: bool = True, max_batch_size: int = 20000,
                 fmt: Optional[RecordFormat] = None):
        super().__init__()
        self._fmt = fmt
        self._spec = spec
        self._with_label = with_label
        self._max_batch_size = max_batch_size

    def expand(self, records):
        return (records
                | "BatchRecords" >> beam.BatchElements(min_batch_size=256, max_batch_size=self._max_batch_size)
                | "JsonToBatches" >> beam.ParDo(_KafkaJsonToBatchesDoFn(self._spec, self._with_label, self._fmt))
                .with_outputs(DEAD_TAG, main="rows"))


class ReadTopicSnapshot(beam.PTransform):
    """Reads a bounded snapshot of a topic's events as RecordBatches + dead letters.

    Args:
      client_config: a KafkaClientConfig (bootstrap servers, security).
      topic: the topic; every partition is read from its start to its end at launch.
      spec: the dataset spec the events must match.
      fmt: the values' record format (default JSON).
      with_label: require and validate the label field.
    """

    def __init__(self, client_config, topic: str, spec: DatasetSpec, fmt: Optional[RecordFormat] = None,
                 with_label: bool = True):
        super().__init__()
        self._fmt = fmt
        self._with_label = with_label
        self._config = client_config
        self._topic = topic
        self._spec = spec

    def expand(self, pbegin):
        return (pbegin
                | "ReadFromKafka" >> ReadFromKafka(None, [self._topic], start="earliest", bounded=True,
                                                   client_config=self._config)
                | "KafkaJsonToBatches" >> KafkaJsonToBatches(self._spec, self._with_label, fmt=self._fmt))


def sample_topic(client_kwargs: dict, topic: str, max_records: int = 20000, timeout: float = 30.0,
                 quiet: float = 2.0, fmt: Optional[RecordFormat] = None) -> list[dict]:
    """Reads up to `max_records` records (decoded by `fmt`, default JSON) from the start of every partition.

    Partitions are assigned manually (no group join). The loop ends at
    `max_records`, after `quiet` seconds without records, or at `timeout`.
    Unparsable values are skipped here: the pipeline dead-letters them.
    """
    from kafka import KafkaConsumer

    fmt = fmt or JsonFormat()
    consumer = KafkaConsumer(**client_kwargs, enable_auto_commit=False, group_id=None,
                             auto_offset_reset="earliest")
    try:
        deadline = time.monotonic() + timeout
        try:
            tps = list_partitions(consumer, [topic], timeout)
        except ValueError:
            return []
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        out: list[dict] = []
        last = time.monotonic()
        while len(out) < max_records and time.monotonic() < deadline and time.monotonic() - last < quiet:
            batch = consumer.poll(timeout_ms=200, max_records=max_records - len(out))
            for records in batch.values():
                last = time.monotonic()
                for r in records:
                    try:
                        out.append(fmt.decode(r.value))
                    except ValueError:
                        pass
        return out
    finally:
        consumer.close()
