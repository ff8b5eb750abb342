"""Streaming prediction: Kafka events → parse/validate → RunInference → prediction events.

    plan = plan_stream_predict(options)
    outputs = build_stream_predict(pipeline, plan)   # StreamPredictOutputs(records, messages, dead_letters)
    write_stream_outputs(outputs, plan)              # predictions and dead letters to their topics
    result = pipeline.run(); counts = stream_counts(result)

or all of it at once: `stream_predict(options)`.

Steps: ReadFromKafka (one list of records per poll of a partition, at most
--max_batch_size) -> ParseAndValidate (not a JSON object or a CSV line of the
spec's columns, or not matching the served model's spec -> dead letter) ->
RunInference (RowBatchModelHandler: one model call per poll; a failing row ->
dead letter) -> FormatPredictions (a list of encoded events) -> WriteToKafka,
the only step that handles events one by one. Each prediction event carries
event_id, key, score, class, class_id, threshold, model_version, event_ts
(the record's timestamp under --timestamp_policy, ms), produce_ts (when the
event has it) and processing_ts (ms). With --output_table the same fields go to a
BigQuery table (`beam_ml.jobs.bigquery.StreamPredictionsToBigQuery`: streaming
inserts inside the read's bundle) and the dead letters to its dead-letter table,
besides or instead of the topics. Each dead letter carries the reason,
the stage and the source `topic/partition` and offset. --compression_type
compresses what is written (records read may use any codec).

Two workers on the local runner: ``--direct_running_mode=multi_processing
--direct_num_workers=2`` runs the read's partitions in two worker processes
(``multi_threading`` keeps one process, so one GIL, and gains nothing here).

Delivery is at least once: offsets are committed to --group_id only after the
bundle that read them has written its predictions, so a killed run restarted
with the same group re-scores what was in flight and skips nothing.

Hot reload (--model_reload): `poll` checks the model root for a newer complete
version every --reload_interval seconds inside RunInference, which works on
every runner; `side_input` uses RunInference's model_metadata_pcoll fed by
WatchModelVersions, for runners with streaming side inputs (Dataflow) -- the
local runner cannot run it; `none` pins the version found at start.
"""
from __future__ import annotations

import dataclasses
import functools
import time
import uuid
from typing import Any, Callable, NamedTuple, Optional, Sequence

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from beam_ml import formats, metrics
from beam_ml.clean.layout import CleanEventBatchesFn
from beam_ml.errors import DEAD_TAG, DeadLetter, UserError
from beam_ml.inference import (CountDeadLetters, ParseEventBatchesFn, RowBatchModelHandler, ScoreRowBatches,
                               WatchModelVersions, prediction_fields, scored_rows)
from beam_ml.io.kafka import ReadFromKafka, WriteToKafka
from beam_ml.formats.text import dumps_event
from beam_ml.features.beam import NAMESPACE as FEATURES
from beam_ml.features.live import FeatureEventBatchesFn, Rebuild, rebuild_span_ms
from beam_ml.jobs.bigquery import StreamPredictionsToBigQuery, bigquery_output, prediction_table_schema
from beam_ml.jobs.features import serving_features
from beam_ml.jobs.settings import kafka_client_config
from beam_ml.jobs.sql import serving_cleaning
from beam_ml.model_store import load_model_metadata, model_root_of
from beam_ml.monitoring.beam import WatchPredictions, plan_monitor
from beam_ml.options import MonitorOptions, StreamPredictOptions
from beam_ml.runner import new_pipeline, run_pipeline, runs_remotely
from beam_ml.spec import DatasetSpec

__all__ = ["StreamPredictPlan", "StreamPredictOutputs", "StreamPredictRun", "plan_stream_predict",
           "build_stream_predict", "write_stream_outputs", "WriteDeadLettersToKafka", "stream_counts",
           "stream_predict"]

_print = functools.partial(print, flush=True)


@dataclasses.dataclass
class StreamPredictPlan:
    """What a streaming run serves and reads, decided before any data moves.

    Attributes:
      opts: the StreamPredictOptions view.
      spec: the dataset spec of the version served at start.
      model_root: the directory watched for new versions (None when pinned).
      kafka: the Kafka client config.
      bigquery: the --output_table destination (a beam_ml.jobs.bigquery.BigQueryOutput), or None.
    """

    opts: StreamPredictOptions
    spec: DatasetSpec
    model_root: Optional[str]
    kafka: Any
    bigquery: Any = None
    cleaning: Any = None  # the --sql statement applied before scoring (the model's, or --sql's), or None
    value_format: Any = "json"  # --value_format: a name, or a started beam_ml.formats.RecordFormat
    encode: Any = None  # --output_format's record -> bytes (None: JSON)
    monitor: Any = None  # --monitor's settings (beam_ml.monitoring.options.MonitorSettings), or None
    features: Any = None  # the --features_sql statement (the model's, or the flag's): a FeaturePlan, or None
    features_state: str = ""  # names this run's per-process window state


class StreamPredictOutputs(NamedTuple):
    """records: PCollection[list[KafkaRecord]] read, one list per poll; messages: lists of (key, value)
    bytes of the prediction events (WriteToKafka sends each); dead_letters: a tuple of
    PCollection[DeadLetter], never flattened (a Flatten after the unbounded read holds its output
    until the read ends on the local runner)."""

    records: beam.PCollection
    messages: beam.PCollection
    dead_letters: tuple
    scored: Any = None  # PCollection[ScoredBatch], what --monitor watches


def plan_stream_predict(options: PipelineOptions, local: bool = False) -> StreamPredictPlan:
    """Checks the flags and resolves the served model.

    Args:
      options: parsed options with StreamPredictOptions and KafkaOptions flags.
      local: the pipeline runs on a local runner (a TestPipeline counts).

    Raises:
      UserError: a bad flag or model directory, or side-input reload on a local runner.
    """
    opts = options.view_as(StreamPredictOptions).validated()
    kafka = kafka_client_config(options)

    local = local or not runs_remotely(options)
    if opts.model_reload == "side_input" and local:
        raise UserError("--model_reload=side_input: needs a runner with streaming side inputs (e.g. "
                        "DataflowRunner); on the local runner a side input fed by an endless watch is never "
                        "delivered. Use --model_reload=poll")
    _, _, spec = load_model_metadata(opts.model_dir)
    bigquery = None
    if opts.output_table:

        schema = prediction_table_schema(spec, "event_id", kafka_input=True, streaming=True)
        bigquery = bigquery_output(options, opts.output_table, opts.dead_letter_table, schema, streaming=True)

    cleaning = serving_cleaning(options, spec, kafka_config=kafka, log=_print)
    features = serving_features(options, spec, log=_print)
    if features is not None and cleaning is not None:
        raise UserError("--features_sql: not supported together with a --sql statement yet")
    return StreamPredictPlan(features=features, features_state=uuid.uuid4().hex if features else "",
                             opts=opts, spec=spec, model_root=model_root_of(opts.model_dir), kafka=kafka,
                             bigquery=bigquery, cleaning=cleaning,
                             value_format=formats.event_format_of(opts, opts.input_topic),
                             encode=formats.output_encoder(opts, opts.output_topic),
                             monitor=plan_monitor(options.view_as(MonitorOptions).validated(), opts.model_dir))


class _FormatPredictionsFn(beam.DoFn):
    """ScoredBatch -> one list of (key, value) prediction messages + DeadLetter(stage='inference') per failed row."""

    def __init__(self, mask_columns: Sequence[str], encode: Optional[Callable[[dict], bytes]] = None):
        self._mask_columns = tuple(mask_columns)
        self._encode = encode  # --output_format's encoder; None: JSON
        self._predictions = beam.metrics.Metrics.counter(metrics.PREDICT, "predictions")

    def setup(self):
        self._fields, self._split, self._dumps = prediction_fields, scored_rows, self._encode or dumps_event

    def process(self, scored):
        prediction_fields, dumps = self._fields, self._dumps
        good, dead = self._split(scored, self._mask_columns)
        if good:
            self._predictions.inc(len(good))
            processing_ts = int(time.time() * 1000)
            messages = []
            for ref, prediction in good:
                event = prediction_fields(ref, prediction, "event_id")
                event["processing_ts"] = processing_ts
                messages.append((str(event["event_id"]).encode("utf-8"), dumps(event)))
            yield messages
        for d in dead:
            yield beam.pvalue.TaggedOutput(DEAD_TAG, d)


def build_stream_predict(pipeline: beam.Pipeline, plan: StreamPredictPlan) -> StreamPredictOutputs:
    """Adds ReadFromKafka -> ParseAndValidate -> RunInference -> FormatPredictions (nothing is written yet).

    Every step after the read works on one poll's records at a time (a list
    per element); only WriteToKafka sends them one by one.
    """
    opts, spec = plan.opts, plan.spec
    poll = opts.model_reload == "poll" and plan.model_root
    handler = RowBatchModelHandler(opts.model_dir, reload_interval=opts.reload_interval if poll else None)
    handler.keep_rows = plan.monitor is not None
    model_metadata = None
    if opts.model_reload == "side_input" and plan.model_root:
        model_metadata = pipeline | "WatchModelVersions" >> WatchModelVersions(plan.model_root, opts.reload_interval)

    polls = pipeline | "ReadFromKafka" >> ReadFromKafka(
        None, opts.input_topic, group_id=opts.group_id, start=opts.start,
        max_records=opts.max_records, max_read_time=opts.max_read_time, client_config=plan.kafka,
        checkpoint_interval=opts.checkpoint_interval, poll_timeout=opts.poll_timeout,
        timestamp_policy=opts.timestamp_policy, batches=True,
        # One poll is one scoring batch.
        consumer_config={"max_poll_records": opts.max_batch_size})
    if plan.features is not None:  # parse, check, add each event's window features (per-process keyed state)
        # A restart with the same --group_id re-reads the last window span of what that group had scored
        # (by record timestamp) to rebuild the windows.
        window = plan.features.window
        rebuild = Rebuild(plan.kafka, opts.input_topic, opts.group_id,
                          span_ms=rebuild_span_ms(window, window.grace_ms)) if opts.group_id else None
        parse_fn = FeatureEventBatchesFn(spec, plan.features, plan.features_state, value_format=plan.value_format,
                                         rebuild=rebuild)
    elif plan.cleaning is not None:  # parse, type as events, clean with the statement, check against the spec

        parse_fn = CleanEventBatchesFn(spec, plan.cleaning, value_format=plan.value_format)
    else:
        parse_fn = ParseEventBatchesFn(spec, value_format=plan.value_format, validate=True)
    parsed = polls | "ParseAndValidate" >> beam.ParDo(parse_fn).with_outputs(DEAD_TAG, main="rows")
    scored, inference_dead = parsed.rows | "RunInference" >> ScoreRowBatches(
        handler, model_metadata, mask_columns=spec.mask_columns)
    formatted = scored | "FormatPredictions" >> beam.ParDo(
        _FormatPredictionsFn(spec.mask_columns, plan.encode)).with_outputs(DEAD_TAG, main="messages")
    return StreamPredictOutputs(records=polls, messages=formatted.messages,
                                dead_letters=(parsed[DEAD_TAG], formatted[DEAD_TAG], *inference_dead), scored=scored)


def _dead_letter_message(dead: DeadLetter) -> tuple[bytes, bytes]:
    return f"{dead.source}/{dead.position}".encode("utf-8"), dead.to_json().encode("utf-8")


class WriteDeadLettersToKafka(beam.PTransform):
    """Counts and writes each of a tuple of DeadLetter PCollections to a topic, without a Flatten.

    The Kafka key is `<source>/<position>`, the value `DeadLetter.to_json()`.
    """

    def __init__(self, topic: str, client_config, producer_config: Optional[dict] = None):
        super().__init__()
        self._topic = topic
        self._config = client_config
        self._producer_config = producer_config or {}

    def expand(self, parts):
        for i, part in enumerate(parts):
            _ = (part
                 | f"Count{i}" >> beam.ParDo(CountDeadLetters())
                 | f"Encode{i}" >> beam.Map(_dead_letter_message)
                 | f"Send{i}" >> WriteToKafka(None, self._topic, client_config=self._config,
                                              producer_config=self._producer_config))
        return beam.pvalue.PDone(parts[0].pipeline)


def write_stream_outputs(outputs: StreamPredictOutputs, plan: StreamPredictPlan) -> None:
    """Adds the sinks: prediction events to --output_topic and/or --output_table, dead letters to
    --dead_letter_topic and/or the dead-letter table."""
    producer = {"compression_type": plan.opts.compression_type} if plan.opts.compression_type != "none" else {}
    if plan.opts.output_topic:
        _ = outputs.messages | "WriteToKafka" >> WriteToKafka(None, plan.opts.output_topic, client_config=plan.kafka,
                                                              producer_config=producer)
    if plan.opts.dead_letter_topic:
        _ = outputs.dead_letters | "WriteDeadLetters" >> WriteDeadLettersToKafka(plan.opts.dead_letter_topic,
                                                                                 plan.kafka, producer)
    if plan.monitor is not None:
        positive = plan.spec.label_classes[-1] if plan.spec.task != "multiclass" else None
        _ = (outputs.scored, outputs.dead_letters) | "Monitor" >> WatchPredictions(
            plan.monitor, plan.opts.model_dir, plan.opts.input_topic, plan.kafka, positive, producer)
    if plan.bigquery is not None:  # only with --output_table: the Kafka path above is unchanged

        _ = (outputs.messages, outputs.dead_letters) | "WriteToBigQuery" >> StreamPredictionsToBigQuery(
            plan.bigquery, plan.spec.mask_columns, count_dead=not plan.opts.dead_letter_topic)


def stream_counts(result) -> dict[str, int]:
    """rows_in, predictions, dead_letters, dead_<stage> and model_reloads of a (bounded) run."""
    counts = {name: metrics.query_counter(result, metrics.PREDICT, name)
              for name in ("rows_in", "predictions", "dead_letters", "dead_parse", "dead_validate",
                           "dead_inference", "dead_output")}
    counts["model_reloads"] = metrics.query_counter(result, metrics.INFERENCE, "model_reloads")
    counts["dead_sql"] = metrics.query_counter(result, metrics.PREDICT, "dead_sql")
    counts["rows_filtered"] = metrics.query_counter(result, metrics.SQL, "rows_filtered")
    counts["dead_features"] = metrics.query_counter(result, metrics.PREDICT, "dead_features")
    counts["late_events"] = metrics.query_counter(result, FEATURES, "late_events")
    counts["rebuild_records"] = metrics.query_counter(result, FEATURES, "rebuild_records")
    counts["rebuild_skipped"] = metrics.query_counter(result, FEATURES, "rebuild_skipped")
    return counts


@dataclasses.dataclass
class StreamPredictRun:
    """Counts of a (bounded) run here (empty when the job was only submitted); an unbounded local run
    only returns when cancelled."""

    counts: dict
    pipeline_result: object = None


def stream_predict(options: PipelineOptions, test_pipeline=None,
                   log: Callable[[str], None] = _print) -> StreamPredictRun:
    """The whole job: plan, build, write, run until the stop condition (or forever), count.

    Args:
      options: parsed options with StreamPredictOptions and KafkaOptions flags.
      test_pipeline: a TestPipeline to build on instead of a new Pipeline.
      log: where the start and summary lines go.

    Raises:
      UserError: a bad flag or model directory.
    """
    plan = plan_stream_predict(options, local=test_pipeline is not None)
    pipeline = test_pipeline or new_pipeline(options)
    write_stream_outputs(build_stream_predict(pipeline, plan), plan)
    opts = plan.opts
    bq = plan.bigquery
    outs = [o for o in (opts.output_topic, bq and f"bigquery:{bq.table}") if o]
    dead_outs = [o for o in (opts.dead_letter_topic, bq and f"bigquery:{bq.dead_letter_table}") if o]
    log(f"[beam_ml] scoring {opts.input_topic} -> {' and '.join(outs)} (dead letters -> "
        f"{' and '.join(dead_outs)}), group {opts.group_id or '(none: no commits)'}, model {opts.model_dir}, "
        f"reload {opts.model_reload}")
    if plan.monitor is not None:
        m = plan.monitor
        log(f"[beam_ml] monitoring every {m.window.describe()} against the training statistics -> "
            f"{' and '.join(x for x in (m.topic, m.table and f'bigquery:{m.table.table}') if x) or '(no --monitor_topic)'}" + (f", alerts also -> {m.alert_topic}" if m.alert_topic else "")
            + (f", labels from {m.label_topic}" if m.label_topic else ""))
    outcome = run_pipeline(pipeline)
    if not outcome.finished:
        log(outcome.describe())
        return StreamPredictRun(counts={}, pipeline_result=outcome.result)
    result = outcome.result
    counts = stream_counts(result)
    filtered = f"{counts['rows_filtered']} filtered by --sql + " if plan.cleaning is not None else ""
    log(f"[beam_ml] {counts['rows_in']} events in = {counts['predictions']} predictions + {filtered}"
        f"{counts['dead_letters']} dead letters (parse {counts['dead_parse']}, validate "
        f"{counts['dead_validate']}, inference {counts['dead_inference']}); "
        f"{counts['model_reloads']} model reloads")
    if bq is not None:
        log(f"[beam_ml] {counts['predictions']} predictions = {counts['predictions'] - counts['dead_output']} rows "
            f"for {bq.table} + {counts['dead_output']} refused by it (dead letters in {bq.dead_letter_table})")
    return StreamPredictRun(counts=counts, pipeline_result=result)
