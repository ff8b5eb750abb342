"""Writing rows and dead letters to BigQuery with Beam's WriteToBigQuery.

    dead = rows | WriteRowsToBigQuery("proj:ds.preds", schema, method=STREAMING_INSERTS)
    dead | WriteDeadLettersToBigQuery("proj:ds.preds_error_records")   # Google's DLQ schema

STREAMING_INSERTS with RETRY_ON_TRANSIENT_ERROR (rows BigQuery rejects come back
in `failed_rows_with_errors` and become dead letters) or FILE_LOADS for bounded
runs (a bad row would fail the whole load job, so rows are first checked against
the table schema by `validate_row`; that check also runs before streaming inserts).
With an endpoint, the write's client is built for it (`WriteToBigQuery`'s
`test_client` hook): nothing is patched.
"""
from __future__ import annotations

import shutil
import tempfile
import time
from typing import Any, Callable, Mapping, Optional

import apache_beam as beam

from beam_ml import metrics
from beam_ml.errors import DEAD_TAG, DeadLetter, UserError
from beam_ml.io.bigquery.dead_letters import (DEAD_LETTER_SCHEMA, _insert_errors_text, dead_letter_row,
                                              failed_row_to_dead_letter)
from beam_ml.io.bigquery.endpoint import BigQueryEndpoint, _EndpointBigqueryV2
from beam_ml.io.bigquery.schema import _record_error, parse_table, schema_fields
from beam_ml.records import raw_text


STREAMING_INSERTS = "STREAMING_INSERTS"
FILE_LOADS = "FILE_LOADS"
_METHODS = (STREAMING_INSERTS, FILE_LOADS)
# The dispositions of Beam's BigQueryDisposition this IO takes (the flags offer the same: beam_ml.options).
CREATE_DISPOSITIONS = ("CREATE_IF_NEEDED", "CREATE_NEVER")
WRITE_DISPOSITIONS = ("WRITE_APPEND", "WRITE_TRUNCATE", "WRITE_EMPTY")


class _CheckRowsDoFn(beam.DoFn):
    """Rows that fit the schema to main; the others as DeadLetters (stage 'schema')."""

    def __init__(self, schema: dict, table: str, origin, ignore_unknown: bool, validate: bool):
        self._schema = schema
        self._table = table
        self._origin = origin
        self._ignore_unknown = ignore_unknown
        self._validate = validate
        self._in = beam.metrics.Metrics.counter(metrics.WRITE, "rows_in")
        self._dead = beam.metrics.Metrics.counter(metrics.WRITE, "dead_schema")

    def setup(self):
        self._fields = schema_fields(self._schema)

    def process(self, row):
        self._in.inc()
        if not isinstance(row, Mapping):
            reason = f"expected a row (dict), got {type(row).__name__}"
        elif self._validate:
            reason = _record_error(row, self._fields, "", self._ignore_unknown)
        else:
            reason = None
        if reason is None:
            yield row
            return
        self._dead.inc()
        if isinstance(row, Mapping):
            source, position = self._origin(row) if self._origin else (self._table, None)
            raw = raw_text(dict(row))
        else:
            source, position, raw = self._table, None, repr(row)[: DeadLetter.MAX_RAW_CHARS]
        yield beam.pvalue.TaggedOutput(DEAD_TAG, DeadLetter(
            source, position, f"does not fit {self._table}: {reason}", raw, "schema"))


class _FailedRowsDoFn(beam.DoFn):
    def __init__(self, origin):
        self._origin = origin
        self._rejected = beam.metrics.Metrics.counter(metrics.WRITE, "dead_rejected")

    def process(self, failed):
        destination, row, errors = failed
        self._rejected.inc()
        yield failed_row_to_dead_letter(destination, row, errors, self._origin)


def _write_kwargs(table: str, schema: Optional[dict], method: str, create_disposition: str,
                  write_disposition: str, endpoint: Optional[BigQueryEndpoint],
                  temp_location: Optional[str], project: str) -> dict:
    from apache_beam.io.gcp.bigquery_tools import RetryStrategy

    if method not in _METHODS:
        raise UserError(f"BigQuery write method: expected one of {', '.join(_METHODS)}, got {method!r}")
    if create_disposition not in CREATE_DISPOSITIONS:
        raise UserError(f"--create_disposition: expected one of {', '.join(CREATE_DISPOSITIONS)}, "
                        f"got {create_disposition!r}")
    if write_disposition not in WRITE_DISPOSITIONS:
        raise UserError(f"--write_disposition: expected one of {', '.join(WRITE_DISPOSITIONS)}, "
                        f"got {write_disposition!r}")
    if method == STREAMING_INSERTS and write_disposition != "WRITE_APPEND":
        raise UserError(f"--write_disposition={write_disposition}: streaming inserts only append; "
                        f"use WRITE_APPEND or a bounded run (file loads)")
    kwargs: dict[str, Any] = dict(table=table, schema=schema, method=method,
                                  create_disposition=create_disposition, write_disposition=write_disposition)
    if method == STREAMING_INSERTS:
        kwargs["insert_retry_strategy"] = RetryStrategy.RETRY_ON_TRANSIENT_ERROR
    if temp_location:
        kwargs["custom_gcs_temp_location"] = temp_location
    if endpoint is not None:
        endpoint.announce("writes")
        kwargs["test_client"] = _EndpointBigqueryV2(endpoint.rest, project)
        # The endpoint cannot check a gs:// staging location (load files are local paths).
        kwargs["validate"] = False
    return kwargs


def _scratch_load_dir(write_kwargs: dict, endpoint: Optional[BigQueryEndpoint]) -> Optional[str]:
    """With an endpoint (it reads local paths, not gs://) and no temp_location given, a local
    scratch folder for the load files, set into `write_kwargs`; else None."""
    if write_kwargs["method"] != FILE_LOADS or endpoint is None or write_kwargs.get("custom_gcs_temp_location"):
        return None
    path = tempfile.mkdtemp(prefix="beam_ml-bq-load-")
    write_kwargs["custom_gcs_temp_location"] = path
    return path


class _RemoveDirDoFn(beam.DoFn):
    """Deletes the scratch folder of load files once every load job has finished."""

    def __init__(self, path: str):
        self._path = path

    def process(self, unused_count):
        shutil.rmtree(self._path, ignore_errors=True)
        return []


def _remove_after_loads(result, path: Optional[str]) -> None:
    if path is not None:
        _ = (result.destination_load_jobid_pairs
             | "CountLoadJobs" >> beam.combiners.Count.Globally()
             | "RemoveLoadFiles" >> beam.ParDo(_RemoveDirDoFn(path)))


class WriteRowsToBigQuery(beam.PTransform):
    """Writes dict rows to a table; returns the rows that could not be written as DeadLetters.

    Every row is first checked against `schema` (`validate_row`): one that does
    not fit becomes a DeadLetter with stage 'schema' and never reaches BigQuery
    (a FILE_LOADS job would fail whole on it; a streaming insert of a bad INT64
    can fail the whole request). With STREAMING_INSERTS (unbounded or bounded
    input) rows BigQuery still rejects come back through Beam's
    `failed_rows_with_errors` (RETRY_ON_TRANSIENT_ERROR: transient errors are
    retried, permanent ones returned) as DeadLetters with stage 'bigquery'.
    FILE_LOADS (bounded runs) fails the pipeline if a load job fails.
    Counters (namespace beam_ml.metrics.WRITE): rows_in = rows written + dead_schema + dead_rejected.

    Args:
      table: ``project:dataset.table``.
      schema: the table schema (dict form; e.g. `table_schema_for(spec, ...)`); used to
        create the table (CREATE_IF_NEEDED) and to check rows. None with CREATE_NEVER:
        rows are then not checked.
      method: STREAMING_INSERTS or FILE_LOADS.
      create_disposition: CREATE_IF_NEEDED or CREATE_NEVER.
      write_disposition: WRITE_APPEND (WRITE_TRUNCATE and WRITE_EMPTY with FILE_LOADS).
      endpoint: an emulator or private endpoint, or None for Google's.
      origin: maps a row to the (source, position) of the record it came from, for its
        dead letter; default: the table.
      temp_location: FILE_LOADS staging folder (default: Beam's --temp_location; with
        an endpoint, a local scratch folder).
      validate: check rows against the schema first (disable only to test BigQuery's
        own rejections).
      ignore_unknown_columns: accept (and drop) fields the table does not have.
      project: the project of a table spec without one.
    """

    def __init__(self, table: str, schema: Optional[Mapping[str, Any]], method: str = STREAMING_INSERTS,
                 create_disposition: str = "CREATE_IF_NEEDED", write_disposition: str = "WRITE_APPEND",
                 endpoint: Optional[BigQueryEndpoint] = None,
                 origin: Optional[Callable[[Mapping[str, Any]], tuple[str, Optional[int]]]] = None,
                 temp_location: Optional[str] = None, validate: bool = True,
                 ignore_unknown_columns: bool = False, project: Optional[str] = None,
                 flag: str = "--output_table"):
        super().__init__()
        p, d, t = parse_table(table, flag, project)
        self._table = f"{p}:{d}.{t}"
        if schema is None and create_disposition == "CREATE_IF_NEEDED":
            raise UserError(f"{flag}: creating {self._table} needs a schema")
        # BigQuery gets the schema as given; rows are checked against its canonical form.
        self._schema = {"fields": schema_fields(schema, canonical=False)} if schema is not None else None
        self._origin = origin
        self._validate = validate and schema is not None
        self._ignore_unknown = ignore_unknown_columns
        self._write_kwargs = _write_kwargs(self._table, self._schema, method, create_disposition,
                                           write_disposition, endpoint, temp_location, p)
        self._scratch = _scratch_load_dir(self._write_kwargs, endpoint)
        if ignore_unknown_columns:
            self._write_kwargs["ignore_unknown_columns"] = True
        self._method = method

    def expand(self, rows):
        from apache_beam.io.gcp.bigquery import WriteToBigQuery

        checked = rows | "CheckRows" >> beam.ParDo(
            _CheckRowsDoFn(self._schema, self._table, self._origin, self._ignore_unknown, self._validate)
        ).with_outputs(DEAD_TAG, main="rows")
        result = checked.rows | "WriteToBigQuery" >> WriteToBigQuery(**self._write_kwargs)
        if self._method != STREAMING_INSERTS:
            _remove_after_loads(result, self._scratch)
            return checked[DEAD_TAG]
        rejected = result.failed_rows_with_errors | "RejectedRows" >> beam.ParDo(_FailedRowsDoFn(self._origin))
        return (checked[DEAD_TAG], rejected) | "DeadLetters" >> beam.Flatten()


class _DeadLetterRowsDoFn(beam.DoFn):
    def __init__(self, from_kafka: bool, clock: Callable[[], float]):
        self._from_kafka = from_kafka
        self._clock = clock

    def process(self, dead: DeadLetter):
        yield dead_letter_row(dead, self._clock(), self._from_kafka)


class _FailOnRejectedDeadLetterDoFn(beam.DoFn):
    """A dead letter the dead-letter table refuses has nowhere else to go: fail loudly."""

    def process(self, failed):
        destination, row, errors = failed
        raise RuntimeError(f"the dead-letter table {destination} rejected a dead letter "
                           f"({_insert_errors_text(errors)}): {raw_text(dict(row))[:500]}")


class WriteDeadLettersToBigQuery(beam.PTransform):
    """Writes DeadLetters to a dead-letter table with `DEAD_LETTER_SCHEMA` (Google's columns + ours).

    The table is created if needed. A dead letter the table itself rejects fails
    the pipeline (it would otherwise be lost).

    Args:
      table: ``project:dataset.table`` (Google's default name: ``<output table>_error_records``).
      from_kafka: the dead letters' sources are Kafka ``topic/partition`` (fills
        source_topic, partition, offset).
      method: STREAMING_INSERTS (default) or FILE_LOADS (bounded runs).
      endpoint: an emulator or private endpoint, or None for Google's.
      clock: the timestamp source (epoch seconds), for tests.
      temp_location, project: as for WriteRowsToBigQuery.
    """

    def __init__(self, table: str, from_kafka: bool = False, method: str = STREAMING_INSERTS,
                 endpoint: Optional[BigQueryEndpoint] = None, clock: Callable[[], float] = time.time,
                 temp_location: Optional[str] = None, project: Optional[str] = None,
                 flag: str = "--dead_letter_table"):
        super().__init__()
        p, d, t = parse_table(table, flag, project)
        self._from_kafka = from_kafka
        self._clock = clock
        self._method = method
        self._write_kwargs = _write_kwargs(f"{p}:{d}.{t}", DEAD_LETTER_SCHEMA, method, "CREATE_IF_NEEDED",
                                           "WRITE_APPEND", endpoint, temp_location, p)
        self._scratch = _scratch_load_dir(self._write_kwargs, endpoint)

    def expand(self, dead):
        from apache_beam.io.gcp.bigquery import WriteToBigQuery

        result = (dead
                  | "ToDeadLetterRows" >> beam.ParDo(_DeadLetterRowsDoFn(self._from_kafka, self._clock))
                  | "WriteDeadLetters" >> WriteToBigQuery(**self._write_kwargs))
        if self._method == STREAMING_INSERTS:
            _ = result.failed_rows_with_errors | "FailOnRejected" >> beam.ParDo(_FailOnRejectedDeadLetterDoFn())
        else:
            _remove_after_loads(result, self._scratch)
        return result
