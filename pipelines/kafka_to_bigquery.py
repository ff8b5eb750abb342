"""Ingest Kafka topics into a BigQuery table, with a dead-letter table: Google's Kafka-to-BigQuery template.

    python -m pipelines.kafka_to_bigquery --bootstrap_servers=127.0.0.1:9092 --input_topic=transactions \\
        --output_table=my-project:fraud.transactions --group_id=ingest
    # several topics, a cleaning statement with a lookup table, Kafka coordinates as columns:
    python -m pipelines.kafka_to_bigquery --input_topic=tx-eu,tx-us --output_table=p:ds.tx --group_id=ingest \\
        --sql="SELECT e.*, u.city FROM events e LEFT JOIN users u ON e.user_id = u.user_id WHERE e.Amount > 0" \\
        --lookup=users=users.csv --lookup_refresh=60 --with_kafka_metadata
    # a snapshot (every partition up to its end now), loaded with file loads:
    python -m pipelines.kafka_to_bigquery ... --bounded --write_disposition=WRITE_TRUNCATE
    # against a local emulator (announced at start):
    python -m pipelines.kafka_to_bigquery ... --bigquery_endpoint=http://127.0.0.1:9050

Google's template parameter names work too (--bootstrapServers, --inputTopic,
--outputTableSpec, --outputDeadletterTable, --consumerGroupId, --kafkaReadOffset,
--createDisposition, --writeDisposition). Values are JSON objects, CSV lines
(--value_format=csv, with --spec or --model_dir) or Avro binary (--avro_schema).
The job, its columns, its accounting and its delivery guarantee are described
in `beam_ml.jobs.kafka_to_bigquery`.
"""
from __future__ import annotations

from typing import Optional, Sequence

from beam_ml import cli
from beam_ml.jobs.kafka_to_bigquery import kafka_to_bigquery
from beam_ml.options import (BigQueryOptions, CleanOptions, KafkaOptions, KafkaToBigQueryOptions,
                             parse_pipeline_options)

__all__ = ["run", "main", "OPTIONS"]

# The options classes of this pipeline (also its Flex Template parameters).
OPTIONS = (KafkaToBigQueryOptions, KafkaOptions, BigQueryOptions, CleanOptions)


def run(argv: Optional[Sequence[str]] = None, test_pipeline=None):
    """Parses flags and runs `beam_ml.jobs.kafka_to_bigquery.kafka_to_bigquery`; returns its IngestRun.

    Raises:
      UserError: a bad flag, file, schema or statement.
    """
    options = parse_pipeline_options(argv, *OPTIONS, prog="python -m pipelines.kafka_to_bigquery",
                                     description="Ingest Kafka topics into a BigQuery table, with a dead-letter "
                                                 "table (Google's Kafka-to-BigQuery template).")

    return kafka_to_bigquery(options, test_pipeline=test_pipeline)


def main(argv: Optional[Sequence[str]] = None) -> None:
    cli.main(run, argv)


if __name__ == "__main__":
    main()
