"""Kafka -> BigQuery ingestion (`python -m pipelines.kafka_to_bigquery`): Google's template, in Python Beam.

    python -m pipelines.kafka_to_bigquery --bootstrap_servers=127.0.0.1:9092 --input_topic=transactions \\
        --output_table=my-project:fraud.transactions --group_id=ingest \\
        --sql="SELECT * FROM events WHERE Amount > 0"

Modules: `values` (pure: Kafka values -> typed Arrow tables -> BigQuery rows and
schemas; schema inference), `sink` (streaming inserts of rows and dead letters
inside the read's bundle, for at-least-once). The job that wires them (plan ->
build -> write -> run -> counts, and the offsets a bounded run commits) is
`beam_ml.jobs.kafka_to_bigquery`.
"""
from beam_ml.ingest.sink import InsertBatch, InsertDeadLettersToBigQuery, InsertRowsToBigQuery, insert_rows
from beam_ml.ingest.values import (METADATA_SCHEMA, IngestSchema, avro_ingest_schema, bigquery_schema,
                                   infer_schema, load_avro_schema, records_to_table, spec_schema, table_to_rows)

__all__ = [
    "InsertBatch", "InsertDeadLettersToBigQuery", "InsertRowsToBigQuery", "insert_rows",
    "METADATA_SCHEMA", "IngestSchema", "avro_ingest_schema", "bigquery_schema", "infer_schema",
    "load_avro_schema", "records_to_table", "spec_schema", "table_to_rows",
]
