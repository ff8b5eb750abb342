"""What every record format is: decode bytes to a record, encode one back, and the columns it implies.

    fmt = record_format("json")                      # beam_ml.formats.record_format
    record = fmt.decode(value)                       # ValueError(reason): a 'parse' dead letter
    dead = kafka_dead_letter(kafka_record, reason, fmt)   # names topic/partition and offset
    value = fmt.encode({"amount": 3.5})

Nothing here does I/O: a format that needs a schema registry holds a client
(`beam_ml.formats.registry`) that does.
"""
from __future__ import annotations

import base64
import datetime
import decimal
import json
from typing import Any, Mapping, Optional

import pyarrow as pa

from beam_ml.errors import DeadLetter

__all__ = ["RecordFormat", "kafka_dead_letter", "value_text", "cell_text"]


class RecordFormat:
    """A Kafka value format. Subclasses set `name` and implement decode (and encode)."""

    name = ""
    binary = False  # dead letters show a binary value as base64, a text value as text

    def decode(self, value: Optional[bytes]) -> dict[str, Any]:
        """The record in `value`.

        Raises:
          ValueError: the value does not decode; the message says why (a dead letter's reason).
        """
        raise NotImplementedError

    def encode(self, record: Mapping[str, Any]) -> bytes:
        """`record` as a value of this format.

        Raises:
          ValueError: the record cannot be written in this format.
        """
        raise NotImplementedError

    def arrow_schema(self) -> Optional[pa.Schema]:
        """The columns a schema'd format implies (one per record field), else None (columns come from elsewhere)."""
        return None

    def type_hints(self) -> Optional[dict[str, str]]:
        """field -> 'numeric' | 'text' | 'drop' for spec inference, where a schema gives them, else None."""
        return None

    def raw_text(self, value: Optional[bytes]) -> str:
        """A value as a dead letter shows it."""
        if self.binary:
            return value_text(value)
        if value is None:
            return ""
        return value.decode("utf-8", "replace") if isinstance(value, bytes) else repr(value)

    def start(self) -> "RecordFormat":
        """Checks what must be reachable before a run (a registry); returns self. Raises UserError."""
        return self


def kafka_dead_letter(record: Any, reason: str, fmt: RecordFormat, stage: str = "parse") -> DeadLetter:
    """The dead letter of a Kafka record whose value did not decode: topic/partition, offset, reason, raw value."""
    return DeadLetter(f"{record.topic}/{record.partition}", int(record.offset), reason, fmt.raw_text(record.value),
                      stage=stage)


def value_text(value: Optional[bytes]) -> str:
    """A record value as text for a dead letter: UTF-8 as is, other bytes as ``base64:...``."""
    if value is None:
        return ""
    try:
        return bytes(value).decode("utf-8")
    except UnicodeDecodeError:
        return "base64:" + base64.b64encode(bytes(value)).decode("ascii")


def cell_text(value: Any, numeric: bool = False) -> str:
    """A decoded value as the CSV cell the batch readers parse back (`beam_ml.io.csv.parse_csv_chunk`).

    Used wherever records that did not come from a CSV file (Kafka events,
    BigQuery rows) meet the CSV chunk parser, so all of them read the same
    values the same way. Booleans are true/false (1/0 in a numeric column),
    floats their repr, nested values JSON text; one record per line, so line
    breaks become spaces.
    """
    if value is None:
        return ""
    cls = value.__class__
    if cls is str:
        return value.replace("\r", " ").replace("\n", " ") if ("\n" in value or "\r" in value) else value
    if cls is bool:
        if numeric:
            return "1" if value else "0"
        return "true" if value else "false"
    if cls is float:
        return repr(value)
    if isinstance(value, (int, decimal.Decimal)):
        return str(value)
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    elif isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    elif not isinstance(value, str):
        value = json.dumps(value, sort_keys=True, default=str)
    return value.replace("\r", " ").replace("\n", " ")
