"""BigQuery wiring of the train, batch_predict and stream_predict jobs (the IO itself: beam_ml.io.bigquery).

    # train --input_table / --input_query: the spec from the table schema + a sample, then the read
    src = bigquery_input(options)                       # None without those flags
    spec = src.infer_spec(label, positive_label=..., task=..., key=..., drop=...)
    read = pipeline | "Read" >> src.source(spec)        # 'rows' RecordBatches + DEAD_TAG, as the CSV read

    # batch_predict / stream_predict --output_table: prediction rows with the fields of the
    # JSONL predictions / prediction events, and a dead-letter table (Google's columns)
    out = bigquery_output(options, spec, id_name, with_label=..., streaming=...)
    rejected = predictions | WritePredictionsToBigQuery(out)             # file loads (batch)
    _ = polls_of_messages | StreamPredictionsToBigQuery(out, dead_parts)   # streaming inserts (stream)

Production paths are Beam's own IO (ReadFromBigQuery DIRECT_READ, WriteToBigQuery
FILE_LOADS) or, for the stream, the insertAll calls of `beam_ml.ingest.sink`
(inside the read's bundle, so Kafka offsets are committed only after the rows are
in the table or its dead-letter table). `--bigquery_endpoint` (an emulator or a
private endpoint) is announced on the log by every job that uses it.

Row accounting: rows in = predictions + dead letters (parse, validate,
inference), and predictions = rows written + rows the table refused
(`dead_output`, each one a dead letter in the dead-letter table, stage 'schema'
or 'bigquery'): a refused row is never a silent loss.
"""
from __future__ import annotations

import dataclasses
import json
import logging
from typing import Optional, Sequence

import apache_beam as beam
from apache_beam.options.pipeline_options import GoogleCloudOptions, PipelineOptions

from beam_ml import metrics
from beam_ml.errors import DEAD_TAG, DeadLetter, UserError
from beam_ml.inference import CountDeadLetters
from beam_ml.ingest.sink import InsertBatch, InsertDeadLettersToBigQuery, InsertRowsToBigQuery
from beam_ml.io.bigquery import (BigQueryEndpoint, FILE_LOADS, ReadFromBigQueryBatches, WriteDeadLettersToBigQuery,
                                 WriteRowsToBigQuery, check_columns, endpoint_client, infer_spec_from_table,
                                 parse_table, schema_fields, use_endpoint, validate_row)
from beam_ml.jobs.settings import bigquery_endpoint
from beam_ml.options import BigQueryOptions
from beam_ml.records import raw_text  # prediction rows hold no feature values: nothing to mask
from beam_ml.spec import DatasetSpec

__all__ = ["BigQueryInput", "bigquery_input", "BigQueryOutput", "bigquery_output", "prediction_table_schema",
           "WritePredictionsToBigQuery", "StreamPredictionsToBigQuery", "SAMPLE_ROWS"]

_LOGGER = logging.getLogger(__name__)

# Rows sampled (like the CSV sample of infer_spec) to infer a table's or query's spec.
SAMPLE_ROWS = 2000


def _project(options: PipelineOptions) -> Optional[str]:
    return options.view_as(GoogleCloudOptions).project


# ---------------------------------------------------------------------------- input
@dataclasses.dataclass
class BigQueryInput:
    """A training input: a table or a standard-SQL query, at Google's BigQuery or at --bigquery_endpoint."""

    table: Optional[str]
    query: Optional[str]
    endpoint: Optional[BigQueryEndpoint]
    project: Optional[str]

    @property
    def flag(self) -> str:
        return "--input_table" if self.table else "--input_query"

    @property
    def name(self) -> str:
        """The dataset's name (the default output dir's): the table's name, or 'query'."""
        return parse_table(self.table, "--input_table", self.project or "_")[2] if self.table else "query"

    @property
    def described(self) -> str:
        return self.table if self.table else "query: " + " ".join(self.query.split())[:200]

    def _client(self):
        if self.endpoint is not None:
            return endpoint_client(self.endpoint.rest, self.project or "beam-ml")
        from google.cloud import bigquery  # pylint: disable=import-outside-toplevel

        return bigquery.Client(project=self.project)

    def sample(self, n: int = SAMPLE_ROWS) -> tuple[list, list[dict]]:
        """(schema fields, up to n rows) of the table or of the query's result.

        Raises:
          UserError: the table does not exist or the query fails, naming the flag.
        """
        client = self._client()
        try:
            if self.table:
                p, d, t = parse_table(self.table, "--input_table", self.project)
                table = client.get_table(f"{p}.{d}.{t}")
                rows = client.list_rows(table, max_results=n)
                return list(table.schema), [dict(r) for r in rows]
            result = client.query(self.query).result(max_results=n)
            return list(result.schema), [dict(r) for r in result]
        except UserError:
            raise
        except Exception as e:  # the service's message names the problem
            text = getattr(e, "message", None) or str(e)
            raise UserError(f"{self.flag}: {self.described} could not be read: {text}".splitlines()[0]) from None
        finally:
            client.close()

    def infer_spec(self, label: Optional[str], **kwargs) -> DatasetSpec:
        """The spec from the schema's types (BigQuery types -> roles) and a sample of rows."""
        if not label:
            raise UserError(f"--label: required with {self.flag} (the column to predict), unless --spec is given")
        schema, rows = self.sample()
        return infer_spec_from_table(schema, rows, label, self.described, **kwargs)

    def check_spec(self, spec: DatasetSpec) -> None:
        """A given --spec against a table's columns (a query's missing columns are dead letters, per row).

        Raises:
          UserError: the table lacks a column the spec reads.
        """
        if not self.table:
            return
        client = self._client()
        try:
            p, d, t = parse_table(self.table, "--input_table", self.project)
            try:
                schema = client.get_table(f"{p}.{d}.{t}").schema
            except Exception as e:  # pylint: disable=broad-except
                text = getattr(e, "message", None) or str(e)
                raise UserError(f"--input_table: {self.table} could not be read: {text}".splitlines()[0]) from None
        finally:
            client.close()
        check_columns(schema, spec, self.table)

    def source(self, spec: DatasetSpec, with_label: bool = True) -> beam.PTransform:
        """The read that replaces the CSV read: 'rows' RecordBatches and DEAD_TAG DeadLetters."""
        return _ReadInput(ReadFromBigQueryBatches(spec, table=self.table, query=self.query, with_label=with_label,
                                                  endpoint=self.endpoint, project=self.project), self.endpoint)


class _ReadInput(beam.PTransform):
    """The read, after redirecting Beam's read clients to --bigquery_endpoint (when given) for this pipeline."""

    def __init__(self, read: ReadFromBigQueryBatches, endpoint: Optional[BigQueryEndpoint]):
        super().__init__()
        self._read = read
        self._endpoint = endpoint

    def expand(self, pbegin):
        if self._endpoint is not None:
            use_endpoint(self._endpoint, options=pbegin.pipeline.options)
        return pbegin | self._read


def bigquery_input(options: PipelineOptions, table: Optional[str], query: Optional[str]) -> Optional[BigQueryInput]:
    """The --input_table / --input_query of a training run, or None; announces --bigquery_endpoint.

    Raises:
      UserError: a malformed table, an empty query, or an endpoint nothing answers at.
    """
    if not table and query is None:
        return None
    if table and query:
        raise UserError("--input_table and --input_query are exclusive: give one")
    if query is not None and not query.strip():
        raise UserError("--input_query: empty query")
    project = _project(options)
    if table:
        p, d, t = parse_table(table, "--input_table", project)
        table = f"{p}:{d}.{t}"
        project = project or p
    endpoint = bigquery_endpoint(options)
    if endpoint is not None:
        if endpoint.storage is None:
            raise UserError("--bigquery_storage_endpoint: reading through --bigquery_endpoint needs the "
                            "Storage Read API's HOST:PORT too")
        endpoint.announce("reads")
    return BigQueryInput(table=table, query=query, endpoint=endpoint, project=project)


# --------------------------------------------------------------------------- output
def prediction_table_schema(spec: DatasetSpec, id_name: str, with_label: bool = False,
                            kafka_input: bool = False, streaming: bool = False) -> dict:
    """The BigQuery schema of prediction rows: the fields of the JSONL predictions / prediction events.

    Args:
      spec: the served model's spec.
      id_name: the field naming the row (the key column, 'event_id'; 'line' rows carry none).
      with_label: the input has the label column (copied to each prediction).
      kafka_input: rows come from Kafka events (they carry key, event_ts, produce_ts).
      streaming: prediction events (they carry processing_ts).
    """
    def field(name, type_, mode="NULLABLE"):
        return {"name": name, "type": type_, "mode": mode}

    fields = [field(id_name, "STRING")] if id_name != "line" else []
    fields += [field("source", "STRING"), field("position", "INT64"), field("score", "FLOAT64"),
               field("class_id", "INT64"), field("class", "STRING"), field("threshold", "FLOAT64"),
               field("model_version", "INT64")]
    if spec.task == "multiclass":
        fields.append(field("probabilities", "FLOAT64", "REPEATED"))
    if with_label:
        fields.append(field(spec.label, "STRING"))
    if kafka_input:
        fields += [field("key", "STRING"), field("event_ts", "INT64"), field("produce_ts", "INT64")]
    if streaming:
        fields.append(field("processing_ts", "INT64"))
    names = [f["name"] for f in fields]
    if len(set(names)) != len(names):
        raise UserError(f"--output_table: the prediction fields clash ({', '.join(names)}); rename the label or key")
    return {"fields": fields}


@dataclasses.dataclass
class BigQueryOutput:
    """Where predictions and dead letters go in BigQuery."""

    table: str
    dead_letter_table: str
    schema: dict
    endpoint: Optional[BigQueryEndpoint]
    project: str
    create_disposition: str
    write_disposition: str


def _record_origin(row) -> tuple[str, Optional[int]]:
    """A prediction row's dead-letter coordinates: its input's source and position."""
    return str(row.get("source")), row.get("position")


def bigquery_output(options: PipelineOptions, table: Optional[str], dead_letter_table: Optional[str],
                    schema: dict, streaming: bool = False) -> Optional[BigQueryOutput]:
    """The --output_table (and --dead_letter_table) of a prediction run, or None; announces --bigquery_endpoint.

    Raises:
      UserError: a malformed table name, equal tables, or a disposition a stream cannot do.
    """
    bq = options.view_as(BigQueryOptions)
    if not table:
        return None
    project = _project(options)
    output = "{}:{}.{}".format(*parse_table(table, "--output_table", project))
    dead = "{}:{}.{}".format(*parse_table(dead_letter_table or f"{output}_error_records",
                                          "--dead_letter_table", project))
    if dead.lower() == output.lower():
        raise UserError("--dead_letter_table: must differ from --output_table")
    if streaming and bq.write_disposition != "WRITE_APPEND":
        raise UserError(f"--write_disposition={bq.write_disposition}: a stream only appends (WRITE_APPEND)")
    endpoint = bigquery_endpoint(options)
    if endpoint is not None:
        endpoint.announce("writes")
    return BigQueryOutput(table=output, dead_letter_table=dead, schema=schema, endpoint=endpoint,
                          project=parse_table(output)[0], create_disposition=bq.create_disposition,
                          write_disposition=bq.write_disposition)


class WritePredictionsToBigQuery(beam.PTransform):
    """Bounded runs: prediction rows -> the table by file loads; dead letters (the input's and the
    rows the table refuses) -> the dead-letter table, also by file loads.

    Takes (predictions, dead_letters); returns the refused rows' DeadLetters.
    """

    def __init__(self, out: BigQueryOutput):
        super().__init__()
        self._out = out

    def expand(self, pcolls):
        predictions, dead = pcolls
        out = self._out
        refused = (predictions
                   | "WriteRows" >> WriteRowsToBigQuery(
                       out.table, out.schema, method=FILE_LOADS, create_disposition=out.create_disposition,
                       write_disposition=out.write_disposition, endpoint=out.endpoint, origin=_record_origin,
                       project=out.project)
                   | "CountRefused" >> beam.ParDo(metrics.CountDeadLetters(metrics.PREDICT, "dead_output")))
        _ = ((dead, refused) | "AllDeadLetters" >> beam.Flatten()
             | "WriteDeadLetters" >> WriteDeadLettersToBigQuery(out.dead_letter_table, method=FILE_LOADS,
                                                                endpoint=out.endpoint, project=out.project))
        return refused


class _ToInsertBatchesFn(beam.DoFn):
    """One poll's prediction messages -> InsertBatches (one per source partition), rows checked
    against the schema first (a row that does not fit -> DeadLetter, stage 'schema')."""

    def __init__(self, table: str, schema: dict):
        self._table = table
        self._schema = schema
        self._refused = beam.metrics.Metrics.counter(metrics.PREDICT, "dead_output")
        self._dead_schema = beam.metrics.Metrics.counter(metrics.PREDICT, "dead_schema")

    def setup(self):
        self._fields = schema_fields(self._schema)

    def process(self, messages):
        by_source: dict[str, tuple[list, list, list]] = {}
        for _, value in messages:
            row = json.loads(value)
            reason = validate_row(row, self._fields)
            if reason is not None:
                self._refused.inc()
                self._dead_schema.inc()
                yield beam.pvalue.TaggedOutput(DEAD_TAG, DeadLetter(
                    str(row.get("source")), row.get("position"), f"does not fit {self._table}: {reason}",
                    raw_text(row), "schema"))
                continue
            rows, ids, positions = by_source.setdefault(str(row.get("source")), ([], [], []))
            rows.append(row)
            ids.append(f"{row.get('source')}/{row.get('position')}")
            positions.append(row.get("position"))
        for source, (rows, ids, positions) in by_source.items():
            yield InsertBatch(self._table, rows, ids, source, positions)


class StreamPredictionsToBigQuery(beam.PTransform):
    """Streams: prediction messages (lists of (key, JSON value) per poll) -> the table by streaming
    inserts (RETRY_ON_TRANSIENT_ERROR, in the read's bundle); dead letters -> the dead-letter table.

    Takes (messages, dead_letter_parts, count_dead): the dead-letter parts are written one by one (no
    Flatten after an unbounded read); with count_dead they are counted here (else a Kafka sink counts them).
    """

    def __init__(self, out: BigQueryOutput, mask_columns: Sequence[str] = (), count_dead: bool = True):
        super().__init__()
        self._out = out
        self._mask = tuple(mask_columns)
        self._count_dead = count_dead

    def expand(self, pcolls):
        messages, dead_parts = pcolls
        out = self._out
        checked = messages | "ToInsertBatches" >> beam.ParDo(
            _ToInsertBatchesFn(out.table, out.schema)).with_outputs(DEAD_TAG, main="batches")
        rejected = (checked.batches
                    | "InsertRows" >> InsertRowsToBigQuery({out.table: out.schema}, out.create_disposition,
                                                           endpoint=out.endpoint, project=out.project,
                                                           mask_columns=self._mask)
                    # their stage is 'bigquery': dead_output and dead_bigquery
                    | "CountRejected" >> beam.ParDo(metrics.CountDeadLetters(metrics.PREDICT, "dead_output")))
        parts = [(f"Dead{i}", p, self._count_dead) for i, p in enumerate(dead_parts)]
        parts += [("Unfit", checked[DEAD_TAG], False), ("Rejected", rejected, False)]
        for label, part, count in parts:
            if count:
                part = part | f"Count{label}" >> beam.ParDo(CountDeadLetters())
            _ = part | f"Write{label}" >> InsertDeadLettersToBigQuery(out.dead_letter_table, endpoint=out.endpoint,
                                                                      project=out.project)
        return beam.pvalue.PDone(messages.pipeline)
