"""The training job: input and spec → Beam preprocessing → Keras training → exported model.

    options = parse_pipeline_options(argv, TrainOptions, KafkaOptions)
    plan = plan_training(options)                   # flags, input, spec: every mistake fails here, fast
    outputs = build_preprocess(pipeline, plan.spec, plan.preprocess_config, source=plan.source())
    result = pipeline.run(); result.wait_until_finish()
    run = finish_training(plan, result)             # counts and checks, then Keras, export, report

or all of it at once: `train(options)`. The Beam part (read, split, analyze,
transform, write TFRecords) runs on the runner the options choose; Keras
training then runs in this process over the TFRecords.

Artifacts under the output dir: spec.json, counts.json, transform_fn/,
transformed_metadata/, data/, dead_letter/, model/<version>/, metrics.json,
report.md, learning_curves.png, confusion_matrix.png, checkpoints/, logs/.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import shutil
import time
from typing import Any, Callable, Optional

from apache_beam.options.pipeline_options import PipelineOptions

from beam_ml import metrics
from beam_ml.errors import UserError
from beam_ml.options import TrainOptions, kafka_client_config
from beam_ml.spec import DatasetSpec

__all__ = ["TrainPlan", "TrainRun", "plan_training", "finish_training", "train", "TOPIC_ENVELOPE_FIELDS"]

# Fields pipelines.produce adds to every event: metadata, never features.
TOPIC_ENVELOPE_FIELDS = ("produce_ts", "event_ts")

_print = functools.partial(print, flush=True)

# Outputs of an earlier run that a new run replaces wholesale (model versions accumulate).
_STALE_OUTPUTS = ("data", "transform_fn", "transformed_metadata", "dead_letter", "tmp")


@dataclasses.dataclass
class TrainPlan:
    """Everything decided before any data moves.

    Attributes:
      options: the pipeline options (runner flags included).
      opts: the TrainOptions view.
      spec: the dataset spec (loaded or inferred), already saved to spec_path.
      name: the dataset's name (a bundled dataset, the input file's stem or the topic).
      input_pattern: the CSV path or glob (None for a topic).
      output_dir: where artifacts go.
      kafka: the Kafka client config when training from a topic.
    """

    options: PipelineOptions
    opts: TrainOptions
    spec: DatasetSpec
    name: str
    input_pattern: Optional[str]
    output_dir: str
    spec_path: str
    kafka: Any = None

    @property
    def preprocess_config(self):
        from beam_ml.preprocess import PreprocessConfig

        return PreprocessConfig(input_pattern=self.input_pattern, output_dir=self.output_dir,
                                eval_fraction=self.opts.eval_fraction, split_seed=self.opts.split_seed)

    def source(self):
        """The PTransform reading the input when it is not a CSV file (a topic snapshot), else None."""
        if self.kafka is None:
            return None
        from beam_ml.io.kafka.topic_batches import ReadTopicSnapshot

        return ReadTopicSnapshot(self.kafka, self.opts.input_topic, self.spec)


@dataclasses.dataclass
class TrainRun:
    """What a run produced (a PipelineResult alone cannot carry the training outcome)."""

    output_dir: str
    counts: dict
    pipeline_result: object = None
    metrics: Optional[dict] = None
    spec_path: str = ""


def _sample_topic_csv(kafka, topic: str, output_dir: str) -> tuple[str, list[str]]:
    """Samples the topic into <output_dir>/topic_sample.csv for spec inference.

    Returns:
      (the sample CSV's path, the TOPIC_ENVELOPE_FIELDS present in the events).
    """
    from beam_ml.io.kafka.topic_batches import sample_topic, write_sample_csv

    records = sample_topic(kafka.client_kwargs(), topic)
    if not records:
        raise UserError(f"--input_topic: no JSON events could be read from topic '{topic}' "
                        f"at {kafka.bootstrap_servers}")
    os.makedirs(output_dir, exist_ok=True)
    envelope = [f for f in TOPIC_ENVELOPE_FIELDS if any(f in r for r in records)]
    return write_sample_csv(records, os.path.join(output_dir, "topic_sample.csv")), envelope


def plan_training(options: PipelineOptions) -> TrainPlan:
    """Checks the flags, resolves the input and loads or infers the dataset spec; no data moves yet.

    The spec is written to <output_dir>/spec.json, and outputs of an earlier
    run that this one replaces are removed.

    Raises:
      UserError: a bad flag, file, topic or spec.
    """
    opts = options.view_as(TrainOptions).validated()
    label, positive, task, key = opts.label, opts.positive_label, opts.task, opts.key_column
    drop = opts.drop_column_list
    kafka = None
    if opts.input_topic:
        path, name = None, opts.input_topic
    elif opts.input:
        path = opts.input
        name = os.path.splitext(os.path.basename(path.rstrip("/")))[0].replace("*", "all")
    else:
        from beam_ml import datasets

        name = opts.dataset or "retention"
        info = datasets.resolve(name)
        path = datasets.materialize(name, opts.data_dir, rows=opts.dataset_rows)
        label, positive, task = label or info.label, positive or info.positive_label, task or info.task
        key = key or info.key
    output_dir = os.path.abspath(opts.output_dir or os.path.join("out", name))

    if opts.input_topic:
        kafka = kafka_client_config(options)
        infer_from = None
        if not opts.spec:
            infer_from, envelope = _sample_topic_csv(kafka, opts.input_topic, output_dir)
            drop += [f for f in envelope if f not in drop]
    else:
        from beam_ml.io.csv import expand_input

        infer_from = expand_input(path)[0]

    from beam_ml.io.csv import dialect_from_options

    csv_flags = dialect_from_options(options)  # --delimiter/--encoding/--compression, when given
    if opts.spec:
        spec = DatasetSpec.load(opts.spec)
        spec = dataclasses.replace(spec, dialect=spec.dialect.replace(**csv_flags))
    else:
        from beam_ml.spec import infer_spec

        spec = infer_spec(infer_from, label, positive_label=positive, task=task, key=key, drop=drop, **csv_flags)
    os.makedirs(output_dir, exist_ok=True)
    for stale in _STALE_OUTPUTS:
        shutil.rmtree(os.path.join(output_dir, stale), ignore_errors=True)
    spec_path = spec.save(os.path.join(output_dir, "spec.json"))
    return TrainPlan(options=options, opts=opts, spec=spec, name=name, input_pattern=path, output_dir=output_dir,
                     spec_path=spec_path, kafka=kafka)


def preprocess_counts(result, spec: DatasetSpec) -> dict:
    """The row accounting of a preprocessing run, from its counters."""
    from beam_ml.preprocess import label_counter_name

    q = lambda ns, name: metrics.query_counter(result, ns, name)  # noqa: E731
    return {
        "rows_in": q(metrics.READ, "lines_in"),
        "rows_good": q(metrics.READ, "rows_good"),
        "rows_dead": q(metrics.READ, "rows_dead"),
        "blank_lines": q(metrics.READ, "blank_lines"),
        "rows_train": q(metrics.PREPROCESS, "rows_train"),
        "rows_eval": q(metrics.PREPROCESS, "rows_eval"),
        "train_label_counts": {c: q(metrics.PREPROCESS, label_counter_name(c)) for c in spec.label_classes},
    }


def finish_training(plan: TrainPlan, result, preprocess_seconds: float,
                    log: Callable[[str], None] = _print) -> TrainRun:
    """After the Beam part: writes counts.json, checks the accounting, then trains, evaluates, exports.

    Raises:
      UserError: too many dead-lettered rows (after they are written), or too few rows to split.
      RuntimeError: the row accounting does not add up (a bug).
    """
    opts, output_dir = plan.opts, plan.output_dir
    shutil.rmtree(os.path.join(output_dir, "tmp"), ignore_errors=True)
    counts = preprocess_counts(result, plan.spec)
    counts["preprocess_seconds"] = round(preprocess_seconds, 2)
    counts["rows_per_second"] = round(counts["rows_in"] / max(preprocess_seconds, 1e-9), 1)
    with open(os.path.join(output_dir, "counts.json"), "w") as f:
        json.dump(counts, f, indent=2)
    log(f"[beam_ml] preprocessed {counts['rows_in']} rows in {counts['preprocess_seconds']} s: "
        f"{counts['rows_good']} good ({counts['rows_train']} train / {counts['rows_eval']} eval), "
        f"{counts['rows_dead']} dead-lettered → {output_dir}/dead_letter/")
    if counts["rows_in"] != counts["rows_good"] + counts["rows_dead"]:
        raise RuntimeError(f"row accounting broken: {counts}")
    if counts["rows_in"] and counts["rows_dead"] / counts["rows_in"] > opts.max_bad_rows_fraction:
        raise UserError(f"--max_bad_rows_fraction: {counts['rows_dead']} of {counts['rows_in']} rows were "
                        f"malformed (> {opts.max_bad_rows_fraction:.2%}); see {output_dir}/dead_letter/")
    if counts["rows_train"] == 0 or counts["rows_eval"] == 0:
        raise UserError(f"--input: too few good rows to split train/eval ({counts})")
    run = TrainRun(output_dir=output_dir, counts=counts, pipeline_result=result, spec_path=plan.spec_path)
    if opts.preprocess_only:
        return run

    from beam_ml.training.trainer import TrainConfig, train_and_evaluate

    config = TrainConfig(hidden_units=opts.hidden_unit_list, dropout=opts.dropout, optimizer=opts.optimizer,
                         learning_rate=opts.learning_rate, batch_size=opts.batch_size, epochs=opts.epochs,
                         early_stopping_patience=opts.early_stopping_patience, class_weights=opts.class_weights,
                         seed=opts.seed, verbose=opts.verbose, dataset_name=plan.name)
    run.metrics = train_and_evaluate(output_dir, plan.spec, config)
    return run


def train(options: PipelineOptions, test_pipeline=None, log: Callable[[str], None] = _print) -> TrainRun:
    """The whole job: plan, preprocess with Beam, train, export.

    Args:
      options: parsed options with TrainOptions (and KafkaOptions) flags.
      test_pipeline: a TestPipeline to build on instead of a new Pipeline.
      log: where progress lines go.
    """
    plan = plan_training(options)
    spec = plan.spec
    log(f"[beam_ml] dataset spec: {plan.spec_path} (task={spec.task}, label={spec.label}, "
        f"classes={spec.label_classes}, features={len(spec.feature_columns)})")
    import apache_beam as beam  # after the flags, files and spec are checked, so mistakes fail in a second

    from beam_ml.preprocess import build_preprocess

    start = time.time()
    pipeline = test_pipeline or beam.Pipeline(options=options)
    build_preprocess(pipeline, spec, plan.preprocess_config, source=plan.source())
    result = pipeline.run()
    result.wait_until_finish()
    return finish_training(plan, result, time.time() - start, log)
