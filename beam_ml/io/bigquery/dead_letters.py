"""Dead-letter tables: Google's Dataflow dead-letter columns (plus ours) and DeadLetters as their rows.

    row = dead_letter_row(dead, timestamp=time.time(), from_kafka=True)   # a row of DEAD_LETTER_SCHEMA
    dead = failed_row_to_dead_letter(table, row, errors)                 # a refused row -> DeadLetter

The write step is `beam_ml.io.bigquery.write.WriteDeadLettersToBigQuery`.
"""
from __future__ import annotations

import base64
import datetime
import re
from typing import Any, Callable, Mapping, Optional, Union

from beam_ml.errors import DeadLetter
from beam_ml.records import raw_text


# Google's Dataflow dead-letter table (Kafka/PubSub to BigQuery templates), plus where the
# record came from: the beam_ml stage that rejected it and, for Kafka input, its coordinates.
DEAD_LETTER_SCHEMA: dict = {"fields": [
    {"name": "timestamp", "type": "TIMESTAMP", "mode": "REQUIRED"},
    {"name": "payloadString", "type": "STRING", "mode": "NULLABLE"},
    {"name": "payloadBytes", "type": "BYTES", "mode": "NULLABLE"},
    {"name": "attributes", "type": "RECORD", "mode": "REPEATED", "fields": [
        {"name": "key", "type": "STRING", "mode": "NULLABLE"},
        {"name": "value", "type": "STRING", "mode": "NULLABLE"},
    ]},
    {"name": "errorMessage", "type": "STRING", "mode": "NULLABLE"},
    {"name": "stacktrace", "type": "STRING", "mode": "NULLABLE"},
    {"name": "stage", "type": "STRING", "mode": "NULLABLE"},
    {"name": "source_topic", "type": "STRING", "mode": "NULLABLE"},
    {"name": "partition", "type": "INTEGER", "mode": "NULLABLE"},
    {"name": "offset", "type": "INTEGER", "mode": "NULLABLE"},
]}


def _insert_errors_text(errors: Any) -> str:
    parts = []
    for e in errors or []:
        if isinstance(e, Mapping):
            loc = e.get("location")
            parts.append(f"{e.get('reason', 'error')}: {e.get('message', '')}" + (f" (field '{loc}')" if loc else ""))
        else:
            parts.append(str(e))
    return "; ".join(parts) or "rejected by BigQuery"


def failed_row_to_dead_letter(destination: str, row: Mapping[str, Any], errors: Any,
                              origin: Optional[Callable[[Mapping[str, Any]], tuple[str, Optional[int]]]] = None
                              ) -> DeadLetter:
    """A row BigQuery rejected (from `failed_rows_with_errors`) as a DeadLetter, stage 'bigquery'.

    Args:
      destination: the table it was written to.
      row: the row.
      errors: BigQuery's insert errors for it.
      origin: maps the row to (source, position) of the record it came from (e.g.
        its Kafka topic/partition and offset); default: the table, no position.
    """
    source, position = origin(row) if origin else (str(destination), None)
    return DeadLetter(source, position, f"BigQuery rejected the row for {destination}: {_insert_errors_text(errors)}",
                      raw_text(dict(row)), "bigquery")


def _timestamp_text(ts: Union[float, datetime.datetime]) -> str:
    if not isinstance(ts, datetime.datetime):
        ts = datetime.datetime.fromtimestamp(float(ts), tz=datetime.timezone.utc)
    elif ts.tzinfo is None:
        ts = ts.replace(tzinfo=datetime.timezone.utc)
    return ts.astimezone(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f UTC")


_KAFKA_SOURCE_RE = re.compile(r"^(?P<topic>.+)/(?P<partition>\d+)$")


def dead_letter_row(dead: DeadLetter, timestamp: Union[float, datetime.datetime], from_kafka: bool = False) -> dict:
    """A DeadLetter as a row of `DEAD_LETTER_SCHEMA` (Google's DLQ columns + ours).

    payloadString is the raw record (as the DeadLetter holds it: text, PII
    masked, truncated), payloadBytes the same bytes (base64, as BigQuery's JSON
    wants); attributes carry the source and position; errorMessage the reason.

    Args:
      dead: the dead letter.
      timestamp: when it was dead-lettered (epoch seconds or a datetime).
      from_kafka: the DeadLetter's source is ``topic/partition`` and its position
        the offset: fill source_topic, partition and offset.
    """
    raw = dead.raw if dead.raw is not None else ""
    raw = raw[: DeadLetter.MAX_RAW_CHARS]
    row = {
        "timestamp": _timestamp_text(timestamp),
        "payloadString": raw,
        "payloadBytes": base64.b64encode(raw.encode("utf-8")).decode("ascii"),
        "attributes": [{"key": "source", "value": str(dead.source)},
                       {"key": "position", "value": None if dead.position is None else str(dead.position)}],
        "errorMessage": dead.reason,
        "stacktrace": None,
        "stage": dead.stage,
        "source_topic": None,
        "partition": None,
        "offset": None,
    }
    m = _KAFKA_SOURCE_RE.match(str(dead.source)) if from_kafka else None
    if m:
        row.update(source_topic=m.group("topic"), partition=int(m.group("partition")),
                   offset=None if dead.position is None else int(dead.position))
    return row
