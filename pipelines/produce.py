"""Replay a CSV file (or a bundled dataset) into a Kafka topic as JSON events.

    python -m pipelines.produce --input=creditcard.csv --topic=transactions --bootstrap_servers=127.0.0.1:9092
    python -m pipelines.produce --dataset=fraud --topic=transactions --rate=500 --limit=10000
    python -m pipelines.produce --input=hr.csv --key_column=employee_id --topic=hr --kafka_config=client.properties

Each CSV row becomes one JSON object: its cells by column name (numbers as JSON
numbers, empty cells as null), plus `event_id` (the --key_column value, else a
stable `<file name>:<line>`) and `produce_ts` (ms since the epoch, when it was
sent). The Kafka key is the event_id. A plain kafka-python program, not a Beam
pipeline: replaying a file is one sequential loop, paced by --rate.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import re
import time
from typing import Any, Iterator, Optional, Sequence

from beam_ml import cli
from beam_ml.errors import UserError

__all__ = ["csv_events", "cell_value", "run", "main"]

_INT_RE = re.compile(r"^[-+]?\d{1,15}$")
_FLOAT_RE = re.compile(r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$")


def cell_value(text: str) -> Any:
    """A CSV cell as a JSON value: int, finite float, None for an empty cell, else the text."""
    if text == "":
        return None
    if _INT_RE.match(text):
        return int(text)
    if _FLOAT_RE.match(text):
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
    from beam_ml.spec import read_header

    header = read_header(path)
    if key_column and key_column not in header:
        raise UserError(f"--key_column: column '{key_column}' is not in {path} (columns: {', '.join(header)})")
    name = os.path.basename(path)
    with open(path, newline="", encoding="utf-8-sig") as f:
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


def _parse_args(argv: Sequence[str]) -> argparse.Namespace:
    class Parser(argparse.ArgumentParser):
        def error(self, message):
            raise UserError(message)

    p = Parser(prog="python -m pipelines.produce", allow_abbrev=False,
               description="Replay a CSV into Kafka as JSON events.")
    p.add_argument("--input", help="CSV file with a header row")
    p.add_argument("--dataset", help="a bundled dataset (retention, absenteeism, fraud, digits)")
    p.add_argument("--data_dir", default="data", help="where bundled datasets are written")
    p.add_argument("--dataset_rows", type=int, default=None, help="rows to generate for a bundled dataset")
    p.add_argument("--topic", required=True, help="destination topic")
    p.add_argument("--bootstrap_servers", default=None, help="Kafka brokers, host:port[,host:port]")
    p.add_argument("--kafka_config", default=None, help="Kafka client settings file (.properties or .json)")
    p.add_argument("--rate", type=float, default=0.0, help="events per second (0: as fast as possible)")
    p.add_argument("--key_column", default=None, help="column whose value is the event_id")
    p.add_argument("--limit", type=int, default=None, help="send at most this many events")
    p.add_argument("--flush_timeout", type=float, default=60.0, help="seconds to wait for acknowledgements")
    args = p.parse_args(argv)
    if bool(args.input) == bool(args.dataset):
        raise UserError("--input or --dataset: give exactly one")
    if args.rate < 0:
        raise UserError(f"--rate: expected events per second >= 0, got {args.rate}")
    if args.limit is not None and args.limit < 0:
        raise UserError(f"--limit: expected a count >= 0, got {args.limit}")
    return args


def run(argv: Optional[Sequence[str]] = None) -> dict[str, Any]:
    """Sends the events; returns {'events', 'seconds', 'rate', 'topic', 'input'}.

    Raises:
      UserError: a bad flag, file, or unreachable broker.
    """
    args = _parse_args(list(argv or []))
    path = args.input
    key_column = args.key_column
    if args.dataset:
        from beam_ml import datasets

        if args.dataset not in datasets.DATASETS:
            raise UserError(f"--dataset: unknown dataset '{args.dataset}'; "
                            f"choose one of {', '.join(sorted(datasets.DATASETS))}")
        path = datasets.materialize(args.dataset, args.data_dir, rows=args.dataset_rows)
        key_column = key_column or datasets.DATASETS[args.dataset].key
    from beam_ml.io.csv import expand_input

    path = expand_input(path)[0]

    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    from beam_ml.io.kafka_config import KafkaClientConfig

    try:
        config = KafkaClientConfig.load(args.kafka_config, bootstrap_servers=args.bootstrap_servers).validate(
            label=lambda field: {"bootstrap_servers": "--bootstrap_servers"}.get(field, field))
    except ValueError as e:
        raise UserError(str(e))
    try:
        producer = KafkaProducer(acks="all", linger_ms=5, **config.client_kwargs())
    except KafkaError as e:
        raise UserError(f"--bootstrap_servers: cannot connect to Kafka at {config.bootstrap_servers}: {e}")
    errors: list[BaseException] = []
    sent = 0
    start = time.monotonic()
    try:
        for event_id, event in csv_events(path, key_column):
            if args.limit is not None and sent >= args.limit:
                break
            if args.rate > 0:
                # Pace against the start, not the previous send, so the mean rate holds.
                delay = start + sent / args.rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            event["produce_ts"] = int(time.time() * 1000)
            future = producer.send(args.topic, key=event_id.encode("utf-8"),
                                   value=json.dumps(event, separators=(",", ":")).encode("utf-8"))
            future.add_errback(errors.append)
            sent += 1
        producer.flush(timeout=args.flush_timeout)
    finally:
        producer.close(timeout=10)
    if errors:
        raise RuntimeError(f"{len(errors)} of {sent} sends to {args.topic} failed; first: {errors[0]!r}")
    seconds = time.monotonic() - start
    stats = {"events": sent, "seconds": round(seconds, 3), "rate": round(sent / max(seconds, 1e-9), 1),
             "topic": args.topic, "input": path}
    print(f"[beam_ml] produced {sent} events from {path} to {args.topic} in {stats['seconds']} s "
          f"({stats['rate']} events/s)", flush=True)
    return stats


def main(argv: Optional[Sequence[str]] = None) -> None:
    cli.main(run, argv)


if __name__ == "__main__":
    main()
