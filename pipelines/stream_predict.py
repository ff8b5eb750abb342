"""Score a Kafka stream of JSON events with an exported model; predictions and dead letters to Kafka.

    python -m pipelines.stream_predict --model_dir=out/fraud/model --input_topic=transactions \\
        --output_topic=predictions --dead_letter_topic=transactions-dlq \\
        --bootstrap_servers=127.0.0.1:9092 --streaming
    # a bounded run (tests, demos): stop after 60 s or 10000 records per partition
    python -m pipelines.stream_predict ... --max_read_time=60 --max_records=10000

Steps: ReadFromKafka -> ParseAndValidate (not a JSON object or a CSV line of the
spec's columns, or not matching the served model's spec -> dead letter) -> RunInference (our
ServingModelHandler over tf.saved_model.load; a failing row -> dead letter) ->
FormatPredictions -> WriteToKafka. Each prediction event carries event_id, key,
score, class, class_id, threshold, model_version, event_ts (the Kafka record
timestamp, ms), produce_ts (when the event has it) and processing_ts (ms). Each
dead letter carries the reason, the stage and the source `topic/partition` and
offset.

Delivery is at least once: offsets are committed to --group_id only after the
bundle that read them has written its predictions, so a killed run restarted
with the same group re-scores what was in flight and skips nothing.

Hot reload (--model_reload): `poll` (default) checks the model root for a newer
complete version every --reload_interval seconds inside RunInference, which
works on every runner; `side_input` uses RunInference's model_metadata_pcoll
fed by WatchModelVersions, for runners with streaming side inputs (Dataflow) —
the local runner cannot run it (see beam_ml.inference); `none` pins the version
found at start.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Optional, Sequence

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from beam_ml import cli
from beam_ml.errors import UserError
from beam_ml.io.kafka_config import KafkaOptions
from beam_ml.options import parse_pipeline_options
from beam_ml.options import add_shared_argument

__all__ = ["StreamPredictOptions", "StreamPredictRun", "WriteDeadLettersToKafka", "build_stream_predict", "run",
           "main"]

DEFAULT_GROUP_ID = "beam_ml-stream-predict"
RELOAD_MODES = ("poll", "side_input", "none")
_LOCAL_RUNNERS = (None, "", "DirectRunner", "SwitchingDirectRunner", "FnApiRunner", "BundleBasedDirectRunner")


class StreamPredictOptions(PipelineOptions):
    """Flags of `python -m pipelines.stream_predict` (Kafka connection flags: KafkaOptions)."""

    @classmethod
    def _add_argparse_args(cls, parser):
        g = parser.add_argument_group("beam_ml stream prediction")
        add = lambda *a, **k: add_shared_argument(g, *a, **k)  # noqa: E731
        add("--model_dir", help="model root (latest version served), train output dir, or version dir")
        add("--input_topic", help="Kafka topic of events (JSON objects, or CSV lines: --value_format)")
        add("--value_format", default="json", choices=["json", "csv"],
            help="event values: json objects, or csv lines with the model spec's columns in order")
        add("--output_topic", help="Kafka topic for prediction events")
        add("--dead_letter_topic", help="Kafka topic for dead letters")
        # Defaults of flags other options classes share are resolved in code, so
        # whichever class registers a flag first cannot change its meaning here.
        add("--group_id", default=None, help=f"Kafka consumer group (default {DEFAULT_GROUP_ID})")
        add("--start", default=None,
            help="where to start without committed offsets: committed (default), earliest, latest")
        add("--max_records", type=int, default=None, help="stop after this many records per partition")
        add("--max_read_time", type=float, default=None, help="stop reading after this many seconds")
        add("--model_reload", default=None, help=f"hot reload: {', '.join(RELOAD_MODES)} (default poll)")
        add("--reload_interval", type=float, default=None,
            help="seconds between checks for a new model version (default 10)")
        add("--min_batch_size", type=int, default=None)
        add("--max_batch_size", type=int, default=None)
        # The local runner only moves a bundle's output on when the read hands
        # back control, so these two bound the end-to-end latency there.
        add("--checkpoint_interval", type=float, default=None,
            help="seconds a partition's read runs before handing back to the runner and committing (default 1)")
        add("--poll_timeout", type=float, default=None,
            help="seconds one Kafka poll waits for records (default 0.5)")

    def validate_stream_predict(self) -> "StreamPredictOptions":
        for flag in ("model_dir", "input_topic", "output_topic", "dead_letter_topic"):
            if not getattr(self, flag):
                raise UserError(f"--{flag}: required")
        if not os.path.exists(self.model_dir):
            raise UserError(f"--model_dir: not found: {self.model_dir}")
        self.group_id = self.group_id or DEFAULT_GROUP_ID
        self.start = self.start or "committed"
        if self.start not in ("committed", "earliest", "latest"):
            raise UserError(f"--start: expected committed, earliest or latest, got {self.start!r}")
        self.model_reload = self.model_reload or "poll"
        if self.model_reload not in RELOAD_MODES:
            raise UserError(f"--model_reload: expected one of {', '.join(RELOAD_MODES)}, got {self.model_reload!r}")
        self.reload_interval = 10.0 if self.reload_interval is None else float(self.reload_interval)
        if self.reload_interval < 0:
            raise UserError(f"--reload_interval: expected >= 0 seconds, got {self.reload_interval}")
        if self.max_records is not None and int(self.max_records) <= 0:
            raise UserError(f"--max_records: expected a positive count, got {self.max_records}")
        if self.max_read_time is not None and float(self.max_read_time) <= 0:
            raise UserError(f"--max_read_time: expected positive seconds, got {self.max_read_time}")
        self.min_batch_size = int(self.min_batch_size or 1)
        self.max_batch_size = int(self.max_batch_size or 64)
        if self.min_batch_size < 1 or self.max_batch_size < self.min_batch_size:
            raise UserError(f"--min_batch_size/--max_batch_size: expected 1 <= min <= max, "
                            f"got {self.min_batch_size}, {self.max_batch_size}")
        self.checkpoint_interval = 1.0 if self.checkpoint_interval is None else float(self.checkpoint_interval)
        self.poll_timeout = 0.5 if self.poll_timeout is None else float(self.poll_timeout)
        for flag in ("checkpoint_interval", "poll_timeout"):
            if not 0 < getattr(self, flag) <= 60:
                raise UserError(f"--{flag}: expected seconds in (0, 60], got {getattr(self, flag)}")
        return self


@dataclasses.dataclass
class StreamPredictRun:
    """Counts of a (bounded) run; a run without a stop condition only returns when cancelled."""

    counts: dict
    pipeline_result: object = None


def _prediction_event(element) -> dict:
    from beam_ml.inference import prediction_record

    ref, result = element
    event = prediction_record(ref, result, "event_id")
    event["processing_ts"] = int(time.time() * 1000)
    return event


def build_stream_predict(pipeline, options: PipelineOptions) -> dict:
    """Adds ReadFromKafka -> ParseAndValidate -> RunInference -> FormatPredictions to `pipeline`.

    Args:
      pipeline: a beam.Pipeline (or TestPipeline).
      options: parsed options with StreamPredictOptions and KafkaOptions flags
        (validated by `validate_stream_predict`).

    Returns:
      {'records': PCollection[KafkaRecord], 'messages': PCollection of
       (key, value) bytes, the JSON prediction events ready for WriteToKafka,
       'dead_letters': a tuple of PCollection[DeadLetter] (parse/validate,
       inference...)}; nothing is written yet.
    """

    from beam_ml.inference import (DEAD_TAG, PREDICT_NAMESPACE, ParseEventsFn,
                                   RunInferenceWithDeadLetters, ServingModelHandler,
                                   WatchModelVersions, load_model_metadata, model_root_of)
    from beam_ml.io.kafka import ReadFromKafka

    opts = options.view_as(StreamPredictOptions)
    kafka_config = options.view_as(KafkaOptions).client_config()
    _, _, spec = load_model_metadata(opts.model_dir)
    model_root = model_root_of(opts.model_dir)
    handler = ServingModelHandler(
        opts.model_dir, min_batch_size=opts.min_batch_size, max_batch_size=opts.max_batch_size,
        reload_interval=opts.reload_interval if opts.model_reload == "poll" and model_root else None)
    model_metadata = None
    if opts.model_reload == "side_input" and model_root:
        model_metadata = pipeline | "WatchModelVersions" >> WatchModelVersions(model_root, opts.reload_interval)

    records = pipeline | "ReadFromKafka" >> ReadFromKafka(
        None, opts.input_topic, group_id=opts.group_id, start=opts.start,
        max_records=opts.max_records, max_read_time=opts.max_read_time, client_config=kafka_config,
        checkpoint_interval=opts.checkpoint_interval, poll_timeout=opts.poll_timeout)
    valid = records | "ParseAndValidate" >> beam.ParDo(
        ParseEventsFn(spec, value_format=opts.value_format, validate=True)).with_outputs(DEAD_TAG, main="rows")
    scored, inference_dead = valid.rows | "RunInference" >> RunInferenceWithDeadLetters(
        handler, model_metadata, mask_columns=spec.mask_columns)
    counter = beam.metrics.Metrics.counter(PREDICT_NAMESPACE, "predictions")

    def to_message(element):
        counter.inc()
        return _encode_prediction(_prediction_event(element))

    # Formatting and encoding in one step: each step costs per-element overhead.
    messages = scored | "FormatPredictions" >> beam.Map(to_message)
    # A tuple, never flattened: a Flatten after the unbounded read would hold the
    # dead letters until the read ends on the local runner (see beam_ml.inference).
    dead = (valid[DEAD_TAG], *inference_dead)
    return {"records": records, "messages": messages, "dead_letters": dead}


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
                 | f"Encode{i}" >> beam.Map(_encode_dead_letter)
                 | f"Send{i}" >> WriteToKafka(None, self._topic, client_config=self._config))
        return beam.pvalue.PDone(parts[0].pipeline)


def _encode_prediction(event: dict) -> tuple:
    return str(event["event_id"]).encode("utf-8"), json.dumps(event).encode("utf-8")


def _encode_dead_letter(dead) -> tuple:
    return f"{dead.source}/{dead.position}".encode("utf-8"), dead.to_json().encode("utf-8")


def run(argv: Optional[Sequence[str]] = None, test_pipeline=None) -> StreamPredictRun:
    """Parses flags, builds the streaming pipeline, runs it until its stop condition (or forever).

    Args:
      argv: command-line flags (beam_ml's and Beam's).
      test_pipeline: a TestPipeline to build on instead of a new Pipeline.

    Returns:
      A StreamPredictRun with counts {rows_in, predictions, dead_letters, dead_<stage>}.

    Raises:
      UserError: a bad flag or model directory.
    """
    options = parse_pipeline_options(argv, StreamPredictOptions, KafkaOptions)
    opts = options.view_as(StreamPredictOptions).validate_stream_predict()
    try:
        kafka_config = options.view_as(KafkaOptions).client_config()
    except ValueError as e:
        raise UserError(str(e))
    runner = options.view_as(StandardOptions).runner
    if opts.model_reload == "side_input" and (runner in _LOCAL_RUNNERS or test_pipeline is not None):
        raise UserError("--model_reload=side_input: needs a runner with streaming side inputs (e.g. "
                        "DataflowRunner); on the local runner a side input fed by an endless watch is never "
                        "delivered. Use --model_reload=poll")

    from beam_ml.inference import PREDICT_NAMESPACE
    from beam_ml.io.kafka import WriteToKafka
    from beam_ml.metrics import query_counter

    pipeline = test_pipeline or beam.Pipeline(options=options)
    built = build_stream_predict(pipeline, options)
    _ = built["messages"] | "WriteToKafka" >> WriteToKafka(None, opts.output_topic, client_config=kafka_config)
    _ = built["dead_letters"] | "WriteDeadLetters" >> WriteDeadLettersToKafka(opts.dead_letter_topic, kafka_config)
    print(f"[beam_ml] scoring {opts.input_topic} -> {opts.output_topic} (dead letters -> "
          f"{opts.dead_letter_topic}), group {opts.group_id}, model {opts.model_dir}, "
          f"reload {opts.model_reload}", flush=True)
    result = pipeline.run()
    result.wait_until_finish()
    counts = {name: query_counter(result, PREDICT_NAMESPACE, name)
              for name in ("rows_in", "predictions", "dead_letters", "dead_parse", "dead_validate",
                           "dead_inference")}
    counts["model_reloads"] = query_counter(result, "beam_ml.inference", "model_reloads")
    print(f"[beam_ml] {counts['rows_in']} events in = {counts['predictions']} predictions + "
          f"{counts['dead_letters']} dead letters (parse {counts['dead_parse']}, validate "
          f"{counts['dead_validate']}, inference {counts['dead_inference']}); "
          f"{counts['model_reloads']} model reloads", flush=True)
    return StreamPredictRun(counts=counts, pipeline_result=result)


def main(argv: Optional[Sequence[str]] = None) -> None:
    cli.main(run, argv)


if __name__ == "__main__":
    main()
