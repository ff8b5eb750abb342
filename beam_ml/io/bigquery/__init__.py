"""BigQuery IO for beam_ml: typed RecordBatches in, prediction/ingest rows and dead letters out.

Everything runs through Beam's own BigQuery IO (no Java needed). Modules, one concern each:

- `endpoint`: where BigQuery is when it is not Google's (an emulator or a
  private endpoint: `BigQueryEndpoint`, `endpoint_client`), and the redirect of
  Beam's read clients a job asks for (`use_endpoint` / `clear_endpoint`);
  `endpoint_plugin` is what worker subprocesses import to apply it.
- `schema`: table names, a spec's table schema, type hints, column checks,
  row validation, spec inference from a table's schema and sample.
- `read`: `ReadFromBigQueryBatches` (a table or a query -> RecordBatches + dead letters).
- `write`: `WriteRowsToBigQuery`, `WriteDeadLettersToBigQuery` (streaming inserts or file loads).
- `dead_letters`: Google's dead-letter table schema and DeadLetters as its rows.

Example (against a local emulator: `make bqemulator && python -m beam_ml.testing.bigquery`
prints its REST and gRPC addresses):

    endpoint = BigQueryEndpoint("http://127.0.0.1:9050", "127.0.0.1:9060")
    use_endpoint(endpoint, options=p.options)          # reads only: Beam's read clients take no endpoint
    rows, dead = (p | ReadFromBigQueryBatches(spec, table="test:ds.tx", endpoint=endpoint)).values()
    dead = rows | WriteRowsToBigQuery("test:ds.preds", schema, method=STREAMING_INSERTS, endpoint=endpoint)
    dead | WriteDeadLettersToBigQuery("test:ds.preds_error_records", endpoint=endpoint)

Importing this package patches nothing.
"""
from beam_ml.io.bigquery.dead_letters import DEAD_LETTER_SCHEMA, dead_letter_row, failed_row_to_dead_letter
from beam_ml.io.bigquery.endpoint import (ENDPOINT_ENV, ENDPOINT_PLUGIN, BigQueryEndpoint, clear_endpoint,
                                          endpoint_client, endpoint_in_use, use_endpoint)
from beam_ml.io.bigquery.read import ReadFromBigQueryBatches, row_fingerprint, rows_to_chunk
from beam_ml.io.bigquery.schema import (check_columns, infer_spec_from_table, parse_table, schema_fields,
                                        table_schema_for, type_hints, validate_row)
from beam_ml.io.bigquery.write import FILE_LOADS, STREAMING_INSERTS, WriteDeadLettersToBigQuery, WriteRowsToBigQuery

__all__ = [
    "BigQueryEndpoint", "STREAMING_INSERTS", "FILE_LOADS", "DEAD_LETTER_SCHEMA", "parse_table", "table_schema_for",
    "schema_fields", "type_hints", "infer_spec_from_table", "check_columns", "row_fingerprint",
    "rows_to_chunk", "validate_row", "failed_row_to_dead_letter", "dead_letter_row", "endpoint_client",
    "ENDPOINT_ENV", "ENDPOINT_PLUGIN", "use_endpoint", "endpoint_in_use", "clear_endpoint",
    "ReadFromBigQueryBatches", "WriteRowsToBigQuery", "WriteDeadLettersToBigQuery",
]
