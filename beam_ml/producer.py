"""Replaying CSV rows into Kafka as JSON events: the loop behind `pipelines.produce` and the demos.

    producer = open_producer(client_config)
    stats = send_events(producer, "transactions", csv_events("creditcard.csv"), rate=500)

Each CSV row becomes one JSON object: its cells by column name (numbers as JSON
numbers, empty cells as null), plus `event_id` (the key column's value, else a
stable `<file name>:<line>`) and `produce_ts` (ms since the epoch, when it was
sent). The Kafka key is the event_id.
"""
from __future__ import annotations

import csv
import io
import itertools
import json
import math
import re
import time
from typing import Any, Callable, Iterable, Iterator, Optional

from beam_ml import formats, fs
from beam_ml.errors import UserError
from beam_ml.io.kafka.write import close_producer
from beam_ml.spec import NUMBER_RE, read_header

__all__ = ["cell_value", "csv_events", "event_encoder", "json_value", "open_producer", "send_events"]

_INT_RE = re.compile(r"^[-+]?\d{1,15}$")
_NUMBER_RE = re.compile(NUMBER_RE)


def cell_value(text: str) -> Any:
    """A CSV cell as a JSON value: int, finite float, None for an empty cell, else the text."""
    if text == "":
        return None
    if _INT_RE.match(text):
        return int(text)
    if _NUMBER_RE.match(text):
        value = float(text)
        if math.isfinite(value):
            return value
    return text


def csv_events(path: str, key_column: Optional[str] = None) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yields (event_id, event) per data row of a CSV file, without produce_ts.

    Rows whose field count differs from the header's are still sent (as the
    fields they have, under `_malformed`), so a downstream pipeline meets
    them as it would in production and dead-letters them.

    Args:
      path: the CSV file (header row first).
      key_column: the column holding each row's id; None: `<file name>:<line>`.

    Raises:
      UserError: naming --input or --key_column.
    """
    header = read_header(path)
    if key_column and key_column not in header:
        raise UserError(f"--key_column: column '{key_column}' is not in {path} (columns: {', '.join(header)})")
    name = path.rstrip("/").rsplit("/", 1)[-1]
    with io.TextIOWrapper(fs.open_read(path), encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f)
        next(reader, None)
        for fields in reader:
            line = reader.line_num
            if not fields:
                continue
            if len(fields) != len(header):
                event: dict[str, Any] = {"_malformed": fields}
                event_id = f"{name}:{line}"
            else:
                event = {h: cell_value(v) for h, v in zip(header, fields)}
                key = event.get(key_column) if key_column else None
                event_id = str(key) if key is not None else f"{name}:{line}"
            event["event_id"] = event_id
            yield event_id, event


def json_value(event: dict[str, Any]) -> bytes:
    """An event as compact UTF-8 JSON."""
    return json.dumps(event, separators=(",", ":")).encode("utf-8")


def event_encoder(opts: Any, events: Iterator[tuple[str, dict[str, Any]]], sample: int = 1000
                  ) -> tuple[Iterator[tuple[str, dict[str, Any]]], Callable[[int, dict[str, Any]], bytes]]:
    """(the same events, `(index, event) -> value`) for --output_format: JSON, or Confluent Avro whose
    schema fits the first `sample` events (registered under <topic>-value)."""
    if (getattr(opts, "output_format", None) or "json") == "json":
        return events, lambda i, event: json_value(event)
    head = list(itertools.islice(events, sample))
    examples = [{**event, "produce_ts": 0} for _, event in head]
    encode = formats.output_encoder(opts, opts.topic, name="Event", examples=examples)
    return itertools.chain(head, events), lambda i, event: encode(event)


def open_producer(client_config, **settings: Any):
    """A kafka-python producer (acks=all) for the validated client config.

    Raises:
      UserError: naming --bootstrap_servers when the brokers cannot be reached.
    """
    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    kwargs = dict(acks="all", linger_ms=5)
    kwargs.update(settings)
    try:
        return KafkaProducer(**kwargs, **client_config.client_kwargs())
    except KafkaError as e:
        raise UserError(f"--bootstrap_servers: cannot connect to Kafka at {client_config.bootstrap_servers}: {e}")


def send_events(producer, topic: str, events: Iterable[tuple[str, dict[str, Any]]], *, rate: float = 0.0,
                limit: Optional[int] = None, flush_timeout: float = 60.0,
                encode: Callable[[int, dict[str, Any]], bytes] = lambda i, event: json_value(event)) -> dict:
    """Sends (event_id, event) pairs, stamping each with produce_ts; closes the producer.

    Args:
      producer: from `open_producer`.
      topic: the destination topic.
      events: (event_id, event) pairs, e.g. `csv_events(path)`.
      rate: events per second, paced against the start (0: as fast as possible).
      limit: send at most this many.
      flush_timeout: seconds to wait for the acknowledgements at the end.
      encode: `(index, event) -> value bytes`; the demo uses it to send some malformed.

    Returns:
      {'events', 'seconds', 'rate', 'topic'}.

    Raises:
      RuntimeError: a send failed (the first failure is named).
    """
    errors: list[BaseException] = []
    sent = 0
    start = time.monotonic()
    try:
        for event_id, event in events:
            if limit is not None and sent >= limit:
                break
            if rate > 0:
                delay = start + sent / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            event["produce_ts"] = int(time.time() * 1000)
            future = producer.send(topic, key=event_id.encode("utf-8"), value=encode(sent, event))
            future.add_errback(errors.append)
            sent += 1
        producer.flush(timeout=flush_timeout)
    finally:
        error = close_producer(producer, timeout=10)
    if error is not None and not errors:
        errors.append(error)
    if errors:
        raise RuntimeError(f"{len(errors)} of {sent} sends to {topic} failed; first: {errors[0]!r}")
    seconds = time.monotonic() - start
    return {"events": sent, "seconds": round(seconds, 3), "rate": round(sent / max(seconds, 1e-9), 1),
            "topic": topic}
