"""Train a model from a CSV file (or a bundled dataset): tf.Transform + Keras + export.

    python -m pipelines.train --runner=DirectRunner                       # bundled 'retention'
    python -m pipelines.train --dataset=fraud --runner=DirectRunner
    python -m pipelines.train --input=HR_comma_sep.csv --label=left --output_dir=out/hr
    python -m pipelines.train --input=data.csv --spec=out/hr/spec.json --output_dir=out/hr2
    python -m pipelines.train --input=big.csv --label=Class --preprocess_only   # TFRecords only
    python -m pipelines.train --input_topic=transactions --bootstrap_servers=127.0.0.1:9092 \
        --label=Class --output_dir=out/fraud_topic        # a bounded snapshot of a topic

The Beam part (read, split, analyze, transform, write) runs on the runner the
flags choose; Keras training then runs in this process over the TFRecords.
Artifacts under --output_dir: spec.json, counts.json, transform_fn/,
transformed_metadata/, data/, dead_letter/, model/<version>/, metrics.json,
report.md, learning_curves.png, confusion_matrix.png, logs/ (TensorBoard).
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from typing import Optional, Sequence

from beam_ml import cli
from beam_ml.errors import UserError
from beam_ml.io.kafka_config import KafkaOptions
from beam_ml.options import TrainOptions, parse_int_list, parse_pipeline_options

__all__ = ["run", "main", "TrainRun"]


@dataclasses.dataclass
class TrainRun:
    """What a run produced (a PipelineResult alone cannot carry the training outcome)."""

    output_dir: str
    counts: dict
    pipeline_result: object = None
    metrics: Optional[dict] = None
    spec_path: str = ""


def _resolve_input(opts: TrainOptions):
    """(csv path, label, positive_label, task, dataset name) for --input or --dataset."""
    if opts.dataset:
        from beam_ml import datasets

        if opts.dataset not in datasets.DATASETS:
            raise UserError(f"--dataset: unknown dataset '{opts.dataset}'; "
                            f"choose one of {', '.join(sorted(datasets.DATASETS))}")
        info = datasets.DATASETS[opts.dataset]
        path = datasets.materialize(opts.dataset, opts.data_dir, rows=opts.dataset_rows)
        return (path, opts.label or info.label, opts.positive_label or info.positive_label,
                opts.task or info.task, opts.dataset, info.key)
    if opts.input_topic:
        if not opts.label and not opts.spec:
            raise UserError("--label: required with --input_topic (the field to predict), unless --spec is given")
        return None, opts.label, opts.positive_label, opts.task, opts.input_topic, opts.key_column
    if not opts.input:
        raise UserError("--input: give a CSV file (or --dataset=NAME)")
    if not opts.label and not opts.spec:
        raise UserError("--label: required with --input (the column to predict), unless --spec is given")
    name = os.path.splitext(os.path.basename(opts.input.rstrip("/")))[0].replace("*", "all")
    return opts.input, opts.label, opts.positive_label, opts.task, name, opts.key_column


# Fields pipelines.produce adds to every event: metadata, never features.
TOPIC_ENVELOPE_FIELDS = ("produce_ts", "event_ts")


def _sample_topic_csv(kafka, topic: str, output_dir: str) -> tuple[str, list[str]]:
    """Samples the topic into <output_dir>/topic_sample.csv for spec inference.

    Returns:
      (the sample CSV's path, the TOPIC_ENVELOPE_FIELDS present in the events).
    """
    from beam_ml.io.kafka_rows import sample_topic, write_sample_csv

    records = sample_topic(kafka.client_kwargs(), topic)
    if not records:
        raise UserError(f"--input_topic: no JSON events could be read from topic '{topic}' "
                        f"at {kafka.bootstrap_servers}")
    os.makedirs(output_dir, exist_ok=True)
    envelope = [f for f in TOPIC_ENVELOPE_FIELDS if any(f in r for r in records)]
    return write_sample_csv(records, os.path.join(output_dir, "topic_sample.csv")), envelope


def _counts_from(result, spec, beam_counts: dict) -> dict:
    from beam_ml.metrics import PREPROCESS as COUNTER_NAMESPACE, READ as READ_NAMESPACE, query_counter
    from beam_ml.preprocess import label_counter_name

    counts = {
        "rows_in": query_counter(result, READ_NAMESPACE, "lines_in"),
        "rows_good": query_counter(result, READ_NAMESPACE, "rows_good"),
        "rows_dead": query_counter(result, READ_NAMESPACE, "rows_dead"),
        "rows_train": query_counter(result, COUNTER_NAMESPACE, "rows_train"),
        "rows_eval": query_counter(result, COUNTER_NAMESPACE, "rows_eval"),
        "train_label_counts": {c: query_counter(result, COUNTER_NAMESPACE, label_counter_name(c))
                               for c in spec.label_classes},
    }
    counts.update(beam_counts)
    return counts


def run(argv: Optional[Sequence[str]] = None, test_pipeline=None) -> TrainRun:
    """Parses flags, preprocesses with Beam, trains, exports; returns what it produced.

    Args:
      argv: command-line flags (beam_ml's and Beam's).
      test_pipeline: a TestPipeline to build on instead of a new Pipeline.

    Raises:
      UserError: a bad flag, file or spec, or too many dead-lettered rows.
    """
    options = parse_pipeline_options(argv, TrainOptions, KafkaOptions)
    opts = options.view_as(TrainOptions).validate_train()
    hidden_units = parse_int_list(opts.hidden_units, "--hidden_units")
    path, label, positive, task, name, key = _resolve_input(opts)
    output_dir = os.path.abspath(opts.output_dir or os.path.join("out", name))
    drop = [d.strip() for d in opts.drop_columns.split(",") if d.strip()]
    kafka = None
    if opts.input_topic:
        try:
            kafka = options.view_as(KafkaOptions).client_config()
        except ValueError as e:
            raise UserError(str(e))
        if not kafka.bootstrap_servers:
            raise UserError("--bootstrap_servers: required with --input_topic")
        infer_from = None
        if not opts.spec:
            infer_from, envelope = _sample_topic_csv(kafka, opts.input_topic, output_dir)
            drop += [f for f in envelope if f not in drop]
    else:
        from beam_ml.io.csv import expand_input

        infer_from = expand_input(path)[0]

    from beam_ml.spec import DatasetSpec, infer_spec

    if opts.spec:
        spec = DatasetSpec.load(opts.spec)
    else:
        spec = infer_spec(infer_from, label, positive_label=positive, task=task, key=key, drop=drop)

    # Heavy imports after flags, files and spec are checked, so mistakes fail in a second.
    import apache_beam as beam

    from beam_ml.preprocess import PreprocessConfig, build_preprocess
    os.makedirs(output_dir, exist_ok=True)
    for stale in ("data", "transform_fn", "transformed_metadata", "dead_letter", "tmp"):
        shutil.rmtree(os.path.join(output_dir, stale), ignore_errors=True)
    spec_path = spec.save(os.path.join(output_dir, "spec.json"))
    print(f"[beam_ml] dataset spec: {spec_path} (task={spec.task}, label={spec.label}, "
          f"classes={spec.label_classes}, features={len(spec.feature_columns)})", flush=True)

    t0 = time.time()
    pipeline = test_pipeline or beam.Pipeline(options=options)
    source = None
    if kafka is not None:
        from beam_ml.io.kafka_rows import ReadTopicSnapshot

        source = ReadTopicSnapshot(kafka, opts.input_topic, spec)
    build_preprocess(pipeline, spec, PreprocessConfig(input_pattern=path, output_dir=output_dir,
                                                      eval_fraction=opts.eval_fraction, split_seed=opts.split_seed),
                     source=source)
    result = pipeline.run()
    result.wait_until_finish()
    shutil.rmtree(os.path.join(output_dir, "tmp"), ignore_errors=True)
    counts = _counts_from(result, spec, {"preprocess_seconds": round(time.time() - t0, 2)})
    counts["rows_per_second"] = round(counts["rows_in"] / max(counts["preprocess_seconds"], 1e-9), 1)
    with open(os.path.join(output_dir, "counts.json"), "w") as f:
        json.dump(counts, f, indent=2)
    print(f"[beam_ml] preprocessed {counts['rows_in']} rows in {counts['preprocess_seconds']} s: "
          f"{counts['rows_good']} good ({counts['rows_train']} train / {counts['rows_eval']} eval), "
          f"{counts['rows_dead']} dead-lettered → {output_dir}/dead_letter/", flush=True)
    if counts["rows_in"] != counts["rows_good"] + counts["rows_dead"]:
        raise RuntimeError(f"row accounting broken: {counts}")
    if counts["rows_in"] and counts["rows_dead"] / counts["rows_in"] > opts.max_bad_rows_fraction:
        raise UserError(f"--max_bad_rows_fraction: {counts['rows_dead']} of {counts['rows_in']} rows were "
                        f"malformed (> {opts.max_bad_rows_fraction:.2%}); see {output_dir}/dead_letter/")
    if counts["rows_train"] == 0 or counts["rows_eval"] == 0:
        raise UserError(f"--input: too few good rows to split train/eval ({counts})")
    run_info = TrainRun(output_dir=output_dir, counts=counts, pipeline_result=result, spec_path=spec_path)
    if opts.preprocess_only:
        return run_info

    from beam_ml.training.trainer import TrainConfig, train_and_evaluate

    config = TrainConfig(hidden_units=hidden_units, dropout=opts.dropout, optimizer=opts.optimizer,
                         learning_rate=opts.learning_rate, batch_size=opts.batch_size, epochs=opts.epochs,
                         early_stopping_patience=opts.early_stopping_patience, class_weights=opts.class_weights,
                         seed=opts.seed, verbose=opts.verbose, dataset_name=name)
    run_info.metrics = train_and_evaluate(output_dir, spec, config)
    s, m = run_info.metrics["summary"], run_info.metrics["eval"]
    headline = {k: m[k] for k in ("accuracy", "roc_auc", "pr_auc", "precision", "recall", "f1", "macro_f1")
                if m.get(k) is not None}
    print(f"[beam_ml] eval: {json.dumps({k: round(v, 4) for k, v in headline.items()})}", flush=True)
    print(f"[beam_ml] model:   {s['model_version_dir']}\n[beam_ml] metrics: {output_dir}/metrics.json\n"
          f"[beam_ml] report:  {run_info.metrics['report']}", flush=True)
    return run_info


def main(argv: Optional[Sequence[str]] = None) -> None:
    cli.main(run, argv)


if __name__ == "__main__":
    main()
