"""Replay a CSV file (or a bundled dataset) into a Kafka topic as JSON events.

    python -m pipelines.produce --input=creditcard.csv --topic=transactions --bootstrap_servers=127.0.0.1:9092
    python -m pipelines.produce --dataset=fraud --topic=transactions --rate=500 --limit=10000 --compression_type=lz4
    python -m pipelines.produce --input=hr.csv --key_column=employee_id --topic=hr --kafka_config=client.properties

Each CSV row becomes one JSON object (see `beam_ml.producer`), or with
--output_format=avro_confluent one Confluent wire-format Avro record (the schema,
derived from the first rows, registered under <topic>-value). A plain
kafka-python program, not a Beam pipeline: replaying a file is one sequential
loop, paced by --rate.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

from beam_ml import cli, datasets
from beam_ml.io.csv import expand_input
from beam_ml.jobs.settings import kafka_client_config
from beam_ml.options import KafkaOptions, ProduceOptions, parse_pipeline_options
from beam_ml.producer import csv_events, event_encoder, open_producer, send_events

__all__ = ["run", "main"]


def run(argv: Optional[Sequence[str]] = None) -> dict[str, Any]:
    """Sends the events; returns {'events', 'seconds', 'rate', 'topic', 'input'}.

    Raises:
      UserError: a bad flag, file, or unreachable broker.
    """
    options = parse_pipeline_options(argv, ProduceOptions, KafkaOptions, prog="python -m pipelines.produce",
                                     description="Replay a CSV file into a Kafka topic as JSON events.")
    opts = options.view_as(ProduceOptions).validated()
    config = kafka_client_config(options)
    path, key_column = opts.input, opts.key_column
    if opts.dataset:

        key_column = key_column or datasets.resolve(opts.dataset).key
        path = datasets.materialize(opts.dataset, opts.data_dir, rows=opts.dataset_rows)

    path = expand_input(path)[0]
    events, encode = event_encoder(opts, csv_events(path, key_column))
    producer = open_producer(config, **({"compression_type": opts.compression_type}
                                        if opts.compression_type != "none" else {}))
    stats = send_events(producer, opts.topic, events, rate=opts.rate, limit=opts.limit,
                        flush_timeout=opts.flush_timeout, encode=encode)
    stats["input"] = path
    print(f"[beam_ml] produced {stats['events']} events from {path} to {opts.topic} in {stats['seconds']} s "
          f"({stats['rate']} events/s)", flush=True)
    return stats


def main(argv: Optional[Sequence[str]] = None) -> None:
    cli.main(run, argv)


if __name__ == "__main__":
    main()
