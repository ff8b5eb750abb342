"""Streaming prediction: Kafka events → parse/validate → RunInference → prediction events.

    plan = plan_stream_predict(options)
    outputs = build_stream_predict(pipeline, plan)   # StreamPredictOutputs(records, messages, dead_letters)
    write_stream_outputs(outputs, plan)              # predictions and dead letters to their topics
    result = pipeline.run(); counts = stream_counts(result)

or all of it at once: `stream_predict(options)`.

Steps: ReadFromKafka -> ParseAndValidate (not a JSON object or a CSV line of
the spec's columns, or not matching the served model's spec -> dead letter) ->
RunInference (ServingModelHandler; a failing row -> dead letter) ->
FormatPredictions -> WriteToKafka. Each prediction event carries event_id,
key, score, class, class_id, threshold, model_version, event_ts (the Kafka
record timestamp, ms), produce_ts (when the event has it) and processing_ts
(ms). Each dead letter carries the reason, the stage and the source
`topic/partition` and offset.

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
import json
import time
from typing import Any, Callable, NamedTuple, Optional

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from beam_ml import metrics
from beam_ml.errors import DEAD_TAG, DeadLetter, UserError
from beam_ml.options import StreamPredictOptions, kafka_client_config
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
    """

    opts: StreamPredictOptions
    spec: DatasetSpec
    model_root: Optional[str]
    kafka: Any


class StreamPredictOutputs(NamedTuple):
    """records: PCollection[KafkaRecord] read; messages: (key, value) bytes of the prediction events;
    dead_letters: a tuple of PCollection[DeadLetter], never flattened (a Flatten after the unbounded
    read holds its output until the read ends on the local runner)."""

    records: beam.PCollection
    messages: beam.PCollection
    dead_letters: tuple


def plan_stream_predict(options: PipelineOptions, local: bool = False) -> StreamPredictPlan:
    """Checks the flags and resolves the served model.

    Args:
      options: parsed options with StreamPredictOptions and KafkaOptions flags.
      local: the pipeline runs on a local runner (a TestPipeline counts).

    Raises:
      UserError: a bad flag or model directory, or side-input reload on a local runner.
    """
    from beam_ml.model_store import load_model_metadata, model_root_of

    opts = options.view_as(StreamPredictOptions).validated()
    kafka = kafka_client_config(options)
    from beam_ml.runner import runs_remotely

    local = local or not runs_remotely(options)
    if opts.model_reload == "side_input" and local:
        raise UserError("--model_reload=side_input: needs a runner with streaming side inputs (e.g. "
                        "DataflowRunner); on the local runner a side input fed by an endless watch is never "
                        "delivered. Use --model_reload=poll")
    _, _, spec = load_model_metadata(opts.model_dir)
    return StreamPredictPlan(opts=opts, spec=spec, model_root=model_root_of(opts.model_dir), kafka=kafka)


def _prediction_message(element) -> tuple[bytes, bytes]:
    from beam_ml.inference import prediction_record

    ref, result = element
    event = prediction_record(ref, result, "event_id")
    event["processing_ts"] = int(time.time() * 1000)
    return str(event["event_id"]).encode("utf-8"), json.dumps(event).encode("utf-8")


def build_stream_predict(pipeline: beam.Pipeline, plan: StreamPredictPlan) -> StreamPredictOutputs:
    """Adds ReadFromKafka -> ParseAndValidate -> RunInference -> FormatPredictions (nothing is written yet)."""
    from beam_ml.inference import ParseEventsFn, RunInferenceWithDeadLetters, ServingModelHandler, WatchModelVersions
    from beam_ml.io.kafka import ReadFromKafka

    opts, spec = plan.opts, plan.spec
    poll = opts.model_reload == "poll" and plan.model_root
    handler = ServingModelHandler(opts.model_dir, min_batch_size=opts.min_batch_size,
                                  max_batch_size=opts.max_batch_size,
                                  reload_interval=opts.reload_interval if poll else None)
    model_metadata = None
    if opts.model_reload == "side_input" and plan.model_root:
        model_metadata = pipeline | "WatchModelVersions" >> WatchModelVersions(plan.model_root, opts.reload_interval)

    records = pipeline | "ReadFromKafka" >> ReadFromKafka(
        None, opts.input_topic, group_id=opts.group_id, start=opts.start,
        max_records=opts.max_records, max_read_time=opts.max_read_time, client_config=plan.kafka,
        checkpoint_interval=opts.checkpoint_interval, poll_timeout=opts.poll_timeout)
    valid = records | "ParseAndValidate" >> beam.ParDo(
        ParseEventsFn(spec, value_format=opts.value_format, validate=True)).with_outputs(DEAD_TAG, main="rows")
    scored, inference_dead = valid.rows | "RunInference" >> RunInferenceWithDeadLetters(
        handler, model_metadata, mask_columns=spec.mask_columns)
    counter = beam.metrics.Metrics.counter(metrics.PREDICT, "predictions")

    def to_message(element):
        counter.inc()
        return _prediction_message(element)

    # Formatting and encoding in one step: each step costs per-element overhead.
    messages = scored | "FormatPredictions" >> beam.Map(to_message)
    return StreamPredictOutputs(records=records, messages=messages, dead_letters=(valid[DEAD_TAG], *inference_dead))


def _dead_letter_message(dead: DeadLetter) -> tuple[bytes, bytes]:
    return f"{dead.source}/{dead.position}".encode("utf-8"), dead.to_json().encode("utf-8")


class WriteDeadLettersToKafka(beam.PTransform):
    """Counts and writes each of a tuple of DeadLetter PCollections to a topic, without a Flatten.

    The Kafka key is `<source>/<position>`, the value `DeadLetter.to_json()`.
    """

    def __init__(self, topic: str, client_config):
        super().__init__()
        self._topic = topic
        self._config = client_config

    def expand(self, parts):
        from beam_ml.inference import CountDeadLetters
        from beam_ml.io.kafka import WriteToKafka

        for i, part in enumerate(parts):
            _ = (part
                 | f"Count{i}" >> beam.ParDo(CountDeadLetters())
                 | f"Encode{i}" >> beam.Map(_dead_letter_message)
                 | f"Send{i}" >> WriteToKafka(None, self._topic, client_config=self._config))
        return beam.pvalue.PDone(parts[0].pipeline)


def write_stream_outputs(outputs: StreamPredictOutputs, plan: StreamPredictPlan) -> None:
    """Adds the sinks: prediction events to --output_topic, dead letters to --dead_letter_topic."""
    from beam_ml.io.kafka import WriteToKafka

    _ = outputs.messages | "WriteToKafka" >> WriteToKafka(None, plan.opts.output_topic, client_config=plan.kafka)
    _ = outputs.dead_letters | "WriteDeadLetters" >> WriteDeadLettersToKafka(plan.opts.dead_letter_topic, plan.kafka)


def stream_counts(result) -> dict[str, int]:
    """rows_in, predictions, dead_letters, dead_<stage> and model_reloads of a (bounded) run."""
    counts = {name: metrics.query_counter(result, metrics.PREDICT, name)
              for name in ("rows_in", "predictions", "dead_letters", "dead_parse", "dead_validate",
                           "dead_inference")}
    counts["model_reloads"] = metrics.query_counter(result, metrics.INFERENCE, "model_reloads")
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
    pipeline = test_pipeline or beam.Pipeline(options=options)
    write_stream_outputs(build_stream_predict(pipeline, plan), plan)
    opts = plan.opts
    log(f"[beam_ml] scoring {opts.input_topic} -> {opts.output_topic} (dead letters -> "
        f"{opts.dead_letter_topic}), group {opts.group_id or '(none: no commits)'}, model {opts.model_dir}, "
        f"reload {opts.model_reload}")
    from beam_ml.runner import run_pipeline

    outcome = run_pipeline(pipeline)
    if not outcome.finished:
        log(outcome.describe())
        return StreamPredictRun(counts={}, pipeline_result=outcome.result)
    result = outcome.result
    counts = stream_counts(result)
    log(f"[beam_ml] {counts['rows_in']} events in = {counts['predictions']} predictions + "
        f"{counts['dead_letters']} dead letters (parse {counts['dead_parse']}, validate "
        f"{counts['dead_validate']}, inference {counts['dead_inference']}); "
        f"{counts['model_reloads']} model reloads")
    return StreamPredictRun(counts=counts, pipeline_result=result)
