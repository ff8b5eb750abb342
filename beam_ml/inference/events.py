"""Kafka events to rows the model can score: decode (any `beam_ml.formats` record format), validate, or dead-letter.

    parsed = records | beam.ParDo(ParseEventsFn(spec, validate=True)).with_outputs(DEAD_TAG, main="rows")
    # parsed.rows: (RowRef, row) pairs; parsed[DEAD_TAG]: DeadLetter(stage='parse'|'validate')

Each dead letter names the topic/partition and offset of its record.
"""
from __future__ import annotations

from typing import Any, Union

import apache_beam as beam

from beam_ml import metrics
from beam_ml.errors import DEAD_TAG, DeadLetter
from beam_ml.formats import VALUE_FORMATS, RecordFormat, kafka_dead_letter, record_format
from beam_ml.records import RowRef, raw_text, validate_record
from beam_ml.spec import DatasetSpec

__all__ = ["VALUE_FORMATS", "event_row", "event_format", "invalid_row", "ParseEventsFn", "ValidateRowsFn"]


def event_format(value_format: Union[str, RecordFormat], spec: DatasetSpec) -> RecordFormat:
    """A RecordFormat as given, or the one a name gives (json; csv with the spec's columns in spec order).

    Formats that need more (a schema file, a registry) come from `beam_ml.formats.format_from_flags`.
    """
    if isinstance(value_format, RecordFormat):
        return value_format
    if value_format not in ("json", "csv"):
        raise ValueError(f"value_format must be one of {VALUE_FORMATS} (avro ones as a RecordFormat), "
                         f"got {value_format!r}")
    return record_format(value_format, columns=spec.column_names)


def event_row(record: Any, spec: DatasetSpec, id_field: str = "event_id",
              value_format: Union[str, RecordFormat] = "json") -> tuple[RowRef, dict[str, Any]]:
    """Parses a Kafka record whose value is an event into (RowRef, row).

    Values are decoded by a `beam_ml.formats` RecordFormat: JSON objects, CSV
    lines whose fields are the spec's columns in spec order (cells arrive as
    strings and are typed by the same validation as JSON), bare or Confluent
    wire-format Avro.

    The event id is the event's `id_field`, else the spec's key column, else
    the Kafka key, else `topic/partition/offset`. The RowRef carries the
    Kafka key, the record timestamp (`event_ts`, ms) and `produce_ts` when the
    event has one.

    Args:
      record: a `beam_ml.io.kafka.KafkaRecord`.
      spec: the model's dataset spec.
      id_field: the event field holding its id.
      value_format: a RecordFormat, or 'json' / 'csv'.

    Raises:
      ValueError: the value does not decode (the message says why).
    """
    fmt = value_format if value_format.__class__ is not str else event_format(value_format, spec)
    row = fmt.decode(record.value)
    key = record.key.decode("utf-8", "replace") if record.key is not None else None
    event_id = row.get(id_field)
    if event_id is None and spec.key_column:
        event_id = row.get(spec.key_column)
    if event_id is None:
        event_id = key if key is not None else f"{record.topic}/{record.partition}/{record.offset}"
    carry: list[tuple[str, Any]] = [("key", key), ("event_ts", int(record.timestamp))]
    if "produce_ts" in row:
        carry.append(("produce_ts", row["produce_ts"]))
    return RowRef(f"{record.topic}/{record.partition}", int(record.offset), str(event_id), tuple(carry)), row


class EventParserFn(beam.DoFn):
    """Base of the Kafka event parsers: the spec, id field, record format and the rows_in counter."""

    def __init__(self, spec: DatasetSpec, id_field: str = "event_id",
                 value_format: Union[str, RecordFormat] = "json", validate: bool = False):
        self._spec = spec
        self._id_field = id_field
        self._value_format = event_format(value_format, spec)
        self._validate = validate
        self._in = beam.metrics.Metrics.counter(metrics.PREDICT, "rows_in")


class ParseEventsFn(EventParserFn):
    """KafkaRecord -> (RowRef, row); undecodable values -> DeadLetter(stage='parse') tagged DEAD_TAG.

    With validate=True it also does ValidateRowsFn's job (stage='validate'):
    one step instead of two per streamed event, which is measurable on the
    local runner where every step costs per-element overhead.
    """

    def process(self, record):
        self._in.inc()
        try:
            ref, row = event_row(record, self._spec, self._id_field, self._value_format)
        except ValueError as e:
            yield beam.pvalue.TaggedOutput(DEAD_TAG, kafka_dead_letter(record, str(e), self._value_format))
            return
        reason = validate_record(row, self._spec) if self._validate else None
        if reason is None:
            yield ref, row
        else:
            yield beam.pvalue.TaggedOutput(DEAD_TAG, invalid_row(ref, reason, row, self._spec))


def invalid_row(ref: RowRef, reason: str, row: dict, spec: DatasetSpec):
    """The dead letter of a decoded row that does not fit the model's spec (stage 'validate')."""
    return DeadLetter(ref.source, ref.position, reason, raw_text(row, spec.mask_columns), stage="validate")


class ValidateRowsFn(beam.DoFn):
    """(RowRef, row) that the model can score pass; others -> DeadLetter(stage='validate') tagged DEAD_TAG."""

    def __init__(self, spec: DatasetSpec):
        self._spec = spec

    def process(self, element):
        ref, row = element
        reason = validate_record(row, self._spec)
        if reason is None:
            yield element
        else:
            yield beam.pvalue.TaggedOutput(DEAD_TAG, invalid_row(ref, reason, row, self._spec))
