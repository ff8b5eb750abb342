"""The Kafka -> BigQuery ingestion job: Google's Kafka-to-BigQuery template, in Python Beam.

    plan = plan_kafka_to_bigquery(options)             # topics, columns, statement, tables: checked at launch
    outputs = build_kafka_to_bigquery(pipeline, plan)  # IngestOutputs(records, batches, dead_letters)
    write_kafka_to_bigquery(outputs, plan)             # rows and dead letters to their tables
    result = pipeline.run(); counts = ingest_counts(result, plan.bounded)

or all of it at once: `kafka_to_bigquery(options)`.

Steps: ReadFromKafka (every partition of every --input_topic) -> BatchRecords ->
ToTableRows (decode each value: JSON object, CSV line or Avro binary; type
the records into a flat Arrow table, "events as the reader typed it"; run the
--sql statement on it, if any; add the Kafka metadata columns, if asked; cut
the rows into insert requests) -> InsertRows (streaming inserts) and, from
each step that can refuse a record, WriteDeadLetters / WriteRejectedRows into
the dead-letter table (Google's columns plus stage, source_topic, partition,
offset). A bounded run (--bounded: a snapshot up to the end offsets found at
launch) loads the rows and the dead letters with BigQuery file loads instead.

Where the columns come from, in order: --avro_schema (its record fields),
--spec or --model_dir (the dataset spec: numeric -> FLOAT64, other roles ->
STRING), else a sample of the topic(s) (--schema_sample records from their
start). With --sql the statement's output columns are the table's.

Accounting, from counters: records in = rows written + dead letters (+ rows
the statement filtered out with WHERE or an INNER JOIN). A bounded run or a
stream stopped by --max_read_time / --max_records prints it and fails if it
does not add up; a job submitted to Dataflow reports it on its job page.

Delivery is at least once. A stream inserts each bundle's rows and dead
letters before the bundle ends, and the read commits the bundle's offsets to
--group_id only after that (beam_ml.ingest.sink). A bounded run commits the
offsets it read once the whole run has succeeded (here; a bounded run
submitted to Dataflow commits nothing). A killed run restarted with the same
group re-reads what was in flight (BigQuery's insert ids de-duplicate a
re-read within about a minute, best effort) and loses nothing.
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import time
from typing import Any, Callable, Iterator, NamedTuple, Optional, Sequence

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import GoogleCloudOptions, PipelineOptions, StandardOptions
from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata

from beam_ml import metrics
from beam_ml.clean import ApplySqlFn, prepare_cleaning
from beam_ml.errors import DEAD_TAG, DeadLetter, UserError
from beam_ml.formats import RecordFormat, format_from_flags
from beam_ml.ingest.sink import (InsertBatch, InsertDeadLettersToBigQuery, InsertRowsToBigQuery, bigquery_client,
                                 ensure_table, table_differences)
from beam_ml.ingest.values import (METADATA_SCHEMA, IngestSchema, bigquery_schema,
                                   infer_schema, json_values_to_table, records_to_table, spec_schema,
                                   table_to_rows, value_text)
from beam_ml.io.batches import LINE_COLUMN
from beam_ml.io.bigquery import (BigQueryEndpoint, DEAD_LETTER_SCHEMA, FILE_LOADS, WriteDeadLettersToBigQuery,
                                 WriteRowsToBigQuery, parse_table)
from beam_ml.io.kafka import ReadFromKafka
from beam_ml.io.kafka.topic_batches import sample_topic
from beam_ml.jobs.settings import bigquery_endpoint, kafka_client_config
from beam_ml.model_store import load_model_metadata
from beam_ml.options import BigQueryOptions, CleanOptions, KafkaToBigQueryOptions
from beam_ml.records import raw_text
from beam_ml.runner import new_pipeline, run_pipeline, runs_remotely
from beam_ml.spec import DatasetSpec

__all__ = ["IngestPlan", "IngestOutputs", "IngestRun", "plan_kafka_to_bigquery", "build_kafka_to_bigquery",
           "write_kafka_to_bigquery", "ingest_counts", "snapshot_offsets", "commit_offsets", "kafka_to_bigquery"]

_LOGGER = logging.getLogger(__name__)
_print = functools.partial(print, flush=True)

# The column that names each row's source (topic/partition) for the statement's dead letters.
_SOURCE_COLUMN = "__source__"
_OFFSETS = "offsets/"


@dataclasses.dataclass
class IngestPlan:
    """What an ingestion run reads and writes, decided before any data moves.

    Attributes:
      opts: the KafkaToBigQueryOptions view.
      kafka: the Kafka client config.
      decoder: how each value becomes a record.
      schema: the records' columns ("events as the reader typed them").
      cleaning: the prepared --sql statement and its lookups, or None.
      row_schema: the written rows' columns (the statement's output, plus Kafka metadata).
      table_schema: the output table's BigQuery schema, made from `row_schema`.
      output_table, dead_letter_table: ``project:dataset.table``.
      endpoint: --bigquery_endpoint, or None for Google's BigQuery.
      create_disposition, write_disposition: the BigQuery flags.
      local: the job runs here (its tables were prepared at launch; counts are read at the end).
      notes: what the launch found worth telling (e.g. an existing table's other column types).
    """

    opts: KafkaToBigQueryOptions
    kafka: Any
    decoder: RecordFormat
    schema: IngestSchema
    cleaning: Any
    row_schema: pa.Schema
    table_schema: dict
    output_table: str
    dead_letter_table: str
    endpoint: Optional[BigQueryEndpoint]
    create_disposition: str
    write_disposition: str
    local: bool
    notes: list = dataclasses.field(default_factory=list)

    @property
    def topics(self) -> list[str]:
        return self.opts.topics

    @property
    def bounded(self) -> bool:
        return bool(self.opts.bounded)

    @property
    def project(self) -> str:
        return parse_table(self.output_table)[0]


class IngestOutputs(NamedTuple):
    """records: PCollection[KafkaRecord] read; batches: PCollection[InsertBatch] of rows for the output
    table; dead_letters: PCollection[DeadLetter] of records that could not be typed or cleaned."""

    records: beam.PCollection
    batches: beam.PCollection
    dead_letters: beam.PCollection


def _sample(kafka, topics: Sequence[str], n: int, fmt: RecordFormat) -> list[dict]:
    out: list[dict] = []
    for topic in topics:
        try:
            out.extend(sample_topic(kafka.client_kwargs(), topic, n, fmt=fmt))
        except KafkaError as e:
            raise UserError(f"--bootstrap_servers: cannot read topic {topic} at {kafka.bootstrap_servers} to infer "
                            f"its columns ({type(e).__name__}: {e}); give --spec, --model_dir or --avro_schema") \
                from None
    return out


def _columns(opts: KafkaToBigQueryOptions, kafka) -> tuple[IngestSchema, RecordFormat]:
    """The records' columns and decoder, from --spec / --model_dir, the Avro schema (a file or the registry),
    or a sample."""
    if opts.spec or opts.model_dir:
        if opts.spec:

            spec, origin = DatasetSpec.load(opts.spec), f"--spec {opts.spec}"
        else:

            version_dir, _, spec = load_model_metadata(opts.model_dir)
            origin = f"the spec of model {version_dir}"
        return spec_schema(spec, origin), format_from_flags(opts, opts.topics[0], spec.column_names)
    fmt = format_from_flags(opts, opts.topics[0])
    columns = fmt.arrow_schema()
    if columns is not None:
        origin = f"--avro_schema {opts.avro_schema}" if opts.avro_schema else \
            f"the schema registry's {opts.topics[0]}-value"
        return IngestSchema(columns, origin=origin), fmt
    sample = _sample(kafka, opts.topics, opts.schema_sample, fmt)
    if not sample:
        raise UserError(f"--input_topic: {', '.join(opts.topics)} holds no JSON object to infer the table's columns "
                        "from yet; give --spec, --model_dir or --avro_schema")
    schema = infer_schema(sample, f"inferred from {len(sample)} records of {', '.join(opts.topics)}")
    return schema, fmt


def _prepare_tables(plan: IngestPlan) -> None:
    """Creates (or checks) both tables before data moves, so a missing dataset fails at launch."""
    client = bigquery_client(plan.endpoint, plan.project)
    try:
        table = ensure_table(client, plan.output_table, plan.table_schema, plan.create_disposition)
        notes = table_differences(table.schema, plan.table_schema)
        plan.notes.extend(f"{plan.output_table} exists with other types: {n} (BigQuery converts each value or "
                          "refuses the row: a dead letter)" for n in notes)
        dead = ensure_table(client, plan.dead_letter_table, DEAD_LETTER_SCHEMA, "CREATE_IF_NEEDED",
                            "--dead_letter_table")
        table_differences(dead.schema, DEAD_LETTER_SCHEMA, "--dead_letter_table")
    finally:
        client.close()


def plan_kafka_to_bigquery(options: PipelineOptions, local: bool = False) -> IngestPlan:
    """Checks every flag, finds the columns, prepares the statement and (for a local run) the tables.

    Args:
      options: parsed options with KafkaToBigQueryOptions, KafkaOptions, BigQueryOptions and CleanOptions flags.
      local: the pipeline runs on a local runner (a TestPipeline counts).

    Raises:
      UserError: a bad flag, file, schema or statement, naming the flag.
    """
    opts = options.view_as(KafkaToBigQueryOptions).validated()
    bq = options.view_as(BigQueryOptions)
    kafka = kafka_client_config(options)
    endpoint = bigquery_endpoint(options)
    if endpoint is not None:
        endpoint.check()
    default_project = options.view_as(GoogleCloudOptions).project
    output = "{}:{}.{}".format(*parse_table(opts.output_table, "--output_table", default_project))
    dead = "{}:{}.{}".format(*parse_table(opts.dead_letter_table or f"{output}_error_records",
                                          "--dead_letter_table", default_project))
    if dead.lower() == output.lower():
        raise UserError("--dead_letter_table: must differ from --output_table")
    if not opts.bounded and bq.write_disposition != "WRITE_APPEND":
        raise UserError(f"--write_disposition={bq.write_disposition}: a stream only appends; use --bounded to load "
                        "a snapshot of the topic with file loads")
    schema, decoder = _columns(opts, kafka)
    if not schema.names:
        raise UserError(f"no columns: {schema.origin} names no field")
    if LINE_COLUMN in schema.names or _SOURCE_COLUMN in schema.names:
        raise UserError(f"the records have a field named {LINE_COLUMN} or {_SOURCE_COLUMN}, which beam_ml reserves")
    events = schema.schema.append(pa.field(LINE_COLUMN, pa.int64()))
    lookup_options = {"client_config": kafka}
    if endpoint is not None:
        lookup_options["bigquery_endpoint"] = endpoint  # --lookup=NAME=bq:TABLE reads there too
    cleaning = prepare_cleaning(options.view_as(CleanOptions), events, position_column=LINE_COLUMN,
                                **lookup_options)
    rows = cleaning.statement.output_schema.remove(cleaning.statement.output_schema.get_field_index(LINE_COLUMN)) \
        if cleaning is not None else schema.schema
    if opts.with_kafka_metadata:
        clash = sorted({n.lower() for n in rows.names} & {n for n in METADATA_SCHEMA.names})
        if clash:
            raise UserError(f"--with_kafka_metadata: the rows already have column(s) {', '.join(clash)}; rename them "
                            "(with --sql) or leave the metadata out")
        for f in METADATA_SCHEMA:
            rows = rows.append(f)
    table_schema = bigquery_schema(rows, "--sql" if cleaning is not None else "--output_table")
    plan = IngestPlan(opts=opts, kafka=kafka, decoder=decoder, schema=schema, cleaning=cleaning, row_schema=rows,
                      table_schema=table_schema, output_table=output, dead_letter_table=dead, endpoint=endpoint,
                      create_disposition=bq.create_disposition, write_disposition=bq.write_disposition,
                      local=local or not runs_remotely(options))
    if plan.local:
        _prepare_tables(plan)
    return plan


# --------------------------------------------------------------------------- build
def _key_text(key: Optional[bytes]) -> Optional[str]:
    return None if key is None else bytes(key).decode("utf-8", errors="replace")


class _ToTableRowsFn(beam.DoFn):
    """A list of KafkaRecords -> InsertBatches (main) + DeadLetters (DEAD_TAG): parse, schema and sql stages."""

    def __init__(self, plan: IngestPlan):
        self._decoder = plan.decoder
        self._schema = plan.schema
        self._table = plan.output_table
        self._batch_size = plan.opts.insert_batch_size
        self._metadata = bool(plan.opts.with_kafka_metadata)
        self._mask = list(plan.schema.mask_columns)
        self._sql = None
        self._sql_schema = None
        if plan.cleaning is not None:

            c = plan.cleaning
            self._sql = ApplySqlFn(c.statement, c.lookups, source="", source_column=_SOURCE_COLUMN,
                                   refresh_seconds=c.refresh_seconds, mask_columns=self._mask, clock=time.monotonic)
            self._sql_schema = c.statement.output_schema
        self._records_in = beam.metrics.Metrics.counter(metrics.INGEST, "records_in")
        self._rows_out = beam.metrics.Metrics.counter(metrics.INGEST, "rows_out")

    def setup(self):
        if self._sql is not None:
            self._sql.setup()

    def teardown(self):
        if self._sql is not None:
            self._sql.teardown()

    def process(self, records: Sequence[Any]):
        groups: dict[tuple[str, int], list] = {}
        for r in records:
            groups.setdefault((r.topic, r.partition), []).append(r)
        for (topic, partition), group in groups.items():
            yield from self._partition(topic, partition, group)

    def _dead(self, source: str, record, reason: str, raw: str, stage: str):
        return beam.pvalue.TaggedOutput(DEAD_TAG, DeadLetter(source, int(record.offset), reason, raw, stage))

    def _partition(self, topic: str, partition: int, group: list) -> Iterator[Any]:
        source = f"{topic}/{partition}"
        self._records_in.inc(len(group))
        beam.metrics.Metrics.distribution(metrics.INGEST, f"{_OFFSETS}{source}").update(
            max(int(r.offset) for r in group))
        table = None
        if self._decoder.name == "json":
            table = json_values_to_table([r.value for r in group], self._schema)
        if table is not None:
            offsets = pa.array([int(r.offset) for r in group], pa.int64())
        else:  # some value needs a closer look: decode and type each one
            decoded, index = [], []
            for j, r in enumerate(group):
                try:
                    decoded.append(self._decoder.decode(r.value))
                    index.append(j)
                except ValueError as e:
                    yield self._dead(source, r, str(e), value_text(r.value), "parse")
            if not decoded:
                return
            table, kept, errors = records_to_table(decoded, self._schema)
            for i, reason in errors:
                record = group[index[i]]
                raw = raw_text(decoded[i], self._mask) if self._mask else value_text(record.value)
                yield self._dead(source, record, reason, raw, "schema")
            offsets = pa.array([int(group[index[k]].offset) for k in kept], pa.int64())
        by_offset = {int(r.offset): r for r in group}
        table = table.append_column(LINE_COLUMN, offsets)
        if self._sql is not None and table.num_rows:
            table = yield from self._clean(table, source)
        if self._metadata:
            table = self._with_metadata(table, topic, partition, by_offset)
        rows, positions, bad = table_to_rows(table, LINE_COLUMN)
        for i, reason in bad:
            offset = int(table.column(LINE_COLUMN)[i].as_py())
            row = {k: v for k, v in table.slice(i, 1).to_pylist()[0].items() if k != LINE_COLUMN}
            yield self._dead(source, by_offset[offset], reason, raw_text(row, self._mask), "schema")
        self._rows_out.inc(len(rows))
        for start in range(0, len(rows), self._batch_size):
            chunk = [int(p) for p in positions[start:start + self._batch_size]]
            yield InsertBatch(self._table, rows[start:start + self._batch_size], [f"{source}/{p}" for p in chunk],
                              source, chunk)

    def _clean(self, table: pa.Table, source: str):
        """Runs the statement (a generator: yields its dead letters, returns the output table)."""
        batch = table.append_column(_SOURCE_COLUMN, pa.array([source] * table.num_rows, pa.string()))
        out = []
        for item in self._sql.process(batch):
            if isinstance(item, beam.pvalue.TaggedOutput):
                yield item
            else:
                out.append(item)
        return pa.Table.from_batches(out, schema=out[0].schema if out else self._sql_schema)

    def _with_metadata(self, table: pa.Table, topic: str, partition: int, by_offset: dict) -> pa.Table:
        offsets = table.column(LINE_COLUMN).to_numpy(zero_copy_only=False)
        records = [by_offset[int(o)] for o in offsets]
        n = len(records)
        columns = {
            "event_ts": pa.array([int(r.timestamp) for r in records], pa.int64()).cast(METADATA_SCHEMA.field(
                "event_ts").type),
            "topic": pa.array([topic] * n, pa.string()),
            "partition": pa.array(np.full(n, partition, dtype=np.int64)),
            "offset": pa.array(offsets.astype(np.int64)),
            "key": pa.array([_key_text(r.key) for r in records], pa.string()),
        }
        for name, column in columns.items():
            table = table.append_column(METADATA_SCHEMA.field(name), column)
        return table


def build_kafka_to_bigquery(pipeline: beam.Pipeline, plan: IngestPlan) -> IngestOutputs:
    """Adds ReadFromKafka -> BatchRecords -> ToTableRows to `pipeline` (nothing is written yet)."""
    opts = plan.opts
    records = pipeline | "ReadFromKafka" >> ReadFromKafka(
        None, plan.topics, group_id=opts.group_id, start=opts.start, bounded=plan.bounded,
        max_records=opts.max_records, max_read_time=opts.max_read_time, client_config=plan.kafka,
        # A bounded run commits once everything is loaded (kafka_to_bigquery), not per bundle.
        commit_offsets=False if plan.bounded else None,
        checkpoint_interval=opts.checkpoint_interval, poll_timeout=opts.poll_timeout)
    # Within a bundle (no state, no timers): the batch is flushed when the read's bundle ends.
    # One insert request's worth of records per batch (so requests are full, not 500 + a tail).
    batches = records | "BatchRecords" >> beam.BatchElements(min_batch_size=opts.insert_batch_size,
                                                             max_batch_size=opts.insert_batch_size)
    typed = batches | "ToTableRows" >> beam.ParDo(_ToTableRowsFn(plan)).with_outputs(DEAD_TAG, main="rows")
    return IngestOutputs(records=records, batches=typed.rows, dead_letters=typed[DEAD_TAG])


def write_kafka_to_bigquery(outputs: IngestOutputs, plan: IngestPlan) -> None:
    """Adds the writes: streaming inserts in the read's bundle, or file loads for a bounded run."""
    endpoint, project = plan.endpoint, plan.project
    if not plan.bounded:
        _ = outputs.dead_letters | "WriteDeadLetters" >> InsertDeadLettersToBigQuery(
            plan.dead_letter_table, endpoint=endpoint, project=project)
        rejected = outputs.batches | "InsertRows" >> InsertRowsToBigQuery(
            {plan.output_table: plan.table_schema}, plan.create_disposition, endpoint=endpoint, project=project,
            mask_columns=plan.schema.mask_columns)
        # No Flatten of the two: after an unbounded read the local runner would hold its output.
        _ = rejected | "WriteRejectedRows" >> InsertDeadLettersToBigQuery(
            plan.dead_letter_table, endpoint=endpoint, project=project)
        return

    rows = outputs.batches | "BatchesToRows" >> beam.FlatMap(lambda batch: batch.rows)
    # Rows were typed and checked by ToTableRows (vectorized), so the writer does not check them again.
    load_dead = rows | "LoadRows" >> WriteRowsToBigQuery(
        plan.output_table, plan.table_schema, method=FILE_LOADS, create_disposition=plan.create_disposition,
        write_disposition=plan.write_disposition, endpoint=endpoint, validate=False, project=project)
    _ = ((outputs.dead_letters, load_dead) | "FlattenDeadLetters" >> beam.Flatten()
         | "CountDeadLetters" >> beam.ParDo(metrics.CountDeadLetters(metrics.INGEST))
         | "LoadDeadLetters" >> WriteDeadLettersToBigQuery(plan.dead_letter_table, from_kafka=True,
                                                           method=FILE_LOADS, endpoint=endpoint, project=project))


# ----------------------------------------------------------------------------- run
_STAGES = ("parse", "schema", "sql", "bigquery")


def ingest_counts(result, bounded: bool) -> dict[str, int]:
    """records_in, rows_written, dead_letters, dead_<stage>, rows_filtered of a run that finished here."""
    q = functools.partial(metrics.query_counter, result)
    counts = {"records_in": q(metrics.INGEST, "records_in"), "rows_out": q(metrics.INGEST, "rows_out"),
              "dead_letters": q(metrics.INGEST, "dead_letters"), "rows_filtered": q(metrics.SQL, "rows_filtered")}
    # File loads are all or nothing (a failed load fails the run), so every row handed to them is written.
    counts["rows_written"] = counts["rows_out"] if bounded else q(metrics.INGEST, "rows_written")
    for stage in _STAGES:
        counts[f"dead_{stage}"] = q(metrics.INGEST, f"dead_{stage}")
    return counts


def snapshot_offsets(result) -> dict[tuple[str, int], int]:
    """(topic, partition) -> the offset after the last record a finished run read (what to commit)."""
    found = result.metrics().query(MetricsFilter().with_namespace(metrics.INGEST))["distributions"]
    out: dict[tuple[str, int], int] = {}
    for r in found:
        name = r.key.metric.name
        if not name.startswith(_OFFSETS):
            continue
        value = r.committed if r.committed is not None else r.attempted
        if value is None or value.count == 0:
            continue
        topic, _, partition = name[len(_OFFSETS):].rpartition("/")
        key = (topic, int(partition))
        out[key] = max(out.get(key, 0), int(value.max) + 1)
    return out


def commit_offsets(kafka, group_id: str, offsets: dict[tuple[str, int], int]) -> dict[tuple[str, int], int]:
    """Commits each partition's offset to `group_id`, never moving one backwards; returns what was committed."""
    if not offsets:
        return {}
    consumer = KafkaConsumer(**kafka.client_kwargs(), group_id=group_id, enable_auto_commit=False)
    try:
        todo = {}
        for (topic, partition), offset in offsets.items():
            tp = TopicPartition(topic, partition)
            if (consumer.committed(tp) or 0) < offset:
                todo[tp] = OffsetAndMetadata(offset, "", -1)
        if todo:
            consumer.commit(todo)
        return {(tp.topic, tp.partition): om.offset for tp, om in todo.items()}
    finally:
        consumer.close(autocommit=False)


@dataclasses.dataclass
class IngestRun:
    """Counts of a run that finished here (empty when the job was submitted elsewhere), and offsets committed
    at the end of a bounded run."""

    counts: dict
    committed: dict = dataclasses.field(default_factory=dict)
    pipeline_result: object = None


def _start_line(plan: IngestPlan) -> str:
    opts = plan.opts
    mode = "bounded snapshot, file loads" if plan.bounded else "stream, streaming inserts"
    where = f"the endpoint {plan.endpoint.rest} (--bigquery_endpoint)" if plan.endpoint else "Google's BigQuery"
    sql = f", cleaned by --sql ({len(plan.cleaning.lookups)} lookups)" if plan.cleaning is not None else ""
    return (f"[beam_ml] {', '.join(plan.topics)} -> {plan.output_table} ({mode}{sql}), dead letters -> "
            f"{plan.dead_letter_table}, on {where}; {len(plan.row_schema)} columns ({plan.schema.origin}); "
            f"group {opts.group_id or '(none: no commits)'}")


def kafka_to_bigquery(options: PipelineOptions, test_pipeline=None,
                      log: Callable[[str], None] = _print) -> IngestRun:
    """The whole job: plan, build, write, run until the read ends (or forever), count, commit.

    Args:
      options: parsed options (see plan_kafka_to_bigquery).
      test_pipeline: a TestPipeline to build on instead of a new Pipeline.
      log: where the start and summary lines go.

    Raises:
      UserError: a bad flag, file, schema or statement.
      RuntimeError: records in != rows written + dead letters + filtered (a bug).
    """
    plan = plan_kafka_to_bigquery(options, local=test_pipeline is not None)
    if not plan.bounded:
        # An endless read: Dataflow must run it as a streaming job.
        options.view_as(StandardOptions).streaming = True
    pipeline = test_pipeline or new_pipeline(options)
    write_kafka_to_bigquery(build_kafka_to_bigquery(pipeline, plan), plan)
    log(_start_line(plan))
    for note in plan.notes:
        log(f"[beam_ml] note: {note}")
    outcome = run_pipeline(pipeline)
    if not outcome.finished:
        log(outcome.describe())
        return IngestRun(counts={}, pipeline_result=outcome.result)
    result = outcome.result
    counts = ingest_counts(result, plan.bounded)
    committed = {}
    if plan.bounded and plan.opts.group_id:
        committed = commit_offsets(plan.kafka, plan.opts.group_id, snapshot_offsets(result))
    stages = ", ".join(f"{s} {counts[f'dead_{s}']}" for s in _STAGES)
    filtered = f" + {counts['rows_filtered']} filtered by --sql" if plan.cleaning is not None else ""
    log(f"[beam_ml] {counts['records_in']} records in = {counts['rows_written']} rows written to "
        f"{plan.output_table} + {counts['dead_letters']} dead letters ({stages}){filtered}"
        + (f"; committed {len(committed)} partition offset(s) to {plan.opts.group_id}" if committed else ""))
    if counts["records_in"] != counts["rows_written"] + counts["dead_letters"] + counts["rows_filtered"]:
        raise RuntimeError(f"record accounting broken: {counts}")
    return IngestRun(counts=counts, committed=committed, pipeline_result=result)
