"""Batch prediction: a CSV file (or a bounded Kafka topic) scored by an exported model.

    plan = plan_batch_predict(options)              # the served version, its spec, the input files
    outputs = build_batch_predict(pipeline, plan)   # BatchPredictOutputs(predictions, dead_letters)
    write_batch_outputs(outputs, plan)              # .jsonl / .csv / a topic, and the dead letters
    result = pipeline.run(); counts = batch_counts(result, plan)

or all of it at once: `batch_predict(options)`.

CSV input is read with the spec of the served model version (`ReadCsvBatches`,
no label needed); when the file has the label column anyway it is copied to the
output, for evaluation. A Kafka input is read as a bounded snapshot of events.
Each output record names the row (the spec's key column, else the source line
or Kafka offset), its score, class, the threshold and the model version; with
--output_table they are loaded into BigQuery (file loads) and the dead letters into
its dead-letter table (`beam_ml.jobs.bigquery`). Rows
that cannot be scored go to the dead letters with the reason, and
`rows in = predictions + dead letters`.
"""
from __future__ import annotations

import csv
import dataclasses
import functools
import io
import json
from typing import Any, Callable, Iterator, NamedTuple, Optional, Sequence

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.options.pipeline_options import PipelineOptions

from beam_ml import metrics
from beam_ml.clean.layout import CleanToLayoutFn, events_schema_for_csv, raw_read_spec
from beam_ml.errors import DEAD_TAG, DeadLetter, UserError
from beam_ml.features.csv_source import FeatureCsvSource
from beam_ml.formats import event_format_of
from beam_ml.inference import (CountDeadLetters, ParseEventsFn, RunInferenceWithDeadLetters, ServingModelHandler,
                               prediction_record)
from beam_ml.io.batches import LINE_COLUMN, input_read_spec
from beam_ml.io.csv import ReadCsvBatches, expand_input
from beam_ml.io.kafka import ReadFromKafka, WriteToKafka
from beam_ml.jobs.bigquery import WritePredictionsToBigQuery, bigquery_output, prediction_table_schema
from beam_ml.jobs.features import serving_features
from beam_ml.jobs.settings import csv_dialect_flags, kafka_client_config
from beam_ml.jobs.sql import serving_cleaning
from beam_ml.model_store import load_model_metadata
from beam_ml.monitoring.beam import WatchBatchPredictions, plan_monitor
from beam_ml.options import BatchPredictOptions, CleanOptions, FeatureOptions, MonitorOptions
from beam_ml.records import RowRef
from beam_ml.runner import new_pipeline, run_pipeline
from beam_ml.spec import DatasetSpec, read_header

__all__ = ["BatchPredictPlan", "BatchPredictOutputs", "BatchPredictRun", "plan_batch_predict", "build_batch_predict",
           "write_batch_outputs", "batch_counts", "batch_predict", "batch_to_rows", "prediction_csv_header",
           "prediction_csv_line"]

_print = functools.partial(print, flush=True)


@dataclasses.dataclass
class BatchPredictPlan:
    """What a batch-prediction run serves and reads, decided before any data moves.

    Attributes:
      opts: the BatchPredictOptions view.
      version_dir: the model version that scores every row (pinned for the run).
      spec: that version's dataset spec.
      files: the CSV files matched by --input ([] for a topic).
      with_label: the CSV files have the label column (copied to the output).
      id_name: the output field naming each row: the key column, 'line' or 'event_id'.
      kafka: the Kafka client config, when a topic is read or written.
      bigquery: the --output_table destination (a beam_ml.jobs.bigquery.BigQueryOutput), or None.
    """

    opts: BatchPredictOptions
    version_dir: str
    spec: DatasetSpec
    files: list[str]
    with_label: bool
    id_name: str
    kafka: Any = None
    bigquery: Any = None
    cleaning: Any = None  # the --sql statement applied before scoring (the model's, or --sql's), or None
    features: Any = None  # the --features_sql statement (the model's, or the flag's): a FeaturePlan, or None
    monitor: Any = None  # --monitor's settings (beam_ml.monitoring.options.MonitorSettings), or None


class BatchPredictOutputs(NamedTuple):
    """predictions: PCollection[dict] (prediction records); dead_letters: PCollection[DeadLetter] (counted)."""

    predictions: beam.PCollection
    dead_letters: beam.PCollection


def plan_batch_predict(options: PipelineOptions) -> BatchPredictPlan:
    """Checks the flags and resolves the model version and the input.

    Raises:
      UserError: a bad flag, file or model directory.
    """
    opts = options.view_as(BatchPredictOptions).validated()
    kafka = kafka_client_config(options) if (opts.input_topic or opts.output_topic or opts.dead_letter_topic) \
        else None
    version_dir, _, spec = load_model_metadata(opts.model_dir)
    files, with_label, cleaning, features = [], False, None, None
    if opts.input:

        # Files are read the way the training files were (the spec's dialect), unless the flags say otherwise.
        spec = dataclasses.replace(spec, dialect=spec.dialect.replace(**csv_dialect_flags(options)))
        files = expand_input(opts.input)
        with_label = spec.label in read_header(files[0], spec.dialect)
        id_name = spec.key_column or "line"

        # kafka: lookups connect with the Kafka flags even when no topic is read or written.
        cleaning = serving_cleaning(options, spec, kafka_config=kafka or kafka_client_config(options), log=_print,
                                    events_schema=(
            events_schema_for_csv(files[0], spec.dialect, spec.na_values)
            if options.view_as(CleanOptions).sql and not spec.cleaning else None))
        if cleaning is not None:
            with_label = spec.label in cleaning.statement.columns
        features = serving_features(options, spec, log=_print)  # with a statement too: cleaned, then windowed
    else:
        id_name = "event_id"
        if spec.features or options.view_as(FeatureOptions).features_sql:
            raise UserError("--features_sql: batch_predict computes window features on --input files only; "
                            "on a topic use stream_predict")
        if spec.cleaning or options.view_as(CleanOptions).sql:
            raise UserError("--sql: batch_predict applies a statement to --input files only; a statement on "
                            "--input_topic is not supported yet")
    bigquery = None
    if opts.output_table:

        schema = prediction_table_schema(spec, id_name, with_label=with_label, kafka_input=bool(opts.input_topic))
        bigquery = bigquery_output(options, opts.output_table, opts.dead_letter_table, schema)
    monitor = plan_monitor(options.view_as(MonitorOptions).validated(), version_dir)
    if monitor is not None and not (monitor.topic or monitor.table or opts.output):
        raise UserError("--monitor_topic or --monitor_table: required with --monitor when predictions go to a table "
                        "or topic (with --output the records go to <output>.monitoring.jsonl)")
    if monitor is not None and (monitor.topic or monitor.alert_topic) and kafka is None:
        kafka = kafka_client_config(options)
    return BatchPredictPlan(opts=opts, version_dir=version_dir, spec=spec, files=files, with_label=with_label,
                            id_name=id_name, kafka=kafka, bigquery=bigquery, cleaning=cleaning, monitor=monitor,
                            features=features)


def batch_to_rows(batch: pa.RecordBatch, spec: DatasetSpec, source: str,
                  with_label: bool) -> Iterator[tuple[RowRef, dict[str, Any]]]:
    """Yields (RowRef, row) for each row of a ReadCsvBatches RecordBatch.

    Missing numerics (NaN) and categoricals ("") become None; the label (if
    read) goes into the RowRef's carried fields, the key into its id.
    """
    columns = {}
    for name in spec.numeric_columns:
        values = batch.column(name).flatten().to_numpy(zero_copy_only=False).astype(float)
        columns[name] = [None if np.isnan(v) else float(v) for v in values]
    for name in spec.categorical_columns:
        columns[name] = [v.decode("utf-8", "replace") or None for v in batch.column(name).flatten().to_pylist()]
    labels = ([v.decode("utf-8", "replace") or None for v in batch.column(spec.label).flatten().to_pylist()]
              if with_label else None)
    keys = batch.column(spec.key_column).to_pylist() if spec.key_column and \
        spec.key_column in batch.schema.names else None
    lines = batch.column(LINE_COLUMN).to_pylist()
    names = list(columns)
    for i in range(batch.num_rows):
        row = {name: columns[name][i] for name in names}
        carry = ((spec.label, labels[i]),) if labels is not None else ()
        yield RowRef(source, int(lines[i]), keys[i] if keys else None, carry), row


def build_batch_predict(pipeline: beam.Pipeline, plan: BatchPredictPlan) -> BatchPredictOutputs:
    """Adds read → validate → RunInference → format steps to `pipeline` (nothing is written yet)."""
    opts, spec = plan.opts, plan.spec
    # Pinned to the version found now: a batch run scores every row with one model.
    handler = ServingModelHandler(plan.version_dir, min_batch_size=opts.min_batch_size,
                                  max_batch_size=opts.max_batch_size)
    dead_parts = []
    if plan.files:

        row_parts = []
        # One read per file: ReadCsvBatches' batches do not name their file, and
        # a row's line number means nothing without it.
        for i, path in enumerate(plan.files):
            suffix = "" if len(plan.files) == 1 else str(i)
            if plan.features is not None:  # read as events, [clean,] add the window features, model's layout
                clean = plan.cleaning
                read_spec = input_read_spec(spec, (clean.statement.columns if clean else
                                                   read_header(path, spec.dialect)) + plan.features.names)
                read = pipeline | f"ReadCsv{suffix}" >> FeatureCsvSource(
                    path, read_spec, plan.features, clean.statement.events_schema if clean else
                    events_schema_for_csv(path, spec.dialect, spec.na_values), with_label=False, cleaning=clean)
            elif plan.cleaning is not None:  # read as events, clean with the statement, then the model's layout

                read_spec = input_read_spec(spec, plan.cleaning.statement.columns)
                raw = pipeline | f"ReadCsv{suffix}" >> ReadCsvBatches(path, raw_read_spec(
                    plan.cleaning.statement.events_schema, spec.dialect, spec.na_values), with_label=False)
                read = raw.rows | f"CleanWithSql{suffix}" >> beam.ParDo(CleanToLayoutFn(
                    plan.cleaning, read_spec, with_label=False, source=path)).with_outputs(DEAD_TAG, main="rows")
                dead_parts.append(raw[DEAD_TAG])
            else:
                read_spec = input_read_spec(spec, read_header(path, spec.dialect))
                read = pipeline | f"ReadCsv{suffix}" >> ReadCsvBatches(path, read_spec, with_label=False)
            row_parts.append(read.rows | f"ToRows{suffix}" >> beam.FlatMap(batch_to_rows, spec, path,
                                                                           plan.with_label))
            dead_parts.append(read[DEAD_TAG])
        rows = row_parts[0] if len(row_parts) == 1 else row_parts | "FlattenRows" >> beam.Flatten()
    else:

        records = pipeline | "ReadFromKafka" >> ReadFromKafka(
            None, opts.input_topic, group_id=opts.group_id, start=opts.start, bounded=True,
            client_config=plan.kafka)
        parsed = records | "ParseAndValidate" >> beam.ParDo(
            ParseEventsFn(spec, value_format=event_format_of(opts, opts.input_topic), validate=True)
        ).with_outputs(DEAD_TAG, main="rows")
        rows = parsed.rows
        dead_parts.append(parsed[DEAD_TAG])

    predictions, inference_dead = rows | "RunInference" >> RunInferenceWithDeadLetters(
        handler, mask_columns=spec.mask_columns)
    dead_parts.extend(inference_dead)
    counter = beam.metrics.Metrics.counter(metrics.PREDICT, "predictions")
    id_name = plan.id_name

    def to_record(element):
        counter.inc()
        return prediction_record(element[0], element[1], id_name)

    records_out = predictions | "FormatPredictions" >> beam.Map(to_record)
    dead = (dead_parts | "FlattenDeadLetters" >> beam.Flatten()
            | "CountDeadLetters" >> beam.ParDo(CountDeadLetters()))
    if plan.monitor is not None:  # the whole input against the training statistics (beam_ml.monitoring)
        monitor_file = f"{opts.output}.monitoring.jsonl" if opts.output and not (plan.monitor.topic or plan.monitor.table) else None
        _ = (predictions, dead) | "Monitor" >> WatchBatchPredictions(
            plan.monitor, plan.version_dir, opts.input or opts.input_topic, plan.kafka, monitor_file)
    return BatchPredictOutputs(predictions=records_out, dead_letters=dead)


def prediction_csv_header(id_name: str, label: Optional[str], classes: Sequence[str], task: str) -> list[str]:
    """The columns of a CSV predictions file."""
    header = [id_name] if id_name != "line" else []
    header += ["source", "line", "score", "class", "class_id", "threshold", "model_version"]
    if task == "multiclass":
        header += [f"p_{c}" for c in classes]
    if label:
        header.append(label)
    return header


def prediction_csv_line(record: dict, header: Sequence[str]) -> str:
    """One prediction record as a CSV line of `header`'s columns."""
    values = dict(record)
    values["line"] = record.get("position")
    first_p = header.index("model_version") + 1
    for i, p in enumerate(record.get("probabilities") or []):
        values[header[first_p + i]] = p
    out = io.StringIO()
    csv.writer(out, lineterminator="").writerow(["" if values.get(h) is None else values.get(h) for h in header])
    return out.getvalue()


def _kafka_message(record: dict, id_name: str) -> tuple[Optional[bytes], bytes]:
    key = record.get(id_name)
    return (None if key is None else str(key).encode("utf-8")), json.dumps(record).encode("utf-8")


def write_batch_outputs(outputs: BatchPredictOutputs, plan: BatchPredictPlan) -> None:
    """Adds the sinks: predictions to --output (.jsonl/.csv) or --output_topic, dead letters to a file or topic."""
    opts, spec = plan.opts, plan.spec
    if plan.bigquery is not None:

        _ = (outputs.predictions, outputs.dead_letters) | "WriteToBigQuery" >> WritePredictionsToBigQuery(plan.bigquery)
        return
    if opts.output and opts.output.lower().endswith(".csv"):
        header = prediction_csv_header(plan.id_name, spec.label if plan.with_label else None, spec.label_classes,
                                       spec.task)
        _ = (outputs.predictions | "ToCsv" >> beam.Map(prediction_csv_line, header)
             | "WritePredictions" >> beam.io.WriteToText(opts.output, shard_name_template="",
                                                         header=",".join(header)))
    elif opts.output:
        _ = (outputs.predictions | "ToJson" >> beam.Map(json.dumps)
             | "WritePredictions" >> beam.io.WriteToText(opts.output, shard_name_template=""))
    else:
        _ = (outputs.predictions | "EncodePredictions" >> beam.Map(_kafka_message, plan.id_name)
             | "WriteToKafka" >> WriteToKafka(None, opts.output_topic, client_config=plan.kafka))
    dead_json = outputs.dead_letters | "DeadLetterJson" >> beam.Map(DeadLetter.to_json)
    dead_path = opts.dead_letter_path()
    if dead_path:
        _ = dead_json | "WriteDeadLetters" >> beam.io.WriteToText(dead_path, shard_name_template="")
    else:
        _ = (dead_json | "EncodeDeadLetters" >> beam.Map(lambda s: (None, s.encode("utf-8")))
             | "WriteDeadLetters" >> WriteToKafka(None, opts.dead_letter_topic, client_config=plan.kafka))


def batch_counts(result, plan: BatchPredictPlan) -> dict[str, int]:
    """rows_in, predictions, dead_letters and dead_<stage> of a finished run."""
    q = lambda ns, name: metrics.query_counter(result, ns, name)  # noqa: E731
    counts = {"rows_in": q(metrics.READ, "lines_in") if plan.files else q(metrics.PREDICT, "rows_in"),
              "predictions": q(metrics.PREDICT, "predictions"),
              "dead_letters": q(metrics.PREDICT, "dead_letters")}
    for stage in ("parse", "validate", "inference"):
        counts[f"dead_{stage}"] = q(metrics.PREDICT, f"dead_{stage}")
    if plan.bigquery is not None:  # predictions = written + refused by the table (dead letters there)
        counts["dead_output"] = q(metrics.PREDICT, "dead_output")
        counts["written"] = counts["predictions"] - counts["dead_output"]
    if plan.cleaning is not None:
        counts["dead_sql"] = q(metrics.PREDICT, "dead_sql")
        counts["rows_filtered"] = q(metrics.SQL, "rows_filtered")
    return counts


@dataclasses.dataclass
class BatchPredictRun:
    """What a run produced: the row accounting (empty when the job only was submitted) and where outputs went."""

    counts: dict
    output: str
    dead_letter: str
    pipeline_result: object = None


def batch_predict(options: PipelineOptions, test_pipeline=None,
                  log: Callable[[str], None] = _print) -> BatchPredictRun:
    """The whole job: plan, build, write, run, count; fails when the accounting does not add up.

    Raises:
      UserError: a bad flag, file or model directory.
      RuntimeError: rows in != predictions + dead letters (a bug).
    """
    plan = plan_batch_predict(options)
    pipeline = test_pipeline or new_pipeline(options)
    write_batch_outputs(build_batch_predict(pipeline, plan), plan)
    outcome = run_pipeline(pipeline)
    opts = plan.opts
    if plan.bigquery is not None:
        output, dead_where = f"bigquery:{plan.bigquery.table}", f"bigquery:{plan.bigquery.dead_letter_table}"
    else:
        output = opts.output or f"kafka:{opts.output_topic}"
        dead_where = opts.dead_letter_path() or f"kafka:{opts.dead_letter_topic}"
    if not outcome.finished:
        log(outcome.describe())
        return BatchPredictRun(counts={}, output=output, dead_letter=dead_where, pipeline_result=outcome.result)
    result = outcome.result
    counts = batch_counts(result, plan)
    filtered = f"{counts['rows_filtered']} filtered by --sql + " if "rows_filtered" in counts else ""
    log(f"[beam_ml] {counts['rows_in']} rows in = {counts['predictions']} predictions + {filtered}"
        f"{counts['dead_letters']} dead letters (parse {counts['dead_parse']}, validate "
        f"{counts['dead_validate']}, inference {counts['dead_inference']}); model "
        f"{plan.version_dir} -> {output}, dead letters -> {dead_where}")
    if plan.bigquery is not None:
        log(f"[beam_ml] {counts['predictions']} predictions = {counts['written']} rows written + "
            f"{counts['dead_output']} refused by the table (dead letters in {plan.bigquery.dead_letter_table})")
    if counts["rows_in"] != counts["predictions"] + counts["dead_letters"] + counts.get("rows_filtered", 0):
        raise RuntimeError(f"row accounting broken: {counts}")
    return BatchPredictRun(counts=counts, output=output, dead_letter=dead_where, pipeline_result=result)
